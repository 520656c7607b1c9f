"""One tokenization for sampling, verification and training, on tokenizers of every paper family.

The ids are read from the stages themselves: the batch generation conditions on, the batch the
verifier scores, and a batch of TRL's collator from the SFTTrainer sirt builds.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile

import pytest
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from sirt.config.defaults import default
from sirt.config.schema import DatasetSchema
from sirt.loop.organism import solve_rows, teaching_task, verify_rows
from sirt.models.load import char_tokenizer, end_at_turn_end
from sirt.models.prompts import solver_prompt, verifier_schema
from sirt.models.tokens import IGNORE, encode
from sirt.stages.identity import stage_ids, tiny_model, token_identity
from sirt.stages.training import trainer
from sirt.stages.verification import Verifier
from tests.tokenizer_families import FAMILIES, TURN_ENDS, family_config

QUESTION, RESPONSE = "What is 2 + 3?", "2 + 3 = 5\n#### 5"


def family(name: str):
    """(tokenizer, config, prompt) of a family, the tokenizer's EOS set as a named model's is."""
    config = family_config(name)
    tokenizer = end_at_turn_end(FAMILIES[name](), config.model)
    return tokenizer, config, solver_prompt(QUESTION, tokenizer, config)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_stage_feeds_the_model_the_same_ids(name):
    tokenizer, config, prompt = family(name)
    stages = stage_ids(tokenizer, prompt, RESPONSE, verifier_schema(tokenizer, config), config.trainer)
    ok, detail = token_identity(tokenizer, stages, prompt, RESPONSE)
    assert ok, detail
    n_prompt = len(encode(tokenizer, prompt))
    bos = tokenizer.bos_token_id
    assert stages["train"] == stages["generate"]
    assert stages["train"].count(bos) == (1 if bos is not None else 0)  # the BOS the model wants, once
    assert stages["train_labels"][:n_prompt] == [IGNORE] * n_prompt  # loss on the response only
    assert stages["train_labels"][n_prompt:] == stages["train"][n_prompt:]
    assert tokenizer.convert_ids_to_tokens(stages["train"][-1]) == TURN_ENDS[name]  # trained to stop where it stops
    assert stages["verify"][: len(stages["train"]) - 1] == stages["train"][:-1]


def test_identity_check_names_a_double_bos():
    tokenizer, config, prompt = family("llama3")
    stages = stage_ids(tokenizer, prompt, RESPONSE, verifier_schema(tokenizer, config), config.trainer)
    doubled = {**stages, "train": [tokenizer.bos_token_id, *stages["train"]]}
    ok, detail = token_identity(tokenizer, doubled, prompt, RESPONSE)
    assert not ok and detail.startswith("train differs from generate at token 1 ")
    assert "<|begin_of_text|>" in detail


def test_the_verifier_reads_the_prompt_and_response_as_sampled():
    """Tokenized together, ``"A: "`` + ``"2 + 3..."`` merge into ``"Ġ2"``; the verifier keeps the ids
    generation conditioned on and the template's own text after them (escaped braces as one)."""
    tokenizer, config, prompt = family("byte_bpe")
    cfg = dataclasses.replace(verifier_schema(tokenizer, config), template="{prompt}{response}\nCorrect {{yes}}? ")
    batch = Verifier(tokenizer, cfg).encode([(prompt, RESPONSE), (prompt, "5")])
    ids = batch["input_ids"][0].tolist()
    head = encode(tokenizer, prompt) + encode(tokenizer, RESPONSE)
    assert ids[: len(head)] == head and tokenizer.decode(ids[len(head) :]) == "\nCorrect {yes}? "
    padding = len(encode(tokenizer, RESPONSE)) - len(encode(tokenizer, "5"))
    assert batch["attention_mask"][1].tolist() == [0] * padding + [1] * (len(ids) - padding)  # on the left


def organism_rows(dataset: DatasetSchema) -> list[dict[str, str]]:
    """Teaching rows of the organism, as it is taught: solutions and verdicts."""
    rng = random.Random(0)
    problems = teaching_task(dataset).problems(8, dataset, 0)
    responses = [[f"{p.answer}\n#### {p.answer}", "1 + 1 = 3\n#### 3"] for p in problems]
    teach = default("model.teach", slip_rate=0.5)
    return solve_rows(problems, dataset, teach, rng) + verify_rows(problems, responses, dataset, rng, 0.25, 1)


def test_the_organism_trains_on_the_ids_trl_made_of_its_text_rows():
    """The default run's numbers stay: for the char tokenizer, the ids handed to TRL are those TRL
    made itself from {prompt, completion} text rows (EOS appended, loss on the completion)."""
    _, config, _ = family("organism")
    tokenizer, rows = char_tokenizer(), organism_rows(config.dataset)
    cfg = dataclasses.replace(config.trainer, batch_size=len(rows))
    with tempfile.TemporaryDirectory() as out:
        ours = trainer(tiny_model(tokenizer), tokenizer, rows, cfg, seed=0, lora=None, output_dir=out)
        args = SFTConfig(output_dir=out, max_length=cfg.max_length, per_device_train_batch_size=len(rows), seed=0,
                         data_seed=0, report_to=[], use_cpu=True, bf16=False)
        text = SFTTrainer(model=tiny_model(tokenizer), args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer)
        batches = [next(iter(t.get_train_dataloader())) for t in (ours, text)]
    assert len(rows) > 8 and batches[0]["input_ids"].tolist() == batches[1]["input_ids"].tolist()
    assert batches[0]["labels"].tolist() == batches[1]["labels"].tolist()
    assert batches[0]["attention_mask"].tolist() == batches[1]["attention_mask"].tolist()


def test_identity_check_names_a_target_cut_by_max_length():
    tokenizer, config, prompt = family("llama3")
    cut = dataclasses.replace(config.trainer, max_length=45)
    stages = stage_ids(tokenizer, prompt, RESPONSE, verifier_schema(tokenizer, config), cut)
    ok, detail = token_identity(tokenizer, stages, prompt, RESPONSE)
    assert not ok and detail == "train stops after 45 of generate's 54 tokens (trainer.max_length cuts it?)"
