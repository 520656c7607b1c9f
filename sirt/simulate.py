"""Theory simulator: ``python -m sirt.simulate [alpha=1.2 noise=0.01 T=3 'eta=[0,1,0]' ...]``.

Writes a run directory whose metrics.jsonl follows the theory with known parameters, then
fits it like any real run: ground truth for the fitting callback, and a quick way to see
what a parameter does. ``mode`` picks the simulator; each returns metrics.jsonl rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from sirt.config.entry import HydraCommand, refusals
from sirt.config.errors import ConfigError
from sirt.config.validate import MAX_ROUNDS
from sirt.plan.schedule import allocate
from sirt.runs.tracker import command_run, flatten
from sirt.theory import montecarlo
from sirt.theory.dynamics import Dynamics, cross_improvement
from sirt.theory.report import fit_run
from sirt.theory.summary import summarize


def _field(cfg: DictConfig, name: str, need: str, ok: Callable[[Any], bool] = lambda _: True,
           kind: type | tuple[type, ...] = (int, float)) -> Any:
    """``cfg[name]`` if it has the type and passes ``ok``; else ConfigError naming it."""
    value = cfg[name]
    if isinstance(value, bool) or not isinstance(value, kind) or not ok(value):
        raise ConfigError(f"{name}={value!r}: must be {need}")
    return value


def _eta(cfg: DictConfig, T: int) -> list[float]:
    """The external-data shares per training round; zeros when there are none."""
    if cfg.eta is None:
        return [0.0] * T
    shares = list(cfg.eta) if isinstance(cfg.eta, ListConfig) else None
    if shares is None or not all(isinstance(s, int | float) for s in shares):
        raise ConfigError(f"eta={cfg.eta!r}: must be a list of numbers or null")
    if len(shares) != T or min(shares) < 0 or abs(sum(shares) - 1) > 1e-6:
        raise ConfigError(f"eta={shares}: must hold T={T} non-negative shares summing to 1")
    return [float(share) for share in shares]


def simulate_dynamics(cfg: DictConfig) -> list[dict[str, Any]]:
    """Rounds 0..T of the linear model with external data, with relative measurement noise."""
    alpha = _field(cfg, "alpha", "a number > 0", lambda v: v > 0)
    T = _field(cfg, "T", f"an integer in 1..{MAX_ROUNDS}", lambda v: 1 <= v <= MAX_ROUNDS, kind=int)
    start = Dynamics(alpha=alpha,
                     beta=_field(cfg, "beta", f"in [0, alpha={alpha})", lambda v: 0 <= v < alpha),
                     k=_field(cfg, "k", "a number > 0", lambda v: v > 0),
                     b=_field(cfg, "b", "a number"), U_s0=_field(cfg, "U_s0", "a number"),
                     U_v0=_field(cfg, "U_v0", "a number"))
    noise = _field(cfg, "noise", "a number >= 0", lambda v: v >= 0)
    gamma = _field(cfg, "gamma", "a number >= 0", lambda v: v >= 0)
    M = _field(cfg, "M", "an integer >= 0", lambda v: v >= 0, kind=int)
    seed = _field(cfg, "seed", "an integer", kind=int)
    eta = [0.0, *_eta(cfg, T)]  # row t holds the share that trained round t's model; row 0: none
    states = cross_improvement(start, eta[1:], gamma)
    U = np.array([[s.U_s0, s.U_v0] for s in states])
    U *= 1 + noise * np.random.default_rng(seed).standard_normal(U.shape)
    used = allocate(eta, M)
    return [{"round": t, "U_s": U_s, "U_v": U_v, "G": U_s - U_v, "eta": eta[t],
             "ext_used": used[t]} for t, (U_s, U_v) in enumerate(U.tolist())]


SIMULATORS: dict[str, Callable[[DictConfig], list[dict[str, Any]]]] = {
    "dynamics": simulate_dynamics,
    "curriculum": montecarlo.simulate_rows,
}


def simulate(cfg: DictConfig) -> list[dict[str, Any]]:
    """The metrics.jsonl rows of the simulator ``cfg.mode`` names."""
    if "experiments" in cfg:  # the form before the studies became a group: it would apply nothing
        raise ConfigError(f"+experiments={cfg.experiments}: the studies are a config group now, "
                          f"use experiment={cfg.experiments}")
    if cfg.mode not in SIMULATORS:
        raise ConfigError(f"mode={cfg.mode!r}: must be one of {', '.join(SIMULATORS)}")
    if not isinstance(cfg.get("wandb", False), bool):
        raise ConfigError(f"wandb={cfg.wandb!r}: must be true or false")
    return SIMULATORS[cfg.mode](cfg)


COMMAND = HydraCommand("simulate")


def log_to_wandb(cfg: DictConfig, rows: list[dict[str, Any]], run_dir: Path, summary: dict[str, Any]) -> str:
    """The simulated run as a W&B run of job_type ``simulate`` (offline): every row against ``round`` (nested
    values flattened), the fit's figures in the summary (``fit/...``) and its plots; returns the run id."""
    import wandb

    run = command_run("simulate", run_dir, f"simulate {cfg.mode} {run_dir.name}",
                      config=OmegaConf.to_container(cfg, resolve=True), tags=[f"mode:{cfg.mode}"])
    try:
        run.define_metric("round")
        run.define_metric("*", step_metric="round")
        for row in rows:
            run.log(flatten(row))
        images = {f"plots/{p.stem}": wandb.Image(str(p)) for p in sorted((run_dir / "plots").glob("*.png"))}
        run.summary.update({**summary, **images})
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()
    return run.id


@hydra.main(version_base=None, config_path="../conf", config_name="simulate")
def main(cfg: DictConfig) -> None:
    COMMAND.started()
    with refusals("simulate"):
        rows = simulate(cfg)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    if cfg.mode == "curriculum":  # paper 2's comparison has its own report and no paper-1 dynamics to fit
        print(montecarlo.report(cfg, rows, run_dir))
        summary = {}
    else:
        report = fit_run(run_dir, forecast_k=cfg.forecast_k, make_plots=cfg.plots)
        print(summarize(report, run_dir))
        summary = {f"fit/{k}": v for k, v in report.get("joint", {}).items() if isinstance(v, int | float)}
        summary["fit/status"] = report.get("status")
    if cfg.get("wandb", False):
        print(f"W&B: simulate run {log_to_wandb(cfg, rows, run_dir, summary)} (offline; {run_dir / 'wandb'})")


if __name__ == "__main__":
    COMMAND.run(main)
