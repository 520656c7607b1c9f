"""Forecasts: fits of the first k rounds, for every k and method, against what the run then did."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sirt.theory.fitting import MIN_ROUNDS, Fit, _never_raises, fit_exponential, fit_joint, fit_power_law

FORECAST_MIN_K = 3


FORECAST_QUANTITIES = ("U_s", "U_v", "G")  # the ones every method predicts


@dataclass
class Forecast:
    """Fits of the first k rounds for every k and method, against what the run then did."""

    status: str
    values: dict[str, Any] = field(default_factory=dict)
    fans: dict[int, Fit] = field(default_factory=dict)  # joint fit of the first k rounds

    def summary(self) -> dict[str, Any]:
        return {"status": self.status, **self.values}


@dataclass
class RunFits:
    """Everything fitted on one run: what fit.json and the plots are made from."""

    t: np.ndarray
    curves: dict[str, np.ndarray]
    exponential: dict[str, Fit]
    power_law: dict[str, Fit]
    joint: Fit
    dG_vs_G: Fit
    forecast: Forecast
    cross_improvement: Fit


Prediction = tuple[str, float | None, float | None]  # status, last round, limit


def _curve_prediction(fit: Fit, t_last: np.ndarray) -> Prediction:
    if fit.result is None:
        return fit.status, None, None
    return fit.status, float(fit.predict(t_last)[0]), fit.values["y_inf"]


def _joint_predictions(fit: Fit, t_last: np.ndarray) -> dict[str, Prediction]:
    if fit.result is None:
        return {q: (fit.status, None, None) for q in FORECAST_QUANTITIES}
    U_s, U_v = fit.predict(t_last)
    last = {"U_s": U_s, "U_v": U_v, "G": U_s - U_v}
    return {q: (fit.status, float(last[q]), fit.values[f"{q}_inf"]) for q in FORECAST_QUANTITIES}


def _predictions(t: np.ndarray, curves: dict[str, np.ndarray],
                 k: int) -> tuple[dict[str, dict[str, Prediction]], Fit]:
    """Fit the first k rounds with each method; predict the last round and the limits."""
    tk, head = t[:k], {q: y[:k] for q, y in curves.items()}
    preds, joint = {}, Fit("the joint fit needs U_s and U_v")
    if {"U_s", "U_v"} <= head.keys():
        joint = fit_joint(tk, head["U_s"], head["U_v"], min_rounds=FORECAST_MIN_K)
        preds["joint"] = _joint_predictions(joint, t[-1:])
    for method, fitter in (("exponential", fit_exponential), ("power_law", fit_power_law)):
        preds[method] = {q: _curve_prediction(fitter(tk, y, q, min_rounds=FORECAST_MIN_K), t[-1:])
                         for q, y in head.items()}
    return preds, joint


def _rel_error(predicted: float | None, observed: float | None) -> float | None:
    if predicted is None or observed is None or observed == 0:
        return None
    return (predicted - observed) / abs(observed)


def _table(k: int, preds: dict[str, dict[str, Prediction]],
           full: dict[str, dict[str, Prediction]],
           curves: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Rows of (k, method, quantity): the last round against the data, the limit against the
    fit of the whole run by the same method (a limit is never observed)."""
    rows = []
    for method, by_quantity in preds.items():
        for q, (status, last, inf) in by_quantity.items():
            observed, observed_inf = float(curves[q][-1]), full[method][q][2]
            rows.append({"k": k, "method": method, "quantity": q, "status": status,
                         "predicted": last, "observed": observed,
                         "rel_error": _rel_error(last, observed), "predicted_inf": inf,
                         "observed_inf": observed_inf,
                         "rel_error_inf": _rel_error(inf, observed_inf)})
    return rows


def _mean_abs(values: list[float | None]) -> float | None:
    known = [abs(v) for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _headline(k: int, table: list[dict[str, Any]]) -> dict[str, Any]:
    """The paper's forecast (joint fit, first k rounds) and each method's mean |error|."""
    at_k = [row for row in table if row["k"] == k]
    joint = [row for row in at_k if row["method"] == "joint"]
    out: dict[str, Any] = {
        key: {**{row["quantity"]: row[key] for row in joint},
              **{f"{row['quantity']}_inf": row[f"{key}_inf"] for row in joint}}
        for key in ("predicted", "observed", "rel_error")}
    compared = [row for row in at_k if row["quantity"] in FORECAST_QUANTITIES]
    out["mean_abs_rel_error"] = {
        method: {"last": _mean_abs([r["rel_error"] for r in compared if r["method"] == method]),
                 "inf": _mean_abs([r["rel_error_inf"] for r in compared
                                   if r["method"] == method])}
        for method in ("joint", "exponential", "power_law")}
    return out


@_never_raises(Forecast)
def forecast(t: np.ndarray, curves: dict[str, np.ndarray], k: int) -> Forecast:
    """Forecast from the first k' rounds for every k' in 3..n-1; headline numbers at ``k``.

    Whether a prefix predicts the end is an empirical question: the table keeps
    the joint fit, separate exponentials and the power law side by side.
    """
    n = len(t)
    if n < MIN_ROUNDS:
        return Forecast(f"need at least {MIN_ROUNDS} rounds to fit, got {n}")
    full, _ = _predictions(t, curves, n)
    table, fans = [], {}
    for k_prefix in range(FORECAST_MIN_K, n):
        preds, fans[k_prefix] = _predictions(t, curves, k_prefix)
        table += _table(k_prefix, preds, full, curves)
    if not FORECAST_MIN_K <= k < n:
        status = f"forecast_k={k} must be in {FORECAST_MIN_K}..{n - 1} for a run of {n} rounds"
    else:
        status = "ok" if fans[k].ok else f"joint fit of the first {k} rounds: {fans[k].status}"
    values = {"k": k, "last_round": float(t[-1]),
              **(_headline(k, table) if k in fans else {}), "table": table}
    return Forecast(status, values, fans)
