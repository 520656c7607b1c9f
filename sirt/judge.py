"""``python -m sirt.judge RUN_DIR [--task NAME]``: how well the self-verifier judged each kind of mistake, per round.

A run's ``verifier_auc`` can fall while the verifier judges every kind of mistake as well as ever: the
within-question AUC mixes the kinds by how many there are, and self-training removes some faster than others.
This reads every round's ``selections.jsonl``, sorts the wrong samples by kind (the task's own kinds:
``sirt.tasks.registry.ERROR_KINDS``; one kind ``wrong`` for a task without them) and gives, per round, each
kind's share of the wrong samples and the AUC of the right answers against that kind alone. Prints the table
and writes ``judge.md``, ``judge.json`` and ``plots/verifier_by_kind.png`` into the run directory. Exits 2 in
one line when the run has no round to read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from omegaconf import OmegaConf

from sirt.config.entry import Parser, refusals
from sirt.config.errors import InputError
from sirt.runs.files import markdown_table, read_jsonl, write_atomic
from sirt.stages.judging import quality_by_kind, verifier_quality
from sirt.tasks.problem import Problem
from sirt.tasks.registry import error_kind


def run_task(run_dir: Path) -> str:
    """``dataset.name`` of the run, from the config Hydra saved with it."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise InputError(f"{path} does not exist: name the task with --task")
    return str(OmegaConf.load(path).dataset.name)


def judged_rounds(run_dir: Path, task: str) -> list[dict[str, Any]]:
    """Per round with selections: its number, overall verifier quality and the quality by kind of mistake."""
    def kind_of(record: dict, response: str) -> str:
        return error_kind(task, response, Problem(record["question"], record["reference"], record["level"]))

    rounds = sorted((int(d.name), d) for d in (run_dir / "rounds").glob("*") if d.name.isdigit())
    out = []
    for t, d in rounds:
        records = read_jsonl(d / "selections.jsonl")
        if records:
            out.append({"round": t, **verifier_quality(records), "kinds": quality_by_kind(records, kind_of)})
    if not out:
        raise InputError(f"{run_dir / 'rounds'}: no round with a selections.jsonl to read")
    return out


def table(rounds: list[dict[str, Any]]) -> list[str]:
    """One line per round: the overall AUC, then each kind's share of the wrong samples and its AUC."""
    kinds = sorted({k for r in rounds for k in r["kinds"]})
    columns = ["round", "verifier_auc", "sample_acc", *(f"{k} share / auc" for k in kinds)]

    def pair(q: dict[str, float] | None) -> str:
        return "-" if q is None else f"{q['share']:.2f} / {q['verifier_auc']:.3f}"

    rows = [[r["round"], f"{r['verifier_auc']:.3f}", f"{r['sample_acc']:.3f}",
             *(pair(r["kinds"].get(k)) for k in kinds)] for r in rounds]
    return markdown_table(columns, rows)


def plot(rounds: list[dict[str, Any]], path: Path, title: str) -> None:
    """AUC per kind (and overall) against the round, above each kind's share of the wrong samples."""
    kinds = sorted({k for r in rounds for k in r["kinds"]})
    t = [r["round"] for r in rounds]
    fig = Figure(figsize=(7, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(t, [r["verifier_auc"] for r in rounds], "k-o", label="all wrong answers")
    for k in kinds:
        top.plot(t, [r["kinds"].get(k, {}).get("verifier_auc", math.nan) for r in rounds], "--.", label=k)
    top.axhline(0.5, color="grey", lw=0.8)
    top.set_ylabel("within-question AUC")
    top.legend(fontsize=8)
    top.set_title(title)
    bottom.stackplot(t, [[r["kinds"].get(k, {}).get("share", 0.0) for r in rounds] for k in kinds], labels=kinds)
    bottom.set_ylabel("share of wrong samples")
    bottom.set_xlabel("round")
    bottom.legend(fontsize=8, loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def judge(run_dir: Path, task: str | None = None) -> list[str]:
    """Write judge.md, judge.json and the plot for ``run_dir``; return the table's lines."""
    task = task or run_task(run_dir)
    rounds = judged_rounds(run_dir, task)
    lines = table(rounds)
    write_atomic(run_dir / "judge.md", "\n".join(lines) + "\n")
    write_atomic(run_dir / "judge.json", json.dumps({"task": task, "rounds": rounds}, indent=2))
    plot(rounds, run_dir / "plots" / "verifier_by_kind.png", f"{run_dir.name}: the verifier by kind of mistake")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = Parser("judge", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (rounds/*/selections.jsonl)")
    parser.add_argument("--task", default=None, help="the task's dataset.name (default: the run's own config)")
    args = parser.parse_args(argv)
    with refusals("judge"):
        print("\n".join(judge(args.run_dir, args.task)))
        print(f"written: {args.run_dir / 'judge.md'}, judge.json, plots/verifier_by_kind.png")


if __name__ == "__main__":
    main()
