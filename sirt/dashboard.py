"""``python -m sirt.dashboard --project P [--entity E] [--group G] [--dry-run]``: a W&B workspace for sirt runs.

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

It is saved with the ``wandb-workspaces`` package (``pip install -e '.[dashboard]'``), which needs
W&B online and an API key. ``--dry-run`` — automatic when ``WANDB_MODE`` is offline or disabled, when no
API key is set, or when the package is missing — writes the same layout to ``dashboard.json`` in the
current directory instead: ``{"sections": [{"name", "panels": [{"title", "metrics", "x", "group_by",
"kind"}]}]}``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from sirt.config.defaults import default
from sirt.config.entry import Parser, int_at_least, refuse

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


def save_workspace(layout: dict[str, Any]) -> str:
    """Save the layout as a W&B workspace with wandb-workspaces; returns its URL."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    def make(p: dict[str, Any]):
        groupby = wr.Config(p["group_by"]) if p["group_by"] else None
        if p["kind"] == "bar":
            return wr.BarPlot(title=p["title"], metrics=[wr.SummaryMetric(m) for m in p["metrics"]], groupby=groupby)
        return wr.LinePlot(title=p["title"], x=p["x"], y=p["metrics"], groupby=groupby)

    sections = [ws.Section(name=s["name"], panels=[make(p) for p in s["panels"]], is_open=True)
                for s in layout["sections"]]
    filters = [ws.Metric("Group") == layout["group"]] if layout["group"] else ""
    workspace = ws.Workspace(entity=layout["entity"], project=layout["project"], name=layout["name"],
                             sections=sections, settings=ws.WorkspaceSettings(x_axis="round"),
                             runset_settings=ws.RunsetSettings(filters=filters))
    workspace.save()
    return workspace.url


def main(argv: list[str] | None = None) -> None:
    parser = Parser("dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--project", default="sirt", help="W&B project (default: sirt)")
    parser.add_argument("--entity", default=None, help="W&B entity (default: yours)")
    parser.add_argument("--group", default=None, help="show only the runs of this W&B group (a sweep)")
    parser.add_argument("--name", default="sirt", help="the workspace's name (default: sirt)")
    parser.add_argument("--levels", type=int_at_least(1), nargs="+", default=default("dataset").levels,
                        help="difficulty levels of the per-level panels (default: the arithmetic task's)")
    parser.add_argument("--pass-k", type=int_at_least(1), nargs="+", default=default("generation").pass_k,
                        help="k of the pass@k panel (default: generation.pass_k's default)")
    parser.add_argument("--dry-run", action="store_true", help="write dashboard.json here; save nothing")
    args = parser.parse_args(argv)
    layout = spec(args.levels, args.pass_k, args.project, args.entity, args.group, args.name)
    reason = "--dry-run" if args.dry_run else why_offline()
    if reason:
        path = Path("dashboard.json")
        try:
            path.write_text(json.dumps(layout, indent=2) + "\n")
        except OSError as err:
            refuse("dashboard", f"{path.resolve()} cannot be written ({err.strerror})")
        n = sum(len(s["panels"]) for s in layout["sections"])
        print(f"sirt.dashboard: dry run ({reason}): {path.resolve()} ({len(layout['sections'])} sections, {n} panels)")
        return
    try:
        url = save_workspace(layout)
    except Exception as err:
        sys.exit(f"sirt.dashboard: the workspace could not be saved: {err}")
    print(f"sirt.dashboard: saved {url}")


if __name__ == "__main__":
    main()
