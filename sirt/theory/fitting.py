"""The fitting callback: lmfit fits of a run's trajectory to the theory of paper 1.

Proposition 3.1 says U_s, U_v and G decay to their limits with one shared rate r. Each part
below tests or uses that claim: per-curve exponential fits (with a power law as the rival),
the joint fit with one rate, the linearity of dG/dt in G, forecasts from the first k rounds,
and the external-data strength gamma of Section 5. Every part carries a ``status`` ("ok" or
the reason it cannot be trusted) and no part can take another down: :func:`fit_run` never
raises on bad data.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import lmfit
import numpy as np
from lmfit.model import ModelResult

from sirt.theory.dynamics import Dynamics, cross_improvement

log = logging.getLogger(__name__)


CURVES = ("U_s", "U_v", "G", "acc", "U_s_tok", "U_v_tok")


RISING = frozenset({"acc"})  # expected to rise; the uncertainties are expected to fall


RANGE = {**dict.fromkeys(("U_s", "U_v", "U_s_tok", "U_v_tok"), (0.0, np.inf)),
         "acc": (0.0, 1.0)}  # where a limit can lie: an NLL is >= 0, an accuracy within [0, 1]


MIN_ROUNDS = 4


RATE_BOUNDS = (1e-3, 10.0)  # per round; also bounds the power-law exponent p


RATE_GRID = np.geomspace(*RATE_BOUNDS, 60)


MAX_NFEV = 4000


P = ParamSpec("P")


R = TypeVar("R")


def exp_curve(t: np.ndarray, y_inf: float, amplitude: float, rate: float) -> np.ndarray:
    return y_inf + amplitude * np.exp(-rate * t)


def power_curve(t: np.ndarray, y_inf: float, a: float, p: float) -> np.ndarray:
    return y_inf + a * (t + 1.0) ** (-p)


def joint_curve(t: np.ndarray, U_s_inf: float, U_v_inf: float, alpha_p: float, beta_p: float,
                rate: float) -> np.ndarray:
    """U_s then U_v, stacked: Proposition 3.1 with one rate for both."""
    decay = np.exp(-rate * t)
    return np.concatenate([U_s_inf + alpha_p * decay, U_v_inf + beta_p * decay])


def cross_curve(eta: np.ndarray, U_s0: float, U_v0: float, rate: float, beta_over_alpha: float,
                G_inf: float, gamma: float) -> np.ndarray:
    """U_s then U_v, stacked, under :func:`sirt.theory.cross_improvement`.

    Only r, beta/alpha and G_inf are identifiable, so k = 1. Row t's ``eta`` is the share
    used in round t's training, which the next row measures: the last row's share is unseen.
    """
    alpha = rate / (1.0 - beta_over_alpha)
    start = Dynamics(alpha, beta_over_alpha * alpha, 1.0, G_inf, U_s0, U_v0)
    states = cross_improvement(start, eta[:-1], gamma)
    return np.array([[s.U_s0 for s in states], [s.U_v0 for s in states]]).ravel()


EXPONENTIAL = lmfit.Model(exp_curve)


POWER_LAW = lmfit.Model(power_curve)


JOINT = lmfit.Model(joint_curve)


CROSS = lmfit.Model(cross_curve, independent_vars=["eta"])


LINEAR = lmfit.models.LinearModel()


@dataclass
class Fit:
    """One fitted part: its status, the lmfit result when a fit exists, numbers for fit.json."""

    status: str
    result: ModelResult | None = None
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary(self) -> dict[str, Any]:
        return {"status": self.status, **self.values}

    def predict(self, t: np.ndarray) -> np.ndarray:
        return self.result.eval(t=t)

    def band(self, t: np.ndarray) -> np.ndarray | None:
        return _band(self.result, t)


def _band(result: ModelResult, t: np.ndarray) -> np.ndarray | None:
    """1-sigma confidence band of a fitted curve, None where it cannot be estimated."""
    with np.errstate(all="ignore"):
        band = result.eval_uncertainty(t=t, sigma=1)
    return band if result.errorbars and np.all(np.isfinite(band)) else None


def _never_raises(failed: Callable[[str], R]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Turn an unexpected error of a fit part into its status, so the other parts survive."""

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def safe(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # reported in the part's status
                log.exception("%s failed", fn.__name__)
                return failed(f"error: {type(exc).__name__}: {exc}")

        return safe

    return wrap


def _data_problem(t: np.ndarray, y: np.ndarray, name: str, min_rounds: int) -> str | None:
    if len(y) < min_rounds:
        return f"need at least {min_rounds} rounds to fit, got {len(y)}"
    if not np.all(np.isfinite(y)):
        return f"non-finite {name} at rounds {t[~np.isfinite(y)].astype(int).tolist()}"
    if np.ptp(y) <= 1e-12 * max(1.0, float(np.abs(y).max())):
        return f"flat: {name} does not change over the run, so there is no rate to fit"
    return None


def _fit_problem(result: ModelResult, rate: str) -> str | None:
    if result.aborted:
        return f"did not converge: stopped after {result.nfev} function evaluations"
    if not result.success:
        return f"did not converge: {result.message}"
    value = result.params[rate].value
    if value <= 1.01 * RATE_BOUNDS[0]:
        return f"no saturation: {rate} at its lower bound {value:.3g}, no limit in sight"
    if value >= 0.99 * RATE_BOUNDS[1]:
        return f"{rate} = {value:.3g} at its upper bound: the curve jumps within one round"
    return None


def _direction_problem(name: str, amplitude: float) -> str | None:
    rises = amplitude < 0
    if rises == (name in RISING):
        return None
    return (f"{'rising' if rises else 'falling'}: {name} {'increases' if rises else 'decreases'}"
            " over the run, against the self-improvement the theory describes")


def _limit_problem(name: str, limit: float) -> str | None:
    """A limit no run can reach (an NLL below 0) means the curve is still nearly straight: its bend,
    and so its limit, lies beyond the run, whatever the R²."""
    low, high = RANGE.get(name, (-np.inf, np.inf))
    if low <= limit <= high:
        return None
    return f"no saturation: the fitted limit of {name}, {limit:.3g}, lies outside [{low:g}, {high:g}]"


def _weights(se: np.ndarray | None) -> np.ndarray | None:
    """lmfit weights 1/SE from a curve's standard errors; None (an unweighted fit) unless every SE is usable."""
    if se is None or len(se) == 0 or not np.all(np.isfinite(se)) or np.any(se <= 0):
        return None
    return 1.0 / se


def _r2(ys: list[np.ndarray], fits: list[np.ndarray]) -> float:
    """R² of several series at once, each measured about its own mean."""
    ss_res = sum(np.sum((y - f) ** 2) for y, f in zip(ys, fits, strict=True))
    ss_tot = sum(np.sum((y - y.mean()) ** 2) for y in ys)
    return float(1.0 - ss_res / ss_tot)


def _fit_from_grid(model: lmfit.Model, t: np.ndarray, y: np.ndarray,
                   design: Callable[[float], np.ndarray], rate: str,
                   max_nfev: int, weights: np.ndarray | None = None) -> ModelResult:
    """Start lmfit from the best grid value of the rate, the linear parameters solved exactly.

    Given the rate, all these models are linear in their other parameters; scanning the rate
    makes the start robust where a single guess lands in a wrong basin. ``weights`` (1/SE of
    each point) weight the residuals of the grid and of the fit alike.
    """
    w = np.ones_like(y) if weights is None else weights

    def sse(s: float) -> tuple[float, np.ndarray]:
        coef = np.linalg.lstsq(design(s) * w[:, None], y * w, rcond=None)[0]
        return float(np.sum(((design(s) @ coef - y) * w) ** 2)), coef

    with np.errstate(all="ignore"):
        s0 = min(RATE_GRID, key=lambda s: sse(s)[0])
        linear = [name for name in model.param_names if name != rate]
        params = model.make_params(**dict(zip(linear, sse(s0)[1], strict=True)),
                                   **{rate: {"value": s0, "min": RATE_BOUNDS[0],
                                             "max": RATE_BOUNDS[1]}})
        return model.fit(y, params, t=t, max_nfev=max_nfev, weights=weights)


def _values(result: ModelResult) -> dict[str, Any]:
    return {**{name: p.value for name, p in result.params.items()},
            "stderr": {name: p.stderr for name, p in result.params.items()},
            "aic": result.aic, "bic": result.bic}


@_never_raises(Fit)
def fit_exponential(t: np.ndarray, y: np.ndarray, name: str = "y",
                    min_rounds: int = MIN_ROUNDS, max_nfev: int = MAX_NFEV, se: np.ndarray | None = None) -> Fit:
    """Fit ``y = y_inf + amplitude exp(-rate t)``, the form Proposition 3.1 gives each curve;
    weighted by 1/SE where the run measured each point's standard error (``se``). R² is unweighted."""
    if problem := _data_problem(t, y, name, min_rounds):
        return Fit(problem)
    weights = _weights(se)
    result = _fit_from_grid(EXPONENTIAL, t, y,
                            lambda s: np.column_stack([np.ones_like(t), np.exp(-s * t)]),
                            "rate", max_nfev, weights)
    values = {**_values(result), "r2": result.rsquared, "weighted": weights is not None,
              "band_1sigma": _band(result, t)}
    status = (_fit_problem(result, "rate")
              or _direction_problem(name, result.params["amplitude"].value)
              or _limit_problem(name, result.params["y_inf"].value))
    return Fit(status or "ok", result, values)


@_never_raises(Fit)
def fit_power_law(t: np.ndarray, y: np.ndarray, name: str = "y",
                  min_rounds: int = MIN_ROUNDS, max_nfev: int = MAX_NFEV) -> Fit:
    """Fit ``y = y_inf + a (t + 1)^-p``: the rival the theory's exponential must beat."""
    if problem := _data_problem(t, y, name, min_rounds):
        return Fit(problem)
    result = _fit_from_grid(POWER_LAW, t, y,
                            lambda s: np.column_stack([np.ones_like(t), (t + 1.0) ** -s]),
                            "p", max_nfev)
    status = (_fit_problem(result, "p") or _direction_problem(name, result.params["a"].value)
              or _limit_problem(name, result.params["y_inf"].value))
    return Fit(status or "ok", result, {**_values(result), "r2": result.rsquared})


def _joint_problem(alpha_p: float, beta_p: float) -> str | None:
    if alpha_p <= 0:
        return "rising: U_s increases over the run (alpha' < 0), self-improvement lowers it"
    if not 0 <= beta_p < alpha_p:
        return (f"inconsistent with Proposition 3.1: beta'/alpha' = {beta_p / alpha_p:.3g}, "
                "the theory needs 0 <= beta/alpha < 1")
    return None


@_never_raises(Fit)
def fit_joint(t: np.ndarray, U_s: np.ndarray, U_v: np.ndarray,
              min_rounds: int = MIN_ROUNDS, max_nfev: int = MAX_NFEV,
              se: tuple[np.ndarray, np.ndarray] | None = None) -> Fit:
    """Fit U_s and U_v together with ONE rate, G = U_s - U_v implied (Proposition 3.1).

    alpha_p and beta_p are the amplitudes alpha' and beta'; their ratio is alpha/beta. ``se``
    (the standard errors of U_s and U_v per round) weights the fit; R² is unweighted.
    """
    if problem := (_data_problem(t, U_s, "U_s", min_rounds)
                   or _data_problem(t, U_v, "U_v", min_rounds)):
        return Fit(problem)
    one, zero = np.ones_like(t), np.zeros_like(t)

    def design(s: float) -> np.ndarray:
        decay = np.exp(-s * t)
        return np.column_stack([np.r_[one, zero], np.r_[zero, one],
                                np.r_[decay, zero], np.r_[zero, decay]])

    weights = _weights(np.r_[se[0], se[1]] if se is not None else None)
    result = _fit_from_grid(JOINT, t, np.r_[U_s, U_v], design, "rate", max_nfev, weights)
    U_s_fit, U_v_fit = np.split(result.best_fit, 2)
    v = _values(result) | {"weighted": weights is not None}
    alpha_p, beta_p = v["alpha_p"], v["beta_p"]
    v |= {"delta": alpha_p - beta_p, "G_inf": v["U_s_inf"] - v["U_v_inf"],
          "alpha_over_beta": alpha_p / beta_p if beta_p else None,
          "beta_over_alpha": beta_p / alpha_p if alpha_p else None,
          "r2": _r2([U_s, U_v], [U_s_fit, U_v_fit]), "r2_U_s": _r2([U_s], [U_s_fit]),
          "r2_U_v": _r2([U_v], [U_v_fit]), "r2_G": _r2([U_s - U_v], [U_s_fit - U_v_fit])}
    status = (_fit_problem(result, "rate") or _joint_problem(alpha_p, beta_p)
              or _limit_problem("U_s", v["U_s_inf"]) or _limit_problem("U_v", v["U_v_inf"]))
    return Fit(status or "ok", result, v)


@_never_raises(Fit)
def fit_dG_vs_G(t: np.ndarray, G: np.ndarray) -> Fit:
    """Fit dG/dt linearly against G; Section 3 predicts slope -r and intercept r G_inf.

    dG/dt is the difference quotient of consecutive rounds, set against their midpoint G: for
    samples of an exponential this is exactly linear (slope -2 tanh(r/2) per unit round) and
    crosses zero at G_inf, which is reported as ``-intercept / slope``.
    """
    if problem := _data_problem(t, G, "G", MIN_ROUNDS):
        return Fit(problem)
    dG_dt, G_mid = np.diff(G) / np.diff(t), (G[1:] + G[:-1]) / 2
    result = LINEAR.fit(dG_dt, LINEAR.guess(dG_dt, x=G_mid), x=G_mid)
    slope, intercept = result.params["slope"].value, result.params["intercept"].value
    values = {**_values(result), "r2": result.rsquared,
              "G_inf": -intercept / slope if slope else None, "G": G_mid, "dG_dt": dG_dt}
    status = "ok" if slope < 0 else "slope >= 0: G does not relax toward a limit"
    return Fit(status, result, values)


@_never_raises(Fit)
def fit_gamma(t: np.ndarray, U_s: np.ndarray, U_v: np.ndarray, eta: np.ndarray) -> Fit:
    """Fit the external-data strength gamma of Section 5 with the theory's recursion."""
    if not np.any(eta[:-1] > 0):
        return Fit("skipped: no external data (eta is 0 in every round before the last)")
    if problem := (_data_problem(t, U_s, "U_s", MIN_ROUNDS)
                   or _data_problem(t, U_v, "U_v", MIN_ROUNDS)):
        return Fit(problem)
    if np.any(np.diff(t) != 1) or not np.all(np.isfinite(eta)):
        return Fit("needs consecutive rounds and a finite eta in every row")
    start = fit_joint(t, U_s, U_v).values

    def fit_from(gamma: float) -> ModelResult:
        params = CROSS.make_params(
            U_s0=U_s[0], U_v0=U_v[0], G_inf=start.get("G_inf", U_s[-1] - U_v[-1]),
            rate={"value": start.get("rate", 0.5), "min": RATE_BOUNDS[0], "max": RATE_BOUNDS[1]},
            beta_over_alpha={"value": np.clip(start.get("beta_over_alpha") or 0.5, 0, 0.9),
                             "min": 0.0, "max": 0.99},
            gamma={"value": gamma, "min": 0.0})
        return CROSS.fit(np.r_[U_s, U_v], params, eta=eta, max_nfev=MAX_NFEV)

    with np.errstate(all="ignore"):  # overflow while exploring far parameters is harmless
        result = min((fit_from(gamma) for gamma in (0.1, 1.0)), key=lambda r: r.chisqr)
    U_s_fit, U_v_fit = np.split(result.best_fit, 2)
    values = {**_values(result), "eta_total": float(eta[:-1].sum()),
              "r2": _r2([U_s, U_v], [U_s_fit, U_v_fit])}
    return Fit(_fit_problem(result, "rate") or "ok", result, values)
