"""Tasks and splits: rows of ``{question, answer, level}`` with GSM8K-style answers.

Every answer ends in ``#### <number>`` so that one extractor serves the embedded arithmetic
task and GSM8K alike. The arithmetic task is the model organism's world: a chain of
``level`` additions/subtractions solved one step per line, so that a solution can be
checked step by step (which makes verifying easier than solving).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sirt import answers, graph
from sirt.config import DatasetSchema, InputError

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
    """The scratchpad of ``expression``: one line per operation, then ``#### total``.

    ``slip`` models a bad habit: on a chain of three or more operations, ``slip()`` decides
    whether the solution skips the last operation and reports the leading number of its last
    line as the answer (``...;6+4 #### 6``). The scratchpad is complete and of the same
    length, so the mistake changes no length-dependent statistic, and a checker sees it at once
    (the answer repeats a number the last line still has to work on); a solver in the habit
    repeats it.
    """
    numbers = [int(x) for x in re.findall(r"[+-]?\d+", expression)]
    totals, rest = [numbers[0]], numbers[1:]
    for operand in rest:
        totals.append(totals[-1] + operand)
    lines = [f"{total}" + "".join(f"{x:+d}" for x in rest[i + 1 :]) for i, total in enumerate(totals[1:])]
    answer = totals[-2] if slip is not None and len(rest) >= 3 and slip() else totals[-1]
    return " ".join(filter(None, [";".join(lines[:-1]), f"#### {answer}"]))


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


def rows_to_problems(rows, source: str) -> list[Problem]:
    """Validate ``{question, answer[, level]}`` rows; one clear error names the first bad row."""
    problems = []
    for i, row in enumerate(rows):
        try:
            problem = Problem(str(row["question"]), str(row["answer"]), int(row.get("level") or 1))
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{source}: row {i}: malformed ({err!r}); need 'question' and 'answer'") from None
        if extract_answer(problem.answer) is None:
            raise InputError(f"{source}: row {i}: answer has no final '#### <number>'")
        problems.append(problem)
    return problems


def load_splits(cfg: DatasetSchema) -> tuple[list[Problem], list[Problem]]:
    """(train, test) problems: generated for the arithmetic task, else read from ``cfg.path``.

    ``cfg.path`` is a local JSONL pattern with ``{split}`` (e.g. ``data/gsm8k_{split}.jsonl``),
    read with ``datasets.load_dataset("json")``, so the same code reads a hub export.
    The paper's datasets (GSM8K, MATH, ProntoQA) are read by :mod:`sirt.tasks`.
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
    from datasets import load_dataset

    splits = {}
    for split, n in (("train", cfg.n_train), ("test", cfg.n_test)):
        path = cfg.path.format(split=split)
        if not Path(path).exists():
            raise InputError(f"dataset.path: {path} does not exist")
        rows = load_dataset("json", data_files=path, split="train")
        splits[split] = rows_to_problems(rows.select(range(min(n, len(rows)))), path)
    return splits["train"], splits["test"]
