"""Peak memory: this process, and a child ``python -m sirt.train`` run measured from outside."""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser

log = logging.getLogger("sirt.bench")


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Starts a command and writes its peak RSS (KiB) to a file. The command must not be forked from
# the bench itself: Linux carries a process's pre-exec high-water mark into ru_maxrss, so a
# child of a 900 MB parent reports at least 900 MB. Forked from this small interpreter, it is exact.
RSS_PROBE = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
             "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
             "sys.exit(rc)")


def passthrough(overrides: list[str], own: set[str]) -> list[str]:
    """The bench's command-line overrides a child ``sirt.train`` understands: all but ``bench.*``
    and the keys the child run sets itself."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.input_line for o in parsed if not o.key_or_group.startswith("bench") and o.key_or_group not in own]


def child_peak_rss_mb(cmd: list[str], log_file: Path, env: dict[str, str] | None = None) -> float:
    """Run ``cmd`` to the end (output to ``log_file``) and return its peak RSS in MiB, through
    :data:`RSS_PROBE` so that this process's own size does not leak into the number."""
    peak_file = log_file.with_suffix(".rss")
    with open(log_file, "w") as out:
        result = subprocess.run([sys.executable, "-c", RSS_PROBE, str(peak_file), *cmd], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:4])} ... failed ({result.returncode}); see {log_file}")
    return int(peak_file.read_text()) / 1024


def train_rss(run_dir: Path, overrides: list[str], rounds: int, threads: int) -> dict[str, float | int]:
    """Peak RSS of a ``python -m sirt.train`` child of ``rounds`` rounds on the bench's config (W&B
    and the fit off, the bench's thread count): the memory a default run needs, measured."""
    own = {"logger": "none", "fit.enabled": "false", "rounds": str(rounds), "hydra.run.dir": str(run_dir)}
    train = [sys.executable, "-m", "sirt.train", *(f"{k}={v}" for k, v in own.items()),
             *passthrough(overrides, set(own))]
    log.info("memory: %s", " ".join(train[1:]))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    start = time.perf_counter()
    peak = child_peak_rss_mb(train, run_dir.with_suffix(".log"), env)
    return {"train_peak_rss_mb": peak, "train_rounds": rounds, "train_seconds": time.perf_counter() - start}
