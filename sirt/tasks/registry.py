"""One registry of tasks, keyed by the option names of ``conf/dataset/``: splits, answer checkers, kinds of mistake."""

from __future__ import annotations

from collections.abc import Callable

from sirt.config.errors import InputError
from sirt.config.schema import DatasetSchema
from sirt.tasks import answers, arithmetic, benchmarks, graph
from sirt.tasks.problem import Problem, number_matches
from sirt.tasks.rows import drop_repeats, read_rows, rows_to_problems, split_path

CHECKERS: dict[str, Callable[[str, Problem], bool]] = {"number": number_matches, **answers.CHECKERS,
                                                        **graph.CHECKERS}


def is_correct(response: str, problem: Problem) -> bool:
    """Ground-truth check of a response against the reference, by the problem's kind."""
    return CHECKERS[problem.kind](response, problem)


ERROR_KINDS: dict[str, Callable[[str, Problem], str]] = {"arithmetic": arithmetic.error_kind, "graph": graph.error_kind}


def error_kind(task: str, response: str, problem: Problem) -> str:
    """The kind of mistake a wrong response of the task ``task`` (``dataset.name``) is: the task's own kinds
    where it has them (:data:`ERROR_KINDS`: the synthetic tasks, whose mistakes are known), else ``wrong``."""
    return ERROR_KINDS[task](response, problem) if task in ERROR_KINDS else "wrong"


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


def arithmetic_splits(cfg: DatasetSchema) -> tuple[list[Problem], list[Problem]]:
    """The embedded arithmetic task: generated, or read from ``cfg.path`` when one is given."""
    if cfg.path is not None:
        return jsonl_splits(cfg)
    return generated_splits(lambda n, seed: arithmetic.arithmetic_split(n, cfg.levels, cfg.max_operand, seed), cfg)


def graph_splits(cfg: DatasetSchema) -> tuple[list[Problem], list[Problem]]:
    """Paper 2's synthetic graph task, always generated."""
    return generated_splits(lambda n, seed: graph.graph_split(n, cfg.levels, cfg.graph, seed), cfg)


def jsonl_splits(cfg: DatasetSchema) -> tuple[list[Problem], list[Problem]]:
    """Any task in the GSM8K format from ``cfg.path``, a local JSONL pattern with ``{split}``.

    Files are checked by :func:`~sirt.tasks.rows.read_rows` (so a hub export reads too); duplicates and
    train questions that are in the test file are dropped, then the first ``n`` of each split are taken.
    """
    splits = {}
    for split in ("train", "test"):
        path = split_path(cfg.path, split)
        rows, lines = read_rows(path)
        splits[split] = rows_to_problems(rows, path, lines)
    train, test = drop_repeats(splits["train"], splits["test"], cfg.path)
    return train[: cfg.n_train], test[: cfg.n_test]


DATASETS: dict[str, Callable[[DatasetSchema], tuple[list[Problem], list[Problem]]]] = {
    "arithmetic": arithmetic_splits,
    "graph": graph_splits,
    **dict.fromkeys(benchmarks.LOADERS, benchmarks.load_splits),  # gsm8k, math, prontoqa
}


def load_splits(cfg: DatasetSchema) -> tuple[list[Problem], list[Problem]]:
    """(train, test) problems of ``dataset.name``; a name outside :data:`DATASETS` reads ``dataset.path``."""
    if cfg.name in DATASETS:
        return DATASETS[cfg.name](cfg)
    if cfg.path is None:
        raise InputError(f"dataset {cfg.name!r} needs dataset.path (a local JSONL with {{split}})")
    return jsonl_splits(cfg)
