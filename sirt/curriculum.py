"""``python -m sirt.curriculum SWEEP_DIR``: the final accuracy per level of every job of a multirun
(e.g. ``experiment=curriculum_graph_tiny``) as a table, and each job's levels.png.

The curricula themselves are in :mod:`sirt.plan.curriculum`.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from sirt.config.entry import Parser, refusals
from sirt.plan.curriculum import plot_levels
from sirt.runs.rundir import failed_lines, finished_job, no_completed_job, sweep_jobs


def summarize_sweep(sweep_dir: Path) -> str:
    """Markdown: curriculum, final accuracy overall and per level, accepted samples per level, of each job;
    draws every job's ``plots/levels.png`` on the way."""
    lines = []
    for job in sweep_jobs(sweep_dir):
        if (finished := finished_job(job)) is None:
            continue
        rows, cfg, _ = finished
        plot_levels(rows, job / "plots" / "levels.png", f"{cfg.dataset.name}, {cfg.curriculum.name}")
        final = rows[-1]
        accepted = defaultdict(int)
        for row in rows[:-1]:  # the last round's picks train nothing
            for level, k in row.get("n_selected_level", {}).items():
                accepted[level] += k
        per_level = " ".join(f"L{lv}={acc:.3f}" for lv, acc in final.get("acc_level", {}).items())
        data = " ".join(f"L{lv}={k}" for lv, k in sorted(accepted.items(), key=lambda kv: int(kv[0])))
        lines.append(f"| {job.name} | {cfg.dataset.name} | {cfg.curriculum.name} | {rows[0]['acc']:.3f} | "
                     f"{final['acc']:.3f} | {per_level} | {data} |")
    if not lines:
        raise no_completed_job(sweep_dir)
    header = ("| job | dataset | curriculum | acc round 0 | acc final | final acc per level | "
              "accepted samples per level |\n|---|---|---|---|---|---|---|")
    return "\n".join([header, *lines, *failed_lines(sweep_dir)])


def main(argv: list[str] | None = None) -> None:
    parser = Parser("curriculum", description=summarize_sweep.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (its jobs hold metrics.jsonl)")
    args = parser.parse_args(argv)
    with refusals("curriculum"):
        print(summarize_sweep(args.sweep_dir))


if __name__ == "__main__":
    main()
