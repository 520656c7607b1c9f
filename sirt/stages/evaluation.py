"""Evaluation: greedy accuracy on the test split and pass@k from the N samples.

Beside ``acc`` (the task's own checker), tasks whose answers end in ``#### <number>`` get
lm-evaluation-harness's GSM8K metrics (``acc_strict``, ``acc_flexible``), to set a run against
published numbers.

pass@k uses the unbiased estimator of Chen et al. (2021): with c correct among n samples,
``pass@k = 1 - C(n-c, k) / C(n, k)``, averaged over prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb

from sirt.tasks.answers import HARNESS, HARNESS_KINDS
from sirt.tasks.problem import Problem


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n is correct."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def mean_pass_at_k(correct: Sequence[Sequence[bool]], ks: Sequence[int]) -> dict[str, float]:
    """pass@k for every k <= N, averaged over prompts; keys are str(k) for JSON."""
    if not correct:
        return {}
    n = len(correct[0])
    return {str(k): sum(pass_at_k(n, sum(row), k) for row in correct) / len(correct) for k in ks if k <= n}


def accuracy(correct: Sequence[bool]) -> float:
    """Share of correct greedy answers."""
    return sum(correct) / len(correct) if correct else float("nan")


def level_accuracy(correct: Sequence[bool], levels: Sequence[int]) -> dict[str, float]:
    """Accuracy per difficulty level; keys are str(level) for JSON."""
    return {str(lvl): accuracy([c for c, lv in zip(correct, levels) if lv == lvl]) for lvl in sorted(set(levels))}


def harness_accuracy(responses: Sequence[str], problems: Sequence[Problem]) -> dict[str, float]:
    """lm-eval's strict-match and flexible-extract accuracies of greedy responses; {} for other tasks."""
    if not problems or any(p.kind not in HARNESS_KINDS for p in problems):
        return {}
    return {name: accuracy([match(r, p) for r, p in zip(responses, problems)]) for name, match in HARNESS.items()}
