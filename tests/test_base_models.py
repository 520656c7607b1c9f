"""Base models (no chat template): few-shot prompts and verifier examples, and stop strings.

A base model posed a bare question rambles past its answer and judges every answer right; worked
examples, judged examples and a stop string fix that (sirt.models.prompts.posed_config). The
defaults (few_shot 0, no stop) must leave the organism's prompts byte for byte as they were.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from sirt.config.compose import compose
from sirt.config.errors import ConfigError
from sirt.config.schema import Config, GenerationSchema
from sirt.config.validate import validate
from sirt.models.load import char_tokenizer, tiny_llama
from sirt.models.prompts import few_shot_split, posed_config, solver_prompt, verifier_schema
from sirt.models.tokens import encode
from sirt.stages.generation import cut_at_stop, sample, token_logprobs_of
from sirt.stages.verification import verification_prompt
from sirt.tasks.registry import is_correct, load_splits
from tests.conftest import MICRO, ROOT
from tests.tokenizer_families import base_bos, byte_bpe, chatml

GSM8K = ["dataset=gsm8k", f"dataset.path='{ROOT}/tests/fixtures/gsm8k_{{split}}.jsonl'", "model.chat_template=false"]


def gsm8k(*overrides: str) -> Config:
    return validate(compose(*GSM8K, "verifier=tf", *overrides))


def test_defaults_leave_the_organism_prompts_byte_identical():
    config, tokenizer = validate(compose()), char_tokenizer()
    assert (config.dataset.few_shot, config.dataset.stop, config.generation.stop) == (0, [], [])
    train, _ = load_splits(config.dataset)
    shots, pool = few_shot_split(train, config.dataset)
    assert shots == [] and pool == train
    assert posed_config(config, tokenizer, shots) is config
    assert solver_prompt("2 + 3", tokenizer, config) == "Q: 2 + 3\nA: "
    assert verifier_schema(tokenizer, config).template == "{prompt}{response}\nRating: "  # the default: QE


def test_shots_are_drawn_reproducibly_and_held_out_of_the_pool():
    config = gsm8k("dataset.few_shot=3")
    train, _ = load_splits(config.dataset)
    shots, pool = few_shot_split(train, config.dataset)
    assert len(shots) == 3 and len(pool) == len(train) - 3  # the fixture's questions are distinct
    assert not {p.question for p in shots} & {p.question for p in pool}
    assert (shots, pool) == few_shot_split(train, config.dataset)  # every round and resume: the same
    other = gsm8k("dataset.few_shot=3", "dataset.seed=7")
    assert few_shot_split(train, other.dataset)[0] != shots  # dataset.seed draws them
    with pytest.raises(ConfigError, match=r"dataset\.few_shot"):
        few_shot_split(train[:3], config.dataset)


def test_few_shot_prompt_shows_worked_examples_then_the_question():
    config, tokenizer = gsm8k("dataset.few_shot=2"), base_bos()  # base_bos adds a BOS like Llama's
    train, _ = load_splits(config.dataset)
    shots, pool = few_shot_split(train, config.dataset)
    posed = posed_config(config, tokenizer, shots)
    prompt = solver_prompt(pool[0].question, tokenizer, posed)
    template = config.dataset.prompt_template
    expected = "".join(template.format(question=s.question) + s.answer + "\n\n" for s in shots)
    assert prompt == "<s>" + expected + template.format(question=pool[0].question)
    assert prompt.count("<s>") == 1


def test_plain_verifier_sees_a_right_and_a_wrong_judged_example_per_shot():
    config, tokenizer = gsm8k("dataset.few_shot=2"), base_bos()
    train, _ = load_splits(config.dataset)
    shots, pool = few_shot_split(train, config.dataset)
    posed = posed_config(config, tokenizer, shots)
    verifier = verifier_schema(tokenizer, posed)
    prompt = solver_prompt(pool[0].question, tokenizer, posed)
    text = verification_prompt(verifier, prompt, "x = 1\n#### 1")
    judged, real = text.split(prompt)
    assert real == "x = 1\n#### 1\nCorrect? " and judged.startswith("<s>")
    blocks = judged.removeprefix("<s>").split("\n\n")[:-1]
    assert len(blocks) == 4 and [b[-3:].strip() for b in blocks] == ["yes", "no", "no", "yes"]
    for block in blocks:
        shot = next(s for s in shots if s.question in block)
        response = block.split("Answer: ", 1)[1].rsplit("\nCorrect? ", 1)[0]
        assert is_correct(response, shot) == block.endswith("yes")


def test_chat_models_are_unchanged():
    config = validate(compose(*GSM8K[:2], "dataset.few_shot=2", "model.chat_template=true"))
    train, _ = load_splits(config.dataset)
    shots, _ = few_shot_split(train, config.dataset)
    assert posed_config(config, chatml(), shots) is config


def test_plain_models_take_the_datasets_stop_unless_generation_names_one():
    tokenizer = base_bos()
    assert posed_config(gsm8k(), tokenizer, []).generation.stop == ["\nQuestion:", "\nSolve the problem"]
    assert posed_config(gsm8k("generation.stop=[END]"), tokenizer, []).generation.stop == ["END"]
    assert posed_config(gsm8k("dataset.stop=[]"), tokenizer, []).generation.stop == []


@pytest.mark.parametrize("override, field", [("dataset.few_shot=1", "dataset.few_shot"),
                                             ("dataset.few_shot=-1", "dataset.few_shot"),
                                             ("generation.stop=['']", "generation.stop")])
def test_bad_few_shot_and_stop_settings_are_refused(override, field):
    with pytest.raises(ConfigError, match=re.escape(field)):
        validate(compose("generation.stop=[END]" if field == "generation.stop" else "seed=0", override))


def test_cut_at_stop_keeps_whole_tokens_before_the_stop():
    tokenizer = byte_bpe()
    ids = encode(tokenizer, "The sum is 5.\n#### 5\n\nQuestion: What is 2 + 3?")
    text, kept = cut_at_stop(tokenizer, ids, ["\nQuestion:", "What"])
    assert text.rstrip("\n") == "The sum is 5.\n#### 5" and "Question" not in text
    assert tokenizer.decode(ids[:kept]) == text and len(tokenizer.decode(ids[: kept + 1])) > len(text)
    assert cut_at_stop(tokenizer, ids, ["nowhere"]) is None
    assert cut_at_stop(tokenizer, ids, ["The"]) == ("", 0)


@pytest.mark.parametrize("budget, pad_is_eos", [(2**30, False), (0, True)])  # generate's logits, the pass
def test_stop_cuts_text_tokens_and_log_probs_together(budget, pad_is_eos):
    """Where pad = EOS (SmolLM2), a stopped response is padded with EOS: it is cut all the same."""
    tokenizer, base = char_tokenizer(), validate(compose()).generation
    if pad_is_eos:
        tokenizer.pad_token = tokenizer.eos_token
    model = tiny_llama(validate(compose()).model.tiny, len(tokenizer), seed=0).eval()
    stop = ["e", "a", "o", "i"]
    cfg = GenerationSchema(**{**base.__dict__, "max_new_tokens": 24, "stop": stop})
    prompts = ["Q: 2 + 3\nA: ", "Q: 4 * 1 - 2\nA: "]
    torch.manual_seed(3)
    cut = sample(model, tokenizer, prompts, cfg, n=4, logit_budget=budget)
    torch.manual_seed(3)
    whole = sample(model, tokenizer, prompts, GenerationSchema(**{**cfg.__dict__, "stop": []}), n=4,
                   logit_budget=budget)
    n_cut = 0
    for prompt, row, full_row in zip(prompts, cut, whole):
        for s, full in zip(row, full_row):
            assert not any(x in s.text for x in stop) and full.text.startswith(s.text)
            if s.n_tokens == full.n_tokens:  # no stop string: the same response
                assert (s.text, s.logprob) == (full.text, pytest.approx(full.logprob, abs=1e-4))
                continue
            n_cut += 1
            ids = torch.tensor([encode(tokenizer, s.text)])
            assert s.n_tokens == ids.shape[1] < full.n_tokens  # the mask ends at the stop
            p = torch.tensor([encode(tokenizer, prompt)])
            expected = token_logprobs_of(model, p, torch.ones_like(p), ids).sum().item() if s.n_tokens else 0.0
            assert s.logprob == pytest.approx(expected, abs=1e-4)
    assert n_cut >= 2


def test_loop_poses_few_shot_prompts_without_asking_the_shots(micro_loop, tmp_path):
    rows = micro_loop(tmp_path, "dataset.few_shot=2", "rounds=1", "logger=none", "fit.enabled=false")
    assert len(rows) == 2
    config = validate(compose(*MICRO, "dataset.few_shot=2"))
    train, _ = load_splits(config.dataset)
    shots, pool = few_shot_split(train, config.dataset)
    records = [json.loads(line) for line in (tmp_path / "rounds" / "0" / "selections.jsonl").read_text().splitlines()]
    head = "".join(config.dataset.prompt_template.format(question=s.question) + s.answer + "\n\n" for s in shots)
    assert len(records) == len(pool) and all(r["prompt"].startswith(head) for r in records)
    assert not any(r["prompt"].endswith(config.dataset.prompt_template.format(question=s.question))
                   for r in records for s in shots)
