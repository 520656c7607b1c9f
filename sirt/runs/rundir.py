"""The run directory, the contract every part reads and writes.

Every file is replaced atomically (write a temporary file, then ``os.replace``), and
``state.json`` is written last in a round: it is the commit point. A run killed at any
moment therefore resumes from the last round whose state was committed, and rows or files
of a half-finished round are overwritten when that round is redone.

One process at a time works in a run directory: :func:`lock_run_dir` holds ``<run>/.lock``
for the life of the run. A file that cannot be read (a damaged ``state.json`` or
``metrics.jsonl``) is an :class:`~sirt.config.errors.InputError` naming it, not a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from sirt.config.errors import InputError
from sirt.runs.files import read_jsonl, to_jsonl, write_atomic
from sirt.runs.records import MetricsRow, SelectionRecord


def finished_job(job_dir: Path) -> tuple[list[dict[str, Any]], DictConfig, dict[str, Any]] | None:
    """A sweep job's rows of metrics.jsonl, composed config and joint fit (``{}`` without fit.json);
    None for a directory that holds no completed round. What the sweep tables (compare, robustness) read."""
    rows = read_jsonl(job_dir / "metrics.jsonl")
    if not rows:
        return None
    config_path = job_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise InputError(f"{config_path} is missing: the job's metrics.jsonl cannot be told apart from the others'; "
                         "restore it or move the job out of the sweep directory")
    try:
        cfg = OmegaConf.load(config_path)
        fit_path = job_dir / "fit.json"
        joint = json.loads(fit_path.read_text()).get("joint", {}) if fit_path.exists() else {}
    except (ValueError, OSError, yaml.YAMLError) as err:
        raise InputError(f"{job_dir}: a file cannot be read ({' '.join(str(err).split())})") from None
    return rows, cfg, joint


def sweep_jobs(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep directory (each holds a ``.hydra`` or ``metrics.jsonl``), in job order;
    InputError when the directory is missing, empty or a single run's (not a sweep)."""
    if not sweep_dir.is_dir():
        raise InputError(f"{sweep_dir} is not a directory: give the multirun directory (hydra.sweep.dir)")
    if (sweep_dir / "metrics.jsonl").exists() or (sweep_dir / "state.json").exists():
        raise InputError(f"{sweep_dir} is a single run's directory, not a sweep: give the multirun directory that "
                         "holds its jobs (hydra.sweep.dir)")
    jobs = [p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir() or (p / "metrics.jsonl").is_file()]
    if not jobs and not failed_jobs(sweep_dir):
        raise InputError(f"{sweep_dir} holds no job of a sweep (no folder with .hydra/ or metrics.jsonl)")
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), len(p.name), p.name))


def failed_jobs(sweep_dir: Path) -> list[dict[str, Any]]:
    """The failed jobs a sweep listed in ``failed_jobs.json`` (``[]`` without one): overrides, status, error."""
    path = sweep_dir / "failed_jobs.json"
    if not path.is_file():
        return []
    try:
        failed = json.loads(path.read_text(errors="replace"))
        if not isinstance(failed, list) or not all(isinstance(job, dict) for job in failed):
            raise ValueError("not a list of jobs")
    except ValueError as err:
        raise InputError(f"{path} is damaged ({err})") from None
    return failed


def job_label(job: dict[str, Any]) -> str:
    """A failed job as the sweep names it: its folder (when recorded) and its overrides."""
    overrides = " ".join(job.get("overrides") or []) or "(no overrides)"
    return f"job {job['job']} ({overrides})" if job.get("job") is not None else overrides


def no_completed_job(sweep_dir: Path) -> InputError:
    """The refusal of a sweep none of whose jobs committed a round, naming the failed ones."""
    failed = "".join(f"; {job_label(job)} failed: {job.get('error')}" for job in failed_jobs(sweep_dir))
    return InputError(f"no job of {sweep_dir} has a committed round{failed}")


def failed_lines(sweep_dir: Path) -> list[str]:
    """Markdown lines that list a sweep's failed jobs by name (none when every job completed)."""
    failed = failed_jobs(sweep_dir)
    if not failed:
        return []
    return ["", f"{len(failed)} failed job(s), not in the table (from {sweep_dir / 'failed_jobs.json'}):", "",
            *[f"- {job_label(job)}: {job.get('error')}" for job in failed]]


class RunDir:
    """``<run>/metrics.jsonl``, ``state.json``, ``rounds/<t>/``: the contract of README.md's run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.metrics_path = self.root / "metrics.jsonl"
        self.state_path = self.root / "state.json"

    def round_dir(self, t: int) -> Path:
        return self.root / "rounds" / str(t)

    def model_dir(self, t: int) -> Path:
        return self.round_dir(t) / "model"

    def adapter_dir(self, t: int) -> Path:
        """The LoRA adapter that trained model_t (kept for every round, unlike ``model_dir``)."""
        return self.round_dir(t) / "adapter"

    def state(self) -> dict[str, Any]:
        """What resume needs; empty for a new run. A damaged state.json is an InputError."""
        if not self.state_path.exists():
            return {}
        try:
            state = json.loads(self.state_path.read_text(errors="replace"))
            if not isinstance(state, dict) or not isinstance(state.get("round"), int):
                raise ValueError("no committed round")
        except ValueError as err:
            raise InputError(f"{self.state_path} is damaged ({err}): the run cannot be resumed; restore it or "
                             "start again in a new hydra.run.dir") from None
        return state

    def metrics(self) -> list[MetricsRow]:
        """Rows of committed rounds only (a row written after the last commit is dropped)."""
        last = self.state().get("round", -1)
        return [row for row in read_jsonl(self.metrics_path) if row["round"] <= last]

    def selections(self, t: int) -> list[SelectionRecord]:
        return read_jsonl(self.round_dir(t) / "selections.jsonl")

    def commit_round(self, t: int, row: MetricsRow, selections: list[SelectionRecord], state: dict) -> None:
        """Write round t's files, then the state that makes them count."""
        write_atomic(self.round_dir(t) / "selections.jsonl", to_jsonl(selections))
        write_atomic(self.metrics_path, to_jsonl([*self.metrics(), row]))
        write_atomic(self.state_path, json.dumps({**state, "round": t}, indent=2))

    def prune_models(self, keep: int) -> None:
        """Delete round checkpoints other than ``keep`` (after its state is committed)."""
        for path in (self.root / "rounds").glob("*/model"):
            if path.parent.name != str(keep):
                shutil.rmtree(path, ignore_errors=True)


HELD: dict[Path, FileLock] = {}
"""The run-directory locks this process took (by lock file), so that none is released by garbage collection."""


def lock_run_dir(root: Path) -> FileLock:
    """Hold ``<root>/.lock`` (filelock's native lock: ``flock`` on Unix) so that no second process works in
    the run directory.

    Returns the held lock: releasing it, or the end of the process however it ends, frees it (the kernel
    drops it), so a lock file left by a dead process never blocks; dropping the object does not (it is kept
    in ``HELD``). The file holds the holder's pid, which the refusal names; it is kept on release
    (``preserve_lock_file``).
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".lock"

    def mark(fd: int) -> None:  # the holder's pid, written while the lock is held
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    lock = FileLock(path, timeout=0, thread_local=False, preserve_lock_file=True, on_acquired=mark)
    try:
        lock.acquire()
    except Timeout:
        holder = path.read_text(errors="replace").strip() or "unknown"
        raise InputError(f"{root} is in use by another run (pid {holder}, lock {path}); wait for it to end or "
                         "choose another hydra.run.dir") from None
    HELD[path] = lock  # filelock releases a lock it collects; this one lives until release() or the process
    return lock


HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def keep_hydra_files(root: Path, subdir: str, texts: dict[str, str]) -> None:
    """Write the accepted run's Hydra files, into ``<root>/<subdir>`` and sirt's copy ``<root>/.sirt/hydra``.

    Hydra rewrites ``<subdir>`` (``.hydra``) before sirt can check anything; the copy is what
    :func:`restore_hydra_files` puts back when a later command on the same directory is refused.
    """
    for name, text in texts.items():
        write_atomic(root / ".sirt" / "hydra" / name, text)
        write_atomic(root / subdir / name, text)


def restore_hydra_files(root: Path, subdir: str) -> None:
    """Undo Hydra's rewrite of ``<root>/<subdir>`` by a refused command: the accepted run's files come back."""
    kept = root / ".sirt" / "hydra"
    for name in HYDRA_FILES:
        if (kept / name).is_file():
            write_atomic(root / subdir / name, (kept / name).read_text())
