"""External data: where a round's external items take their training target from (``external.source``).

Paper 1, Section 5 (cross-improvement): ``round(eta_t * M)`` prompts of round t (the schedule, in
:mod:`sirt.plan.schedule`) train on an external target instead of the model's own pick. The sources are
a registry keyed by the option names of ``conf/external/``; adding one is a function here and a YAML file.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

Teacher = Callable[[list[str]], list[str]]  # the questions of the chosen items -> the teacher's responses


def oracle_target(record: dict) -> str | None:
    """A ground-truth check used as the verifier score: the lowest-uncertainty correct sample."""
    correct = [j for j, ok in enumerate(record["correct"]) if ok]
    if not correct:
        return None
    j = min(correct, key=lambda j: record["nll"][j] / max(record["n_tokens"][j], 1))
    return record["samples"][j]


def gold_targets(records: list[dict], chosen: list[int], teacher: Teacher | None) -> dict[int, str | None]:
    """``gold``: the dataset's reference solution."""
    return {i: records[i]["reference"] for i in chosen}


def oracle_targets(records: list[dict], chosen: list[int], teacher: Teacher | None) -> dict[int, str | None]:
    """``oracle``: :func:`oracle_target` (None where no sample is right yet)."""
    return {i: oracle_target(records[i]) for i in chosen}


def teacher_targets(records: list[dict], chosen: list[int], teacher: Teacher | None) -> dict[int, str | None]:
    """``teacher``: the teacher's response to the question (its own prompt, not the student's)."""
    return dict(zip(chosen, teacher([records[i]["question"] for i in chosen]))) if chosen else {}


@dataclass(frozen=True)
class Source:
    targets: Callable[[list[dict], list[int], Teacher | None], dict[int, str | None]]
    needs_teacher: bool = False  # the run builds a teacher (external.teacher) for it


SOURCES: dict[str, Source] = {"gold": Source(gold_targets), "oracle": Source(oracle_targets),
                              "teacher": Source(teacher_targets, needs_teacher=True)}


def training_rows(
    records: list[dict],
    n_external: int,
    source: str,
    rng: random.Random,
    teacher: Teacher | None = None,
) -> tuple[list[dict[str, str]], int]:
    """SFT rows of a round: the self-verified picks, with ``n_external`` prompts (chosen at
    random) taking their target from the external ``source`` instead. Returns (rows, items used).
    A chosen prompt the source has no target for (``oracle`` with no right sample yet) keeps its
    self-pick and is not counted.
    """
    external = sorted(rng.sample(range(len(records)), min(n_external, len(records))))
    targets = SOURCES[source].targets(records, external, teacher)
    targets = {i: target for i, target in targets.items() if target is not None}
    rows = []
    for i, record in enumerate(records):
        pick = record["pick"]
        target = targets[i] if i in targets else (None if pick is None else record["samples"][pick])
        if target is not None:
            rows.append({"prompt": record["prompt"], "completion": target})
    return rows, len(targets)
