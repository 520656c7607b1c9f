"""Data files from disk (``dataset.path``): checked line by line before any model loads.

A bad file is one :class:`~sirt.config.errors.InputError` naming the file and line; duplicate questions
and train questions that are also in the test file are dropped with a warning that counts them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sirt.config.errors import ConfigError, InputError
from sirt.tasks.problem import Problem, extract_answer

log = logging.getLogger(__name__)


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
    if not row[name].strip():
        raise ValueError(f"field '{name}' is empty")
    return row[name]


def level_field(row: dict) -> int:
    """``row['level']``: an integer >= 1 (1 without one); ValueError naming the field otherwise."""
    level = row.get("level")
    if level is None:
        return 1
    if isinstance(level, bool) or not isinstance(level, int | str) or not str(level).strip().isdigit():
        raise ValueError(f"field 'level' must be an integer >= 1, not {level!r}")
    if int(level) < 1:
        raise ValueError(f"field 'level' must be an integer >= 1, not {level!r}")
    return int(level)


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
            question, answer = text_field(row, "question"), text_field(row, "answer")
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(f"{where}: {row_problem(err)}; need 'question' and 'answer'") from None
        try:
            problem = Problem(question, answer, level_field(row))
        except ValueError as err:
            raise InputError(f"{where}: {err}") from None
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
