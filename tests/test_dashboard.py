"""sirt.dashboard: the workspace and the sweep report built with wandb-workspaces and serialized as ``save()``
would send them (offline), the dry run's two specs, and the entity asked of W&B's API (a stub on 127.0.0.1)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from sirt import dashboard
from sirt.compare import compare
from tests.test_compare import write_job

pytest.importorskip("wandb_workspaces")


@pytest.fixture
def sweep(tmp_path):
    """A finished sweep over schedules, two seeds each, with its compare.json and compare.md."""
    finals = {"none": [0.40, 0.46], "early": [0.50, 0.44], "uniform": [0.49, 0.47]}
    num = 0
    for schedule, accs in finals.items():
        for seed, final in enumerate(accs):
            write_job(tmp_path / "sweep", num, schedule, seed, [0.3, 0.35, final])
            num += 1
    compare(tmp_path / "sweep")
    return tmp_path / "sweep"


def report_of(sweep) -> dict:
    compared = json.loads((sweep / "compare.json").read_text())
    return dashboard.report_spec("xi_2026-01-01_10-00-00", dashboard.swept_keys(sweep), "p", None, compared,
                                 (sweep / "compare.md").read_text())


def test_workspace_and_report_build_and_serialize(sweep):
    """Every panel becomes a wandb-workspaces object and the whole view serializes (what save() sends)."""
    layout = dashboard.spec([1, 2], [1, 4], "p", None, "xi_2026-01-01_10-00-00")
    workspace = dashboard.build_workspace(layout, "alice")._to_model()
    assert workspace.model_dump_json()  # serializes
    report = dashboard.build_report(report_of(sweep), "alice")
    model = report._to_model()
    text = model.model_dump_json()
    assert model.project.entity_name == "alice" and model.display_name.startswith("sirt sweep")
    grids = [b for b in report.blocks if type(b).__name__ == "PanelGrid"]
    assert [type(p).__name__ for p in grids[0].panels] == ["LinePlot"] * 4
    assert [p.y for p in grids[0].panels] == [["U_s"], ["U_v"], ["G"], ["acc"]]
    assert type(grids[1].panels[0]).__name__ == "BarPlot" and grids[1].panels[0].groupby_rangefunc == "stderr"
    assert [p.table_name for p in grids[2].panels] == ["compare/arms", "compare/jobs", "compare/plot"]
    assert grids[0].runsets[0].groupby == ["config.schedule.name"]  # arms: what the sweep varies but the seed
    assert "jobType" in text and "xi_2026-01-01_10-00-00" in text  # runsets: the group's train / compare runs
    assert "Proposition 5.1" in text and "consistent" in text  # the verdict, from compare.json


def test_dry_run_with_report_writes_both_specs(sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    dashboard.main(["--project", "p", "--report", "--sweep", str(sweep), "--dry-run"])
    assert "report.json" in capsys.readouterr().out
    layout = json.loads((tmp_path / "dashboard.json").read_text())
    report = json.loads((tmp_path / "report.json").read_text())
    assert layout["group"] == report["group"] == "sweep"  # the group sirt.compare reads from the sweep dir
    assert report["arm_by"] == ["schedule.name"]
    kinds = [b["kind"] for b in report["blocks"]]
    assert kinds.count("panels") == 3 and "| arm" in report["blocks"][-1]["text"]  # compare.md's table


def test_report_without_a_group_covers_the_project_and_a_bad_sweep_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    dashboard.main(["--project", "p", "--report", "--dry-run"])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["group"] is None and report["arm_by"] == ["schedule.name"] and report["title"] == "sirt runs of p"
    text = dashboard.build_report(report, "alice")._to_model().model_dump_json()
    assert "jobType" in text and '"group"' not in text  # runsets: every train / compare run of the project
    with pytest.raises(SystemExit) as stop:
        dashboard.main(["--report", "--sweep", str(tmp_path / "missing"), "--dry-run"])
    assert stop.value.code == 2 and "is not a directory" in capsys.readouterr().err


class Viewer(BaseHTTPRequestHandler):
    """W&B's GraphQL endpoint as far as the viewer query goes: the API key belongs to user alice."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"data": {"viewer": {"id": "u1", "entity": "alice", "username": "alice", "email": None,
                                               "flags": None, "teams": {"edges": []}}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_entity_defaults_to_the_logged_in_users(monkeypatch):
    """Without --entity the workspace gets the viewer's entity from W&B's API (entity=None failed to build)."""
    server = HTTPServer(("127.0.0.1", 0), Viewer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    try:
        entity = dashboard.default_entity()
    finally:
        server.shutdown()
    assert entity == "alice"
    assert dashboard.build_workspace(dashboard.spec([1], [1]), entity)._to_model().model_dump_json()
