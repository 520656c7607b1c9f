"""Plots of a fitted run: the views a researcher judges the theory by.

Figures use matplotlib's object API (``Figure``, rendered by Agg on save): no pyplot state,
no display, safe inside a training process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sirt.theory.fitting import Fit
from sirt.theory.forecast import RunFits

COLORS = {"U_s": "tab:blue", "U_v": "tab:orange", "G": "tab:green", "acc": "tab:purple",
          "U_s_tok": "tab:blue", "U_v_tok": "tab:orange"}
PANELS = (  # title, curves drawn together, y label
    ("Solver and verifier uncertainty", ("U_s", "U_v"), "NLL of a response (nats)"),
    ("Solver-verifier gap", ("G",), "G = U_s - U_v (nats)"),
    ("Test accuracy", ("acc",), "accuracy"),
    ("Per-token uncertainty", ("U_s_tok", "U_v_tok"), "NLL per token (nats)"),
)
FAN_SIZE = 5  # prefix lengths drawn in the forecast fan
DPI = 120


def plot_run(fits: RunFits, plots_dir: Path, title: str) -> list[Path]:
    """Draw every plot the fits allow; return the paths written."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_trajectories(fits, plots_dir / "trajectories.png", title),
             plot_dG_vs_G(fits.dG_vs_G, plots_dir / "dG_vs_G.png", title),
             plot_forecast_fan(fits, plots_dir / "forecast_fan.png", title)]
    return [path for path in paths if path is not None]


def plot_trajectories(fits: RunFits, path: Path, title: str) -> Path | None:
    """Data, per-curve exponential fits with 1-sigma bands, and the shared-rate joint fit."""
    panels = [panel for panel in PANELS if any(q in fits.curves for q in panel[1])]
    if not panels:
        return None
    cols = len(panels) if len(panels) <= 3 else 2
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(5.5 * cols, 4.5 * rows), layout="constrained")
    grid = _grid(fits.t)
    for ax, (name, quantities, ylabel) in zip(fig.subplots(rows, cols, squeeze=False).ravel(),
                                              panels, strict=False):
        drawn = [q for q in quantities if q in fits.curves]
        for q in drawn:
            _draw_curve(ax, fits.t, fits.curves[q], fits.exponential[q], grid, q)
        limits = _draw_joint(ax, fits.joint, grid, drawn)
        ax.set(title=name, xlabel="round t", ylabel=ylabel,
               ylim=_view([fits.curves[q] for q in drawn] + [limits]))
        ax.legend(fontsize="small")
    fig.suptitle(f"{title}: trajectories and exponential fits (shaded: 1σ band)")
    fig.savefig(path, dpi=DPI)
    return path


def plot_pass_at_k(rows: list[dict], path: Path, title: str) -> Path | None:
    """pass@K against K for every round (round 0 and the last bold), and the change from round 0 to the last:
    paper 1's Pass@K ablation (self-improvement raises pass@K at small K and can lower it at large K).
    None when the run measured fewer than three K."""
    measured = [(int(row["round"]), {int(k): v for k, v in row["pass_at_k"].items()}) for row in rows
                if isinstance(row.get("pass_at_k"), dict) and len(row["pass_at_k"]) >= 3]
    if not measured:
        return None
    ks = sorted(measured[0][1])
    colors = colormaps["viridis"].resampled(max(len(measured), 2))
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    curves, change = fig.subplots(1, 2)
    for i, (t, values) in enumerate(measured):
        ends = i in (0, len(measured) - 1)
        curves.plot(ks, [values.get(k, np.nan) for k in ks], "o-" if ends else "-", color=colors(i),
                    lw=2.2 if ends else 0.8, alpha=1.0 if ends else 0.6, label=f"round {t}" if ends else None)
    (t0, first), (t1, last) = measured[0], measured[-1]
    delta = [last.get(k, np.nan) - first.get(k, np.nan) for k in ks]
    change.bar(range(len(ks)), delta, color=["tab:green" if d >= 0 else "tab:red" for d in delta])
    change.axhline(0.0, color="black", lw=0.8)
    change.set_xticks(range(len(ks)), [str(k) for k in ks])
    curves.set_xscale("log", base=2)
    curves.set_xticks(ks, [str(k) for k in ks])
    curves.set(title="pass@K against K, every round", xlabel="K", ylabel="pass@K", ylim=(0, 1.02))
    curves.legend(fontsize="small")
    change.set(title=f"change from round {t0} to round {t1}", xlabel="K", ylabel="Δ pass@K")
    fig.suptitle(f"{title}: pass@K (unbiased estimator over the N samples)")
    fig.savefig(path, dpi=DPI)
    return path


def plot_dG_vs_G(fit: Fit, path: Path, title: str) -> Path | None:
    """Finite-difference dG/dt against G with the linear fit Section 3 predicts."""
    if fit.result is None:
        return None
    G, dG_dt = np.asarray(fit.values["G"]), np.asarray(fit.values["dG_dt"])
    fig = Figure(figsize=(6, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(G, dG_dt, "o", color=COLORS["G"], label="consecutive rounds")
    line = np.linspace(G.min(), G.max(), 100)
    v = fit.values
    ax.plot(line, fit.result.eval(x=line), "k-",
            label=f"fit: slope {v['slope']:.3g}, intercept {v['intercept']:.3g}, "
                  f"R²={v['r2']:.3f}")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set(title=f"{title}: dG/dt against G{_note(fit)}",
           xlabel="G, midpoint of two consecutive rounds (nats)", ylabel="dG/dt (nats per round)")
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=DPI)
    return path


def plot_forecast_fan(fits: RunFits, path: Path, title: str) -> Path | None:
    """Joint fits of the first k rounds for several k, run on to the end against the data."""
    fans = {k: fit for k, fit in fits.forecast.fans.items() if fit.result is not None}
    quantities = [q for q in ("U_s", "U_v", "G") if q in fits.curves]
    if not fans or not quantities:
        return None
    ks = _spread(sorted(fans), FAN_SIZE)
    colors = colormaps["viridis"](np.linspace(0.0, 0.85, len(ks)))
    grid = _grid(fits.t)
    fig = Figure(figsize=(5.5 * len(quantities), 4.5), layout="constrained")
    axes = fig.subplots(1, len(quantities), squeeze=False)[0]
    for ax, q in zip(axes, quantities, strict=True):
        ax.plot(fits.t, fits.curves[q], "ko", label="data", zorder=3)
        for k, color in zip(ks, colors, strict=True):
            ax.plot(grid, _joint_series(fans[k], grid)[q], color=color,
                    label=f"fit on first {k} rounds")
            ax.axvline(fits.t[k - 1], color=color, ls=":", lw=0.8)
        ax.set(title=q, xlabel="round t (dotted: end of the fitted prefix)",
               ylabel=f"{q} (nats)", ylim=_view([fits.curves[q]]))
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{title}: forecast fan, joint fits (one shared rate) of the first k rounds")
    fig.savefig(path, dpi=DPI)
    return path


def _draw_curve(ax: Axes, t: np.ndarray, y: np.ndarray, fit: Fit, grid: np.ndarray,
                q: str) -> None:
    color = COLORS[q]
    ax.plot(t, y, "o", color=color, label=f"{q} data")
    if fit.result is None:
        return
    y_fit = fit.predict(grid)
    ax.plot(grid, y_fit, color=color, label=f"{q} fit, R²={fit.values['r2']:.3f}{_note(fit)}")
    if fit.ok and (band := fit.band(grid)) is not None:
        ax.fill_between(grid, y_fit - band, y_fit + band, color=color, alpha=0.2, lw=0)


def _draw_joint(ax: Axes, joint: Fit, grid: np.ndarray, quantities: list[str]) -> np.ndarray:
    """Draw the joint fit; return the limits drawn (only a trusted fit's limits are)."""
    if joint.result is None:
        return np.array([])
    series = _joint_series(joint, grid)
    drawn = [q for q in quantities if q in series]
    label = f"joint fit, r={joint.values['rate']:.3g}" + _note(joint)
    for i, q in enumerate(drawn):
        ax.plot(grid, series[q], "k--", lw=1, label=label if i == 0 else None)
        if joint.ok:
            ax.axhline(joint.values[f"{q}_inf"], color=COLORS[q], ls=":", lw=1,
                       label=f"{q}_∞ = {joint.values[f'{q}_inf']:.4g}")
    return np.array([joint.values[f"{q}_inf"] for q in drawn]) if joint.ok else np.array([])


def _joint_series(joint: Fit, grid: np.ndarray) -> dict[str, np.ndarray]:
    U_s, U_v = np.split(joint.predict(grid), 2)
    return {"U_s": U_s, "U_v": U_v, "G": U_s - U_v}


def _view(values: list[np.ndarray]) -> tuple[float, float]:
    """Y range of the data (and trusted limits), so a runaway band cannot flatten them."""
    finite = np.concatenate(values)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return 0.0, 1.0
    margin = 0.15 * np.ptp(finite) or 0.05 * max(1.0, abs(finite[0]))
    return float(finite.min() - margin), float(finite.max() + margin)


def _grid(t: np.ndarray) -> np.ndarray:
    return np.linspace(t.min(), t.max(), 200)


def _spread(ks: list[int], n: int) -> list[int]:
    """At most n of the sorted ks, evenly spread, first and last kept."""
    return [ks[i] for i in np.unique(np.linspace(0, len(ks) - 1, n).round().astype(int))]


def _note(fit: Fit) -> str:
    """A failed status without its detail, short enough for a legend: " (no saturation)"."""
    return "" if fit.ok else f" ({fit.status.split(':')[0]})"
