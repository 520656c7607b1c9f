"""What reaches W&B, read back from the offline run files (sirt.runs.wandb_files), not from mocks: every committed
round exactly once however the process ends, flattened rows, signals, the run-data artifact, system metrics,
the compare run and the dashboard layout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sirt.compare import group_of
from sirt.runs.files import read_jsonl
from sirt.runs.tracker import flatten, sweep_group
from sirt.runs.wandb_files import history, offline_runs, read_run
from tests.conftest import MICRO, ROOT, sirt_command
from tests.test_compare import write_job

slow = pytest.mark.slow
LEVELS = ("1", "2")  # the micro config's dataset.levels


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """The environment of a child process: W&B offline, its artifact staging inside tmp_path, and its own W&B
    service (an in-process W&B run of an earlier test leaves WANDB_SERVICE set here; a child that inherits it
    shares this process's service, where a SIGKILLed child's run id stays in use)."""
    base = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    return {**base, "WANDB_MODE": "offline", "WANDB_DATA_DIR": str(tmp_path / "wandb-data"), "HF_HUB_OFFLINE": "1"}


def train_cmd(run_dir: Path, *overrides: str) -> list[str]:
    return sirt_command("train", f"hydra.run.dir={run_dir}", *MICRO, *overrides)


def state(run_dir: Path) -> dict:
    path = run_dir / "state.json"
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except ValueError:  # replaced while being read
        return {}


def wait_for_round(proc: subprocess.Popen, run_dir: Path, round_: int, timeout: float = 240) -> dict:
    """Poll state.json until round ``round_`` is committed; the state seen then."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        seen = state(run_dir)
        if seen.get("round", -1) >= round_:
            return seen
        time.sleep(0.01)
    raise AssertionError(f"round {round_} was never committed while the run was alive (exit {proc.poll()})")


def test_flatten_turns_nested_dicts_into_slash_keys():
    row = {"round": 2, "acc": 0.5, "acc_level": {"3": 0.25}, "seconds": {"train": 1.5, "eval": 0.2},
           "pass_at_k": {"4": 0.75}, "deep": {"a": {"b": 1}}, "empty": {}}
    assert flatten(row) == {"round": 2, "acc": 0.5, "acc_level/3": 0.25, "seconds/train": 1.5, "seconds/eval": 0.2,
                            "pass_at_k/4": 0.75, "deep/a/b": 1}


def test_sweep_group_is_the_experiment_and_the_sweep_dirs_date_and_time(tmp_path):
    sweep = tmp_path / "multirun" / "2026-03-04" / "05-06-07"
    assert sweep_group(sweep) == "2026-03-04_05-06-07"
    assert sweep_group(sweep, "tf_vs_qe_tiny") == "tf_vs_qe_tiny_2026-03-04_05-06-07"
    assert sweep_group(tmp_path / "multirun" / "xi") == "xi"  # a sweep dir named by hand keeps its name


def test_compare_finds_the_group_its_jobs_logged_to(tmp_path):
    sweep = tmp_path / "multirun" / "2026-03-04" / "05-06-07"
    write_job(sweep, 0, "none", 0, [0.3, 0.4])
    assert group_of(sweep) == "2026-03-04_05-06-07"
    hydra_yaml = sweep / "0" / ".hydra" / "hydra.yaml"
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {"experiment": "xi_tiny"}}}}), hydra_yaml)
    assert group_of(sweep) == "xi_tiny_2026-03-04_05-06-07"
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {"experiments": "old"}}}}), hydra_yaml)
    assert group_of(sweep) == "old_2026-03-04_05-06-07"  # a sweep run with +experiments=NAME before
    hydra_yaml.unlink()
    for override, name in [("experiment=xi_tiny", "xi_tiny"), ("+experiments=old", "old")]:
        OmegaConf.save(OmegaConf.create(["seed=0", override]), sweep / "0" / ".hydra" / "overrides.yaml")
        assert group_of(sweep) == f"{name}_2026-03-04_05-06-07"
    config = OmegaConf.load(sweep / "0" / ".hydra" / "config.yaml")
    config.logger = {"group": "mine"}
    OmegaConf.save(config, sweep / "0" / ".hydra" / "config.yaml")
    assert group_of(sweep) == "mine"  # logger.group, set on the command line, wins


@slow
def test_sigkill_after_a_commit_then_resume_leaves_every_round_in_wandb_once(tmp_path, cache_dir, env):
    """Killed right after round 2 is committed, then resumed with the same command: over all offline files of
    the run id, rounds 0..5 each once, every row complete and equal to metrics.jsonl; system metrics and the
    run-data artifact are there."""
    run_dir = tmp_path / "run"
    cmd = train_cmd(run_dir, "rounds=5", "logger.stats_interval=1")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = wait_for_round(proc, run_dir, 0)
    run_id = (run_dir / "wandb_id").read_text().strip()
    assert first["wandb_id"] == run_id  # made before round 0 and kept in the run directory
    wait_for_round(proc, run_dir, 2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = state(run_dir)["round"]
    assert 2 <= killed_at < 5
    dead = offline_runs(run_dir, run_id)
    assert len(dead) == 1 and read_run(dead[0])["exit_code"] is None  # never finished

    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert state(run_dir)["wandb_id"] == run_id
    files = offline_runs(run_dir)
    assert len(files) == 1 and files == offline_runs(run_dir, run_id) and files[0] != dead[0]
    rows = history(files)
    assert [row["round"] for row in rows] == list(range(6))
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    for row, committed in zip(rows, metrics):
        for level in LEVELS:
            assert {f"acc_level/{level}", f"acceptance_level/{level}", f"n_selected_level/{level}"} <= set(row)
        assert {"pass_at_k/1", "pass_at_k/4", "seconds/generate", "U_s", "U_v", "G", "acc"} <= set(row)
        assert ("seconds/train" in row) == (row["round"] > 0)
        assert row["selections"]["_type"] == "table-file"
        for key, value in flatten(committed).items():
            assert row[key] == pytest.approx(value, nan_ok=True), (row["round"], key)
    run = read_run(files[0])
    assert run["id"] == run_id and run["exit_code"] == 0 and run["n_stats"] >= 1
    assert run["summary"]["round"] == 5 and "fit/status" in run["summary"]
    data = [a for a in run["artifacts"] if a["type"] == "run-data"]
    assert len(data) == 1 and data[0]["name"] == f"run-data-{run_id}"
    assert data[0]["files"] == sorted(["metrics.jsonl", "fit.json",
                                       *(f"rounds/{t}/selections.jsonl" for t in range(6))])


@slow
def test_sigint_mid_round_exits_130_finishes_wandb_and_the_same_command_resumes(tmp_path, cache_dir, env):
    run_dir = tmp_path / "run"
    cmd = train_cmd(run_dir, "rounds=6", "fit.enabled=false", "logger.system_stats=false")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_round(proc, run_dir, 0)  # round 1 is under way
    os.kill(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("sirt.train: stopped by SIGINT") and f"hydra.run.dir={run_dir}" in line, line
    committed = state(run_dir)["round"]
    assert committed < 6
    (stopped,) = offline_runs(run_dir)
    run = read_run(stopped)
    assert run["exit_code"] == 130 and run["n_stats"] == 0  # W&B finished; logger.system_stats=false
    assert [row["round"] for row in run["history"]] in (list(range(committed + 1)), list(range(committed)))

    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming at round {committed + 1}" in result.stdout + result.stderr
    assert [row["round"] for row in read_jsonl(run_dir / "metrics.jsonl")] == list(range(7))
    files = offline_runs(run_dir)
    assert len(files) == 1 and read_run(files[0])["exit_code"] == 0
    assert [row["round"] for row in history(files)] == list(range(7))


@slow
def test_sigterm_exits_143_without_a_traceback(tmp_path, cache_dir, env):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(run_dir, "rounds=6", "fit.enabled=false"), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_round(proc, run_dir, 0)
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("sirt.train: stopped by SIGTERM")
    assert read_run(offline_runs(run_dir)[0])["exit_code"] == 143


@slow
def test_a_stopped_sweep_names_the_sweep_to_resume(tmp_path, cache_dir, env):
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(sirt_command("train", "-m", f"hydra.sweep.dir={sweep}", *MICRO, "rounds=6", "seed=0,1",
                                         "fit.enabled=false"), cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_round(proc, sweep / "0", 0)
    os.kill(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"sirt.train: stopped by SIGTERM ({sweep / '0'}: ")
    assert "resume the sweep with: python -m sirt.train -m" in last and last.endswith(f"hydra.sweep.dir={sweep}")


@slow
def test_compare_logs_its_table_verdict_and_plot_to_wandb_in_the_sweeps_group(tmp_path, env):
    sweep = tmp_path / "multirun" / "2026-03-04" / "05-06-07"
    for num, (schedule, final) in enumerate([("none", 0.40), ("early", 0.50), ("late", 0.48)]):
        write_job(sweep, num, schedule, 0, [0.3, 0.35, final])
        (sweep / str(num) / "wandb_id").write_text(f"job{num}\n")
    result = subprocess.run(sirt_command("compare", str(sweep)), cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    (path,) = offline_runs(sweep / "wandb")
    run = read_run(path)
    assert run["group"] == "2026-03-04_05-06-07" and run["job_type"] == "compare" and run["project"] == "sirt"
    assert run["exit_code"] == 0
    assert run["config"]["run_data"] == ["run-data-job0", "run-data-job1", "run-data-job2"]  # its inputs, named
    assert run["tags"] == ["schedule:early", "schedule:late", "schedule:none"]
    (row,) = run["history"]
    jobs = row["compare/jobs"]
    assert jobs["_type"] == "table-file" and jobs["nrows"] == 3
    table = json.loads((path.parent / "files" / jobs["path"]).read_text())
    assert [r[table["columns"].index("schedule")] for r in table["data"]] == ["none", "early", "late"]
    assert row["compare/arms"]["nrows"] == 3 and row["compare/plot"]["_type"] == "image-file"
    assert run["summary"]["verdict/status"] == "ok" and run["summary"]["verdict/prop_5_1"] == "consistent"
    assert run["summary"]["verdict/acc_spread"] == pytest.approx(0.02)

    again = subprocess.run(sirt_command("compare", str(sweep), "--no-wandb"), cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and len(offline_runs(sweep / "wandb")) == 1


@slow
def test_dashboard_dry_run_writes_the_layout(tmp_path, env):
    result = subprocess.run([sys.executable, "-m", "sirt.dashboard", "--project", "sirt", "--dry-run"], cwd=tmp_path,
                            env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    layout = json.loads((tmp_path / "dashboard.json").read_text())
    panels = {p["title"]: p for s in layout["sections"] for p in s["panels"]}
    for metric in ("U_s", "U_v", "G", "acc"):
        assert panels[metric]["metrics"] == [metric] and panels[metric]["x"] == "round"
        assert panels[metric]["group_by"] == "schedule.name"
    names = [s["name"] for s in layout["sections"]]
    assert names == ["Trajectory", "Accuracy per level", "Acceptance and verifier", "Fit"]
    metrics = {m for p in panels.values() for m in p["metrics"]}
    assert {"acc_level/2", "acceptance_level/4", "pick_precision", "verifier_auc", "fit/delta"} <= metrics


def test_dashboard_is_a_dry_run_by_itself_offline(tmp_path, monkeypatch, capsys):
    from sirt import dashboard

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    dashboard.main(["--project", "p", "--group", "g", "--levels", "1", "2"])
    assert "dry run (WANDB_MODE=offline)" in capsys.readouterr().out
    layout = json.loads((tmp_path / "dashboard.json").read_text())
    assert layout["project"] == "p" and layout["group"] == "g"
    assert [p["metrics"] for p in layout["sections"][1]["panels"][:2]] == [["acc_level/1"], ["acc_level/2"]]


def finished_run(run_dir: Path, timeout: float = 60) -> dict:
    """The run's offline file once W&B's service has written its exit record (finish() returns before)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = read_run(offline_runs(run_dir)[0])
        if run["exit_code"] is not None:
            return run
        time.sleep(0.2)
    raise AssertionError(f"W&B never finished writing {offline_runs(run_dir)}")


def micro_tracker(run_dir: Path, monkeypatch, *overrides: str):
    """A train run's Tracker on the micro config, offline, its artifact staging inside the test's folder."""
    from sirt.config.compose import compose
    from sirt.config.validate import validate
    from sirt.runs.tracker import Tracker

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(run_dir.parent / "wandb-data"))
    config = validate(compose(*MICRO, *overrides))
    return Tracker(config.logger, config, run_dir, None, "job"), config


@pytest.mark.parametrize("log_adapters", [True, False])
def test_train_runs_carry_job_type_tags_and_round_adapters(tmp_path, monkeypatch, log_adapters):
    """job_type train, tags naming model/dataset/schedule/verifier; a round's LoRA adapter as a model artifact
    only with logger.log_adapters (read back from the offline file)."""
    run_dir = tmp_path / "run"
    adapter = run_dir / "rounds" / "1" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    tracker, config = micro_tracker(run_dir, monkeypatch, f"logger.log_adapters={str(log_adapters).lower()}")
    tracker.log_round({"round": 1, "acc": 0.5}, [])
    tracker.finish()
    run = finished_run(run_dir)
    assert run["job_type"] == "train"
    assert run["tags"] == ["model:tiny", "dataset:arithmetic", f"schedule:{config.schedule.name}",
                           f"verifier:{config.verifier.method}"]
    models = [a for a in run["artifacts"] if a["type"] == "model"]
    if not log_adapters:
        assert models == []
        return
    (model,) = models
    assert model["name"] == f"adapter-{run['id']}" and "round-1" in model["aliases"]
    assert model["files"] == ["adapter_config.json"]


def test_the_levels_plot_reaches_the_wandb_summary(tmp_path, monkeypatch):
    from sirt.loop.trainer import wrap_up
    from sirt.runs.rundir import RunDir

    run_dir = tmp_path / "run"
    rows = [{"round": t, "acc": 0.2 * t, "acc_level": {"1": 0.3, "2": 0.1 * t},
             "acceptance_level": {"1": 0.5, "2": 0.2}, "n_selected_level": {"1": 2, "2": t}} for t in range(3)]
    for row in rows:
        RunDir(run_dir).commit_round(row["round"], row, [], {})
    tracker, config = micro_tracker(run_dir, monkeypatch, "fit.enabled=false")
    wrap_up(RunDir(run_dir), config, tracker, "job")
    run = finished_run(run_dir)
    assert (run_dir / "plots" / "levels.png").stat().st_size > 0
    assert run["summary"]["plots/levels"]["_type"] == "image-file"


def test_the_curriculum_run_has_its_job_type_table_and_figure(tmp_path, monkeypatch):
    """sirt.curriculum SWEEP_DIR logs a W&B run of job_type curriculum in the sweep's group (offline)."""
    from sirt import curriculum
    from tests.test_curriculum import write_curriculum_sweep

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    sweep = write_curriculum_sweep(tmp_path / "multirun" / "2026-03-04" / "05-06-07")
    curriculum.main([str(sweep)])
    run = finished_run(sweep)
    assert run["job_type"] == "curriculum" and run["group"] == "2026-03-04_05-06-07"
    assert run["tags"] == ["curriculum:easy_to_hard", "curriculum:mixture"]
    (row,) = run["history"]
    assert row["curriculum/jobs"]["nrows"] == 3 and row["curriculum/plot"]["_type"] == "image-file"
