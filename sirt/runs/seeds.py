"""The jobs of one arm are seeds of one experiment: their mean and its standard error, as every sweep
command (``sirt.compare``, ``sirt.curriculum``) reports them."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def mean_se(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean over seeds and its standard error (None for a single seed: no spread to estimate)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None


def mean_se_text(values: Sequence[float], digits: int = 3) -> str:
    """``0.558 ± 0.006``, or the mean alone for a single seed."""
    mean, se = mean_se(values)
    return f"{mean:.{digits}f}" + (f" ± {se:.{digits}f}" if se is not None else "")
