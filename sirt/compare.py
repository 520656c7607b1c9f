"""``python -m sirt.compare SWEEP_DIR``: paper 1's cross-improvement table for a multirun.

Per job: schedule, seed, budget M, initial and final accuracy, U_s at the end and U_s,inf from
the fit. Jobs that differ only in ``seed`` are one arm: its mean and standard error over seeds
are what the verdict reads, because one seed's final accuracy on a small test split moves by
several points. Across the arms that used external data: the max-min spread of mean final
accuracy (the paper: at most 2.17 points) and of final U_s, and Proposition 5.1's verdict — the
final uncertainty depends only on sum(eta), not on when the data came. Writes ``compare.md``,
``compare.json`` and ``compare.png`` into the sweep directory and prints the tables; the command
also logs them to a W&B run of its own (job_type ``compare``, offline unless ``--mode online``) in
the sweep's group, beside the jobs' runs (``--no-wandb`` skips it).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from omegaconf import DictConfig, OmegaConf

from sirt.config.entry import Parser, refusals
from sirt.runs.files import markdown_table, write_atomic
from sirt.runs.rundir import failed_jobs, failed_lines, finished_job, no_completed_job, sweep_jobs
from sirt.runs.seeds import mean_se
from sirt.runs.tracker import command_run, group_of, job_order


def job_summary(job_dir: Path) -> dict[str, Any] | None:
    """One row of the table, or None for a directory that holds no completed round."""
    job = finished_job(job_dir)
    if job is None:
        return None
    rows, cfg, joint = job
    return {
        "job": job_dir.name,
        "schedule": cfg.schedule.name,
        "seed": cfg.seed,
        "arm": arm_name(job_dir, cfg),
        "source": cfg.external.source,
        "budget": cfg.external.budget if cfg.schedule.name != "none" else 0,
        "rounds": rows[-1]["round"],
        "acc_initial": rows[0]["acc"],
        "acc_final": rows[-1]["acc"],
        "U_s_final": rows[-1]["U_s"],
        "U_s_inf": joint.get("U_s_inf") if joint.get("status") == "ok" else None,  # only from a fit the theory accepts
        "fit_status": joint.get("status", "no fit.json"),
        "ext_used": sum(r.get("ext_used", 0) for r in rows),
        "trajectory": {"round": [r["round"] for r in rows], "acc": [r["acc"] for r in rows],
                       "U_s": [r["U_s"] for r in rows]},
    }


def arm_name(job_dir: Path, cfg: DictConfig) -> str:
    """The job's command-line overrides without ``seed=``, sorted: jobs that share them, in whatever order they
    were given (a sweep's own parameters come first), are seeds of one arm. A job without Hydra's overrides file
    is named by what the table compares."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        ext = cfg.external
        return f"schedule={cfg.schedule.name} external.source={ext.source} external.budget={ext.budget}"
    overrides = OmegaConf.to_container(OmegaConf.load(path))
    kept = [o for o in overrides if o.split("=")[0].lstrip("+~") != "seed" and not o.startswith("hydra.")]
    return " ".join(sorted(kept)) or "(defaults)"


def by_arm(jobs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Jobs grouped by their overrides except the seed: the seeds of one arm, in job order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        groups.setdefault(job["arm"], []).append(job)
    return groups


def arms(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each arm's mean and standard error over its seeds."""
    result = []
    for name, members in by_arm(jobs).items():
        first = members[0]
        arm = {"arm": name, "schedule": first["schedule"], "source": first["source"], "budget": first["budget"],
               "n_seeds": len(members), "seeds": sorted(j["seed"] for j in members)}
        for key in ("acc_initial", "acc_final", "U_s_final"):
            arm[key], arm[f"{key}_se"] = mean_se([j[key] for j in members])
        result.append(arm)
    return result


def verdict(jobs: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """Spread across the arms with external data (means over seeds), and what it says about Prop. 5.1."""
    groups = arms(jobs)
    external = [a for a in groups if a["schedule"] != "none"]
    if len(external) < 2:
        return {"status": "needs at least two schedules with external data", "arms": groups}
    accs = [a["acc_final"] for a in external]
    U_s = [a["U_s_final"] for a in external]
    spread = max(accs) - min(accs)
    baseline = [a["acc_final"] for a in groups if a["schedule"] == "none"]
    result = {
        "status": "ok",
        "acc_spread": spread,
        "U_s_rel_spread": (max(U_s) - min(U_s)) / (sum(U_s) / len(U_s)),
        "tolerance": tolerance,
        "prop_5_1": "consistent" if spread <= tolerance else "violated",
        "arms": groups,
    }
    if baseline:
        result["min_gain_over_none"] = min(accs) - max(baseline)
    return result


def markdown(jobs: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    def fmt(x: Any) -> str:
        return f"{x:.4g}" if isinstance(x, float) else str(x)

    def mean_se(arm: dict[str, Any], key: str) -> str:
        se = arm[f"{key}_se"]
        return fmt(arm[key]) + (f" ± {se:.2g}" if se is not None else "")

    cols = ["job", "schedule", "seed", "source", "budget", "ext_used", "acc_initial", "acc_final", "U_s_final",
            "U_s_inf"]
    lines = markdown_table(cols, ([j[c] for c in cols] for j in jobs), fmt)
    flagged = sum(j["U_s_inf"] is None for j in jobs)
    if flagged:
        lines += ["", f"U_s_inf is shown only where the joint fit is consistent with the theory; {flagged} of "
                      f"{len(jobs)} jobs' fits are not (their reason: `fit_status` in compare.json)."]
    lines += ["", "Per arm, mean ± standard error over seeds:", ""]
    lines += markdown_table(["arm", "schedule", "budget", "seeds", "acc_initial", "acc_final", "U_s_final"],
                            ([a["arm"], a["schedule"], a["budget"], a["n_seeds"], mean_se(a, "acc_initial"),
                              mean_se(a, "acc_final"), mean_se(a, "U_s_final")] for a in summary["arms"]), fmt)
    lines.append("")
    if summary["status"] == "ok":
        lines.append(f"Spread of mean final accuracy across external schedules: "
                     f"{100 * summary['acc_spread']:.2f} points (paper 1: at most 2.17); "
                     f"relative spread of final U_s: {100 * summary['U_s_rel_spread']:.2f}%.")
        lines.append(f"Proposition 5.1 (timing does not matter, tolerance {100 * summary['tolerance']:.1f} points): "
                     f"**{summary['prop_5_1']}**.")
        if "min_gain_over_none" in summary:
            lines.append(f"Smallest gain of an external schedule over self-improvement alone: "
                         f"{100 * summary['min_gain_over_none']:+.2f} points.")
    else:
        lines.append(f"No verdict: {summary['status']}.")
    return "\n".join(lines) + "\n"


def plot(jobs: list[dict[str, Any]], path: Path) -> None:
    """One colour per arm: every seed as a thin line, the arm's mean over seeds as a thick one."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for color, (name, members) in enumerate(by_arm(jobs).items()):
        label = f"{name} ({len(members)} seed{'s' * (len(members) > 1)})"
        for ax, key in zip(axes, ("acc", "U_s")):
            for job in members:
                ax.plot(job["trajectory"]["round"], job["trajectory"][key], color=f"C{color}", alpha=0.3, lw=0.8)
            rounds = min((j["trajectory"]["round"] for j in members), key=len)
            mean = [statistics.fmean(j["trajectory"][key][i] for j in members) for i in range(len(rounds))]
            ax.plot(rounds, mean, color=f"C{color}", marker="o", lw=2, label=label)
    for ax, name in zip(axes, ("test accuracy (greedy)", "U_s (nats per response)")):
        ax.set_xlabel("round t")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    rows = (len(labels) + 1) // 2  # arm names are long: a legend under the plots, two per line
    fig.set_figheight(4 + 0.25 * rows)
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("Cross-improvement: schedules of the external budget (thin: seeds, thick: mean)")
    fig.tight_layout(rect=(0, 0.25 * rows / (4 + 0.25 * rows) + 0.02, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(sweep_dir: Path, tolerance: float = 0.03) -> dict[str, Any]:
    """The tables of a sweep's completed jobs (its failed ones listed by name); InputError when there are none."""
    jobs = [s for d in sweep_jobs(sweep_dir) if (s := job_summary(d))]
    if not jobs:
        raise no_completed_job(sweep_dir)
    summary = verdict(jobs, tolerance)
    failed = failed_jobs(sweep_dir)
    write_atomic(sweep_dir / "compare.json", json.dumps({"jobs": jobs, "summary": summary, "failed_jobs": failed},
                                                        indent=2))
    table = markdown(jobs, summary) + "\n".join(failed_lines(sweep_dir)) + ("\n" if failed else "")
    write_atomic(sweep_dir / "compare.md", table)
    plot(jobs, sweep_dir / "compare.png")
    print(table)
    return summary


def run_data_artifacts(sweep_dir: Path) -> list[str]:
    """The ``run-data-<id>`` artifacts the sweep's jobs logged (their ``wandb_id``), in job order."""
    ids = [(job / "wandb_id").read_text().strip() for job in sorted(filter(Path.is_dir, sweep_dir.iterdir()),
                                                                      key=job_order) if (job / "wandb_id").is_file()]
    return [f"run-data-{i}" for i in ids if i]


def use_artifact(run, name: str) -> None:
    """Declare a job's run-data as this run's input; a job that never logged it (it failed) is skipped."""
    import wandb

    try:
        run.use_artifact(f"{name}:latest", type="run-data")
    except (wandb.errors.CommError, ValueError) as err:
        print(f"sirt.compare: W&B has no {name} to declare as an input ({err})", file=sys.stderr)


def log_to_wandb(sweep_dir: Path, project: str = "sirt", entity: str | None = None, group: str | None = None,
                 mode: str = "offline") -> str:
    """The compare.json and compare.png of a sweep as a W&B run (job_type ``compare``) in its group: the
    jobs and arms as tables, the verdict in the summary (``verdict/...``), the plot as an image. Returns the run id."""
    import wandb

    report = json.loads((sweep_dir / "compare.json").read_text())
    jobs, summary = report["jobs"], report["summary"]
    group = group or group_of(sweep_dir)
    inputs = run_data_artifacts(sweep_dir)
    run = command_run("compare", sweep_dir, f"compare {group}", project=project, entity=entity, group=group,
                      mode=mode, config={"sweep_dir": str(sweep_dir.resolve()), "run_data": inputs},
                      tags=sorted({f"schedule:{j['schedule']}" for j in jobs}))
    try:
        if mode == "online":  # W&B's lineage: the jobs' run-data feed this run (offline W&B cannot record it)
            for name in inputs:
                use_artifact(run, name)
        job_columns = ["job", "arm", "schedule", "seed", "source", "budget", "rounds", "ext_used", "acc_initial",
                       "acc_final", "U_s_final", "U_s_inf", "fit_status"]
        arm_columns = ["arm", "schedule", "source", "budget", "n_seeds", "acc_initial", "acc_initial_se",
                       "acc_final", "acc_final_se", "U_s_final", "U_s_final_se"]
        logged = {"compare/jobs": wandb.Table(columns=job_columns,
                                              data=[[j.get(c) for c in job_columns] for j in jobs]),
                  "compare/arms": wandb.Table(columns=arm_columns,
                                              data=[[a.get(c) for c in arm_columns] for a in summary["arms"]])}
        if (sweep_dir / "compare.png").exists():
            logged["compare/plot"] = wandb.Image(str(sweep_dir / "compare.png"))
        run.log(logged)
        run.summary.update({f"verdict/{k}": v for k, v in summary.items() if k != "arms"})
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()
    return run.id


def main(argv: list[str] | None = None) -> None:
    parser = Parser("compare", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (one job per subfolder)")
    parser.add_argument("--tolerance", type=float, default=0.03, help="accuracy spread still 'consistent'")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the comparison to W&B")
    parser.add_argument("--project", default="sirt", help="W&B project (default: sirt)")
    parser.add_argument("--entity", default=None, help="W&B entity (default: yours)")
    parser.add_argument("--group", default=None,
                        help="W&B group (default: the jobs' logger.group, else [<experiment>_]<date>_<time> of the "
                             "sweep dir)")
    parser.add_argument("--mode", default="offline", choices=["offline", "online"], help="W&B mode (default: offline)")
    args = parser.parse_args(argv)
    with refusals("compare"):
        compare(args.sweep_dir, args.tolerance)
    if not args.no_wandb:
        run_id = log_to_wandb(args.sweep_dir, args.project, args.entity, args.group, args.mode)
        print(f"W&B: compare run {run_id} in group {args.group or group_of(args.sweep_dir)} "
              f"({args.mode}; {args.sweep_dir / 'wandb'})")


if __name__ == "__main__":
    main()
