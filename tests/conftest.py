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

# A loop small enough for a test: a briefly taught organism, 8 prompts, N = 4, 2 rounds.
MICRO = [
    "rounds=2",
    "dataset.n_train=8",
    "dataset.n_test=16",
    "dataset.levels=[1,2]",
    "generation.n_samples=4",
    "generation.pass_k=[1,4]",
    "generation.max_new_tokens=24",
    "model.tiny.hidden_size=32",
    "model.tiny.num_layers=1",
    "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=64",
    "model.teach.solve_problems=400",
    "model.teach.solve_steps=30",
    "model.teach.verify_problems=64",
    "model.teach.verify_samples=2",
    "model.teach.verify_steps=10",
    "model.teach.batch_size=16",
    "model.teach.gate=false",  # a micro organism judges at chance: the gate has its own test
    "trainer.batch_size=8",
    "trainer.epochs=1",
]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One organism cache for the whole session, away from the user's ~/.cache."""
    path = tmp_path_factory.mktemp("xdg-cache")
    os.environ["XDG_CACHE_HOME"] = str(path)
    return path


def sirt_command(module: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", f"sirt.{module}", *overrides]
