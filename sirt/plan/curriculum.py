"""Curricula (paper 2): which difficulty levels a round's prompts come from.

A curriculum gives round t a weight per level (levels in ascending order):

- ``none``: the train split as it is (all of it, or a seeded draw of ``prompts_per_round``);
- ``mixture``: fixed weights (``curriculum.weights``; empty = equal);
- ``easy_to_hard``: one level at a time, easiest first; the next level starts after
  ``advance_every`` rounds or as soon as the acceptance at the current level reaches
  ``threshold``, whichever comes first; ``replay`` keeps a share on the levels already passed;
- ``hard_only``: the hardest level only;
- ``custom``: ``per_round[t]`` (the last entry holds for later rounds).

The budget is the same for every curriculum: ``prompts_per_round`` prompts (0 = as many as
the train split has), each sampled N times, split over the levels by largest remainder and
drawn from each level's pool of train problems with a generator seeded by (seed, round). A
level asked for more prompts than its pool holds repeats them, so the budget stays exact.
Acceptance decides ``easy_to_hard``'s pace, and it is read back from the committed rows of
metrics.jsonl, so a resumed run draws exactly the prompts an uninterrupted one would. The
Monte-Carlo simulator (:mod:`sirt.theory.montecarlo`) calls the same :func:`level_weights`.

``python -m sirt.curriculum SWEEP_DIR`` tables the final accuracy per level of every job of
a multirun (e.g. ``experiment=curriculum_graph_tiny``) and draws each job's levels.png.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sirt.config.errors import ConfigError
from sirt.config.schema import Config, CurriculumSchema
from sirt.plan.schedule import allocate
from sirt.plan.seeds import round_seed
from sirt.tasks.problem import Problem

LEVEL_PANELS = (  # metrics.jsonl key, title, y label, y range (None: from the data)
    ("acc_level", "Test accuracy per level", "accuracy", (-0.02, 1.02)),
    ("acceptance_level", "Acceptance per level", "share of prompts with an accepted sample", (-0.02, 1.02)),
    ("n_selected_level", "Accepted samples per level", "training examples", None),
)


def check_curriculum(cfg: CurriculumSchema, rounds: int) -> None:
    """Refuse, before any compute, a curriculum that cannot run; the message names the field."""
    def need(ok: bool, name: str, value: Any, why: str) -> None:
        if not ok:
            raise ConfigError(f"curriculum.{name}={value!r}: {why}")

    need(all(w >= 0 for w in cfg.weights) and (not cfg.weights or sum(cfg.weights) > 0), "weights", cfg.weights,
         "weights must be >= 0 with a positive sum")
    need(cfg.advance_every >= 0, "advance_every", cfg.advance_every, "must be >= 0 (0 = by threshold only)")
    need(cfg.threshold is None or 0 <= cfg.threshold <= 1, "threshold", cfg.threshold, "must be in [0, 1] or null")
    need(0 <= cfg.replay < 1, "replay", cfg.replay, "must be in [0, 1)")
    if cfg.name == "easy_to_hard":
        need(cfg.advance_every > 0 or cfg.threshold is not None, "advance_every", cfg.advance_every,
             "easy_to_hard needs advance_every > 0 or a threshold, else it never leaves the easiest level")
    if cfg.name == "custom":
        rows = cfg.per_round
        need(1 <= len(rows) <= rounds + 1, "per_round", rows, f"needs 1..rounds+1={rounds + 1} rows of level weights")
        for row in rows:
            ok = isinstance(row, Sequence) and all(isinstance(w, int | float) and w >= 0 for w in row)
            need(ok and len(row) == len(rows[0]) and sum(row) > 0, "per_round", rows,
                 "every row must hold one weight >= 0 per level (same length), with a positive sum")


def easy_to_hard_stage(cfg: CurriculumSchema, n_levels: int, t: int, acceptance: Sequence[Sequence[float]]) -> int:
    """Index of the level round t is on, replayed from the per-level acceptance of rounds 0..t-1.

    The stage is a function of the history, not a stored counter, so training (rows of
    metrics.jsonl) and the simulator (arrays) share it and a resumed run needs no extra state.
    """
    stage, since = 0, 0
    for rates in acceptance[:t]:
        since += 1
        passed = cfg.threshold is not None and rates[stage] >= cfg.threshold  # NaN (no prompts) never passes
        due = cfg.advance_every > 0 and since >= cfg.advance_every
        if stage < n_levels - 1 and (passed or due):
            stage, since = stage + 1, 0
    return stage


def easy_to_hard_weights(cfg: CurriculumSchema, n_levels: int, t: int,
                         acceptance: Sequence[Sequence[float]]) -> list[float]:
    """The current level, plus a share ``replay`` spread over the levels already passed."""
    stage = easy_to_hard_stage(cfg, n_levels, t, acceptance)
    replay = cfg.replay if stage else 0.0  # the first level has nothing to replay
    return [replay / max(stage, 1)] * stage + [1.0 - replay] + [0.0] * (n_levels - stage - 1)


LevelWeights = Callable[[CurriculumSchema, int, int, Sequence[Sequence[float]]], list[float]]
CURRICULA: dict[str, LevelWeights | None] = {  # keyed by conf/curriculum/ option names; None: the split as it is
    "none": None,
    "mixture": lambda cfg, n_levels, t, acceptance: list(cfg.weights) or [1.0] * n_levels,
    "hard_only": lambda cfg, n_levels, t, acceptance: [0.0] * (n_levels - 1) + [1.0],
    "custom": lambda cfg, n_levels, t, acceptance: list(cfg.per_round[min(t, len(cfg.per_round) - 1)]),
    "easy_to_hard": easy_to_hard_weights,
}


def level_weights(cfg: CurriculumSchema, n_levels: int, t: int, acceptance: Sequence[Sequence[float]]) -> list[float]:
    """Round t's weight per level (ascending); ``acceptance[r][i]``: acceptance at level i in round r."""
    rule = CURRICULA.get(cfg.name)
    if rule is None:
        raise ConfigError(f"curriculum.name={cfg.name!r}: has no level weights")
    weights = rule(cfg, n_levels, t, acceptance)
    if len(weights) != n_levels:
        raise ConfigError(f"curriculum: {len(weights)} level weights {weights} for {n_levels} levels")
    return [float(w) for w in weights]


def acceptance_history(rows: Sequence[Mapping[str, Any]], levels: Sequence[int], t: int) -> list[list[float]]:
    """Per-level acceptance of rounds 0..t-1 from metrics.jsonl rows; NaN where a round had no prompt of a level."""
    by_round = {row["round"]: row.get("acceptance_level", {}) for row in rows}
    return [[by_round.get(r, {}).get(str(level), math.nan) for level in levels] for r in range(t)]


def draw(pool: Sequence[Problem], k: int, rng: random.Random) -> list[Problem]:
    """``k`` problems of a pool: without repeats while the pool lasts, then another pass in a fresh order."""
    whole, rest = divmod(k, len(pool))
    return [p for _ in range(whole) for p in rng.sample(pool, len(pool))] + rng.sample(pool, rest)


def round_problems(train: Sequence[Problem], config: Config, t: int,
                   history: Sequence[Mapping[str, Any]] = ()) -> list[Problem]:
    """Round t's prompts under ``config.curriculum``; ``history`` holds the committed metrics rows."""
    rng = random.Random(round_seed(config.seed, t, "prompts"))
    n = config.prompts_per_round
    if CURRICULA[config.curriculum.name] is None:
        return list(train) if n == 0 or n >= len(train) else rng.sample(list(train), n)
    pools: dict[int, list[Problem]] = defaultdict(list)
    for problem in train:
        pools[problem.level].append(problem)
    levels = sorted(pools)
    weights = level_weights(config.curriculum, len(levels), t, acceptance_history(history, levels, t))
    counts = allocate(weights, n or len(train))
    return [p for level, k in zip(levels, counts) for p in draw(pools[level], k, rng)]


def plot_levels(rows: Sequence[Mapping[str, Any]], path: Path, title: str) -> Path | None:
    """Accuracy, acceptance and accepted samples per level over rounds (``<run>/plots/levels.png``).

    This is where a curriculum shows why it wins or loses: which level's acceptance feeds
    the data, and what that data does to each level's accuracy.
    """
    panels = [panel for panel in LEVEL_PANELS if any(row.get(panel[0]) for row in rows)]
    if not panels:
        return None
    levels = sorted({int(lv) for row in rows for key, *_ in panels for lv in row.get(key, {})})
    colors = colormaps["viridis"].resampled(max(len(levels), 2))
    fig = Figure(figsize=(5.5 * len(panels), 4.2), layout="constrained")
    for ax, (key, name, ylabel, ylim) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for i, level in enumerate(levels):
            ys = [row.get(key, {}).get(str(level), math.nan) for row in rows]
            ax.plot([row["round"] for row in rows], ys, "o-", color=colors(i), label=f"level {level}")
        ax.set(title=name, xlabel="round t", ylabel=ylabel, ylim=ylim)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize="small")
    fig.suptitle(f"{title}: per difficulty level")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
