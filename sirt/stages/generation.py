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
  pass scores the sampled tokens through the model's own forward (so logit softcapping and scaling
  apply): rows in chunks, each chunk's prompts filling a KV cache and its responses following as many
  positions at a time as the budget holds (:func:`pass_plan`; all of a 512-token response of one row
  with a 128k vocabulary). Every sequence goes through the model about once more, in few calls.

``generation.stop`` (a base model's end of answer, :func:`sirt.models.prompts.posed_config`) stops a
sequence in ``generate`` (``stop_strings``) and cuts its response before the first stop string, at a
token boundary (:func:`cut_at_stop`): text, token count and log-prob all cover the same kept tokens.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt.config.schema import GenerationSchema
from sirt.models.load import last_logits_only
from sirt.models.tokens import encode_all, left_padded
from sirt.plan.seeds import chunk_seed
from sirt.stages.samples import Sample

LOGIT_BUDGET = 256 * 2**20  # bytes of fp32 logits one chunk may hold: generate's own up to it, else the pass


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def prompts_per_call(cfg: GenerationSchema, n: int) -> int:
    """Prompts per ``generate`` call: ``generation.batch_size`` sequences of ``n`` samples each."""
    return max(1, cfg.batch_size // n)


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> dict[str, torch.Tensor]:
    """The left-padded ids generation conditions on: the prompts' own, no special tokens added
    (:mod:`sirt.models.tokens`; the prompt texts hold them)."""
    return left_padded(encode_all(tokenizer, prompts), tokenizer.pad_token_id)


def logit_bytes(model: PreTrainedModel, rows: int, positions: int) -> int:
    """Bytes of the fp32 logits of ``rows`` sequences at ``positions`` positions each."""
    return rows * positions * model.config.get_text_config().vocab_size * 4


def pass_plan(model: PreTrainedModel, rows: int, steps: int, logit_budget: int) -> tuple[int, int]:
    """(rows, positions) of one call of the teacher-forced pass: as many of a row's ``steps`` positions as
    the budget holds (at least one), then as many rows as those positions leave room for (at least one).

    Positions before rows: with all of a response's positions in one call, a chunk of rows is one forward
    over its sequences (prefill-like, no KV cache), where one position per call would read the whole
    cache once per response token, as decoding does.
    """
    one = logit_bytes(model, 1, 1)
    positions = max(1, min(steps, logit_budget // one))
    return max(1, min(rows, logit_budget // (positions * one))), positions


@torch.inference_mode()
def token_logprobs_of(
    model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, new: torch.Tensor,
    logit_budget: int = LOGIT_BUDGET,
) -> torch.Tensor:
    """log pi(y_t | x, y_<t) of every new token (batch, steps) under the plain model, teacher-forced,
    in the chunks of rows and positions :func:`pass_plan` gives, so no call's logits pass ``logit_budget``."""
    rows, positions = pass_plan(model, len(new), new.shape[1], logit_budget)
    return torch.cat([_chunk_logprobs(model, prompt_ids[r : r + rows], prompt_mask[r : r + rows], new[r : r + rows],
                                      positions) for r in range(0, len(new), rows)])


def _chunk_logprobs(model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, new: torch.Tensor,
                    step: int) -> torch.Tensor:
    """:func:`token_logprobs_of` of a few rows, ``step`` response positions per forward.

    Position i of prompt + response predicts token i + 1; position ids follow ``generate`` (left padding
    skipped). Where the whole response fits one step (and the model projects only the positions it is
    asked for, ``logits_to_keep``), one forward over prompt + response does it. Else the prompt but its
    last token fills a KV cache (one logit row kept) and the response follows ``step`` positions at a
    time, so only those positions' logits ever exist.
    """
    context = torch.cat([prompt_ids, new[:, :-1]], dim=1)
    mask = torch.cat([prompt_mask, torch.ones_like(new[:, :-1])], dim=1)
    position_ids = (mask.cumsum(dim=-1) - 1).clamp_min(0)
    steps, start = new.shape[1], prompt_ids.shape[1] - 1  # start: the position that predicts new[:, 0]
    if step >= steps and last_logits_only(model):
        logits = model(input_ids=context, attention_mask=mask, position_ids=position_ids, use_cache=False,
                       logits_to_keep=steps).logits.float()
        return logits.gather(-1, new.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(dim=-1)
    cache = None
    if start > 0:
        cache = model(input_ids=context[:, :start], attention_mask=mask[:, :start],
                      position_ids=position_ids[:, :start], use_cache=True, **last_logits_only(model)).past_key_values
    parts = []
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


def kept_length(tokenizer: PreTrainedTokenizerBase, ids: list[int], stop: list[str]) -> int:
    """How many of a response's ``ids`` (up to its first EOS, included) it keeps: all, or those before its
    first stop string (:func:`cut_at_stop`). Both backends cut with it."""
    eos = tokenizer.eos_token_id
    if eos in ids:
        ids = ids[: ids.index(eos) + 1]
    body = ids[:-1] if ids[-1:] == [eos] else ids  # EOS's own text stops nothing
    cut = cut_at_stop(tokenizer, body, stop) if stop else None
    return len(ids) if cut is None else cut[1]


def response_sample(tokenizer: PreTrainedTokenizerBase, ids: list[int], logprobs: list[float],
                    stop: list[str]) -> Sample:
    """A Sample from a response's generated ``ids`` and their log-probs, kept as :func:`kept_length` says."""
    kept = kept_length(tokenizer, ids, stop)
    ids, logprobs = ids[:kept], logprobs[:kept]
    return Sample(tokenizer.decode(ids, skip_special_tokens=True), kept, float(sum(logprobs)), ids, logprobs)


def to_samples(tokenizer: PreTrainedTokenizerBase, new: torch.Tensor, token_logprobs: torch.Tensor,
               stop: list[str]) -> list[Sample]:
    """The Samples of generated rows ``new`` (batch, steps) and their tokens' log-probs: each response up to
    and with its first EOS (what follows is padding), cut before a stop string (:func:`kept_length`)."""
    # tokens after the first EOS are padding; the EOS itself belongs to the response
    is_eos = new == tokenizer.eos_token_id
    after_eos = (is_eos.cumsum(dim=1) - is_eos.long()) > 0
    mask = ~after_eos
    texts = tokenizer.batch_decode(new, skip_special_tokens=True)
    if stop:  # a stopped response keeps the tokens before its stop string (padding follows it)
        for row, n_kept in enumerate(mask.sum(dim=1).tolist()):
            kept = kept_length(tokenizer, new[row, :n_kept].tolist(), stop)
            if kept < n_kept:
                texts[row] = tokenizer.decode(new[row, :kept].tolist(), skip_special_tokens=True)
                mask[row, kept:] = False
    lengths = mask.sum(dim=1)
    totals = (token_logprobs * mask).sum(dim=1)
    kept_ids, kept_logprobs = new.tolist(), token_logprobs.tolist()
    samples = [Sample(t, int(k), float(lp), kept_ids[row][: int(k)], kept_logprobs[row][: int(k)])
               for row, (t, k, lp) in enumerate(zip(texts, lengths, totals))]
    return samples


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
    samples = to_samples(tokenizer, new, token_logprobs, list(cfg.stop))
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
    seed: int | None = None,
) -> list[list[Sample]]:
    """``n`` (default N) responses per prompt, prompts sorted by length into batches of
    :func:`prompts_per_call`; log-probs from ``generate``'s logits or the teacher-forced pass, by
    ``logit_budget`` (bytes, see the module). With ``seed``, torch's generator is seeded before every batch
    from the seed and the batch's prompts (:func:`sirt.plan.seeds.chunk_seed`), so a batch draws the same
    samples wherever it runs; without, the draws continue torch's global generator."""
    n = cfg.n_samples if n is None else n
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # length bucketing
    results: dict[int, list[Sample]] = {}
    for chunk in tqdm(_chunks(order, prompts_per_call(cfg, n)), desc=desc, leave=False):
        part = [prompts[i] for i in chunk]
        if seed is not None:
            torch.manual_seed(chunk_seed(seed, part))
        for i, samples in zip(chunk, _generate_chunk(model, tokenizer, part, n, cfg, greedy, logit_budget)):
            results[i] = samples
    return [results[i] for i in range(len(prompts))]
