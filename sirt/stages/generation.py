"""Generation (the solver): N samples per prompt with the per-token log-probs of the plain model.

One batched ``model.generate`` call per chunk, with the KV cache. ``output_logits`` returns
the raw logits before temperature/top-k/top-p, so the log-probs are those of the unmodified
distribution whatever the sampling settings: no second forward pass is needed for U.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt.config.schema import GenerationSchema
from sirt.models.tokens import encode_all, left_padded
from sirt.stages.samples import Sample


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> dict[str, torch.Tensor]:
    """The left-padded ids generation conditions on: the prompts' own, no special tokens added
    (:mod:`sirt.models.tokens`; the prompt texts hold them)."""
    return left_padded(encode_all(tokenizer, prompts), tokenizer.pad_token_id)


@torch.inference_mode()
def _generate_chunk(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    n: int,
    cfg: GenerationSchema,
    greedy: bool,
) -> list[list[Sample]]:
    enc = {k: v.to(model.device) for k, v in encode_prompts(tokenizer, prompts).items()}
    sampling = {"do_sample": False} if greedy else {
        "do_sample": True,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k,
    }
    out = model.generate(
        **enc,
        **sampling,
        num_return_sequences=n,
        max_new_tokens=cfg.max_new_tokens,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    new = out.sequences[:, enc["input_ids"].shape[1] :]
    logits = torch.stack(out.logits, dim=1).float()  # (batch, steps, vocab): raw, unprocessed
    token_logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
    # tokens after the first EOS are padding; the EOS itself belongs to the response
    is_eos = new == tokenizer.eos_token_id
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    mask = ~after_eos
    lengths = mask.sum(dim=1)
    totals = (token_logprobs * mask).sum(dim=1)
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    samples = [Sample(t, int(k), float(lp)) for t, k, lp in zip(texts, lengths, totals)]
    return _chunks(samples, n)


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    cfg: GenerationSchema,
    n: int | None = None,
    greedy: bool = False,
    desc: str = "generate",
) -> list[list[Sample]]:
    """``n`` (default N) responses per prompt, prompts sorted by length into batches."""
    n = cfg.n_samples if n is None else n
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # length bucketing
    per_batch = max(1, cfg.batch_size // n)
    results: dict[int, list[Sample]] = {}
    for chunk in tqdm(_chunks(order, per_batch), desc=desc, leave=False):
        for i, samples in zip(chunk, _generate_chunk(model, tokenizer, [prompts[i] for i in chunk], n, cfg, greedy)):
            results[i] = samples
    return [results[i] for i in range(len(prompts))]


def sampler(cfg: GenerationSchema) -> Callable[..., list[list[Sample]]]:
    """The sampling function of ``generation.backend``; vLLM is imported only when chosen."""
    if cfg.backend == "vllm":
        from sirt.stages.generation_vllm import sample as vllm_sample

        return vllm_sample
    return sample
