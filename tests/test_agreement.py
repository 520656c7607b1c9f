"""The sampler agreement probe (backend_logprob_err): samples re-scored by the model being trained."""

from __future__ import annotations

import pytest
import torch

from sirt.config.defaults import default
from sirt.models.load import char_tokenizer, tiny_llama
from sirt.stages import agreement
from sirt.stages.generation import LOGIT_BUDGET, sample
from sirt.stages.samples import Sample

PROMPTS = ["Q: 7\nA: ", "Q: 1+2\nA: ", "Q: 12+3-4\nA: "]


def tiny(seed: int = 0):
    tokenizer = char_tokenizer()
    shape = default("model.tiny", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
    return tiny_llama(shape, len(tokenizer), seed=seed).eval(), tokenizer


@pytest.mark.parametrize("logit_budget", [LOGIT_BUDGET, 0])  # generate's own logits, or the chunked pass
def test_the_transformers_sampler_agrees_with_the_plain_forward(logit_budget):
    model, tok = tiny()
    torch.manual_seed(0)
    samples = sample(model, tok, PROMPTS, default("generation", n_samples=4, max_new_tokens=16),
                     logit_budget=logit_budget)
    assert all(len(s.token_ids) == len(s.token_logprobs) == s.n_tokens for row in samples for s in row)
    assert agreement.logprob_err(model, tok, PROMPTS, samples, 8) < 1e-5


def test_samples_of_another_model_are_caught():
    model, tok = tiny(seed=0)
    torch.manual_seed(0)
    samples = sample(model, tok, PROMPTS, default("generation", n_samples=4, max_new_tokens=16))
    other, _ = tiny(seed=1)
    err = agreement.logprob_err(other, tok, PROMPTS, samples, 8)
    assert err > agreement.TOLERANCE["float32"]
    with pytest.raises(agreement.SamplerMismatch) as caught:
        agreement.check(3, err, agreement.tolerance(None, other.dtype), "transformers")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("round 3: ")
    agreement.check(3, 1e-6, agreement.tolerance(None, other.dtype), "transformers")  # within: no error


def test_the_probe_spreads_over_prompts_and_samples_and_skips_empty_ones():
    def row(*lengths):
        return [Sample("x" * n, n, 0.0, [5] * n, [0.0] * n) for n in lengths]

    samples = [row(3, 3), row(0, 2), row(1, 1), row(2, 2)]
    assert agreement.probe_choice(samples, 2) == [(0, 0), (2, 1)]
    assert agreement.probe_choice(samples, 8) == [(0, 0), (1, 1), (2, 0), (3, 1)]  # prompt 1: its sample 0 is empty
    assert agreement.probe_choice(samples, 0) == []


def test_the_tolerance_follows_the_dtype_unless_set():
    assert agreement.tolerance(None, torch.float32) == 1e-3
    assert agreement.tolerance(None, torch.bfloat16) > agreement.tolerance(None, torch.float16)
    assert agreement.tolerance(0.01, torch.bfloat16) == 0.01


@pytest.mark.slow
def test_every_round_logs_the_probe_and_a_disagreement_stops_the_run(micro_loop, tmp_path):
    rows = micro_loop(tmp_path / "ok", "verifier.sigma=0", "logger=none", "fit.enabled=false")
    assert all(r["n_train_rows"] > 0 for r in rows[1:])  # trained rounds: the probe reads model_t
    assert all(0 <= r["backend_logprob_err"] <= 1e-4 for r in rows), [r["backend_logprob_err"] for r in rows]
    with pytest.raises(agreement.SamplerMismatch, match=r"^round 0: the transformers sampler"):
        micro_loop(tmp_path / "strict", "generation.probe_tolerance=1e-12", "logger=none", "fit.enabled=false")
    assert not (tmp_path / "strict" / "metrics.jsonl").exists()  # the round that disagreed is not committed
