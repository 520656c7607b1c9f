"""The loop end to end on the micro config (``debug=micro``): the run directory contract in this process
(sirt.loop.trainer.run on a composed, validated config); the CLI only for what is its own: exit codes, resume
after SIGKILL, Hydra's files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from sirt.config.errors import InputError
from tests.conftest import MICRO, ROOT, sirt_command

pytestmark = pytest.mark.slow

METRIC_KEYS = {"round", "acc", "pass_at_k", "U_s", "U_v", "G", "U_s_tok", "U_v_tok", "acceptance", "n_selected",
               "ext_used", "eta", "tokens_generated", "seconds", "verifier_auc", "pick_precision", "sample_acc",
               "U_s_se", "U_v_se", "acc_strict", "acc_flexible"}


def train(run_dir: Path, *overrides: str, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    cmd = sirt_command("train", f"hydra.run.dir={run_dir}", *MICRO, *overrides)
    if wait:
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_micro_run_writes_the_run_directory(tmp_path, micro_loop):
    """In this process (W&B's files are test_wandb's, Hydra's .hydra the CLI tests' below)."""
    run_dir = tmp_path / "run"
    metrics = micro_loop(run_dir, "logger=none")
    assert metrics == rows(run_dir)
    assert [r["round"] for r in metrics] == [0, 1, 2]
    for r in metrics:
        assert set(r) >= METRIC_KEYS
        assert {"generate", "verify", "eval"} <= set(r["seconds"])
        assert r["G"] == pytest.approx(r["U_s"] - r["U_v"])
        assert 0.0 <= r["acc"] <= 1.0 and 0.0 <= r["acceptance"] <= 1.0
    assert "train" in metrics[1]["seconds"] and "train" not in metrics[0]["seconds"]
    picks = metrics[0]["n_selected"]  # the organism's rounds replay its teaching: verdicts (an eighth of the rows)
    total = picks / (1 - 0.125 - 0.25)  # and worked solutions (a quarter)
    assert metrics[1]["n_train_rows"] == picks + round(total * 0.125) + round(total * 0.25)
    selections = [json.loads(x) for x in (run_dir / "rounds/0/selections.jsonl").read_text().splitlines()]
    assert len(selections) == 8 and all(len(s["samples"]) == 4 == len(s["scores"]) for s in selections)
    assert all((run_dir / f"rounds/{t}/selections.jsonl").exists() for t in (1, 2))
    state = json.loads((run_dir / "state.json").read_text())
    assert state["round"] == 2 and state["config_hash"] and state["wandb_id"] is None  # logger=none
    assert [p.parent.name for p in (run_dir / "rounds").glob("*/model")] == ["2"]  # keep_models=last
    assert not (run_dir / "wandb").exists()
    fit = json.loads((run_dir / "fit.json").read_text())
    assert "4 rounds" in fit["status"]  # 3 rows are too few to fit, and the run still succeeds


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, micro_loop):
    """Killed and resumed through the CLI; the uninterrupted reference runs in this process."""
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    extra = ("rounds=3", "logger=none", "fit.enabled=false")
    micro_loop(reference, *extra)
    proc = train(killed, *extra, wait=False)
    state = killed / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.exists() and json.loads(state.read_text())["round"] >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)  # mid-round 2: training or sampling
    proc.wait()
    assert json.loads(state.read_text())["round"] < 3
    result = train(killed, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    ref, got = rows(reference), rows(killed)
    assert [r["round"] for r in got] == [0, 1, 2, 3]
    for a, b in zip(ref, got):
        for key in ("acc", "U_s", "U_v", "G", "acceptance"):
            assert b[key] == pytest.approx(a[key], abs=1e-4), (a["round"], key)


def test_resume_refuses_a_changed_config(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    assert train(run_dir, "rounds=1", "logger=none", "fit.enabled=false").returncode == 0
    hydra_config = (run_dir / ".hydra" / "config.yaml").read_bytes()
    result = train(run_dir, "rounds=1", "logger=none", "fit.enabled=false", "verifier.sigma=0.7")
    assert result.returncode == 2
    assert "different config" in result.stderr
    assert (run_dir / ".hydra" / "config.yaml").read_bytes() == hydra_config  # Hydra's rewrite is undone


def test_restart_from_base_keeps_the_external_items_of_earlier_rounds(tmp_path, cache_dir):
    """An Early schedule's gold items train model_1; restarting from the base, model_2 trains on model_1's rows
    again (gold items included) and round 1's picks."""
    run_dir = tmp_path / "run"
    result = train(run_dir, "logger=none", "fit.enabled=false", "trainer.restart_from_base=true", "schedule=early",
                   "external.budget=8", "verifier.sigma=1.0", "trainer.verifier_replay=0",
                   "trainer.solver_replay=0")  # sigma 1: no picks, and no replayed teaching
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = rows(run_dir)
    assert metrics[1]["ext_used"] == 8 and metrics[1]["n_train_rows"] == 8  # every prompt's gold solution
    assert metrics[2]["ext_used"] == 0 and metrics[2]["n_train_rows"] == 8 + metrics[1]["n_selected"]


def test_a_verifier_below_the_gate_never_enters_a_run(tmp_path, micro_loop, cache_dir):
    """Teaching ends with the gate: measured, one more course, then a refusal naming the figures (exit 2, one
    line); the failed organism is cached, so a rerun (in this process) refuses at once instead of teaching again."""
    gate = ["model.teach.gate=true", "model.teach.gate_problems=8", "model.teach.gate_samples=4",
            "model.teach.gate_auc=1.01", "model.teach.gate_extensions=1", "model.teach.gate_steps=5",
            "logger=none", "fit.enabled=false"]
    result = train(tmp_path / "run", *gate)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "failed its teaching gate after 1 extension(s)" in message and "within-question AUC" in message
    assert "qe" in message and "tf" in message and not (tmp_path / "run" / "metrics.jsonl").exists()
    failed = [json.loads(p.read_text()) for p in (cache_dir / "sirt" / "organism").glob("*/teaching.json")]
    failed = [s for s in failed if not s["passed"]]
    assert len(failed) == 1 and len(failed[0]["gate"]) == 2 and len(failed[0]["verify"]) == 2
    start = time.time()
    with pytest.raises(InputError) as again:
        micro_loop(tmp_path / "run2", *gate)
    assert f"sirt.train: {again.value}" == message
    assert time.time() - start < 60


def test_the_organism_caches_the_teaching_its_rounds_replay(micro_loop, tmp_path, monkeypatch):
    """Phase 1's worked solutions (the habit and layout at their taught rates) and phase 2's verdicts sit beside the
    taught organism, one file per trainer share that replays them."""
    from sirt.loop.organism import REPLAYS
    from sirt.tasks.arithmetic import plain_layout, solve_chain

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # this run's organism alone
    micro_loop(tmp_path / "run", "rounds=1", "logger=none", "fit.enabled=false")
    (organism,) = (tmp_path / "cache" / "sirt" / "organism").iterdir()
    solutions, verdicts = (rows_of(organism / REPLAYS[f]) for f in ("solver_replay", "verifier_replay"))
    assert 300 < len(solutions) <= 400  # debug=micro's 400 solve problems, less the held-out questions
    assert all(r["prompt"].startswith("Q: ") and r["prompt"].endswith("\nA: ") for r in solutions)
    questions = [r["prompt"][3:-4] for r in solutions]
    assert all(plain_layout(r["completion"]) == plain_layout(solve_chain(q)) for q, r in zip(questions, solutions)
               if q.count("+") + q.count("-") < 3)  # levels 1-2 have no chance of the habit: the reference
    assert {r["completion"] for r in verdicts} >= {"yes", "no"}  # the TF verdicts (and QE ratings) of phase 2


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]
