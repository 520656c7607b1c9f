"""FLOPs and rates of a round: the machine's matmul limit, and how much of it sampling and verification reach.

Forward FLOPs over n positions = 2 * P_matmul * n + 4 * L * d_attn * n(n+1)/2 (see :data:`FLOP_FORMULA`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt.models.tokens import encode_all
from sirt.stages.samples import Sample

FLOP_FORMULA = ("forward FLOPs over n positions = 2 * P_matmul * n + 4 * L * d_attn * n(n+1)/2; "
                "a sample costs its prompt + response positions, a verification its verification prompt")


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP formula needs from a causal LM."""

    matmul_params: int
    layers: int
    attn_dim: int

    @classmethod
    def of(cls, model: PreTrainedModel) -> ModelShape:
        """Every Linear weight (a tied output head is a Linear too; the embedding lookup is not)."""
        c = model.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        return cls(linear, c.num_hidden_layers, c.num_attention_heads * head_dim)

    def forward_flops(self, positions: int) -> float:
        """FLOPs of a causal forward pass over ``positions`` tokens (with or without a KV cache)."""
        attended = positions * (positions + 1) / 2  # position i attends to i positions
        return 2.0 * self.matmul_params * positions + 4.0 * self.layers * self.attn_dim * attended


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_s(size: int, repeats: int, device: torch.device, dtype: torch.dtype) -> dict:
    """The achievable dense-matmul rate: the fastest of ``repeats`` products of two size x size
    matrices in the model's dtype (by default float32 on CPU, bf16 on a GPU), the bound for its FLOPs."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up: allocation, kernel choice
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return {"flops_per_s": 2.0 * size**3 / best, "size": size, "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(), "device": str(device)}


def prompt_lengths(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[int]:
    return [len(ids) for ids in encode_all(tokenizer, prompts)]


def generation_flops(shape: ModelShape, lengths: list[int], samples: list[list[Sample]]) -> float:
    """Useful FLOPs of sampling: every sample's prompt + response positions."""
    return sum(shape.forward_flops(p + s.n_tokens) for p, row in zip(lengths, samples) for s in row)


def verification_flops(shape: ModelShape, tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> float:
    """Useful FLOPs of verification: one forward pass over every verification prompt."""
    return sum(shape.forward_flops(n) for n in prompt_lengths(tokenizer, texts))


def rates(samples: list[list[Sample]], seconds: dict[str, float], gen_flops: float, peak: float) -> dict:
    """samples/s of the sampling-bound work (sample + log-prob + verdict), tokens/s of generation,
    and generation's achieved FLOP/s as a fraction of the machine's matmul rate."""
    n = sum(map(len, samples))
    tokens = sum(s.n_tokens for row in samples for s in row)
    total = sum(seconds.values())
    return {"samples": n, "tokens": tokens, "seconds": seconds, "samples_per_s": n / total,
            "tokens_per_s": tokens / seconds["generate"], "generate_samples_per_s": n / seconds["generate"],
            "generate_flops_per_s": gen_flops / seconds["generate"],
            "flop_fraction": gen_flops / seconds["generate"] / peak}
