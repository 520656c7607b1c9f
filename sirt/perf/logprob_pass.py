"""The teacher-forced log-prob pass at a large vocabulary: positions-only chunks (sirt before the row
chunks) against :func:`sirt.stages.generation.token_logprobs_of`, on a miniature with Llama 3's vocabulary.

A model of hidden size 16 and a 128,256-token vocabulary makes the output head the whole cost, as it is
the memory of an 8B model's logits: ``rows`` sampled responses of ``steps`` tokens, with a logit budget
below one position of all rows (the paper's 1,024 rows at 256 MiB), so the positions-only pass goes one
position per call with logits over the budget, and the row chunks take whole responses per call.
"""

from __future__ import annotations

import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from sirt.models.load import last_logits_only
from sirt.stages.generation import logit_bytes, token_logprobs_of

VOCAB = 128256
PROMPT = 12  # prompt tokens per row


def miniature(vocab: int = VOCAB, seed: int = 0) -> LlamaForCausalLM:
    """Llama 3's vocabulary on a model too small to matter (hidden size 16, one layer)."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=32, max_position_embeddings=1024, pad_token_id=0,
                         eos_token_id=1, bos_token_id=None, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


@torch.inference_mode()
def positions_only(model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, new: torch.Tensor,
                   logit_budget: int) -> torch.Tensor:
    """The pass before row chunks: all rows in every call, 16 positions per call, fewer (down to one, over
    the budget if need be) where their logits would pass ``logit_budget``."""
    context = torch.cat([prompt_ids, new[:, :-1]], dim=1)
    mask = torch.cat([prompt_mask, torch.ones_like(new[:, :-1])], dim=1)
    position_ids = (mask.cumsum(dim=-1) - 1).clamp_min(0)
    start = prompt_ids.shape[1] - 1
    cache = model(input_ids=context[:, :start], attention_mask=mask[:, :start], position_ids=position_ids[:, :start],
                  use_cache=True, **last_logits_only(model)).past_key_values
    step, parts = max(1, min(16, logit_budget // logit_bytes(model, len(new), 1))), []
    for s in range(start, context.shape[1], step):
        e = min(s + step, context.shape[1])
        out = model(input_ids=context[:, s:e], attention_mask=mask[:, :e], position_ids=position_ids[:, s:e],
                    past_key_values=cache, use_cache=True)
        cache, logits = out.past_key_values, out.logits.float()
        parts.append(logits.gather(-1, new[:, s - start : e - start].unsqueeze(-1)).squeeze(-1)
                     - logits.logsumexp(dim=-1))
    return torch.cat(parts, dim=1)


def calls(model: PreTrainedModel, fn) -> tuple[torch.Tensor, list[int], float]:
    """``fn()``, the logits bytes of each forward it made, and its seconds."""
    sizes: list[int] = []
    hook = model.register_forward_hook(lambda m, a, out: sizes.append(out.logits.numel() * 4))
    try:
        clock = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - clock
    finally:
        hook.remove()
    return result, sizes, seconds


def compare(rows: int, steps: int, vocab: int = VOCAB, budget: int | None = None) -> dict:
    """Both passes on the same ``rows`` x ``steps`` draws: tokens/s, forward calls, the largest call's logits
    and the largest log-prob difference between them. The budget defaults to half of one position of all
    rows (so one position per call is over it, as 1,024 rows x 128k are at 256 MiB)."""
    model = miniature(vocab)
    budget = budget or logit_bytes(model, rows, 1) // 2
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(2, vocab, (rows, PROMPT), generator=gen)
    new = torch.randint(2, vocab, (rows, steps), generator=gen)
    mask = torch.ones_like(prompt)
    out = {"rows": rows, "steps": steps, "vocab": vocab, "logit_budget_mib": budget / 2**20}
    results = {}
    for name, fn in (("positions_only", positions_only), ("row_chunks", token_logprobs_of)):
        results[name], sizes, seconds = calls(model, lambda fn=fn: fn(model, prompt, mask, new, budget))
        out[name] = {"tokens_per_s": rows * steps / seconds, "seconds": seconds, "forward_calls": len(sizes),
                     "largest_call_logits_mib": max(sizes) / 2**20}
    out["max_abs_diff"] = float((results["positions_only"] - results["row_chunks"]).abs().max())
    out["speedup"] = out["row_chunks"]["tokens_per_s"] / out["positions_only"]["tokens_per_s"]
    return out
