"""The text summary of a fit report (what ``python -m sirt.fit`` and ``sirt.simulate`` print)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _num(value: float | None, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _curves(curves: dict[str, Any]) -> list[str]:
    lines = [f"  {'curve':<9}{'R²':>8}{'y_inf':>10}{'rate':>9}{'power R²':>10}  AIC prefers  status"]
    for q, c in curves.items():
        lines.append(f"  {q:<9}{_num(c.get('r2'), '.4f'):>8}{_num(c.get('y_inf')):>10}"
                     f"{_num(c.get('rate')):>9}{_num(c['power_law'].get('r2'), '.4f'):>10}"
                     f"  {c.get('preferred_aic', '-'):<11}  {c['status']}")
    return lines


def _joint(j: dict[str, Any]) -> list[str]:
    if "rate" not in j:
        return [f"joint (one rate): {j['status']}"]
    params = (f"r={_num(j['rate'])}  α'={_num(j['alpha_p'])}  β'={_num(j['beta_p'])}  "
              f"δ={_num(j['delta'])}  α/β={_num(j['alpha_over_beta'])}")
    limits = f"U_s_∞={_num(j['U_s_inf'])}  U_v_∞={_num(j['U_v_inf'])}  G_∞={_num(j['G_inf'])}"
    return [f"joint (one rate): {params}  R²={_num(j['r2'], '.4f')}  [{j['status']}]",
            f"  limits: {limits}"]


def _dG(d: dict[str, Any]) -> str:
    if "slope" not in d:
        return f"dG/dt vs G: {d['status']}"
    return (f"dG/dt vs G: slope={_num(d['slope'])}  intercept={_num(d['intercept'])}  "
            f"R²={_num(d['r2'], '.4f')}  [{d['status']}]")


def _forecast(f: dict[str, Any]) -> str:
    if "mean_abs_rel_error" not in f:
        return f"forecast: {f['status']}"
    errors = "  ".join(f"{method} {_pct(e['last'])} ({_pct(e['inf'])})"
                       for method, e in f["mean_abs_rel_error"].items())
    return (f"forecast from the first {f['k']} rounds, mean |rel. error| of the last round "
            f"(of the limits): {errors}  [{f['status']}]")


def _cross(c: dict[str, Any]) -> str:
    if "gamma" not in c:
        return f"cross-improvement: {c['status']}"
    return (f"cross-improvement: gamma={_num(c['gamma'])} ± {_num(c['stderr']['gamma'])}  "
            f"R²={_num(c['r2'], '.4f')}  [{c['status']}]")


def summarize(report: dict[str, Any], run_dir: Path) -> str:
    """A few lines: R² per curve, joint parameters and limits, forecast errors by method."""
    lines = [f"fit of {run_dir} ({report['n_rounds']} rounds): {report['status']}"]
    if report["curves"]:
        lines += _curves(report["curves"])
    lines += [*_joint(report["joint"]), _dG(report["dG_vs_G"]), _forecast(report["forecast"]),
              _cross(report["cross_improvement"]),
              f"written: {run_dir / 'fit.json'} " + " ".join(report["plots"]["files"])]
    return "\n".join(lines)
