"""``python -m sirt.robustness SWEEP_DIR``: does the model organism self-improve on every draw?

The organism is taught by SFT, so what it becomes depends on the teaching seed and on the
float order of the machine (CPU kernels, thread count). A multirun over ``model.teach.seed``
and ``threads`` (``experiment=organism_robustness``) teaches one organism per job; this
tables, per job, what the default run promises: accuracy gain, G above 0 in every round,
Best-of-N picks right more often than a random sample at round 0, and a joint fit that
Proposition 3.1 accepts (beta'/alpha' < 1). Writes ``robustness.md`` and ``robustness.json``
into the sweep directory and prints the table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sirt.config.entry import Parser, refusals
from sirt.runs.files import markdown_table, write_atomic
from sirt.runs.rundir import failed_lines, finished_job, no_completed_job, sweep_jobs

MIN_GAIN = 0.05  # accuracy points a run must gain, first to last round
MIN_LIFT = 0.05  # round-0 pick precision over round-0 sample accuracy


def job_row(job_dir: Path) -> dict[str, Any] | None:
    """The promises of one job, measured; None for a folder without committed rounds."""
    job = finished_job(job_dir)
    if job is None:
        return None
    rows, cfg, joint = job
    first, last = rows[0], rows[-1]
    row = {
        "job": job_dir.name,
        "teach_seed": cfg.model.teach.seed,
        "threads": cfg.get("threads", 0),
        "rounds": last["round"],
        "acc_0": first["acc"],
        "acc_last": last["acc"],
        "gain": last["acc"] - first["acc"],
        "G_min": min(r["G"] for r in rows),
        "pick_precision_0": first["pick_precision"],
        "sample_acc_0": first["sample_acc"],
        "auc_0": first.get("verifier_auc"),
        "joint_status": joint.get("status", "no fit.json"),
        "beta_over_alpha": joint.get("beta_over_alpha"),
    }
    row["self_improves"] = (row["gain"] >= MIN_GAIN and row["G_min"] > 0
                            and row["pick_precision_0"] - row["sample_acc_0"] >= MIN_LIFT)
    row["in_theory"] = row["joint_status"] == "ok"
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    def fmt(x: Any) -> str:
        return f"{x:.3f}" if isinstance(x, float) else str(x)

    cols = ["job", "teach_seed", "threads", "acc_0", "acc_last", "gain", "G_min", "pick_precision_0",
            "sample_acc_0", "auc_0", "beta_over_alpha", "joint_status", "self_improves"]
    lines = markdown_table(cols, ([r[c] for c in cols] for r in rows), fmt)
    n_ok = sum(r["self_improves"] for r in rows)
    n_theory = sum(r["in_theory"] for r in rows)
    lines += ["", f"{n_ok} of {len(rows)} runs self-improve (gain >= {MIN_GAIN:.2f}, G > 0 in every round, round-0 "
                  f"pick precision >= sample accuracy + {MIN_LIFT:.2f}); {n_theory} of {len(rows)} joint fits are "
                  "consistent with Proposition 3.1."]
    return "\n".join(lines) + "\n"


def study(sweep_dir: Path) -> list[dict[str, Any]]:
    """The table of a sweep's completed jobs (its failed ones listed by name); InputError when there are none."""
    jobs = [p for p in sweep_jobs(sweep_dir) if p.name.isdigit()]
    rows = [r for r in map(job_row, jobs) if r is not None]
    if not rows:
        raise no_completed_job(sweep_dir)
    failed = failed_lines(sweep_dir)
    table = markdown(rows) + "\n".join(failed) + ("\n" if failed else "")
    write_atomic(sweep_dir / "robustness.md", table)
    write_atomic(sweep_dir / "robustness.json", json.dumps(rows, indent=2))
    print(table)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = Parser("robustness", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun directory (one job per numbered subfolder)")
    args = parser.parse_args(argv)
    with refusals("robustness"):
        study(args.sweep_dir)


if __name__ == "__main__":
    main()
