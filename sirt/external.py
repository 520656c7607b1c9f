"""External data: how a budget of M items is spread over the rounds (eta_t), and exact rounding.

Paper 1, Section 5: a share ``eta_t`` of M external items is used in training round t, with
``sum_t eta_t = 1``. Round t gets ``round(eta_t * M)`` items by largest-remainder rounding,
so the counts always add up to exactly M.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from sirt.config import ConfigError, ScheduleSchema


def eta_schedule(schedule: ScheduleSchema, rounds: int) -> list[float]:
    """eta_1..eta_T for ``rounds`` training rounds; refuses a schedule that cannot run."""
    name, T = schedule.name, rounds
    if name == "none":
        return [0.0] * T
    if name == "early":
        return [1.0] + [0.0] * (T - 1)
    if name == "uniform":
        return [1.0 / T] * T
    if name == "late":
        if not 1 <= schedule.round <= T:
            raise ConfigError(f"schedule.round={schedule.round}: the late round must be in 1..rounds={T}")
        return [1.0 if t == schedule.round else 0.0 for t in range(1, T + 1)]
    eta = [float(x) for x in schedule.eta]
    if len(eta) != T:
        raise ConfigError(f"schedule.eta: has {len(eta)} entries but rounds={T}; give one share per round")
    if any(x < 0 or math.isnan(x) for x in eta):
        raise ConfigError(f"schedule.eta={eta}: shares must be non-negative")
    if abs(sum(eta) - 1.0) > 1e-6:
        raise ConfigError(f"schedule.eta={eta}: shares must sum to 1 (they sum to {sum(eta):.6g})")
    return eta


def allocate(eta: list[float], budget: int) -> list[int]:
    """Items per round: floor(eta_t * M), then the leftovers to the largest remainders.

    Ties go to the earlier round, so the result is deterministic; it sums to M whenever
    ``sum(eta) > 0`` (shares are normalised first) and is all zeros for an all-zero schedule.
    """
    if budget == 0 or not any(eta):
        return [0] * len(eta)
    total = sum(eta)
    exact = [e / total * budget for e in eta]
    counts = [math.floor(x + 1e-9) for x in exact]
    leftover = budget - sum(counts)
    order = sorted(range(len(eta)), key=lambda t: (-(exact[t] - counts[t]), t))
    for t in order[:leftover]:
        counts[t] += 1
    return counts


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
    ``teacher``: the teacher's response to the prompt.
    """
    external = sorted(rng.sample(range(len(records)), min(n_external, len(records))))
    if source == "teacher" and external:
        targets = dict(zip(external, teacher([records[i]["prompt"] for i in external])))
    else:
        targets = {i: records[i]["reference"] if source == "gold" else oracle_target(records[i]) for i in external}
    rows = []
    for i, record in enumerate(records):
        pick = record["pick"]
        target = targets[i] if i in targets else (None if pick is None else record["samples"][pick])
        if target is not None:
            rows.append({"prompt": record["prompt"], "completion": target})
    return rows, len(external)
