"""The paper's datasets: GSM8K, MATH and ProntoQA as (train, test) lists of :class:`Problem`.

Rows come from the first source a config names: ``dataset.path`` (a local JSONL pattern with
``{split}``, in the dataset's own hub format, so offline users and tests need no hub), else
the hub copy ``dataset.hub.id`` read with ``datasets.load_dataset`` (the test split from its own copy
``dataset.hub.test_id`` when one is named: MATH's standard MATH-500), else (ProntoQA only) the
generator of :mod:`sirt.tasks.prontoqa`. One converter per dataset turns a row of that format into a
Problem whose ``kind`` names its answer checker, so the same code serves every source.
Each split is a seeded draw of ``n_train`` / ``n_test`` rows (all of them when there are no more):
the hub's MATH concatenates subjects in order, so a head slice would not be a sample. Local files
are checked line by line (:func:`sirt.tasks.rows.read_rows`: UTF-8, JSON, the format's fields)
before any model loads, and their duplicate questions and train questions that are also in the
test file are dropped.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from sirt.config.errors import InputError
from sirt.config.schema import DatasetSchema, HubSchema
from sirt.tasks import prontoqa
from sirt.tasks.answers import final_number
from sirt.tasks.problem import Problem
from sirt.tasks.rows import drop_repeats, read_rows, row_problem, split_path, text_field

CALCULATOR_RE = re.compile(r"<<[^<>]*>>")


LEVEL_RE = re.compile(r"(\d+)")


class DatasetUnavailable(InputError):
    """Rows that cannot be read here; the message says how to point dataset.path at a local copy."""


def gsm8k_problem(row: dict) -> Problem:
    """GSM8K ``{question, answer}``; the level is the number of solution steps (lines before ``####``).

    The calculator annotations ``<<48/2=24>>`` are stripped: they are GSM8K's tool-use markup,
    not text a model should learn to write when the reference is used as a training target.
    """
    question, answer = text_field(row, "question"), CALCULATOR_RE.sub("", text_field(row, "answer"))
    if "####" not in answer or final_number(answer) is None:
        raise ValueError("field 'answer' has no final '#### <number>'")
    steps = [line for line in answer.split("####", 1)[0].splitlines() if line.strip()]
    return Problem(question, answer, max(len(steps), 1), kind="gsm8k")


def math_problem(row: dict) -> Problem:
    """MATH ``{problem, solution, level: "Level 3", type}``; the solution holds the ``\\boxed{}`` answer.

    A few hub rows have ``"Level ?"``; they get level 0 rather than a made-up difficulty.
    """
    problem, solution = text_field(row, "problem"), text_field(row, "solution")
    if "\\boxed" not in solution and "\\fbox" not in solution:
        raise ValueError("field 'solution' has no \\boxed{} answer")
    level = LEVEL_RE.search(str(row.get("level", "")))
    return Problem(problem, solution, int(level[1]) if level else 0, kind="math")


def prontoqa_problem(row: dict) -> Problem:
    """ProntoQA ``{context, question, options, answer: "A"}``; the reference is the proof, then ``#### True``.

    Hub rows carry no proof (``chain``); their reference is the verdict alone.
    """
    if not isinstance(row.get("options"), list) or not all(isinstance(o, str) for o in row["options"]):
        raise ValueError("field 'options' must be a list of strings like \"A) True\"")
    options = {option.split(")", 1)[0].strip(): option.split(")", 1)[1].strip() for option in row["options"]}
    letter = text_field(row, "answer").strip()
    if letter not in options:
        raise ValueError(f"field 'answer' {letter!r} names none of the options")
    label = options[letter]
    if label not in ("True", "False"):
        raise ValueError(f"answer option {label!r} is not True or False")
    question = f"{text_field(row, 'context')}\n{text_field(row, 'question')}"
    reference = " ".join(filter(None, [row.get("chain"), f"#### {label}"]))
    return Problem(question, reference, int(row.get("hops") or 1), kind="truefalse")


LOADERS: dict[str, Callable[[dict], Problem]] = {
    "gsm8k": gsm8k_problem,
    "math": math_problem,
    "prontoqa": prontoqa_problem,
}


def to_problems(rows: list[dict], convert: Callable[[dict], Problem], source: str,
                lines: list[int] | None = None) -> list[Problem]:
    """Convert rows; one clear error names the source and the first malformed row (its line in a file)."""
    problems = []
    for i, row in enumerate(rows):
        try:
            problems.append(convert(row))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
            where = f"{source}: line {lines[i]}" if lines else f"{source}: row {i}"
            raise InputError(f"{where}: {row_problem(err)}") from None
    return problems


def local_rows(pattern: str, split: str) -> tuple[list[dict], str, list[int]]:
    """All rows of the local JSONL for ``split``, checked line by line, and their line numbers."""
    path = split_path(pattern, split)
    rows, lines = read_rows(path)
    return rows, path, lines


def hub_source(hub: HubSchema, split: str) -> tuple[str, str, list[str | None], str]:
    """(field, hub id, configs, split name) of one split: the test split from ``hub.test_id`` when set
    (one config: MATH-500 is a single file), else every config of ``hub.id``."""
    if split == "test" and hub.test_id is not None:
        return "dataset.hub.test_id", hub.test_id, [None], hub.test_split
    return "dataset.hub.id", hub.id, hub.configs or [None], hub.train_split if split == "train" else hub.test_split


def hub_rows(cfg: DatasetSchema, split: str) -> tuple[list[dict], str, None]:
    """All rows of one split of the hub copy, every config (e.g. MATH's subjects) concatenated."""
    from datasets import load_dataset

    key, hub_id, configs, name = hub_source(cfg.hub, split)
    rows = []
    for config in configs:
        try:
            rows += list(load_dataset(hub_id, config, split=name))
        except (ConnectionError, OSError) as err:
            raise DatasetUnavailable(
                f"{key}={hub_id!r}: not available here ({type(err).__name__}); download it where there is "
                f"network or write JSONL in its format and set dataset.path=DIR/{cfg.name}_{{split}}.jsonl"
            ) from None
    return rows, f"{hub_id}[{name}]", None


def generated_rows(cfg: DatasetSchema, split: str, n: int) -> tuple[list[dict], str, None]:
    """ProntoQA rows from the generator; the test split avoids every train question."""
    if split == "train":
        return prontoqa.generate(n, cfg.levels, cfg.seed), "generated", None
    seen = {(r["context"], r["question"]) for r in prontoqa.generate(cfg.n_train, cfg.levels, cfg.seed)}
    fresh = [r for r in prontoqa.generate(2 * n, cfg.levels, cfg.seed + 1) if (r["context"], r["question"]) not in seen]
    return fresh[:n], "generated", None


def split_rows(cfg: DatasetSchema, split: str, n: int) -> tuple[list[dict], str, list[int] | None]:
    """The rows of one split from the first source the config names, a label for errors, and the
    rows' line numbers when they come from a file."""
    if cfg.path is not None:
        return local_rows(cfg.path, split)
    if cfg.hub is not None and cfg.hub.id is not None:
        return hub_rows(cfg, split)
    if cfg.name == "prontoqa":
        return generated_rows(cfg, split, n)
    raise InputError(f"dataset {cfg.name!r} needs dataset.hub.id or dataset.path (a local JSONL with {{split}})")


def seeded_draw(problems: list[Problem], n: int, seed: int) -> list[Problem]:
    """``n`` problems drawn without replacement in a seeded order (all of them if there are fewer)."""
    order = list(range(len(problems)))
    random.Random(seed).shuffle(order)
    return [problems[i] for i in order[:n]]


def load_splits(cfg: DatasetSchema) -> tuple[list[Problem], list[Problem]]:
    """(train, test) problems of a real dataset, ``n_train`` and ``n_test`` of them at most.

    From local files (``dataset.path``), duplicate questions and train questions that are also in
    the test file are dropped first, with a warning that counts them.
    """
    convert = LOADERS[cfg.name]
    splits = {}
    for split, n in (("train", cfg.n_train), ("test", cfg.n_test)):
        rows, source, lines = split_rows(cfg, split, n)
        splits[split] = to_problems(rows, convert, source, lines)
    if cfg.path is not None:
        splits["train"], splits["test"] = drop_repeats(splits["train"], splits["test"], cfg.path)
    return seeded_draw(splits["train"], cfg.n_train, cfg.seed), seeded_draw(splits["test"], cfg.n_test, cfg.seed + 1)
