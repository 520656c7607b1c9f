"""Monte-Carlo simulation of paper 2: reward-filtered maximum-likelihood rounds over levelled tasks.

``python -m sirt.simulate mode=curriculum`` compares curricula at one setting (rows of
metrics.jsonl, plots/curricula.png, plots/levels_<curriculum>.png), then maps where the first
curriculum of ``mc.map.compare`` beats the second by final expected reward over a grid of
initial skill x budget (plots/map.png); all of it goes to simulation.json and a printed table.

The model is ours (paper 2's exact setup is not available to us):

* Skill. The policy gets a reasoning step of a level-e task right with probability p_e, steps
  independently; a level-d task takes d steps, so the policy solves it with probability p_d^d.
  Every level starts at the same step accuracy p0.
* Budget. Every round draws N samples on each of P prompts whatever the curriculum; the
  curriculum splits the P prompts over the levels with :func:`sirt.curriculum.level_weights`,
  the code ``sirt.train`` runs, reading the simulated per-level acceptance as training does.
* Reward filter. A sample is accepted when it is correct, or, wrong, with probability eps
  (``false_accept``, a verifier's mistake). A prompt with an accepted sample gives one training
  example (its first accepted sample); the share of prompts with one is the acceptance.
* Maximum likelihood. A level-d example demonstrates d steps, some right, some wrong. Its
  lesson counts fully at level d and with weight ``transfer``^|d - e| at level e (1: one shared
  skill; 0: unrelated tasks); say level e receives c_e right and w_e wrong demonstrations in a
  round. Fitting the step distribution to them by maximum likelihood, starting from the current
  policy held with the weight of kappa demonstrations (``stiffness``: a finite learning rate),
  gives ``p_e' = (kappa p_e + rho c_e) / (kappa + c_e + w_e)``, where rho (``ceiling``) is the
  step accuracy a model of this capacity reaches on unlimited correct demonstrations.
* Reward. The expected reward of a policy is the mean over levels of p_d^d (a uniform mix of
  test tasks), exact given p; the seeds give its spread.

What follows from it, and what the plots show:

* the feedback loop: acceptance at level d is 1 - (1 - a)^N with a = p_d^d + eps (1 - p_d^d), so
  a better policy gets more examples and takes a larger step next round;
* saturation: p' - p = (rho c - p (c + w)) / (kappa + c + w) vanishes as p nears rho c / (c + w)
  (rho when eps = 0), and acceptance stops growing;
* why curricula differ: while the policy is weak, hard levels are almost never accepted, so a
  mixture spends most of its budget on prompts that give no example; easy-to-hard spends it
  where examples are found, and what they teach carries upward (transfer), raising the next
  level's acceptance. Once every level is accepted, a mixture trains each level directly
  while easy-to-hard reaches the hard ones late and through transfer, so with transfer < 1
  and a budget large enough the mixture wins; a budget that saturates every level either way
  makes the order irrelevant.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sirt.config.defaults import option
from sirt.config.errors import ConfigError
from sirt.config.schema import CurriculumSchema
from sirt.config.validate import MAX_ROUNDS
from sirt.plan.curriculum import check_curriculum, level_weights, plot_levels
from sirt.plan.schedule import allocate

TIE_SE = 2.0  # a difference within this many standard errors is a tie...
TIE_POINTS = 0.005  # ...and so is one below half a point of reward, however precisely measured


@dataclass
class MapSchema:
    """The grid of the advantage map."""

    p0: list[float]
    prompts: list[int]
    compare: list[str]


@dataclass
class MonteCarloSchema:
    """``mc`` of conf/simulate.yaml (see the module docstring for the model)."""

    levels: list[int]
    p0: float
    ceiling: float
    stiffness: float
    transfer: float
    prompts: int
    n_samples: int
    false_accept: float
    seeds: int
    curricula: dict[str, Any]
    map: MapSchema


@dataclass
class Trajectory:
    """Rounds 0..T of every seed: per-level step skill, prompts, acceptance and examples, all (T+1, S, L)."""

    levels: np.ndarray
    skill: np.ndarray
    prompts: np.ndarray
    acceptance: np.ndarray
    accepted: np.ndarray

    def reward_level(self) -> np.ndarray:
        """Expected reward per level, p^d: (T+1, S, L)."""
        return self.skill ** self.levels

    def reward(self) -> np.ndarray:
        """Expected reward on a uniform mix of levels: (T+1, S)."""
        return self.reward_level().mean(-1)


def settings(cfg: DictConfig) -> tuple[MonteCarloSchema, int, int]:
    """(mc, T, seed) of the simulate config, checked; ConfigError names the field."""
    try:
        mc: MonteCarloSchema = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(MonteCarloSchema), cfg.mc))
    except OmegaConfBaseException as err:
        raise ConfigError(f"mc.{err.full_key or ''}: {err.msg}") from None
    T, seed = cfg.T, cfg.seed
    checks = [
        (isinstance(T, int) and not isinstance(T, bool) and 1 <= T <= MAX_ROUNDS, "T", T,
         f"an integer in 1..{MAX_ROUNDS}"),
        (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0, "seed", seed, "an integer >= 0"),
        (bool(mc.levels) and min(mc.levels) >= 1, "mc.levels", mc.levels, "levels (steps) >= 1"),
        (0 < mc.p0 <= 1, "mc.p0", mc.p0, "a step accuracy in (0, 1]"),
        (bool(mc.map.p0) and all(0 < p <= 1 for p in mc.map.p0), "mc.map.p0", mc.map.p0, "step accuracies in (0, 1]"),
        (0 < mc.ceiling <= 1, "mc.ceiling", mc.ceiling, "in (0, 1]"),
        (mc.stiffness > 0, "mc.stiffness", mc.stiffness, "> 0"),
        (0 <= mc.transfer <= 1, "mc.transfer", mc.transfer, "in [0, 1]"),
        (mc.prompts >= 1, "mc.prompts", mc.prompts, ">= 1"),
        (bool(mc.map.prompts) and all(n >= 1 for n in mc.map.prompts), "mc.map.prompts", mc.map.prompts,
         "prompt counts >= 1"),
        (mc.n_samples >= 1, "mc.n_samples", mc.n_samples, ">= 1"),
        (0 <= mc.false_accept <= 1, "mc.false_accept", mc.false_accept, "in [0, 1]"),
        (mc.seeds >= 2, "mc.seeds", mc.seeds, ">= 2 (a spread needs two)"),
        (len(mc.map.compare) == 2 and set(mc.map.compare) <= set(mc.curricula), "mc.map.compare", mc.map.compare,
         "two curricula of mc.curricula: the challenger, then the reference"),
    ]
    for ok, name, value, need in checks:
        if not ok:
            raise ConfigError(f"{name}={value!r}: must be {need}")
    return mc, T, seed


def curricula(mc: MonteCarloSchema, T: int) -> dict[str, CurriculumSchema]:
    """Each compared curriculum: conf/curriculum/<name>.yaml, the file sirt.train composes, with overrides.

    ``mc.curricula`` maps a label to overrides; the file is the label's unless ``name`` says otherwise.
    """
    out = {}
    for label, overrides in mc.curricula.items():
        name = (overrides or {}).get("name", label)
        try:
            out[label] = option("curriculum", name, CurriculumSchema, **(overrides or {}))
        except ConfigError as err:
            raise ConfigError(f"mc.curricula.{label}: {err}") from None
        except OmegaConfBaseException as err:
            raise ConfigError(f"mc.curricula.{label}: {err.msg}") from None
        if out[label].name == "none":
            raise ConfigError(f"mc.curricula.{label}: 'none' has no levels to weigh; pick a curriculum")
        try:
            check_curriculum(out[label], T)
            level_weights(out[label], len(mc.levels), 0, [])  # weights written for another number of levels
        except ConfigError as err:
            raise ConfigError(f"mc.curricula.{label}: {err}") from None
    return out


def level_counts(curriculum: CurriculumSchema, n_levels: int, t: int, acceptance: np.ndarray,
                 prompts: int) -> np.ndarray:
    """Prompts per level of round t for every seed, (S, L), from each seed's acceptance so far, (t, S, L)."""
    weights = [tuple(level_weights(curriculum, n_levels, t, acceptance[:, s])) for s in range(acceptance.shape[1])]
    counts = {w: allocate(list(w), prompts) for w in set(weights)}  # seeds mostly share a stage
    return np.array([counts[w] for w in weights])


def measure_and_select(p: np.ndarray, counts: np.ndarray, mc: MonteCarloSchema,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One round's sampling and reward filter at per-level skill ``p`` (S, L): per-level acceptance,
    examples, and right and wrong step demonstrations in the examples, all (S, L)."""
    S, L = counts.shape
    acceptance, accepted = np.full((S, L), np.nan), np.zeros((S, L), dtype=int)
    right, wrong = np.zeros((S, L)), np.zeros((S, L))
    for i, d in enumerate(mc.levels):
        width = counts[:, i].max()
        if width == 0:
            continue
        errors = rng.binomial(d, 1 - p[:, i, None, None], size=(S, width, mc.n_samples))  # wrong steps per sample
        accept = errors == 0
        if mc.false_accept:
            accept |= rng.random(errors.shape) < mc.false_accept
        found = accept.any(-1) & (np.arange(width) < counts[:, i, None])  # a prompt that exists and has a pick
        pick = np.take_along_axis(errors, accept.argmax(-1)[..., None], -1)[..., 0] * found
        right[:, i] = ((d - pick) * found).sum(1)
        wrong[:, i] = pick.sum(1)
        accepted[:, i] = found.sum(1)
        acceptance[:, i] = np.where(counts[:, i] > 0, accepted[:, i] / np.maximum(counts[:, i], 1), np.nan)
    return acceptance, accepted, right, wrong


def run_rounds(mc: MonteCarloSchema, curriculum: CurriculumSchema, p0: float, prompts: int, T: int,
               rng: np.random.Generator) -> Trajectory:
    """Rounds 0..T for ``mc.seeds`` seeds at once: round t measures policy t; its examples train policy t+1."""
    L, levels = len(mc.levels), np.array(mc.levels)
    reach = mc.transfer ** np.abs(levels[:, None] - levels[None, :])  # share of a level-d lesson that reaches e
    p = np.full((mc.seeds, L), float(p0))
    skill, spent, acceptance, accepted = [p], [], [], []
    for t in range(T + 1):
        counts = level_counts(curriculum, L, t, np.array(acceptance).reshape(t, mc.seeds, L), prompts)
        rates, kept, right, wrong = measure_and_select(p, counts, mc, rng)
        spent.append(counts)
        acceptance.append(rates)
        accepted.append(kept)
        if t < T:
            right, wrong = right @ reach, wrong @ reach
            p = (mc.stiffness * p + mc.ceiling * right) / (mc.stiffness + right + wrong)
            skill.append(p)
    return Trajectory(levels, np.array(skill), np.array(spent), np.array(acceptance), np.array(accepted))


def summary_rows(traj: Trajectory) -> list[dict[str, Any]]:
    """Means over seeds per round, in metrics.jsonl's keys (``acc`` = expected reward), plus spreads."""
    reward, reward_level = traj.reward(), traj.reward_level()
    S, levels = reward.shape[1], [str(d) for d in traj.levels]
    rows = []
    for t in range(reward.shape[0]):
        seen = ~np.isnan(traj.acceptance[t])
        rows.append({
            "round": t,
            "acc": float(reward[t].mean()),
            "acc_se": float(reward[t].std(ddof=1) / np.sqrt(S)),
            "skill": float(traj.skill[t].mean()),
            "acceptance": float((traj.accepted[t].sum(1) / traj.prompts[t].sum(1)).mean()),
            "n_selected": float(traj.accepted[t].sum(1).mean()),
            "acc_level": {lv: float(reward_level[t, :, i].mean()) for i, lv in enumerate(levels)},
            "acceptance_level": {lv: float(traj.acceptance[t, seen[:, i], i].mean())
                                 for i, lv in enumerate(levels) if seen[:, i].any()},
            "n_selected_level": {lv: float(traj.accepted[t, :, i].mean()) for i, lv in enumerate(levels)},
            "prompts_level": {lv: float(traj.prompts[t, :, i].mean()) for i, lv in enumerate(levels)},
        })
    return rows


def simulate_rows(cfg: DictConfig) -> list[dict[str, Any]]:
    """Rows of rounds 0..T at (mc.p0, mc.prompts): ``{"round": t, <curriculum>: its means over seeds}``."""
    mc, T, seed = settings(cfg)
    per_curriculum = {label: summary_rows(run_rounds(mc, cur, mc.p0, mc.prompts, T,
                                                     np.random.default_rng([seed, 0, i])))
                      for i, (label, cur) in enumerate(curricula(mc, T).items())}
    return [{"round": t, **{label: rows[t] for label, rows in per_curriculum.items()}} for t in range(T + 1)]


def advantage_map(mc: MonteCarloSchema, T: int, seed: int) -> list[dict[str, Any]]:
    """Per cell of the (p0, prompts) grid: final expected reward of both compared curricula, their
    difference, its standard error, and the verdict (win, loss, or tie within the TIE_ margins)."""
    compared = curricula(mc, T)
    challenger, reference = mc.map.compare
    cells = []
    for i, (p0, prompts) in enumerate((p0, n) for p0 in mc.map.p0 for n in mc.map.prompts):
        final = {label: run_rounds(mc, compared[label], p0, prompts, T,
                                   np.random.default_rng([seed, 1 + i, j])).reward()[-1]
                 for j, label in enumerate((challenger, reference))}
        delta = float(final[challenger].mean() - final[reference].mean())
        se = float(np.sqrt(sum(f.var(ddof=1) for f in final.values()) / mc.seeds))
        margin = max(TIE_SE * se, TIE_POINTS)
        verdict = "win" if delta > margin else "loss" if delta < -margin else "tie"
        cells.append({"p0": p0, "prompts": prompts, **{label: float(f.mean()) for label, f in final.items()},
                      "delta": delta, "se": se, "verdict": verdict})
    return cells


def report(cfg: DictConfig, rows: list[dict[str, Any]], run_dir: Path) -> str:
    """Map the advantage, write simulation.json and the plots, and return the printed tables."""
    mc, T, seed = settings(cfg)
    cells = advantage_map(mc, T, seed)
    labels = [key for key in rows[0] if key != "round"]
    plots = run_dir / "plots"
    files = [plot_curricula(rows, labels, plots / "curricula.png"), plot_map(cells, mc, plots / "map.png")]
    for label in labels:
        files.append(plot_levels([{"round": row["round"], **row[label]} for row in rows],
                                 plots / f"levels_{label}.png", f"Monte-Carlo, {label}"))
    result = {"model": asdict(mc), "T": T, "seed": seed,
              "final": {label: rows[-1][label] for label in labels},
              "map": {"challenger": mc.map.compare[0], "reference": mc.map.compare[1], "cells": cells},
              "plots": [str(path.relative_to(run_dir)) for path in files if path is not None]}
    (run_dir / "simulation.json").write_text(json.dumps(result, indent=2))
    return "\n\n".join([trajectory_table(rows, labels, mc, T), map_table(cells, mc, T)])


def trajectory_table(rows: list[dict[str, Any]], labels: list[str], mc: MonteCarloSchema, T: int) -> str:
    """Expected reward and acceptance per round and curriculum."""
    head = (f"Monte-Carlo (sirt.theory.montecarlo):"
            f" levels {mc.levels}, step accuracy p0={mc.p0}, ceiling {mc.ceiling}, "
            f"stiffness {mc.stiffness:g}, transfer {mc.transfer}, {mc.prompts} prompts x N={mc.n_samples} per round, "
            f"false accept {mc.false_accept}, T={T}, {mc.seeds} seeds\n"
            "expected reward (acceptance) per round, mean over seeds")
    lines = [head, "round | " + " | ".join(f"{label:>20}" for label in labels)]
    for row in rows:
        lines.append(f"{row['round']:>5} | " + " | ".join(
            f"{row[label]['acc']:>11.3f} ({row[label]['acceptance']:.2f})" for label in labels))
    return "\n".join(lines)


def map_table(cells: list[dict[str, Any]], mc: MonteCarloSchema, T: int) -> str:
    """The advantage map: rows = initial step accuracy, columns = prompts per round."""
    challenger, reference = mc.map.compare
    mark = {"win": "+", "loss": "-", "tie": "="}
    head = (f"{challenger} - {reference}: final expected reward after T={T} rounds, in points (+ win, - loss, "
            f"= tie: within {TIE_SE:g} SE or {100 * TIE_POINTS:g} points), {mc.seeds} seeds per cell, "
            f"N={mc.n_samples}, transfer {mc.transfer}")
    lines = [head, "p0 \\ prompts | " + " | ".join(f"{n:>13}" for n in mc.map.prompts)]
    for p0 in mc.map.p0:
        row = [c for c in cells if c["p0"] == p0]
        lines.append(f"{p0:>12} | " + " | ".join(
            f"{100 * c['delta']:+6.1f}±{100 * c['se']:.1f} {mark[c['verdict']]}" for c in row))
    return "\n".join(lines)


def plot_curricula(rows: list[dict[str, Any]], labels: list[str], path: Path) -> Path:
    """The feedback loop per curriculum: expected reward (±2 SE), acceptance, examples and step skill."""
    panels = (("acc", "Expected reward (uniform mix of levels)"), ("acceptance", "Acceptance"),
              ("n_selected", "Training examples per round"), ("skill", "Step accuracy p (mean over levels)"))
    fig = Figure(figsize=(18, 4.2), layout="constrained")
    t = [row["round"] for row in rows]
    for ax, (key, title) in zip(fig.subplots(1, len(panels)), panels):
        for label in labels:
            y = np.array([row[label][key] for row in rows])
            line, = ax.plot(t, y, "o-", label=label)
            if key == "acc":
                band = 2 * np.array([row[label]["acc_se"] for row in rows])
                ax.fill_between(t, y - band, y + band, color=line.get_color(), alpha=0.2)
        ax.set(title=title, xlabel="round t")
        ax.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_map(cells: list[dict[str, Any]], mc: MonteCarloSchema, path: Path) -> Path:
    """Heat map of the final-reward difference over initial skill x budget, each cell marked by its verdict."""
    grid = np.array([[c["delta"] for c in cells if c["p0"] == p0] for p0 in mc.map.p0]) * 100
    limit = max(float(np.abs(grid).max()), 1e-9)
    fig = Figure(figsize=(1.6 * len(mc.map.prompts) + 2, 1.0 * len(mc.map.p0) + 1.5), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(grid, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto", origin="lower")
    mark = {"win": "+", "loss": "-", "tie": "="}
    for c in cells:
        dark = abs(100 * c["delta"]) > 0.6 * limit
        ax.text(mc.map.prompts.index(c["prompts"]), mc.map.p0.index(c["p0"]),
                f"{100 * c['delta']:+.1f}\n{mark[c['verdict']]}", ha="center", va="center", fontsize="small",
                color="white" if dark else "black")
    ax.set(xticks=range(len(mc.map.prompts)), xticklabels=mc.map.prompts, yticks=range(len(mc.map.p0)),
           yticklabels=mc.map.p0, xlabel=f"prompts per round (x N={mc.n_samples} samples)",
           ylabel="initial step accuracy p0", title=f"{mc.map.compare[0]} - {mc.map.compare[1]}: final expected "
                                                     "reward (points)")
    fig.colorbar(image, ax=ax)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
