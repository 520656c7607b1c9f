"""Multirun: micro jobs over schedules, one failing on purpose, end in a compare table and a report."""

from __future__ import annotations

import json
import subprocess

import pytest

from sirt.compare import compare
from tests.conftest import MICRO, ROOT, sirt_command

pytestmark = pytest.mark.slow


def test_sweep_reports_failed_jobs_and_compares_the_rest(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    # budget 100 > the 8 prompts of a round: that early job fails at start; the others must still run
    cmd = sirt_command("train", "-m", f"hydra.sweep.dir={sweep}", *MICRO, "rounds=2", "fit.enabled=false",
                       "logger=none", "schedule=none,early,uniform", "external.budget=4,100")
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0  # the sweep as a whole reports the failure
    statuses = [json.loads(p.read_text()) for p in sweep.glob("*/job_status.json")]
    assert len(statuses) == 6
    failed = json.loads((sweep / "failed_jobs.json").read_text())
    assert {tuple(f["overrides"][-2:]) for f in failed} == {("schedule=early", "external.budget=100"),
                                                             ("schedule=uniform", "external.budget=100")}
    assert all("external.budget=100" in f["error"] for f in failed)

    summary = compare(sweep)
    jobs = json.loads((sweep / "compare.json").read_text())["jobs"]
    assert len(jobs) == 4  # failed jobs hold no completed round
    assert sorted((j["schedule"], j["ext_used"]) for j in jobs) == [("early", 4), ("none", 0), ("none", 0),
                                                                     ("uniform", 4)]
    assert summary["status"] == "ok" and summary["prop_5_1"] in ("consistent", "violated")
    assert (sweep / "compare.md").read_text().count("\n|") >= 5 and (sweep / "compare.png").stat().st_size > 0


def test_a_sweeping_experiment_without_m_is_refused(tmp_path):
    """experiment=tf_vs_qe_tiny sweeps verifier=tf,qe: run without -m it would have run one job silently."""
    run_dir = tmp_path / "run"
    cmd = sirt_command("train", "experiment=tf_vs_qe_tiny", *MICRO, "logger=none", f"hydra.run.dir={run_dir}")
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "add -m" in lines[0] and "verifier=tf,qe" in lines[0], lines
    assert not (run_dir / "state.json").exists() and not (run_dir / "metrics.jsonl").exists()
