"""The sampler agreement probe: does the sampler score its tokens as the model being trained does?

Every round re-scores a few of its samples with the training model's own teacher-forced log-probs (one
unpadded forward per sample, no KV cache: what SFT computes) and compares them, token by token, with
the log-probs the sampler returned. The largest absolute difference is the round's
``backend_logprob_err``. A sampler that drifts from the model — a vLLM engine still holding earlier
weights, a cache or position-id bug, log-probs taken after temperature — shows in the first round it
happens, and above the tolerance the run stops there (:func:`check`). On the transformers backend it
checks ``generate``'s scores (or the chunked teacher-forced pass) against the plain forward.
"""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt.config.errors import InputError
from sirt.models.tokens import encode
from sirt.stages.samples import Sample

TOLERANCE = {"float32": 1e-3, "float16": 0.1, "bfloat16": 0.5}
"""Largest per-token |log-prob difference| (nats) a round accepts, by the model's dtype, where
``generation.probe_tolerance`` is null. fp32: two kernels differ by ~1e-6 (the organism: below 1e-5). bf16
and fp16: a logit near 20 is rounded by ~0.06 (bf16, 8-bit mantissa) or ~0.01 (fp16), and a sampler with
other kernels (vLLM's) differs from HF's forward by a few of those steps on its worst token; a stale or
wrong model differs by the whole update. Set ``generation.probe_tolerance`` to tighten it."""


class SamplerMismatch(InputError):
    """The sampler's log-probs disagree with the training model's beyond the tolerance."""


def probe_choice(samples: list[list[Sample]], k: int) -> list[tuple[int, int]]:
    """(prompt, sample) of the ``k`` samples to re-score: spread over the prompts and over the N samples,
    the same for every round of a given size, never an empty response."""
    if not samples or k <= 0:
        return []
    prompts = len(samples)
    picks = []
    for i in range(min(k, prompts)):
        p = i * prompts // min(k, prompts)
        row = samples[p]
        j = next((j for j in [i % len(row), *range(len(row))] if row[j].token_ids), None)
        if j is not None:
            picks.append((p, j))
    return picks


@torch.inference_mode()
def teacher_forced(model: PreTrainedModel, prompt_ids: list[int], response_ids: list[int]) -> list[float]:
    """log pi(y_t | x, y_<t) of each response token from one plain forward over prompt + response."""
    ids = torch.tensor([prompt_ids + response_ids[:-1]], device=model.device)
    logits = model(input_ids=ids, use_cache=False).logits[0, -len(response_ids) :].float()
    target = torch.tensor(response_ids, device=logits.device).unsqueeze(-1)
    return (logits.gather(-1, target).squeeze(-1) - logits.logsumexp(dim=-1)).tolist()


def logprob_err(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                samples: list[list[Sample]], k: int) -> float:
    """The largest per-token |sampler log-prob - training model's| over ``k`` of the round's samples
    (0.0 when there is nothing to compare)."""
    err = 0.0
    for p, j in probe_choice(samples, k):
        s = samples[p][j]
        if len(s.token_logprobs) != len(s.token_ids):
            raise InputError(f"the sampler returned {len(s.token_logprobs)} log-probs for {len(s.token_ids)} tokens")
        ref = teacher_forced(model, encode(tokenizer, prompts[p]), s.token_ids)
        err = max(err, max(abs(a - b) for a, b in zip(s.token_logprobs, ref)))
    return err


def tolerance(setting: float | None, dtype: torch.dtype) -> float:
    """``generation.probe_tolerance``, or the default of the model's dtype (:data:`TOLERANCE`)."""
    return setting if setting is not None else TOLERANCE.get(str(dtype).removeprefix("torch."), TOLERANCE["float32"])


def check(t: int, err: float, limit: float, backend: str) -> None:
    """Stop the run, in one line naming the round and the figure, where the sampler disagrees."""
    if math.isnan(err) or err > limit:
        raise SamplerMismatch(
            f"round {t}: the {backend} sampler's log-probs differ from the training model's by up to {err:.3g} "
            f"per token (backend_logprob_err; tolerance {limit:g}, generation.probe_tolerance): the sampler is "
            "not sampling from the model being trained")
