"""Generation (the solver): N samples per prompt with the per-token log-probs of the plain model.

One batched ``model.generate`` call per chunk of prompts, with the KV cache. The log-probs are
those of the unmodified distribution (raw logits: temperature 1, no top-k/top-p), whatever the
sampling settings, and come from one of two places, chosen per chunk of prompts by
:data:`LOGIT_BUDGET`, so that the logits held at once are bounded by it (twice it while they
are turned into log-probs; at least one position of the batch, which generate itself holds at
every step):

* where the chunk's batch x max_new_tokens x vocab fp32 logits fit the budget (the organism, small
  runs), ``generate`` returns them (``output_logits``) and the sampled tokens' entries are gathered:
  no second pass;
* above it (32 x 512 x a 128k vocabulary is 8 GB), ``generate`` keeps none, and a teacher-forced
  pass scores the sampled tokens: the prompt fills a KV cache, then the response goes through the
  model's own forward (so logit softcapping and scaling apply) :data:`LOGIT_POSITIONS` positions at
  a time, fewer where those would pass the budget.

``generation.stop`` (a base model's end of answer, :func:`sirt.models.prompts.posed_config`) stops a
sequence in ``generate`` (``stop_strings``) and cuts its response before the first stop string, at a
token boundary (:func:`cut_at_stop`): text, token count and log-prob all cover the same kept tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt.config.schema import GenerationSchema
from sirt.models.load import last_logits_only
from sirt.models.tokens import encode_all, left_padded
from sirt.stages.samples import Sample

LOGIT_BUDGET = 256 * 2**20  # bytes of fp32 logits one chunk may hold: generate's own up to it, else the pass
LOGIT_POSITIONS = 16  # response positions per step of the teacher-forced pass (fewer if over LOGIT_BUDGET)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> dict[str, torch.Tensor]:
    """The left-padded ids generation conditions on: the prompts' own, no special tokens added
    (:mod:`sirt.models.tokens`; the prompt texts hold them)."""
    return left_padded(encode_all(tokenizer, prompts), tokenizer.pad_token_id)


def logit_bytes(model: PreTrainedModel, rows: int, positions: int) -> int:
    """Bytes of the fp32 logits of ``rows`` sequences at ``positions`` positions each."""
    return rows * positions * model.config.get_text_config().vocab_size * 4


def positions_per_pass(model: PreTrainedModel, rows: int, logit_budget: int) -> int:
    """Positions per step of the teacher-forced pass: :data:`LOGIT_POSITIONS`, fewer (at least one)
    where their logits would pass ``logit_budget``."""
    return max(1, min(LOGIT_POSITIONS, logit_budget // logit_bytes(model, rows, 1)))


@torch.inference_mode()
def token_logprobs_of(
    model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, new: torch.Tensor,
    logit_budget: int = LOGIT_BUDGET,
) -> torch.Tensor:
    """log pi(y_t | x, y_<t) of every new token (batch, steps) under the plain model, teacher-forced.

    Position i of prompt + response predicts token i + 1. The prompt but its last token fills the
    KV cache (one logit row kept); the rest goes through a few positions at a time, so only those
    positions' logits ever exist. Position ids follow ``generate`` (left padding skipped).
    """
    context = torch.cat([prompt_ids, new[:, :-1]], dim=1)
    mask = torch.cat([prompt_mask, torch.ones_like(new[:, :-1])], dim=1)
    position_ids = (mask.cumsum(dim=-1) - 1).clamp_min(0)
    start = prompt_ids.shape[1] - 1  # the position that predicts new[:, 0]
    cache = None
    if start > 0:
        cache = model(input_ids=context[:, :start], attention_mask=mask[:, :start],
                      position_ids=position_ids[:, :start], use_cache=True, **last_logits_only(model)).past_key_values
    step, parts = positions_per_pass(model, len(new), logit_budget), []
    for s in range(start, context.shape[1], step):
        e = min(s + step, context.shape[1])
        out = model(input_ids=context[:, s:e], attention_mask=mask[:, :e], position_ids=position_ids[:, s:e],
                    past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits.float()
        targets = new[:, s - start : e - start].unsqueeze(-1)
        parts.append(logits.gather(-1, targets).squeeze(-1) - logits.logsumexp(dim=-1))
        del out, logits  # before the next positions' logits exist
    return torch.cat(parts, dim=1)


def cut_at_stop(tokenizer: PreTrainedTokenizerBase, ids: list[int], stop: list[str]) -> tuple[str, int] | None:
    """(text, kept) of a response ``ids`` cut before its first stop string, or None if it has none.

    The kept tokens are the longest prefix whose text ends before the stop string, so a token that
    straddles the stop's start (``"\\n\\n"`` of ``"\\nQuestion:"``) goes with the stop. Decoded prefix
    lengths only grow with the prefix, so a bisection finds it in a few decodes. Special tokens are
    searched as their text, as ``generate``'s ``stop_strings`` matches them (``"<pad>"`` holds ``"a"``),
    and left out of the kept text, as in every response.
    """
    text = tokenizer.decode(ids)
    starts = [text.find(s) for s in stop if s in text]
    if not starts:
        return None
    cut, lo, hi = min(starts), 0, len(ids)  # the kept length is in lo..hi; prefix lo ends by the cut
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tokenizer.decode(ids[:mid])) <= cut:
            lo = mid
        else:
            hi = mid - 1
    return tokenizer.decode(ids[:lo], skip_special_tokens=True), lo


@torch.inference_mode()
def _generate_chunk(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    n: int,
    cfg: GenerationSchema,
    greedy: bool,
    logit_budget: int,
) -> list[list[Sample]]:
    enc = {k: v.to(model.device) for k, v in encode_prompts(tokenizer, prompts).items()}
    sampling = {"do_sample": False} if greedy else {
        "do_sample": True,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k,
    }
    keep_logits = logit_bytes(model, len(prompts) * n, cfg.max_new_tokens) <= logit_budget
    stops = {"stop_strings": list(cfg.stop), "tokenizer": tokenizer} if cfg.stop else {}
    out = model.generate(
        **enc,
        **sampling,
        **stops,
        num_return_sequences=n,
        max_new_tokens=cfg.max_new_tokens,
        output_logits=keep_logits,  # set either way: a checkpoint's generation config may ask for them
        output_scores=False,
        return_dict_in_generate=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    width = enc["input_ids"].shape[1]
    new = out.sequences[:, width:]
    if keep_logits:
        logits = torch.stack(out.logits, dim=1).float()  # (batch, steps, vocab): raw, unprocessed
        del out  # generate's list of logits and KV cache
        token_logprobs = torch.log_softmax(logits, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
    else:
        prompt_ids, prompt_mask = out.sequences[:, :width], enc["attention_mask"].repeat_interleave(n, dim=0)
        del out  # generate's KV cache goes before the pass builds its own
        token_logprobs = token_logprobs_of(model, prompt_ids, prompt_mask, new, logit_budget)
    # tokens after the first EOS are padding; the EOS itself belongs to the response
    is_eos = new == tokenizer.eos_token_id
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    mask = ~after_eos
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    if cfg.stop:  # a stopped response keeps the tokens before its stop string (padding follows it)
        for row, n_kept in enumerate(mask.sum(dim=1).tolist()):
            ids = new[row, :n_kept].tolist()  # up to the first EOS, or the first pad where pad = EOS
            body = ids[:-1] if ids[-1:] == [tokenizer.eos_token_id] else ids  # EOS's own text stops nothing
            cut = cut_at_stop(tokenizer, body, list(cfg.stop))
            if cut is not None:
                texts[row] = cut[0]
                mask[row, cut[1]:] = False
    lengths = mask.sum(dim=1)
    totals = (token_logprobs * mask).sum(dim=1)
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
    logit_budget: int = LOGIT_BUDGET,
) -> list[list[Sample]]:
    """``n`` (default N) responses per prompt, prompts sorted by length into batches; log-probs from
    ``generate``'s logits or the teacher-forced pass, by ``logit_budget`` (bytes, see the module)."""
    n = cfg.n_samples if n is None else n
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # length bucketing
    per_batch = max(1, cfg.batch_size // n)
    results: dict[int, list[Sample]] = {}
    for chunk in tqdm(_chunks(order, per_batch), desc=desc, leave=False):
        for i, samples in zip(chunk, _generate_chunk(model, tokenizer, [prompts[i] for i in chunk], n, cfg, greedy,
                                                     logit_budget)):
            results[i] = samples
    return [results[i] for i in range(len(prompts))]


def sampler(cfg: GenerationSchema) -> Callable[..., list[list[Sample]]]:
    """The sampling function of ``generation.backend``; vLLM is imported only when chosen."""
    if cfg.backend == "vllm":
        from sirt.stages.generation_vllm import sample as vllm_sample

        return vllm_sample
    return sample
