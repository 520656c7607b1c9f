"""Shared fixtures: an offline, isolated environment and the micro config of the loop."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# datasets caches the local hub copies tests read under a directory fixed when it is imported: not ~/.cache
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="sirt-tests-datasets-"))

# A loop small enough for a test: a briefly taught organism, 8 prompts, N = 4, 2 rounds, gate off
# (conf/debug/micro.yaml, applied after the groups; later command-line overrides still win).
MICRO = ["debug=micro"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One organism cache for the whole session, away from the user's ~/.cache."""
    path = tmp_path_factory.mktemp("xdg-cache")
    os.environ["XDG_CACHE_HOME"] = str(path)
    return path


@pytest.fixture
def micro_loop(cache_dir):
    """The loop in this process, as sirt.train runs a job: compose ``debug=micro`` plus overrides, validate, then
    ``sirt.loop.trainer.run(config, run_dir, job_name)``; returns the metrics rows. Afterwards it puts back what a
    run changes process-wide: torch's thread count, the random generators it seeds, the environment."""
    import random

    import numpy as np
    import torch

    from sirt.config.compose import compose
    from sirt.loop.checks import validated
    from sirt.loop.trainer import run

    def loop(run_dir: Path, *overrides: str, job_name: str = "micro") -> list[dict]:
        return run(validated(compose(*MICRO, *overrides)), run_dir, job_name)

    threads, env = torch.get_num_threads(), dict(os.environ)
    generators = torch.get_rng_state(), random.getstate(), np.random.get_state()
    try:
        yield loop
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(generators[0])
        random.setstate(generators[1])
        np.random.set_state(generators[2])
        for key in set(os.environ) - set(env):
            del os.environ[key]
        os.environ.update(env)


def sirt_command(module: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", f"sirt.{module}", *overrides]
