"""Ranks: a round's chunks over torch.distributed (gloo on a CPU), one run directory, rank 0 writing it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sirt.loop.ranks import World
from tests.conftest import MICRO, ROOT

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "sirt.train"]
QUIET = ["logger=none", "fit.enabled=false"]


def env(cache: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(cache), "HF_HUB_OFFLINE": "1"}


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def samples(run_dir: Path, t: int) -> list[list[str]]:
    path = run_dir / "rounds" / str(t) / "selections.jsonl"
    return [json.loads(line)["samples"] for line in path.read_text().splitlines()]


def test_chunks_are_fixed_by_the_items_and_come_back_in_order():
    seen = []

    def fn(part, c):
        seen.append((c, part))
        return [x * 10 for x in part]

    items = [5, 1, 4, 2, 3]
    assert World().chunked(fn, items, 2, key=lambda x: x) == [50, 10, 40, 20, 30]
    assert seen == [(0, [1, 2]), (1, [3, 4]), (2, [5])]  # sorted by the key, then 2 at a time


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["verifier.sigma=0", "generation.batch_size=8", "verifier.batch_size=8"]])
def test_two_ranks_sample_what_one_process_samples(tmp_path, cache_dir, extra):
    """Round 0 of a 2-rank job holds exactly the samples of one process; with small batches the chunks go to
    both ranks, and with sigma 0 the later rounds train through DDP."""
    args = [*MICRO, *QUIET, *extra]
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "sirt.train", *args, "threads=1", f"hydra.run.dir={one}"], cwd=ROOT,
                   env=env(cache_dir), check=True, capture_output=True, timeout=600)
    proc = subprocess.run([*TORCHRUN, *args, f"hydra.run.dir={two}"], cwd=ROOT, env=env(cache_dir),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["round"] for r in rows(two)] == [0, 1, 2]
    assert samples(two, 0) == samples(one, 0)
    if extra:
        assert all(r["n_train_rows"] > 0 for r in rows(two)[1:])


def test_ranks_without_a_run_directory_are_refused_in_one_line(tmp_path, cache_dir):
    proc = subprocess.run([*TORCHRUN, *MICRO, *QUIET], cwd=tmp_path, env=env(cache_dir), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("sirt.train:")]
    assert lines and "add hydra.run.dir=DIR" in lines[0]
    assert "exitcode: 2" in proc.stderr  # each rank exits 2; the traceback after it is torchrun's own report


def rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """The pid of ``rank`` among the launcher's workers (read from their environment)."""
    for child in Path("/proc").iterdir():
        if not child.name.isdigit():
            continue
        try:
            stat = (child / "stat").read_text().split()
            environ = (child / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[3]) == launcher.pid and f"RANK={rank}".encode() in environ:
            return int(child.name)
    return None


@pytest.mark.slow
def test_a_dead_rank_ends_the_job_in_bounded_time_and_it_resumes(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    args = [*TORCHRUN, *MICRO, *QUIET, "rounds=4", "verifier.sigma=0", f"hydra.run.dir={run_dir}"]
    launcher = subprocess.Popen(args, cwd=ROOT, env=env(cache_dir), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not ((run_dir / "metrics.jsonl").exists() and len(rows(run_dir)) >= 2):
        assert launcher.poll() is None and time.monotonic() < deadline, "round 1 never committed"
        time.sleep(0.2)
    victim = rank_pid(launcher, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    code = launcher.wait(timeout=120)
    assert code != 0 and time.monotonic() - killed < 120
    committed = [r["round"] for r in rows(run_dir)]
    assert committed == list(range(len(committed)))  # whole rounds only, none twice
    proc = subprocess.run(args, cwd=ROOT, env=env(cache_dir), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["round"] for r in rows(run_dir)] == [0, 1, 2, 3, 4]
