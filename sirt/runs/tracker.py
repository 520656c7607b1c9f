"""W&B tracking of a run (offline unless configured online), sweep groups and the sweep report."""

from __future__ import annotations

import json
import logging
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sirt.config.schema import Config, LoggerSchema
from sirt.runs.files import write_atomic
from sirt.runs.rundir import RunDir

log = logging.getLogger(__name__)


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
    (``experiment=NAME``) when there is one. ``logger.group`` overrides it."""
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
        job_dir = Path(config.hydra.runtime.output_dir)
        status = {"job": job_dir.name, "overrides": job_return.overrides, "status": job_return.status.name,
                  "error": error}
        write_atomic(job_dir / "job_status.json", json.dumps(status, indent=2))
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
