"""The naive path the bench compares with: one generate per sample, log-probs from a second forward pass,
and verdicts generated as free text and parsed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt.config.schema import GenerationSchema, VerifierSchema
from sirt.loop.round import Stopwatch
from sirt.models.tokens import encode
from sirt.models.verdicts import method
from sirt.stages.samples import Sample
from sirt.stages.verification import verification_prompt


def prompt_ids(tokenizer: PreTrainedTokenizerBase, text: str, device: torch.device) -> torch.Tensor:
    """Token ids of one unpadded prompt, shape (1, length)."""
    return torch.tensor([encode(tokenizer, text)], dtype=torch.long, device=device)


def until_eos(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """A response's tokens up to and including the first EOS (the EOS belongs to the response)."""
    stops = (ids == eos_id).nonzero()
    return ids if len(stops) == 0 else ids[: int(stops[0]) + 1]


@torch.inference_mode()
def generate_one(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: torch.Tensor, cfg: GenerationSchema,
    max_new_tokens: int, greedy: bool,
) -> torch.Tensor:
    """One response to one prompt: the baseline's unbatched ``model.generate``."""
    sampling = {"do_sample": False} if greedy else {
        "do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k}
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **sampling)
    return until_eos(out[0, prompt.shape[1] :], tokenizer.eos_token_id)


@torch.inference_mode()
def teacher_forced_logprob(model: PreTrainedModel, prompt: torch.Tensor, response: torch.Tensor) -> float:
    """log pi(y|x) by a forward pass over one prompt + response: the quantity the fast path reads from
    its sampling pass or a batched pass in chunks of positions, computed the way a naive pipeline does."""
    ids = torch.cat([prompt[0], response]).unsqueeze(0)
    logits = model(ids).logits[0, prompt.shape[1] - 1 : -1].float()
    return float(torch.log_softmax(logits, dim=-1).gather(-1, response.unsqueeze(-1)).sum())


def parse_verdict(text: str, cfg: VerifierSchema) -> float | None:
    """The score a free-text verdict states: TF 1/0 by the first word, QE the leading rating scaled
    to [0, 1]; None when the text states neither (the naive path's parse failures)."""
    return method(cfg).parse(text, cfg)


def naive_verdict(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: VerifierSchema, prompt: str, response: str,
    tokens: int, gen: GenerationSchema,
) -> float | None:
    """The verdict a naive pipeline gets: generate a few greedy tokens after the verification
    prompt and parse them (sirt's verifier reads the next-token distribution instead)."""
    ids = prompt_ids(tokenizer, verification_prompt(cfg, prompt, response), model.device)
    out = generate_one(model, tokenizer, ids, gen, tokens, greedy=True)
    return parse_verdict(tokenizer.decode(out, skip_special_tokens=True), cfg)


@dataclass
class NaiveRound:
    """The naive path's samples, verdicts (None = unparsable) and seconds per part."""

    samples: list[list[Sample]]
    verdicts: list[list[float | None]]
    seconds: dict[str, float]


def naive_round(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], gen: GenerationSchema,
    verifier_cfg: VerifierSchema, verify_tokens: int,
) -> NaiveRound:
    """N samples per prompt, one at a time, each with a recomputed log-prob and a generated verdict."""
    clock = Stopwatch()
    samples, verdicts = [], []
    with tqdm(total=len(prompts) * gen.n_samples, desc="naive: sample one at a time", leave=False) as bar:
        for prompt in prompts:
            ids = prompt_ids(tokenizer, prompt, model.device)
            row, row_verdicts = [], []
            for _ in range(gen.n_samples):
                with clock("generate"):
                    response = generate_one(model, tokenizer, ids, gen, gen.max_new_tokens, greedy=False)
                with clock("logprob"):
                    logprob = teacher_forced_logprob(model, ids, response)
                text = tokenizer.decode(response, skip_special_tokens=True)
                with clock("verify"):
                    row_verdicts.append(naive_verdict(model, tokenizer, verifier_cfg, prompt, text, verify_tokens, gen))
                row.append(Sample(text, len(response), logprob))
                bar.update()
            samples.append(row)
            verdicts.append(row_verdicts)
    return NaiveRound(samples, verdicts, dict(clock.seconds))


def response_ids(tokenizer: PreTrainedTokenizerBase, s: Sample, max_new_tokens: int) -> list[int] | None:
    """A sample's response tokens back from its text, or None where the text cannot tell them.

    The text drops special tokens while ``n_tokens`` counts them. One token more than the text
    below the length cap can only be the closing EOS (a response without EOS runs to the cap);
    at the cap it could also be a special token mid-text, so such samples are skipped.
    """
    ids = encode(tokenizer, s.text)
    if s.n_tokens == len(ids):
        return ids
    if s.n_tokens == len(ids) + 1 and s.n_tokens < max_new_tokens:
        return [*ids, tokenizer.eos_token_id]
    return None


def logprob_agreement(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], samples: list[list[Sample]],
    max_new_tokens: int,
) -> dict[str, float | int]:
    """Largest |fast log-prob - teacher-forced log-prob| over the fast path's own samples: the
    fast path (sampling pass or chunked batched pass) and a plain forward pass must give the same U."""
    diffs, skipped = [], 0
    for prompt, row in zip(prompts, samples):
        ids = prompt_ids(tokenizer, prompt, model.device)
        for s in row:
            response = response_ids(tokenizer, s, max_new_tokens)
            if response is None:
                skipped += 1
                continue
            tokens = torch.tensor(response, device=model.device)
            diffs.append(abs(s.logprob - teacher_forced_logprob(model, ids, tokens)))
    return {"logprob_max_abs_diff": max(diffs, default=float("nan")), "logprob_sequences": len(diffs),
            "logprob_skipped": skipped}


def verdict_agreement(fast: list[float], naive: list[float | None], sigma: float, margin: float) -> dict[str, float]:
    """Share of clear cases (fast score at least ``margin`` from sigma, naive verdict parsed) on
    which both paths accept or both reject."""
    clear = [(f >= sigma, n >= sigma) for f, n in zip(fast, naive) if n is not None and abs(f - sigma) >= margin]
    return {"verdict_clear_cases": len(clear),
            "verdict_agreement": sum(a == b for a, b in clear) / len(clear) if clear else float("nan"),
            "naive_unparsed": sum(n is None for n in naive) / max(len(naive), 1)}
