"""The fitting callback's report: every fit of one run's metrics.jsonl, written to fit.json with its plots.

:func:`fit_run` never raises on bad data: each part carries a ``status`` ("ok" or why it cannot be trusted).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from sirt.config.errors import InputError
from sirt.runs.files import write_atomic
from sirt.theory import plotting
from sirt.theory.fitting import (
    CURVES,
    MIN_ROUNDS,
    Fit,
    fit_dG_vs_G,
    fit_exponential,
    fit_gamma,
    fit_joint,
    fit_power_law,
)
from sirt.theory.forecast import RunFits, forecast

log = logging.getLogger(__name__)


def _number(value: Any) -> float:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if is_number else np.nan


def load_metrics(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """Rows of metrics.jsonl by round (a re-logged round keeps its last row) and the numbers
    of the lines that are not such rows (a crash can truncate the last one)."""
    rows, skipped = {}, []
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line} is not UTF-8 text (byte 0x{err.object[err.start]:02x}); sirt writes "
                         "UTF-8 JSON lines: restore the file") from None
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        t = _number(row.get("round", number - 1)) if isinstance(row, dict) else np.nan
        if np.isfinite(t):
            rows[t] = row
        elif line.strip():
            skipped.append(number)
    return [{**rows[t], "round": t} for t in sorted(rows)], skipped


def standard_errors(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-round standard errors of U_s and U_v (and of G, taken as independent) where every row has them."""
    se = {q: np.array([_number(row.get(f"{q}_se")) for row in rows]) for q in ("U_s", "U_v")}
    se = {q: v for q, v in se.items() if len(v) and np.all(np.isfinite(v))}
    if len(se) == 2:
        se["G"] = np.hypot(se["U_s"], se["U_v"])
    return se


def _columns(rows: list[dict[str, Any]]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Rounds, the curves present in any row (NaN where a row lacks one) and eta.

    A row's ``eta`` is the share that trained the model measured in that row (paper 1's eta_t
    in ``U_v^c(t) = (1 + gamma eta_t)^-1 U_v(t-1)``); the returned ``eta[t]`` is the share
    spent going from round t to t + 1, as :func:`sirt.theory.cross_improvement` takes it.
    """
    t = np.array([row["round"] for row in rows])
    curves = {q: np.array([_number(row.get(q)) for row in rows])
              for q in CURVES if any(q in row for row in rows)}
    if "G" not in curves and {"U_s", "U_v"} <= curves.keys():
        curves["G"] = curves["U_s"] - curves["U_v"]
    eta = np.array([_number(row.get("eta", 0.0)) for row in rows])
    return t, curves, np.r_[eta[1:], 0.0]


def fit_all(t: np.ndarray, curves: dict[str, np.ndarray], eta: np.ndarray,
            forecast_k: int, se: dict[str, np.ndarray] | None = None) -> RunFits:
    """Every part of the fit, each with its own status; curves with standard errors (``se``) weighted by them."""
    se = se or {}
    missing = Fit("needs U_s and U_v")
    has_U = {"U_s", "U_v"} <= curves.keys()
    joint_se = (se["U_s"], se["U_v"]) if {"U_s", "U_v"} <= se.keys() else None
    return RunFits(
        t=t, curves=curves,
        exponential={q: fit_exponential(t, y, q, se=se.get(q)) for q, y in curves.items()},
        power_law={q: fit_power_law(t, y, q) for q, y in curves.items()},
        joint=fit_joint(t, curves["U_s"], curves["U_v"], se=joint_se) if has_U else missing,
        dG_vs_G=fit_dG_vs_G(t, curves["G"]) if "G" in curves else Fit("needs G"),
        forecast=forecast(t, curves, forecast_k),
        cross_improvement=fit_gamma(t, curves["U_s"], curves["U_v"], eta) if has_U else missing)


def _curve_summary(exponential: Fit, power_law: Fit) -> dict[str, Any]:
    """The exponential fit of one curve, the power law beside it, and which AIC/BIC prefer."""
    out = exponential.summary() | {"power_law": power_law.summary()}
    if exponential.result is not None and power_law.result is not None:
        for criterion in ("aic", "bic"):
            better = exponential.values[criterion] <= power_law.values[criterion]
            out[f"preferred_{criterion}"] = "exponential" if better else "power_law"
    return out


def _report(fits: RunFits) -> dict[str, Any]:
    return {
        "curves": {q: _curve_summary(fits.exponential[q], fits.power_law[q])
                   for q in fits.curves},
        "joint": fits.joint.summary(),
        "dG_vs_G": fits.dG_vs_G.summary(),
        "forecast": fits.forecast.summary(),
        "cross_improvement": fits.cross_improvement.summary(),
    }


def _overall_status(report: dict[str, Any], n: int) -> str:
    if n < MIN_ROUNDS:
        return f"need at least {MIN_ROUNDS} rounds to fit, got {n}"
    parts = {f"curves.{q}": c["status"] for q, c in report["curves"].items()}
    parts |= {part: report[part]["status"]
              for part in ("joint", "dG_vs_G", "forecast", "cross_improvement", "plots")}
    failing = [f"{part}: {status}" for part, status in parts.items()
               if status != "ok" and not status.startswith("skipped")]
    return "partial: " + "; ".join(failing) if failing else "ok"


def _jsonable(obj: Any) -> Any:
    """Plain JSON: numpy scalars and arrays unwrapped, inf and NaN as null."""
    if isinstance(obj, dict):
        return {str(key): _jsonable(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_jsonable(value) for value in obj]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def fit_run(run_dir: str | Path, forecast_k: int = 5, make_plots: bool = True,
            title: str | None = None) -> dict[str, Any]:
    """Fit ``<run_dir>/metrics.jsonl``; write ``fit.json`` and ``plots/*.png`` (titled ``title``, else the
    run's folder name); return the report.

    Raises only when metrics.jsonl cannot be read (FileNotFoundError; InputError: not UTF-8); bad data of any kind
    becomes a status in the report.
    """
    run_dir = Path(run_dir)
    rows, skipped = load_metrics(run_dir / "metrics.jsonl")
    t, curves, eta = _columns(rows)
    fits = fit_all(t, curves, eta, forecast_k, standard_errors(rows))
    report = {"status": "", "n_rounds": len(rows), "rounds": t, **_report(fits)}
    if skipped:
        report["skipped_lines"] = skipped
    report["plots"] = {"status": "skipped: make_plots=False", "files": []}
    if make_plots:
        try:
            title = title or run_dir.name
            files = plotting.plot_run(fits, run_dir / "plots", title=title)
            files += [p for p in [plotting.plot_pass_at_k(rows, run_dir / "plots" / "pass_at_k.png", title)]
                      if p is not None]  # the Pass@K ablation's view, for a run that measured three K or more
            report["plots"] = {"status": "ok", "files": [str(p.relative_to(run_dir)) for p in files]}
        except Exception as exc:  # a broken plot must not lose the fit
            log.exception("plotting failed")
            report["plots"] = {"status": f"error: {type(exc).__name__}: {exc}", "files": []}
    report["status"] = _overall_status(report, len(rows))
    report = _jsonable(report)
    write_atomic(run_dir / "fit.json", json.dumps(report, indent=2) + "\n")
    return report
