"""``python -m sirt.gpu_check``: its plan on any machine, and its runs' settings on a CPU-sized architecture."""

from __future__ import annotations

import subprocess

import pytest

from sirt import gpu_check
from sirt.config.compose import compose
from sirt.loop.checks import validated
from sirt.loop.trainer import run
from tests.conftest import ROOT, sirt_command

SMALL = {**gpu_check.LLAMA_3_1_8B, "vocab_size": 2048, "hidden_size": 64, "intermediate_size": 128,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
         "rope_scaling": None}
CPU_SIZED = ["dataset.n_train=4", "dataset.n_test=2", "generation.n_samples=4", "generation.pass_k=[1,4]",
             "generation.max_new_tokens=16", "model.dtype=float32", "rounds=1", "verifier.sigma=0"]


def test_the_dry_run_prints_the_plan_and_the_memory_estimate_of_the_8b_check(tmp_path):
    proc = subprocess.run([*sirt_command("gpu_check"), "--dry-run", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "Llama-3.1-8B architecture (8.03B parameters" in out
    assert "64 prompts x N = 16 x 512 new tokens = 524288 sampled tokens a round" in out
    assert "memory of a round, estimated (GiB): weights 15.0" in out  # 8.03e9 bf16 weights
    assert "within an 80 GiB H100" in out
    assert not (tmp_path / "gpu_check.json").exists()


def test_the_checks_settings_run_the_loop_on_a_small_random_architecture(tmp_path, cache_dir):
    """The same settings on an architecture a CPU can run: random weights from a config, a tokenizer of the
    vocabulary's ids, paper 1's generation and trainer groups; every round probes the sampler."""
    model_dir = gpu_check.write_model_dir(tmp_path / "model", SMALL)
    config = validated(compose(*gpu_check.settings(model_dir, "transformers", CPU_SIZED)))
    assert config.model.random_init and config.generation.max_new_tokens == 16
    rows = run(config, tmp_path / "run", "gpu_check")
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[1]["n_train_rows"] > 0
    assert all(r["backend_logprob_err"] <= 1e-4 for r in rows)
    figures = gpu_check.per_round(rows)
    assert all(f["generate_tok_s"] > 0 and "generate" in f["seconds"] for f in figures)


@pytest.mark.parametrize("asked, expected", [(["vllm"], ["vllm"]), (None, ["transformers"])])
def test_the_backends_default_to_those_installed(asked, expected):
    import importlib.util

    if asked is None and importlib.util.find_spec("vllm"):
        expected = ["transformers", "vllm"]
    assert gpu_check.backends(asked) == expected
