"""Preflight: the checks a new model must pass before a run spends hours on it, on local checkpoints.

The checkpoints are built here: a tiny LlamaForCausalLM over a Llama-3-like character tokenizer
(it adds BOS and its chat template renders BOS: :mod:`tests.tokenizer_families`), saved with
``save_pretrained`` and loaded by path as any named model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from sirt.config.compose import compose
from sirt.config.errors import InputError
from sirt.loop.checks import validated
from sirt.loop.preflight import (
    check_max_length,
    check_memory,
    check_special_tokens,
    check_verifier_tokens,
    memory_estimate,
    require,
    run_checks,
)
from sirt.models.load import end_at_turn_end
from sirt.models.prompts import solver_prompt
from sirt.stages.identity import tiny_model
from sirt.tasks.problem import Problem
from tests.conftest import ROOT, sirt_command
from tests.tokenizer_families import family_config, llama3

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
GSM8K = ["dataset=gsm8k", f"dataset.path='{ROOT}/tests/fixtures/gsm8k_{{split}}.jsonl'", "dataset.n_train=4",
         "dataset.n_test=2"]
PROBLEM = Problem("What is 2 + 3?", "2 + 3 = 5\n#### 5", 1)


def llama_dir(path: Path, dtype: torch.dtype = torch.float32, init: float = 0.02, seed: int = 0) -> Path:
    """A local checkpoint: a 1-layer, 32-wide LlamaForCausalLM and the ``llama3`` family's tokenizer.

    ``init`` is the weights' initial std: at 32 dimensions Llama's 0.02 keeps every logit within about
    +-0.6 of the others (the tied embeddings are that short), so no LoRA can make the model sure of anything.
    """
    tokenizer = llama3()
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=2048,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True, initializer_range=init)
    LlamaForCausalLM(config).to(dtype).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def local_llama(tmp_path_factory) -> Path:
    return llama_dir(tmp_path_factory.mktemp("llama") / "model")


def preflight(run_dir: Path, model_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = sirt_command("preflight", "model=hf", f"model.name_or_path={model_dir}", "model.chat_template=true",
                       *GSM8K, *overrides, f"hydra.run.dir={run_dir}")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=OFFLINE)


def chat_family() -> tuple[PreTrainedTokenizerBase, object]:
    """The llama3 tokenizer as a named model's (EOS moved to the template's end of turn) and its config."""
    config = family_config("llama3")
    return end_at_turn_end(llama3(), config.model), config


# --- the command line ----------------------------------------------------------------------------------------


def test_a_good_local_llama_passes_every_check(local_llama, tmp_path):
    result = preflight(tmp_path / "run", local_llama)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "preflight.json").read_text())
    assert report["ok"] is True
    assert set(report["checks"]) == {"token_identity", "verifier_tokens", "special_tokens", "memory", "max_length"}
    assert report["checks"]["token_identity"]["ok"], report["checks"]["token_identity"]["detail"]
    assert "identical in generate, verify, train" in report["checks"]["token_identity"]["detail"]
    assert "one BOS '<|begin_of_text|>'" in report["checks"]["special_tokens"]["detail"]
    assert "'<|eot_id|>'" in report["checks"]["special_tokens"]["detail"]  # the end of turn, not <|end_of_text|>
    assert "PASS  token_identity" in result.stdout


def test_verifier_words_sharing_a_first_token_exit_2_naming_the_check(local_llama, tmp_path):
    result = preflight(tmp_path / "run", local_llama, "verifier=tf", "verifier.words=[ab,ac]")
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith("sirt.preflight: failed: verifier_tokens ")
    report = json.loads((tmp_path / "run" / "preflight.json").read_text())
    assert report["ok"] is False and not report["checks"]["verifier_tokens"]["ok"]
    assert "share the first token" in report["checks"]["verifier_tokens"]["detail"]
    assert all(c["ok"] for name, c in report["checks"].items() if name != "verifier_tokens")


# --- the checks, in process ----------------------------------------------------------------------------------


def test_verifier_tokens_fail_on_shared_first_tokens_instead_of_crashing():
    tokenizer, config = chat_family()
    tf = dataclasses.replace(config, verifier=dataclasses.replace(config.verifier, method="tf", words=["ab", "ac"]))
    check = check_verifier_tokens(tokenizer, tf)
    assert not check["ok"] and "['ab', 'ac']" in check["detail"]
    good = dataclasses.replace(tf, verifier=dataclasses.replace(tf.verifier, words=["yes", "no"]))
    assert check_verifier_tokens(tokenizer, good)["ok"]
    qe = dataclasses.replace(config, verifier=dataclasses.replace(config.verifier, method="qe",
                                                                  ratings=["1", "10", "2"]))
    check = check_verifier_tokens(tokenizer, qe)
    assert not check["ok"] and "['1', '10']" in check["detail"]


def test_special_tokens_name_a_double_bos_and_an_eos_that_is_not_the_turn_end():
    tokenizer, config = chat_family()
    prompt = solver_prompt(PROBLEM.question, tokenizer, config)
    assert check_special_tokens(tokenizer, config, prompt, PROBLEM.answer)["ok"]
    doubled = check_special_tokens(tokenizer, config, tokenizer.bos_token + prompt, PROBLEM.answer)
    assert not doubled["ok"] and "two BOS" in doubled["detail"]
    raw = llama3()  # EOS <|end_of_text|>, as the tokenizer says, while the template ends a turn with <|eot_id|>
    check = check_special_tokens(raw, config, solver_prompt(PROBLEM.question, raw, config), PROBLEM.answer)
    assert not check["ok"] and "'<|eot_id|>'" in check["detail"]
    raw.pad_token = None
    assert "no pad token" in check_special_tokens(raw, config, prompt, PROBLEM.answer)["detail"]


def test_max_length_names_the_limit_a_long_sample_passes():
    tokenizer, config = chat_family()
    model = tiny_model(tokenizer)  # 4096 positions
    assert check_max_length(model, tokenizer, config, prompt_len=100)["ok"]
    short = dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, max_length=120))
    check = check_max_length(model, tokenizer, short, prompt_len=100)
    assert not check["ok"] and "trainer.max_length 120" in check["detail"]
    assert "max positions" in check_max_length(model, tokenizer, config, prompt_len=5000)["detail"]


def test_memory_grows_with_the_batches_and_fails_past_the_device():
    tokenizer, config = chat_family()
    model = tiny_model(tokenizer)
    small = memory_estimate(model, config, prompt_len=50, verify_len=100)
    gen = dataclasses.replace(config.generation, batch_size=config.generation.batch_size * 4)
    bigger = memory_estimate(model, dataclasses.replace(config, generation=gen), prompt_len=50, verify_len=100)
    assert bigger["generation"] > small["generation"] and bigger["weights"] == small["weights"]
    assert check_memory(model, config, prompt_len=50, verify_len=100)["ok"]
    huge = dataclasses.replace(config.generation, batch_size=2**40)
    check = check_memory(model, dataclasses.replace(config, generation=huge), prompt_len=50, verify_len=100)
    assert not check["ok"] and "lower generation.batch_size" in check["detail"]


def test_the_checks_leave_the_random_state_as_it_was():
    tokenizer, config = chat_family()
    problems = [PROBLEM, Problem("What is 4 + 4?", "4 + 4 = 8\n#### 8", 1)]
    torch.manual_seed(7)
    random.seed(7)
    expected = torch.rand(3), random.random()
    torch.manual_seed(7)
    random.seed(7)
    checks = run_checks(tiny_model(tokenizer), tokenizer, config, problems)
    assert all(c["ok"] for c in checks.values()), checks
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_require_raises_one_input_error_naming_the_failing_check():
    tokenizer, config = chat_family()
    bad = dataclasses.replace(config, verifier=dataclasses.replace(config.verifier, method="tf", words=["ab", "ac"]))
    with pytest.raises(InputError, match=r"^preflight failed \(verifier_tokens\): verifier_tokens: "):
        require(tiny_model(tokenizer), tokenizer, bad, [PROBLEM])


def test_the_run_stops_before_sampling_when_a_check_fails(local_llama, tmp_path):
    config = validated(compose("model=hf", f"model.name_or_path={local_llama}", "model.chat_template=true", *GSM8K,
                               "verifier=tf", "verifier.words=[ab,ac]", "logger=none", "fit.enabled=false",
                               "rounds=1"))
    from sirt.loop.trainer import run

    with pytest.raises(InputError, match=r"preflight failed \(verifier_tokens\)"):
        run(config, tmp_path / "run", "preflight")
    assert not (tmp_path / "run" / "rounds").exists() and not (tmp_path / "run" / "metrics.jsonl").exists()


# --- the done-when run: a bf16 Llama from a local directory, one round on CPU --------------------------------


@pytest.mark.slow
def test_a_bf16_llama_from_a_directory_lowers_its_u_s_by_training_on_its_picks(tmp_path):
    """Round 1 trains a LoRA on round 0's lowest-NLL picks (sigma 0: every sample may be picked) and merges it
    into the bf16 weights through fp32 masters; the model then samples answers it is surer of: U_s falls
    (measured: 124.2 -> 96.1)."""
    model_dir = llama_dir(tmp_path / "model", torch.bfloat16, init=0.2)
    run_dir = tmp_path / "run"
    overrides = ["model=hf", f"model.name_or_path={model_dir}", "model.chat_template=true", "model.dtype=bfloat16",
                 *GSM8K, "rounds=1", "generation.n_samples=4", "generation.pass_k=[1,4]",
                 "generation.max_new_tokens=32", "verifier.sigma=0", "trainer.lr=1e-2", "trainer.max_steps=30",
                 "logger=none", "fit.enabled=false", f"hydra.run.dir={run_dir}"]
    result = subprocess.run(sirt_command("train", *overrides), cwd=ROOT, capture_output=True, text=True,
                            timeout=900, env=OFFLINE)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1] and rows[1]["train_steps"] == 30
    assert rows[1]["U_s"] < rows[0]["U_s"] - 5, [(r["U_s"], r["U_s_tok"]) for r in rows]
    assert json.loads((run_dir / "rounds/1/model/config.json").read_text())["dtype"] == "bfloat16"
    assert (run_dir / "rounds/1/adapter/adapter_config.json").exists()
