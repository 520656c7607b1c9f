"""``python -m sirt.dashboard --project P [--entity E] [--group G] [--report] [--dry-run]``: a W&B workspace for
sirt runs, and a W&B Report for a sweep.

The workspace has four sections, every curve against ``round`` (the x-axis sirt logs):

* **Trajectory** — ``U_s``, ``U_v``, ``G`` and ``acc``, one panel each, runs grouped by schedule
  (``schedule.name``): paper 1's exponential dynamics, and whether the gap closes.
* **Accuracy per level** — ``acc_level/<level>`` for each difficulty level and ``pass_at_k/<k>``,
  grouped by curriculum (paper 2).
* **Acceptance and verifier** — ``acceptance`` and ``acceptance_level/<level>`` (how much of a round
  the verifier keeps), ``pick_precision`` against ``sample_acc`` and ``verifier_auc`` (how well it
  judges), grouped by verification method.
* **Fit** — the fitting callback's summary per run (``fit/alpha_p``, ``fit/beta_p``, ``fit/delta``, the
  limits ``fit/U_s_inf``, ``fit/U_v_inf``, ``fit/G_inf``, and the R² of each curve), as bars by schedule.

``--report`` adds a W&B Report for one sweep's group (``--group G``, or ``--sweep DIR``, whose group it
reads as ``sirt.compare`` does; neither: every run of the project): the trajectories of ``U_s``, ``U_v``,
``G`` and ``acc`` per arm (the jobs' runs grouped by what the sweep varies except the seed, ``--arm-by``),
bars of each arm's final ``acc`` (mean and standard error over seeds), the compare run's tables
(``compare/arms``, ``compare/jobs``) and plot, and the verdict of Proposition 5.1 (written out from
``DIR/compare.json`` with ``--sweep``).

Both are saved with the ``wandb-workspaces`` package (``pip install -e '.[dashboard]'``), which needs
W&B online and an API key; the entity defaults to the logged-in user's (W&B's API). ``--dry-run`` —
automatic when ``WANDB_MODE`` is offline or disabled, when no API key is set, or when the package is
missing — writes the same layout to ``dashboard.json`` in the current directory instead:
``{"sections": [{"name", "panels": [{"title", "metrics", "x", "group_by", "kind"}]}]}``, and with
``--report`` the report to ``report.json``: ``{"title", "group", "arm_by", "blocks": [{"kind": "markdown",
"text"} | {"kind": "panels", "name", "runset": {"job_type", "group_by"}, "panels"}]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sirt.config.defaults import default
from sirt.config.entry import Parser, int_at_least, refuse
from sirt.runs.tracker import group_of

FIT_PARAMETERS = ["fit/alpha_p", "fit/beta_p", "fit/delta"]
FIT_LIMITS = ["fit/U_s_inf", "fit/U_v_inf", "fit/G_inf"]
FIT_R2 = ["fit/r2_U_s", "fit/r2_U_v", "fit/r2_G", "fit/r2_acc"]


def panel(title: str, metrics: list[str], group_by: str | None, kind: str = "line") -> dict[str, Any]:
    """One panel: a line plot against round, or bars of summary values (``kind='bar'``, no x-axis)."""
    return {"title": title, "metrics": metrics, "x": "round" if kind == "line" else None, "group_by": group_by,
            "kind": kind}


def spec(levels: list[int], pass_k: list[int], project: str = "sirt", entity: str | None = None,
         group: str | None = None, name: str = "sirt") -> dict[str, Any]:
    """The workspace's layout, the same online and in ``dashboard.json``."""
    by_schedule, by_curriculum, by_method = "schedule.name", "curriculum.name", "verifier.method"
    trajectory = [panel(metric, [metric], by_schedule) for metric in ("U_s", "U_v", "G", "acc")]
    per_level = [panel(f"acc, level {lv}", [f"acc_level/{lv}"], by_curriculum) for lv in levels]
    per_level.append(panel("pass@k", [f"pass_at_k/{k}" for k in pass_k], by_curriculum))
    acceptance = [panel("acceptance", ["acceptance"], by_method),
                  panel("acceptance per level", [f"acceptance_level/{lv}" for lv in levels], by_method),
                  panel("pick precision against sample accuracy", ["pick_precision", "sample_acc"], by_method),
                  panel("verifier AUC (within question)", ["verifier_auc"], by_method)]
    fit = [panel("joint fit: rates", FIT_PARAMETERS, by_schedule, "bar"),
           panel("joint fit: limits", FIT_LIMITS, by_schedule, "bar"),
           panel("fit R²", FIT_R2, by_schedule, "bar")]
    sections = [{"name": "Trajectory", "panels": trajectory},
                {"name": "Accuracy per level", "panels": per_level},
                {"name": "Acceptance and verifier", "panels": acceptance},
                {"name": "Fit", "panels": fit}]
    return {"name": name, "project": project, "entity": entity, "group": group, "sections": sections}


GROUP_KEYS = {"schedule": "schedule.name", "verifier": "verifier.method", "curriculum": "curriculum.name",
              "dataset": "dataset.name", "external": "external.source", "model": "model.name_or_path"}
"""The config key that tells a group option apart (an override ``schedule=early`` sets ``schedule.name``)."""


def report_spec(group: str | None, arm_by: list[str], project: str = "sirt", entity: str | None = None,
                compared: dict[str, Any] | None = None, table: str | None = None) -> dict[str, Any]:
    """A sweep's report: trajectories and final accuracy per arm, the compare run's tables, the verdict
    (``group`` None: every run of the project, the arms still told apart by ``arm_by``).

    ``compared``: the sweep's ``compare.json`` (its verdict is written out), ``table``: its ``compare.md``.
    """
    keys = [f"config.{k}" for k in arm_by]
    train = {"job_type": "train", "group_by": keys}
    trajectory = [panel(metric, [metric], None) for metric in ("U_s", "U_v", "G", "acc")]
    final = [panel("final acc per arm (mean ± s.e. over seeds)", ["acc"], None, "bar")]
    tables = [panel("arms", ["compare/arms"], None, "table"), panel("jobs", ["compare/jobs"], None, "table"),
              panel("final acc against the schedule", ["compare/plot"], None, "table")]
    runs = f"Runs of W&B group `{group}`" if group else f"All sirt runs of project `{project}`"
    blocks = [{"kind": "markdown", "text": f"{runs}, arms by {', '.join(arm_by)}."},
              {"kind": "panels", "name": "Trajectories per arm", "runset": train, "panels": trajectory},
              {"kind": "panels", "name": "Final accuracy per arm", "runset": train, "panels": final},
              {"kind": "panels", "name": "Comparison (sirt.compare)", "runset": {"job_type": "compare",
                                                                                  "group_by": []}, "panels": tables},
              {"kind": "markdown", "text": verdict_text(compared)}]
    if table:
        blocks.append({"kind": "markdown", "text": table})
    title = f"sirt sweep {group}" if group else f"sirt runs of {project}"
    return {"title": title, "project": project, "entity": entity, "group": group, "arm_by": arm_by, "blocks": blocks}


def verdict_text(compared: dict[str, Any] | None) -> str:
    """Proposition 5.1's verdict in words, from a sweep's compare.json (else where to find it)."""
    if compared is None:
        return "**Verdict**: see the compare run's summary (`verdict/prop_5_1`, `verdict/acc_spread`)."
    s = compared["summary"]
    if s.get("status") != "ok":
        return f"**Verdict**: none ({s.get('status')})."
    return (f"**Verdict (Proposition 5.1)**: {s['prop_5_1']} — final accuracy spreads {s['acc_spread']:.3f} across "
            f"the schedules with external data (tolerance {s['tolerance']}); final U_s spreads "
            f"{s['U_s_rel_spread']:.1%} of its mean.")


def swept_keys(sweep_dir: Path) -> list[str]:
    """The config keys whose values differ between a sweep's jobs, the seed left out: what tells its arms apart."""
    values: dict[str, set[str]] = {}
    for path in sorted(sweep_dir.glob("*/.hydra/overrides.yaml")):
        for item in OmegaConf.to_container(OmegaConf.load(path)):
            key, _, value = item.partition("=")
            values.setdefault(key.lstrip("+~"), set()).add(value)
    keys = [GROUP_KEYS.get(k, k) for k, v in values.items()
            if len(v) > 1 and k != "seed" and not k.startswith("hydra.")]
    return keys or ["schedule.name"]


def api_key() -> str | None:
    """The W&B API key this machine would use (environment or netrc), read without any network call."""
    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    try:
        from wandb.sdk.lib.wbauth import wbnetrc

        return wbnetrc.read_netrc_auth(host=os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    except Exception:
        return None


def why_offline() -> str | None:
    """Why the workspace cannot be saved here (then the command makes a dry run), or None."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled"):
        return f"WANDB_MODE={os.environ['WANDB_MODE']}"
    if not api_key():
        return "no W&B API key (wandb login)"
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        return "wandb-workspaces is not installed (pip install -e '.[dashboard]')"
    return None


def make_panel(p: dict[str, Any]):
    """The wandb-workspaces panel of one panel spec (the same classes serve workspaces and reports)."""
    import wandb_workspaces.reports.v2 as wr

    groupby = wr.Config(p["group_by"]) if p["group_by"] else None
    if p["kind"] == "table":  # a W&B Table, image or value of the runs' summary
        return wr.WeavePanelSummaryTable(table_name=p["metrics"][0])
    if p["kind"] == "bar":
        return wr.BarPlot(title=p["title"], metrics=[wr.SummaryMetric(m) for m in p["metrics"]], groupby=groupby,
                          groupby_aggfunc="mean", groupby_rangefunc="stderr")
    return wr.LinePlot(title=p["title"], x=p["x"], y=p["metrics"], groupby=groupby)


def build_workspace(layout: dict[str, Any], entity: str):
    """The layout as a ``wandb_workspaces`` Workspace of ``entity`` (built offline; ``save()`` sends it)."""
    import wandb_workspaces.workspaces as ws

    sections = [ws.Section(name=s["name"], panels=[make_panel(p) for p in s["panels"]], is_open=True)
                for s in layout["sections"]]
    filters = [ws.Metric("Group") == layout["group"]] if layout["group"] else ""
    return ws.Workspace(entity=entity, project=layout["project"], name=layout["name"], sections=sections,
                        settings=ws.WorkspaceSettings(x_axis="round"),
                        runset_settings=ws.RunsetSettings(filters=filters))


def build_report(spec_: dict[str, Any], entity: str):
    """The report spec as a ``wandb_workspaces`` Report of ``entity``: markdown blocks and panel grids whose
    runsets (the report's own project) hold the group's runs of one job type, grouped by arm."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    def block(b: dict[str, Any]) -> list:
        if b["kind"] == "markdown":
            return [wr.MarkdownBlock(text=b["text"])]
        rs = b["runset"]
        filters = [expr.Metric("JobType") == rs["job_type"]]
        if spec_["group"]:
            filters.insert(0, expr.Metric("Group") == spec_["group"])
        runset = wr.Runset(name=b["name"], groupby=rs["group_by"], filters=filters)
        return [wr.H2(b["name"]), wr.PanelGrid(runsets=[runset], panels=[make_panel(p) for p in b["panels"]])]

    return wr.Report(project=spec_["project"], entity=entity, title=spec_["title"],
                     description=f"sirt: a sweep's arms side by side ({spec_['group'] or 'every group'})",
                     blocks=[x for b in spec_["blocks"] for x in block(b)], width="fluid")


def default_entity() -> str:
    """The logged-in user's default entity, asked of W&B's API (a network call: only when saving)."""
    import wandb

    entity = wandb.Api().default_entity
    if not entity:
        raise ValueError("W&B names no default entity for this API key: pass --entity")
    return entity


def report_for(args: argparse.Namespace) -> dict[str, Any]:
    """The report spec the command line asks for (a sweep's group: ``--group``, else read from ``--sweep``, else
    none: every run of the project); a ``--sweep`` that is not a directory exits 2 in one line."""
    sweep = args.sweep
    if sweep is not None and not sweep.is_dir():
        refuse("dashboard", f"--sweep {sweep} is not a directory")
    group = args.group or (group_of(sweep) if sweep else None)
    compared = json.loads((sweep / "compare.json").read_text()) if sweep and (sweep / "compare.json").exists() else None
    table = (sweep / "compare.md").read_text() if sweep and (sweep / "compare.md").exists() else None
    arm_by = args.arm_by or (swept_keys(sweep) if sweep else ["schedule.name"])
    return report_spec(group, arm_by, args.project, args.entity, compared, table)


def save(layout: dict[str, Any], report: dict[str, Any] | None, entity: str | None) -> list[str]:
    """Save the workspace (and the report) to W&B; returns their URLs."""
    entity = entity or default_entity()
    workspace = build_workspace(layout, entity)
    workspace.save()
    urls = [workspace.url]
    if report is not None:
        built = build_report(report, entity)
        built.save()
        urls.append(built.url)
    return urls


def main(argv: list[str] | None = None) -> None:
    parser = Parser("dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--project", default="sirt", help="W&B project (default: sirt)")
    parser.add_argument("--entity", default=None, help="W&B entity (default: the logged-in user's, from W&B's API)")
    parser.add_argument("--group", default=None, help="show only the runs of this W&B group (a sweep)")
    parser.add_argument("--name", default="sirt", help="the workspace's name (default: sirt)")
    parser.add_argument("--levels", type=int_at_least(1), nargs="+", default=default("dataset").levels,
                        help="difficulty levels of the per-level panels (default: the arithmetic task's)")
    parser.add_argument("--pass-k", type=int_at_least(1), nargs="+", default=default("generation").pass_k,
                        help="k of the pass@k panel (default: generation.pass_k's default)")
    parser.add_argument("--report", action="store_true", help="also save a W&B Report for the sweep's group")
    parser.add_argument("--sweep", type=Path, default=None,
                        help="the sweep directory of --report: its group, arms, compare.json verdict and table")
    parser.add_argument("--arm-by", nargs="+", default=None,
                        help="config keys that tell the report's arms apart (default: what the sweep's jobs vary "
                             "except the seed, else schedule.name)")
    parser.add_argument("--dry-run", action="store_true",
                        help="write dashboard.json (and report.json) here; save nothing")
    args = parser.parse_args(argv)
    report = report_for(args) if args.report else None
    group = args.group or (report["group"] if report else None)
    layout = spec(args.levels, args.pass_k, args.project, args.entity, group, args.name)
    reason = "--dry-run" if args.dry_run else why_offline()
    if reason:
        written = {"dashboard.json": layout, **({"report.json": report} if report else {})}
        for name, content in written.items():
            path = Path(name)
            try:
                path.write_text(json.dumps(content, indent=2) + "\n")
            except OSError as err:
                refuse("dashboard", f"{path.resolve()} cannot be written ({err.strerror})")
        n = sum(len(s["panels"]) for s in layout["sections"])
        print(f"sirt.dashboard: dry run ({reason}): {Path('dashboard.json').resolve()} ({len(layout['sections'])} "
              f"sections, {n} panels)" + (f", {Path('report.json').resolve()} ({len(report['blocks'])} blocks)"
                                          if report else ""))
        return
    try:
        urls = save(layout, report, args.entity)
    except Exception as err:
        sys.exit(f"sirt.dashboard: the workspace could not be saved: {err}")
    print(f"sirt.dashboard: saved {' and '.join(urls)}")


if __name__ == "__main__":
    main()
