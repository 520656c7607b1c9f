"""External data: how a budget of M items is spread over the rounds (eta_t), and exact rounding.

Paper 1, Section 5: a share ``eta_t`` of M external items is used in training round t, with
``sum_t eta_t = 1``. Round t gets ``round(eta_t * M)`` items by largest-remainder rounding,
so the counts always add up to exactly M.
"""

from __future__ import annotations

import random
from collections.abc import Callable


def oracle_target(record: dict) -> str | None:
    """A ground-truth check used as the verifier score: the lowest-uncertainty correct sample."""
    correct = [j for j, ok in enumerate(record["correct"]) if ok]
    if not correct:
        return None
    j = min(correct, key=lambda j: record["nll"][j] / max(record["n_tokens"][j], 1))
    return record["samples"][j]


def training_rows(
    records: list[dict],
    n_external: int,
    source: str,
    rng: random.Random,
    teacher: Callable[[list[str]], list[str]] | None = None,
) -> tuple[list[dict[str, str]], int]:
    """SFT rows of a round: the self-verified picks, with ``n_external`` prompts (chosen at
    random) taking their target from the external source instead. Returns (rows, items used).

    ``gold``: the dataset's reference solution; ``oracle``: :func:`oracle_target`;
    ``teacher``: the teacher's response to the question (its own prompt, not the student's). A chosen prompt
    the source has no target for (``oracle`` with no right sample yet) keeps its self-pick and is not counted.
    """
    external = sorted(rng.sample(range(len(records)), min(n_external, len(records))))
    if source == "teacher" and external:
        targets = dict(zip(external, teacher([records[i]["question"] for i in external])))
    else:
        targets = {i: records[i]["reference"] if source == "gold" else oracle_target(records[i]) for i in external}
    targets = {i: target for i, target in targets.items() if target is not None}
    rows = []
    for i, record in enumerate(records):
        pick = record["pick"]
        target = targets[i] if i in targets else (None if pick is None else record["samples"][pick])
        if target is not None:
            rows.append({"prompt": record["prompt"], "completion": target})
    return rows, len(targets)
