"""External data: how a budget of M items is spread over the rounds (eta_t), and exact rounding.

Paper 1, Section 5: a share ``eta_t`` of M external items is used in training round t, with
``sum_t eta_t = 1``. Round t gets ``round(eta_t * M)`` items by largest-remainder rounding,
so the counts always add up to exactly M.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from sirt.config.errors import ConfigError
from sirt.config.schema import ScheduleSchema


def custom_eta(schedule: ScheduleSchema, T: int) -> list[float]:
    """``schedule.eta`` as written, once it is a spread of the budget over the T training rounds."""
    eta = [float(x) for x in schedule.eta]
    if len(eta) != T:
        raise ConfigError(f"schedule.eta: has {len(eta)} entries but rounds={T}; give one share per round")
    if any(x < 0 or math.isnan(x) for x in eta):
        raise ConfigError(f"schedule.eta={eta}: shares must be non-negative")
    if abs(sum(eta) - 1.0) > 1e-6:
        raise ConfigError(f"schedule.eta={eta}: shares must sum to 1 (they sum to {sum(eta):.6g})")
    return eta


def late_eta(schedule: ScheduleSchema, T: int) -> list[float]:
    """The whole budget in round ``schedule.round``."""
    if not 1 <= schedule.round <= T:
        raise ConfigError(f"schedule.round={schedule.round}: the late round must be in 1..rounds={T}")
    return [1.0 if t == schedule.round else 0.0 for t in range(1, T + 1)]


SCHEDULES: dict[str, Callable[[ScheduleSchema, int], list[float]]] = {  # keyed by conf/schedule/ option names
    "none": lambda schedule, T: [0.0] * T,
    "early": lambda schedule, T: [1.0] + [0.0] * (T - 1),
    "uniform": lambda schedule, T: [1.0 / T] * T,
    "late": late_eta,
    "custom": custom_eta,
}


def eta_schedule(schedule: ScheduleSchema, rounds: int) -> list[float]:
    """eta_1..eta_T for ``rounds`` training rounds; refuses a schedule that cannot run."""
    return SCHEDULES[schedule.name](schedule, rounds)


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
