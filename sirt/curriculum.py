"""``python -m sirt.curriculum SWEEP_DIR``: the final accuracy per level of every job of a multirun
(e.g. ``experiment=curriculum_graph_tiny``) as a table, each job's levels.png, and one figure that
compares the curricula (``SWEEP_DIR/curricula.png``: accuracy over rounds, final accuracy per level and
accepted samples per level, each curriculum's mean over its jobs).

The curricula themselves are in :mod:`sirt.plan.curriculum`.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from omegaconf import OmegaConf

from sirt.config.entry import Parser, refusals
from sirt.plan.curriculum import plot_levels
from sirt.runs.files import markdown_table, read_jsonl
from sirt.runs.rundir import failed_lines, finished_job, no_completed_job, sweep_jobs
from sirt.runs.seeds import mean_se_text
from sirt.runs.tracker import command_run, group_of

COLUMNS = ["job", "dataset", "curriculum", "acc round 0", "acc final", "final acc per level",
           "accepted samples per level"]


def finished_jobs(sweep_dir: Path) -> list[tuple[Path, list[dict[str, Any]], Any]]:
    """Each job with committed rounds: its folder, metrics rows and config (read once for every table)."""
    jobs = [(job, *finished[:2]) for job in sweep_jobs(sweep_dir) if (finished := finished_job(job)) is not None]
    if not jobs:
        raise no_completed_job(sweep_dir)
    return jobs


def sweep_rows(jobs: list[tuple[Path, list[dict[str, Any]], Any]]) -> list[list[str]]:
    """One row of :data:`COLUMNS` per job: curriculum, accuracy at round 0 and at the end, final accuracy and
    accepted samples per level; draws every job's ``plots/levels.png`` on the way."""
    lines = []
    for job, rows, cfg in jobs:
        plot_levels(rows, job / "plots" / "levels.png", f"{cfg.dataset.name}, {cfg.curriculum.name}")
        final = rows[-1]
        per_level = " ".join(f"L{lv}={acc:.3f}" for lv, acc in final.get("acc_level", {}).items())
        data = " ".join(f"L{lv}={k}" for lv, k in sorted(accepted(rows).items(), key=lambda kv: int(kv[0])))
        lines.append([job.name, cfg.dataset.name, cfg.curriculum.name, f"{rows[0]['acc']:.3f}", f"{final['acc']:.3f}",
                      per_level, data])
    return lines


MEAN_COLUMNS = ["dataset", "curriculum", "jobs", "acc final", "final acc per level"]


def mean_rows(jobs: list[tuple[Path, list[dict[str, Any]], Any]]) -> list[list[str]]:
    """One row of :data:`MEAN_COLUMNS` per dataset and curriculum: the final accuracy, overall and per level, as
    the mean ± standard error over its jobs (the seeds of one curriculum)."""
    finals: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for _, rows, cfg in jobs:
        finals[(cfg.dataset.name, cfg.curriculum.name)].append(rows[-1])
    lines = []
    for (dataset, name), rows in finals.items():
        levels = sorted({lv for row in rows for lv in row.get("acc_level", {})}, key=int)
        per_level = " ".join(f"L{lv}={mean_se_text([r['acc_level'][lv] for r in rows if lv in r['acc_level']])}"
                             for lv in levels)
        lines.append([dataset, name, str(len(rows)), mean_se_text([r["acc"] for r in rows]), per_level])
    return lines


def summarize_sweep(sweep_dir: Path) -> str:
    """Markdown: curriculum, final accuracy overall and per level, accepted samples per level, of each job;
    then each curriculum's mean ± standard error over its jobs. Draws every job's ``plots/levels.png``."""
    return report(sweep_dir, finished_jobs(sweep_dir))[0]


def report(sweep_dir: Path, jobs: list[tuple[Path, list[dict[str, Any]], Any]]) -> tuple[str, list[list[str]]]:
    """The text as printed (the jobs' table, the curricula's means, the failed jobs) and the jobs' rows."""
    rows = sweep_rows(jobs)
    means = ["", "Per curriculum, mean ± standard error over its jobs (seeds):", "",
             *markdown_table(MEAN_COLUMNS, mean_rows(jobs))]
    return "\n".join([*markdown_table(COLUMNS, rows), *means, *failed_lines(sweep_dir)]), rows


def log_to_wandb(sweep_dir: Path, rows: list[list[str]], figure: Path | None, project: str = "sirt",
                 entity: str | None = None, group: str | None = None, mode: str = "offline") -> str:
    """The sweep's table (``curriculum/jobs``) and figure (``curriculum/plot``) as a W&B run of job_type
    ``curriculum`` in the sweep's group, beside the jobs' runs; returns its id."""
    import wandb

    group = group or group_of(sweep_dir)
    run = command_run("curriculum", sweep_dir, f"curriculum {group}", project=project, entity=entity, group=group,
                      mode=mode, config={"sweep_dir": str(sweep_dir.resolve())},
                      tags=sorted({f"curriculum:{row[2]}" for row in rows}))
    try:
        logged = {"curriculum/jobs": wandb.Table(columns=COLUMNS, data=rows)}
        if figure is not None:
            logged["curriculum/plot"] = wandb.Image(str(figure))
        run.log(logged)
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()
    return run.id


def by_curriculum(sweep_dir: Path) -> dict[str, list[list[dict[str, Any]]]]:
    """The metrics rows of the sweep's jobs, grouped by curriculum (several jobs: seeds of one curriculum)."""
    groups: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
    for job in sorted(p.parent for p in sweep_dir.glob("*/metrics.jsonl")):
        rows = read_jsonl(job / "metrics.jsonl")
        if rows:
            groups[OmegaConf.load(job / ".hydra" / "config.yaml").curriculum.name].append(rows)
    return dict(groups)


def accepted(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Accepted samples per level over the rounds that trained a next model (the last round's train nothing)."""
    total: dict[str, int] = defaultdict(int)
    for row in rows[:-1]:
        for level, k in row.get("n_selected_level", {}).items():
            total[level] += k
    return total


def plot_curricula(groups: dict[str, list[list[dict[str, Any]]]], path: Path, title: str) -> Path | None:
    """One figure comparing the curricula: mean accuracy over rounds, final accuracy per level and accepted
    samples per level (means over each curriculum's jobs); None for a sweep with no rounds."""
    if not groups:
        return None
    names = list(groups)
    levels = sorted({int(lv) for runs in groups.values() for rows in runs for lv in rows[-1].get("acc_level", {})})
    colors = colormaps["tab10"]
    fig = Figure(figsize=(16, 4.4), layout="constrained")
    over_rounds, per_level, data = fig.subplots(1, 3)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        runs = groups[name]
        n = min(len(rows) for rows in runs)
        acc = np.mean([[row["acc"] for row in rows[:n]] for rows in runs], axis=0)
        over_rounds.plot([row["round"] for row in runs[0][:n]], acc, "o-", color=colors(i),
                         label=f"{name} ({len(runs)})")
        final = [np.mean([rows[-1].get("acc_level", {}).get(str(lv), np.nan) for rows in runs]) for lv in levels]
        taken = [np.mean([accepted(rows).get(str(lv), 0) for rows in runs]) for lv in levels]
        offsets = np.arange(len(levels)) + (i - (len(names) - 1) / 2) * width
        per_level.bar(offsets, final, width, color=colors(i), label=name)
        data.bar(offsets, taken, width, color=colors(i), label=name)
    over_rounds.set(title="test accuracy", xlabel="round t", ylabel="accuracy (mean over jobs)")
    over_rounds.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax, name, ylabel in ((per_level, "final accuracy per level", "accuracy"),
                             (data, "accepted samples per level (all rounds)", "samples")):
        ax.set_xticks(range(len(levels)), [f"level {lv}" for lv in levels])
        ax.set(title=name, ylabel=ylabel)
    over_rounds.legend(fontsize="small", title="curriculum (jobs)")
    fig.suptitle(f"{title}: curricula compared at the same budget")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = Parser("curriculum", description=summarize_sweep.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (its jobs hold metrics.jsonl)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the table and figure to W&B")
    parser.add_argument("--project", default="sirt", help="W&B project (default: sirt)")
    parser.add_argument("--entity", default=None, help="W&B entity (default: yours)")
    parser.add_argument("--group", default=None, help="W&B group (default: the one the sweep's jobs logged to)")
    parser.add_argument("--mode", default="offline", choices=["offline", "online"], help="W&B mode (default: offline)")
    args = parser.parse_args(argv)
    with refusals("curriculum"):
        text, rows = report(args.sweep_dir, finished_jobs(args.sweep_dir))
    print(text)
    figure = plot_curricula(by_curriculum(args.sweep_dir), args.sweep_dir / "curricula.png", args.sweep_dir.name)
    if figure is not None:
        print(f"\ncurricula compared: {figure}")
    if rows and not args.no_wandb:
        run_id = log_to_wandb(args.sweep_dir, rows, figure, args.project, args.entity, args.group, args.mode)
        print(f"W&B: curriculum run {run_id} ({args.mode}; {args.sweep_dir / 'wandb'})")


if __name__ == "__main__":
    main()
