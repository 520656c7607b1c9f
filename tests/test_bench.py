"""sirt.bench: the app's report, and that the naive baseline computes what the fast path computes.

Speed itself is measured by the bench, never asserted here: a shared machine makes timings noisy.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from sirt.config.defaults import default
from sirt.models.load import char_tokenizer, tiny_llama
from sirt.perf.flops import ModelShape, matmul_flops_per_s
from sirt.perf.memory import child_peak_rss_mb, passthrough
from sirt.perf.naive import logprob_agreement, naive_verdict, parse_verdict, response_ids, verdict_agreement
from sirt.stages.generation import LOGIT_BUDGET, sample
from sirt.stages.samples import Sample
from sirt.stages.verification import Verifier
from tests.conftest import MICRO, ROOT, sirt_command

TINY = default("model.tiny", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
PROMPTS = ["Q: 1+2\nA: ", "Q: 12+3-4\nA: ", "Q: 7\nA: ", "Q: 5-1+9-3\nA: "]  # unequal: left padding

# The micro loop, with the bench's own parts shrunk: 2 naive questions, 4 scaling points, a small matmul.
MICRO_BENCH = [*MICRO, "rounds=1", "bench.threads=1", "bench.naive_prompts=2", "bench.matmul_size=256",
               "bench.matmul_repeats=2", "bench.scaling.base_questions=2", "bench.scaling.questions=[2,4]",
               "bench.scaling.n_samples=[2]", "bench.scaling.max_new_tokens=[8]", "bench.logprob_pass.rows=[16]",
               "bench.logprob_pass.steps=4"]


@pytest.fixture(scope="module")
def random_model():
    """An untaught organism-shaped LM: enough to compare two ways of computing the same numbers."""
    tokenizer = char_tokenizer()
    return tiny_llama(TINY, len(tokenizer), seed=0).eval(), tokenizer


def constant_model(tokenizer, token: str) -> torch.nn.Module:
    """A model whose next token is ``token`` whatever the input: a clear verdict by construction."""
    model = tiny_llama(TINY, len(tokenizer), seed=0).eval()
    head = torch.nn.Linear(TINY.hidden_size, len(tokenizer), bias=True)
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.zero_()[tokenizer.convert_tokens_to_ids(token)] = 30.0
    model.lm_head = head
    return model


def test_bench_app_writes_the_report(tmp_path, cache_dir):
    run_dir = tmp_path / "bench"
    result = subprocess.run(sirt_command("bench", f"hydra.run.dir={run_dir}", *MICRO_BENCH), cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run_dir / "bench.json").read_text())
    for path in ("fast", "naive"):
        assert report[path]["samples_per_s"] > 0 and report[path]["tokens_per_s"] > 0
        assert 0 < report[path]["flop_fraction"] < 1
    assert report["fast"]["samples"] == 8 * 4 and report["naive"]["samples"] == 2 * 4
    assert report["workload"]["naive_questions"] == 2
    assert report["speedup"] == pytest.approx(report["fast"]["samples_per_s"] / report["naive"]["samples_per_s"])
    assert set(report["stages"]) == {"generate", "verify", "select", "train", "eval"}
    assert report["largest_stage"] in report["stages"]
    assert report["machine"]["flops_per_s"] > 0 and report["flop_bound_fraction"] > 0
    assert [(r["axis"], r["questions"], r["N"], r["max_new_tokens"]) for r in report["scaling"]] == [
        ("questions", 2, 4, 24), ("questions", 4, 4, 24), ("N", 2, 2, 24), ("length", 2, 4, 8)]
    assert report["agreement"]["logprob_sequences"] + report["agreement"]["logprob_skipped"] == 2 * 4
    if report["agreement"]["logprob_sequences"]:
        assert report["agreement"]["logprob_max_abs_diff"] < 1e-3
    memory = report["memory"]
    assert 0 < memory["train_peak_rss_mb"] < memory["train_rss_limit_mb"] and memory["train_under_limit"]
    assert [json.loads(x)["round"] for x in (run_dir / "train_rss/metrics.jsonl").read_text().splitlines()] == [0, 1]
    assert "| stage |" in (run_dir / "bench.md").read_text()
    [point] = report["logprob_pass"]
    assert point["row_chunks"]["largest_call_logits_mib"] <= point["logit_budget_mib"]
    assert point["positions_only"]["largest_call_logits_mib"] > point["logit_budget_mib"]
    assert point["max_abs_diff"] < 1e-4


@pytest.mark.parametrize("logit_budget", [LOGIT_BUDGET, 0])
def test_naive_and_fast_logprobs_agree_when_teacher_forced(random_model, logit_budget):
    """The fast path reads log pi(y|x) from its sampling pass (raw logits, whatever the sampling
    settings) or, over the logit budget, from a batched pass a position at a time; a plain forward
    pass over each sequence under the plain model must agree."""
    model, tokenizer = random_model
    gen = default("generation", n_samples=6, max_new_tokens=16, temperature=0.7, top_k=20)
    torch.manual_seed(0)
    samples = sample(model, tokenizer, PROMPTS, gen, logit_budget=logit_budget)
    agreement = logprob_agreement(model, tokenizer, PROMPTS, samples, gen.max_new_tokens)
    assert agreement["logprob_sequences"] >= 6
    assert agreement["logprob_max_abs_diff"] < 1e-4


@pytest.mark.parametrize("method,token,expected", [("tf", "y", 1.0), ("tf", "n", 0.0), ("qe", "9", 1.0),
                                                   ("qe", "0", 0.0)])
def test_verification_paths_agree_on_clear_verdicts(method, token, expected):
    tokenizer = char_tokenizer()
    model = constant_model(tokenizer, token)
    cfg = default("verifier", method=method, words=["y", "n"])
    pairs = [(p, "3 #### 3") for p in PROMPTS]
    fast = Verifier(tokenizer, cfg).score(model, pairs)
    naive = [naive_verdict(model, tokenizer, cfg, p, r, tokens=3, gen=default("generation")) for p, r in pairs]
    assert naive == [expected] * len(pairs)
    assert fast == pytest.approx([expected] * len(pairs), abs=1e-3)
    assert verdict_agreement(fast, naive, sigma=0.5, margin=0.3)["verdict_agreement"] == 1.0


@pytest.mark.parametrize("text,method,expected", [
    (" yes, it is", "tf", 1.0), ("No", "tf", 0.0), ("maybe", "tf", None),
    ("9", "qe", 1.0), (" 0 out of 9", "qe", 0.0), ("3", "qe", 3 / 9), ("x", "qe", None)])
def test_parse_verdict(text, method, expected):
    assert parse_verdict(text, default("verifier", method=method)) == expected


def test_response_ids_recovers_tokens_only_when_the_text_tells_them():
    tokenizer = char_tokenizer()
    ab = tokenizer("ab", add_special_tokens=False)["input_ids"]
    assert response_ids(tokenizer, Sample("ab", 3, 0.0), max_new_tokens=8) == [*ab, tokenizer.eos_token_id]
    assert response_ids(tokenizer, Sample("ab", 2, 0.0), max_new_tokens=2) == ab  # ran to the cap
    assert response_ids(tokenizer, Sample("ab", 3, 0.0), max_new_tokens=3) is None  # EOS or a dropped special
    assert response_ids(tokenizer, Sample("ab", 4, 0.0), max_new_tokens=8) is None  # a special token mid-text


def test_flop_formula_counts_every_matmul_weight(random_model):
    model, tokenizer = random_model
    d, inner, vocab = TINY.hidden_size, TINY.intermediate_size, len(tokenizer)
    shape = ModelShape.of(model)
    assert shape.matmul_params == TINY.num_layers * (4 * d * d + 3 * d * inner) + vocab * d  # + the tied head
    assert shape.forward_flops(10) == 2 * shape.matmul_params * 10 + 4 * TINY.num_layers * d * 55


def test_matmul_rate_is_positive():
    machine = matmul_flops_per_s(size=128, repeats=2, device=torch.device("cpu"), dtype=torch.float32)
    assert machine["flops_per_s"] > 0 and machine["dtype"] == "float32"


def test_passthrough_keeps_the_run_overrides_only():
    given = ["model.tiny.hidden_size=32", "bench.naive_prompts=2", "+bench.x=1", "rounds=3", "verifier=qe"]
    assert passthrough(given, {"rounds", "logger"}) == ["model.tiny.hidden_size=32", "verifier=qe"]


def test_child_peak_rss_is_the_childs_own(tmp_path):
    """A child forked from a large parent inherits the parent's high-water mark in ru_maxrss;
    the probe must report the child's own peak."""
    ballast = bytearray(600 * 2**20)
    ballast[:: 4096] = b"x" * len(ballast[:: 4096])  # resident, not just reserved
    peak = child_peak_rss_mb([sys.executable, "-c", "x = bytearray(50 * 2**20); x[::4096] = b'y' * len(x[::4096])"],
                             tmp_path / "child.log")
    assert 50 < peak < 300
