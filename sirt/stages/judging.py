"""How good the self-verifier is: figures read from a round's selection records.

Self-improvement rests on the verifier telling the N samples of one question apart: Best-of-N
must pick right answers more often than a random sample is right. Three figures say whether it
does, and the organism's teaching gate and every round's metrics use the same code:

- ``verifier_auc``: within-question AUC, the chance that a right answer of a question is scored
  above a wrong answer of the same question (ties count half), pooled over every such pair;
  0.5 is a verifier at chance, and questions whose samples are all right or all wrong say nothing.
- ``pick_precision``: the share of Best-of-N picks that are right.
- ``sample_acc``: the share of all samples that are right (what a random pick would give).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def within_question_auc(scores: Sequence[Sequence[float]], correct: Sequence[Sequence[bool]]) -> float:
    """P(score of a right answer > score of a wrong one of the same question); nan without such pairs."""
    wins = pairs = 0.0
    for row_scores, row_correct in zip(scores, correct):
        right = [s for s, ok in zip(row_scores, row_correct) if ok]
        wrong = [s for s, ok in zip(row_scores, row_correct) if not ok]
        for r in right:
            wins += sum(1.0 if r > w else 0.5 if r == w else 0.0 for w in wrong)
        pairs += len(right) * len(wrong)
    return wins / pairs if pairs else float("nan")


def verifier_quality(records: Sequence[dict]) -> dict[str, float]:
    """``verifier_auc``, ``pick_precision`` and ``sample_acc`` of selection records (:mod:`~sirt.stages.selection`)."""
    picks = [r["correct"][r["pick"]] for r in records if r["pick"] is not None]
    n_samples = sum(len(r["correct"]) for r in records)
    return {
        "verifier_auc": within_question_auc([r["scores"] for r in records], [r["correct"] for r in records]),
        "pick_precision": sum(picks) / len(picks) if picks else float("nan"),
        "sample_acc": sum(sum(r["correct"]) for r in records) / n_samples if n_samples else float("nan"),
    }


def quality_by_kind(records: Sequence[dict], kind_of: Callable[[dict, str], str]) -> dict[str, dict[str, float]]:
    """Per kind of wrong answer (``kind_of(record, response)``): its ``share`` of the wrong samples and the
    ``verifier_auc`` of the right answers against the wrong ones of that kind alone, within each question.

    The within-question AUC is a mix over the kinds of mistake, weighted by how many there are: where one kind
    is judged at chance, the AUC drifts toward chance as self-training removes the kinds the verifier does see,
    with no change in the verifier itself. This separates the two.
    """
    kinds = [[None if ok else kind_of(r, s) for s, ok in zip(r["samples"], r["correct"])] for r in records]
    wrong = [k for row in kinds for k in row if k is not None]
    table = {}
    for kind in sorted(set(wrong)):
        keep = [[k is None or k == kind for k in row] for row in kinds]
        scores = [[s for s, kept in zip(r["scores"], row) if kept] for r, row in zip(records, keep)]
        correct = [[c for c, kept in zip(r["correct"], row) if kept] for r, row in zip(records, keep)]
        table[kind] = {"share": wrong.count(kind) / len(wrong), "verifier_auc": within_question_auc(scores, correct)}
    return table
