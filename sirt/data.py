"""Tasks and splits: rows of ``{question, answer, level}`` with GSM8K-style answers.

Every answer ends in ``#### <number>`` so that one extractor serves the embedded arithmetic
task and GSM8K alike. The arithmetic task is the model organism's world: a chain of
``level`` additions/subtractions solved one step per line, so that a solution can be
checked step by step (which makes verifying easier than solving).

Data files from disk (``dataset.path``) are read by :func:`read_rows`, which checks them line
by line before any model loads: a bad file is one :class:`InputError` naming the file and line.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sirt import answers, graph
from sirt.config import ConfigError, DatasetSchema, InputError

log = logging.getLogger(__name__)
ANSWER_RE = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


@dataclass(frozen=True)
class Problem:
    """One task instance; ``answer`` is a full reference solution ending in ``#### n``.

    ``kind`` names the ground-truth checker in :data:`CHECKERS` (how a response is graded).
    """

    question: str
    answer: str
    level: int
    kind: str = "number"

    @property
    def target(self) -> str:
        """The final number of the reference solution."""
        value = extract_answer(self.answer)
        assert value is not None, f"reference solution has no '#### n': {self.answer!r}"
        return value


def extract_answer(text: str) -> str | None:
    """The number after the first ``####`` (GSM8K convention), normalised; None if absent."""
    match = ANSWER_RE.search(text)
    if match is None:
        return None
    number = match.group(1).replace(",", "")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return str(int(number)) if re.fullmatch(r"-?\d+", number) else number


def number_matches(response: str, problem: Problem) -> bool:
    """GSM8K-style check: the final numbers after ``####`` agree."""
    return extract_answer(response) == problem.target


CHECKERS: dict[str, Callable[[str, Problem], bool]] = {"number": number_matches, **answers.CHECKERS,
                                                        **graph.CHECKERS}


def is_correct(response: str, problem: Problem) -> bool:
    """Ground-truth check of a response against the reference, by the problem's kind."""
    return CHECKERS[problem.kind](response, problem)


# --- the embedded arithmetic task ----------------------------------------------------------


def arithmetic_problem(rng: random.Random, level: int, max_operand: int) -> Problem:
    """A chain of ``level`` +/- operations, kept non-negative, solved one operation per line.

    Each line evaluates the first operation and copies the rest (``7+9-8 -> 16-8 -> 8``): a
    scratchpad a small transformer can learn, and one whose every line can be checked.
    """
    total = rng.randint(1, max_operand)
    terms = []
    for _ in range(level):
        operand = rng.randint(1, max_operand)
        op = "-" if operand <= total and rng.random() < 0.5 else "+"
        total = total + operand if op == "+" else total - operand
        terms.append(f"{op}{operand}")
    question = f"{total - sum(int(t) for t in terms)}" + "".join(terms)
    return Problem(question=question, answer=solve_chain(question), level=level)


def solve_chain(expression: str, slip: Callable[[], bool] | None = None) -> str:
    """The scratchpad of ``expression``: one line per operation down to the total, then ``#### total``.

    ``slip`` models a bad habit: on a chain of three or more operations, ``slip()`` decides
    whether the solution stops one line early and reports the leading number of its last line
    as the answer (``...;6+4 #### 6`` where ``...;6+4;10 #### 10`` is right): it answers before
    the work is done. A checker sees it at a glance — a right scratchpad ends in the number it
    answers, the habit's still has an operation to do — while the solver's choice between the two
    is one token, so its most likely answer is wrong wherever the habit is its likelier continuation.
    """
    numbers = [int(x) for x in re.findall(r"[+-]?\d+", expression)]
    totals, rest = [numbers[0]], numbers[1:]
    for operand in rest:
        totals.append(totals[-1] + operand)
    lines = [f"{total}" + "".join(f"{x:+d}" for x in rest[i + 1 :]) for i, total in enumerate(totals[1:])]
    if slip is not None and len(rest) >= 3 and slip():
        return f"{';'.join(lines[:-1])} #### {totals[-2]}"
    return f"{';'.join(lines)} #### {totals[-1]}"


def arithmetic_split(n: int, levels: list[int], max_operand: int, seed: int) -> list[Problem]:
    """``n`` problems with levels drawn uniformly from ``levels``; reproducible from ``seed``."""
    rng = random.Random(seed)
    return [arithmetic_problem(rng, rng.choice(levels), max_operand) for _ in range(n)]


def generated_splits(
    make: Callable[[int, int], list[Problem]], cfg: DatasetSchema
) -> tuple[list[Problem], list[Problem]]:
    """(train, test) of a generated task; ``make(n, seed)`` gives n problems from the seed's stream.

    Test questions are drawn from ``seed + 1`` and skip the train questions, so the test split
    depends on ``n_train`` too: the organism's cache key hashes the held-out questions for that reason.
    """
    train = make(cfg.n_train, cfg.seed)
    seen = {p.question for p in train}
    test = [p for p in make(2 * cfg.n_test, cfg.seed + 1) if p.question not in seen][: cfg.n_test]
    return train, test


# --- loading ---------------------------------------------------------------------------------


def split_path(pattern: str, split: str) -> str:
    """The file of ``split`` that the ``dataset.path`` pattern names (``{split}`` filled in)."""
    try:
        return pattern.format(split=split)
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(f"dataset.path={pattern!r}: not a pattern with {{split}} alone ({err!r})") from None


def read_rows(path: str) -> tuple[list[dict], list[int]]:
    """The rows of a JSONL data file and their line numbers, checked line by line.

    Strict UTF-8, one JSON object per line (blank lines are skipped); a missing or empty file or
    a bad line raises InputError naming the file and the line. Read here rather than by
    ``datasets``, whose errors name neither.
    """
    if not Path(path).exists():
        raise InputError(f"dataset.path: {path} does not exist")
    try:
        raw_lines = Path(path).read_bytes().split(b"\n")
    except OSError as err:
        raise InputError(f"dataset.path: {path} cannot be read ({err.strerror})") from None
    rows, lines = [], []
    for n, raw in enumerate(raw_lines, 1):
        try:
            text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{path}: line {n}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                             f"{err.start + 1})") from None
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}: line {n}: not JSON ({err.msg} at column {err.colno}); a JSONL file holds "
                             "one JSON object per line") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}: line {n}: a row must be a JSON object, not {type(row).__name__}")
        rows.append(row)
        lines.append(n)
    if not rows:
        raise InputError(f"{path}: empty file: no rows")
    return rows, lines


def text_field(row: dict, name: str) -> str:
    """``row[name]``, which must be a string; ValueError naming the field otherwise."""
    if name not in row:
        raise ValueError(f"missing field '{name}'")
    if not isinstance(row[name], str):
        raise ValueError(f"field '{name}' must be a string, not {type(row[name]).__name__}")
    return row[name]


def row_problem(err: Exception) -> str:
    """What is wrong with a row, from the error its conversion raised."""
    if isinstance(err, KeyError):
        return f"missing field {err}"
    if isinstance(err, ValueError):
        return str(err)
    return f"malformed ({type(err).__name__}: {err})"


def rows_to_problems(rows, source: str, lines: list[int] | None = None) -> list[Problem]:
    """Validate ``{question, answer[, level]}`` rows; one clear error names the first bad row
    (by its line in the file when ``lines`` are given)."""
    problems = []
    for i, row in enumerate(rows):
        where = f"{source}: line {lines[i]}" if lines else f"{source}: row {i}"
        try:
            problem = Problem(text_field(row, "question"), text_field(row, "answer"), int(row.get("level") or 1))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(f"{where}: {row_problem(err)}; need 'question' and 'answer'") from None
        if extract_answer(problem.answer) is None:
            raise InputError(f"{where}: answer has no final '#### <number>'")
        problems.append(problem)
    return problems


def drop_repeats(train: list[Problem], test: list[Problem], source: str) -> tuple[list[Problem], list[Problem]]:
    """Each question once per split (the first kept), and none of the test's in train; warns with counts.

    Questions are compared with their whitespace collapsed. Raises InputError if no train question is left.
    """
    def key(problem: Problem) -> str:
        return " ".join(problem.question.split())

    def unique(problems: list[Problem], split: str) -> list[Problem]:
        seen, kept = set(), []
        for problem in problems:
            if key(problem) not in seen:
                seen.add(key(problem))
                kept.append(problem)
        if len(kept) < len(problems):
            log.warning("%s: dropped %d duplicate question(s) of the %s split", source, len(problems) - len(kept),
                        split)
        return kept

    train, test = unique(train, "train"), unique(test, "test")
    held_out = {key(p) for p in test}
    fresh = [p for p in train if key(p) not in held_out]
    if len(fresh) < len(train):
        log.warning("%s: removed %d train question(s) that are also in the test split", source,
                    len(train) - len(fresh))
    if not fresh:
        raise InputError(f"{source}: no train question is left once the test split's are removed")
    return fresh, test


def load_splits(cfg: DatasetSchema) -> tuple[list[Problem], list[Problem]]:
    """(train, test) problems: generated for the arithmetic task, else read from ``cfg.path``.

    ``cfg.path`` is a local JSONL pattern with ``{split}`` (e.g. ``data/gsm8k_{split}.jsonl``),
    checked by :func:`read_rows` (so a hub export reads too); duplicates and train questions
    that are in the test file are dropped (:func:`drop_repeats`), then the first ``n`` of each
    split are taken. The paper's datasets (GSM8K, MATH, ProntoQA) are read by :mod:`sirt.tasks`.
    """
    from sirt import tasks

    if cfg.name in tasks.LOADERS:
        return tasks.load_splits(cfg)
    if cfg.name == "graph":
        return generated_splits(lambda n, seed: graph.graph_split(n, cfg.levels, cfg.graph, seed), cfg)
    if cfg.path is None:
        if cfg.name != "arithmetic":
            raise InputError(f"dataset {cfg.name!r} needs dataset.path (a local JSONL with {{split}})")
        return generated_splits(lambda n, seed: arithmetic_split(n, cfg.levels, cfg.max_operand, seed), cfg)
    splits = {}
    for split in ("train", "test"):
        path = split_path(cfg.path, split)
        rows, lines = read_rows(path)
        splits[split] = rows_to_problems(rows, path, lines)
    train, test = drop_repeats(splits["train"], splits["test"], cfg.path)
    return train[: cfg.n_train], test[: cfg.n_test]
