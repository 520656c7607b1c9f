"""Selection: Best-of-N among the samples the self-verifier accepts (s >= sigma).

Paper 1: the pick is the accepted sample with the lowest length-normalised uncertainty,
``argmin_{s >= sigma} U(y|x) / L(y)``. A prompt with no accepted sample yields no training
example; the share of prompts with one is the round's acceptance (paper 2's feedback loop).
"""

from __future__ import annotations

from collections.abc import Sequence

from sirt.runs.records import SelectionRecord
from sirt.stages.samples import Sample
from sirt.tasks.problem import Problem
from sirt.tasks.registry import is_correct


def best_of_n(scores: Sequence[float], nll: Sequence[float], lengths: Sequence[int], sigma: float) -> int | None:
    """Index of the BoN pick, or None when no sample reaches sigma. Ties go to the first."""
    accepted = [j for j, s in enumerate(scores) if s >= sigma]
    if not accepted:
        return None
    return min(accepted, key=lambda j: nll[j] / max(lengths[j], 1))


def verifier_choice(scores: Sequence[float], nll: Sequence[float], lengths: Sequence[int], sigma: float) -> int:
    """The sample U_v is measured on: the BoN pick, else the BoN pick without the filter.

    U_v must be defined on every prompt, like U_s, so that G compares the same prompts. Where
    the verifier accepts nothing it prefers no sample, and Best-of-N falls back on its own
    criterion over all N: the lowest length-normalised uncertainty.
    """
    pick = best_of_n(scores, nll, lengths, sigma)
    return pick if pick is not None else best_of_n(scores, nll, lengths, sigma=-float("inf"))


def select(
    prompts: Sequence[str],
    problems: Sequence[Problem],
    samples: Sequence[Sequence[Sample]],
    scores: Sequence[Sequence[float]],
    sigma: float,
) -> list[SelectionRecord]:
    """One record per prompt: every sample with its score, NLL and ground truth, and the picks.

    ``correct`` is recorded for analysis and for the oracle source; selection never reads it.
    """
    records = []
    for prompt, problem, row, row_scores in zip(prompts, problems, samples, scores):
        nll, lengths = [s.nll for s in row], [s.n_tokens for s in row]
        records.append({
            "prompt": prompt,
            "question": problem.question,
            "level": problem.level,
            "reference": problem.answer,
            "samples": [s.text for s in row],
            "n_tokens": lengths,
            "nll": nll,
            "scores": list(row_scores),
            "correct": [is_correct(s.text, problem) for s in row],
            "pick": best_of_n(row_scores, nll, lengths, sigma),
            "verifier_choice": verifier_choice(row_scores, nll, lengths, sigma),
        })
    return records
