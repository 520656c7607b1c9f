"""Tracking: the run directory (the contract every part reads and writes) and W&B.

Every file is replaced atomically (write a temporary file, then ``os.replace``), and
``state.json`` is written last in a round: it is the commit point. A run killed at any
moment therefore resumes from the last round whose state was committed, and rows or files
of a half-finished round are overwritten when that round is redone.

One process at a time works in a run directory: :func:`lock_run_dir` holds ``<run>/.lock``
for the life of the run. A file that cannot be read (a damaged ``state.json`` or
``metrics.jsonl``) is an :class:`~sirt.config.InputError` naming it, not a traceback.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sirt.config import Config, InputError, LoggerSchema

log = logging.getLogger(__name__)


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file sirt wrote ([] if it does not exist); a damaged line is an InputError."""
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise InputError(f"{path}: line {n} is damaged ({err.msg}); restore the file or start the run "
                                 "again in a new hydra.run.dir") from None
    return rows


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def finished_job(job_dir: Path) -> tuple[list[dict[str, Any]], DictConfig, dict[str, Any]] | None:
    """A sweep job's rows of metrics.jsonl, composed config and joint fit (``{}`` without fit.json);
    None for a directory that holds no completed round. What the sweep tables (compare, robustness) read."""
    rows = read_jsonl(job_dir / "metrics.jsonl")
    if not rows:
        return None
    cfg = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
    fit_path = job_dir / "fit.json"
    joint = json.loads(fit_path.read_text()).get("joint", {}) if fit_path.exists() else {}
    return rows, cfg, joint


class RunDir:
    """``<run>/metrics.jsonl``, ``state.json``, ``rounds/<t>/`` — see DESIGN.md."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.metrics_path = self.root / "metrics.jsonl"
        self.state_path = self.root / "state.json"

    def round_dir(self, t: int) -> Path:
        return self.root / "rounds" / str(t)

    def model_dir(self, t: int) -> Path:
        return self.round_dir(t) / "model"

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

    def metrics(self) -> list[dict[str, Any]]:
        """Rows of committed rounds only (a row written after the last commit is dropped)."""
        last = self.state().get("round", -1)
        return [row for row in read_jsonl(self.metrics_path) if row["round"] <= last]

    def selections(self, t: int) -> list[dict[str, Any]]:
        return read_jsonl(self.round_dir(t) / "selections.jsonl")

    def commit_round(self, t: int, row: dict[str, Any], selections: list[dict[str, Any]], state: dict) -> None:
        """Write round t's files, then the state that makes them count."""
        write_atomic(self.round_dir(t) / "selections.jsonl", to_jsonl(selections))
        write_atomic(self.metrics_path, to_jsonl([*self.metrics(), row]))
        write_atomic(self.state_path, json.dumps({**state, "round": t}, indent=2))

    def prune_models(self, keep: int) -> None:
        """Delete round checkpoints other than ``keep`` (after its state is committed)."""
        for path in (self.root / "rounds").glob("*/model"):
            if path.parent.name != str(keep):
                shutil.rmtree(path, ignore_errors=True)


def lock_run_dir(root: Path) -> int:
    """Hold ``<root>/.lock`` (``fcntl.flock``) so that no second process works in the run directory.

    Returns the lock's file descriptor: closing it, or the end of the process however it ends,
    releases the lock (the kernel drops it), so a lock file left by a dead process never blocks.
    The file holds the holder's pid, which the refusal names.
    """
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise InputError(f"{root} is in use by another run (pid {holder}, lock {path}); wait for it to end or "
                         "choose another hydra.run.dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


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


class Tracker:
    """W&B for one run: round as the x-axis, the composed config, a table of picks, a summary.

    ``logger.name=none`` switches it off; ``logger.mode=offline`` (default) makes no network
    calls and leaves the run in ``<run>/wandb`` for ``wandb sync``.

    ``metrics.jsonl`` is the source of truth, W&B a copy of it. The W&B run id is made before round 0
    and kept in ``<run>/wandb_id``, so a resumed run continues the same W&B run. A process can die
    before W&B's writer flushes anything, so :meth:`catch_up` brings W&B to the committed rounds:
    offline, every (re)start writes a fresh segment ``<run>/wandb/offline-run-*-<id>`` that re-logs
    all committed rounds, and the segments of earlier processes are deleted first (over all offline
    files of the run each round appears once); online, the rounds after the last one W&B holds.
    """

    def __init__(self, cfg: LoggerSchema, config: Config, run_dir: Path, run_id: str | None, name: str):
        self.cfg, self.run, self.root = cfg, None, Path(run_dir)
        self.summary_path = self.root / ".sirt" / "wandb_summary.json"
        if cfg.name == "none":
            return
        import wandb
        from wandb.sdk.lib import runid

        self.wandb = wandb
        id_path = self.root / "wandb_id"
        kept = id_path.read_text().strip() if id_path.exists() else ""
        run_id = kept or run_id or runid.generate_id()
        if not kept:
            write_atomic(id_path, run_id + "\n")
        if cfg.mode == "offline":  # earlier processes' segments: their rounds are re-logged from metrics.jsonl
            for old in (self.root / "wandb").glob(f"offline-run-*-{run_id}"):
                shutil.rmtree(old, ignore_errors=True)
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            name=name,
            mode=cfg.mode,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            config=OmegaConf.to_container(OmegaConf.structured(config)),
            settings=wandb.Settings(silent=True, x_disable_stats=not cfg.system_stats,
                                    x_stats_sampling_interval=cfg.stats_interval),
        )
        self.run.define_metric("round")
        self.run.define_metric("*", step_metric="round")

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run else None

    def catch_up(self, run: RunDir) -> list[int]:
        """Log the committed rounds W&B may lack (all of them offline, see the class), and the summary earlier
        processes gave; returns the rounds' numbers."""
        if self.run is None or self.cfg.mode == "disabled":
            return []
        if self.summary_path.exists():
            self.run.summary.update(json.loads(self.summary_path.read_text()))
        last = self.run.summary.get("round") if self.cfg.mode == "online" and self.run.resumed else None
        rows = [row for row in run.metrics() if not isinstance(last, int) or row["round"] > last]
        for row in rows:
            self.log_round(row, run.selections(row["round"]))
        if rows:
            log.info("W&B: logged committed rounds %s", ", ".join(str(row["round"]) for row in rows))
        return [row["round"] for row in rows]

    def log_round(self, row: dict[str, Any], selections: list[dict[str, Any]]) -> None:
        """One history row: everything in the metrics row, nested dicts flattened (``acc_level/3``)."""
        if self.run is None:
            return
        columns = ["round", "question", "pick", "score", "correct", "accepted"]
        table = self.wandb.Table(columns=columns)
        for s in selections[: self.cfg.table_rows]:
            j = s["verifier_choice"]
            table.add_data(row["round"], s["question"], s["samples"][j], s["scores"][j], s["correct"][j],
                           s["pick"] is not None)
        self.run.log({**flatten(row), "selections": table})

    def summarize(self, summary: dict[str, Any], images: list[Path] = ()) -> None:
        """Summary values, and images in the summary (``plots/<name>``): history holds rounds only."""
        if self.run is None:
            return
        self.run.summary.update(summary)
        kept = json.loads(self.summary_path.read_text()) if self.summary_path.exists() else {}
        write_atomic(self.summary_path, json.dumps({**kept, **summary}, indent=2))  # for catch_up's next segment
        media = {f"plots/{p.stem}": self.wandb.Image(str(p)) for p in images}
        if media:
            self.run.summary.update(media)

    def log_run_data(self, run: RunDir) -> None:
        """``metrics.jsonl``, ``fit.json`` and ``rounds/*/selections.jsonl`` as an artifact of type ``run-data``."""
        if self.run is None or self.cfg.mode == "disabled":
            return
        artifact = self.wandb.Artifact(f"run-data-{self.run.id}", type="run-data",
                                       description="sirt run directory: metrics, fit, selections per round",
                                       metadata={"rounds": run.state().get("round")})
        paths = [run.metrics_path, run.root / "fit.json", *sorted(run.root.glob("rounds/*/selections.jsonl"))]
        for path in paths:
            if path.is_file():
                artifact.add_file(str(path), name=str(path.relative_to(run.root)))
        self.run.log_artifact(artifact)

    def finish(self, exit_code: int = 0) -> None:
        """Always called, on failure too: an unfinished run breaks the next job of a multirun."""
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A metrics row with nested dicts as ``parent/child`` keys (``acc_level/3``, ``seconds/train``)."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def sweep_group(sweep_dir: str | Path, experiment: str | None = None) -> str:
    """The W&B group of a multirun's jobs and of its ``sirt.compare`` run: ``<date>_<time>`` of a sweep
    dir ``.../<date>/<time>`` (Hydra's default), else the dir's name; prefixed by the experiment name
    (``+experiments=NAME``) when there is one. ``logger.group`` overrides it."""
    path = Path(sweep_dir).resolve()
    name = path.name
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", path.parent.name) and re.fullmatch(r"\d{2}-\d{2}-\d{2}", name):
        name = f"{path.parent.name}_{name}"
    return f"{experiment}_{name}" if experiment else name


def quiet_third_party() -> None:
    """Keep the console to sirt's own progress bars: no per-map bars from datasets, no
    weight-loading bars or advisory warnings from transformers."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


class SweepReport(Callback):
    """Hydra callback: each job leaves ``job_status.json`` and refreshes the sweep's
    ``failed_jobs.json``, so the report is complete however the sweep ends (Hydra's basic
    sweeper raises the first failure once every job has run, skipping ``on_multirun_end``).

    Files rather than memory, so it works when a launcher runs jobs in other processes.
    """

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        failed = job_return.status != JobStatus.COMPLETED
        error = repr(job_return._return_value) if failed else None
        status = {"overrides": job_return.overrides, "status": job_return.status.name, "error": error}
        write_atomic(Path(config.hydra.runtime.output_dir) / "job_status.json", json.dumps(status, indent=2))
        if failed:
            log.error("FAILED %s: %s", " ".join(job_return.overrides) or "(no overrides)", error)
        if config.hydra.mode == RunMode.MULTIRUN:
            self.report(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.report(Path(config.hydra.sweep.dir), final=True)

    @staticmethod
    def report(sweep: Path, final: bool = False) -> None:
        statuses = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/job_status.json"))]
        failed = [s for s in statuses if s["status"] != "COMPLETED"]
        write_atomic(sweep / "failed_jobs.json", json.dumps(failed, indent=2))
        log.info("sweep %s: %d of %d jobs so far completed", sweep, len(statuses) - len(failed), len(statuses))
        if final:
            for job in failed:
                log.error("FAILED %s: %s", " ".join(job["overrides"]) or "(no overrides)", job["error"])
