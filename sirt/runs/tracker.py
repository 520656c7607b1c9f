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
            job_type="train",
            tags=run_tags(config),
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
        self.log_adapter(row["round"])

    def log_adapter(self, t: int) -> None:
        """Round t's LoRA adapter (``rounds/<t>/adapter``) as a version of the ``model`` artifact
        ``adapter-<id>``, alias ``round-<t>``; only with ``logger.log_adapters`` (an 8B model's is ~100 MB)."""
        path = RunDir(self.root).adapter_dir(t)
        if self.run is None or self.cfg.mode == "disabled" or not self.cfg.log_adapters or not path.is_dir():
            return
        artifact = self.wandb.Artifact(f"adapter-{self.run.id}", type="model", metadata={"round": t},
                                       description=f"sirt: the LoRA adapter (PEFT) that trained round {t}")
        artifact.add_dir(str(path))
        self.run.log_artifact(artifact, aliases=[f"round-{t}"])

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

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, kind, err, trace) -> bool:
        """An exception ends the W&B run with its exit code (128 + the signal's number for an interrupt)."""
        if err is not None:
            self.finish(exit_code=getattr(err, "exit_code", 1))
        return False

    def finish(self, exit_code: int = 0) -> None:
        """Always called, on failure too: an unfinished run breaks the next job of a multirun."""
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def command_run(job_type: str, directory: Path, name: str, *, project: str = "sirt", entity: str | None = None,
                group: str | None = None, mode: str = "offline", config: dict[str, Any] | None = None,
                tags: list[str] = ()):
    """The W&B run of a command other than sirt.train (``compare``, ``curriculum``, ``simulate``): its files in
    ``directory/wandb``, offline unless told, no system metrics (the command takes seconds)."""
    import wandb

    return wandb.init(project=project, entity=entity, group=group, job_type=job_type, name=name, dir=str(directory),
                      mode=mode, config=config or {}, tags=list(tags),
                      settings=wandb.Settings(silent=True, x_disable_stats=True))


def run_tags(config: Config) -> list[str]:
    """A run's W&B tags: what tells runs apart at a glance (model, dataset, schedule, verifier)."""
    model = config.model.name
    if model == "hf" and config.model.name_or_path:  # any hub model: its own name
        model = Path(config.model.name_or_path).name
    tags = {"model": model, "dataset": config.dataset.name, "schedule": config.schedule.name,
            "verifier": config.verifier.method}
    return [f"{key}:{value}"[:64] for key, value in tags.items()]  # W&B's limit: 64 characters a tag


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


def job_order(job_dir: Path) -> tuple[bool, int, str]:
    """Hydra's job numbers in numeric order (0, 1, ..., 10), other folders after them."""
    return not job_dir.name.isdigit(), len(job_dir.name), job_dir.name


def group_of(sweep_dir: Path) -> str:
    """The W&B group the sweep's jobs logged to: their ``logger.group`` if one was set, else the name
    :func:`sweep_group` made from the sweep dir and the experiment (``experiment=NAME``, or
    ``+experiments=NAME`` in a sweep run before experiments became the ``conf/experiment`` group)."""
    experiment = None
    for job in sorted(filter(Path.is_dir, sweep_dir.iterdir()), key=job_order):
        hydra_dir = job / ".hydra"
        if not (hydra_dir / "config.yaml").exists():
            continue
        group = OmegaConf.select(OmegaConf.load(hydra_dir / "config.yaml"), "logger.group", default=None)
        if group:
            return str(group)
        if (hydra_dir / "hydra.yaml").exists():
            choices = OmegaConf.select(OmegaConf.load(hydra_dir / "hydra.yaml"), "hydra.runtime.choices") or {}
            experiment = choices.get("experiment") or choices.get("experiments")
        elif (hydra_dir / "overrides.yaml").exists():
            overrides = OmegaConf.to_container(OmegaConf.load(hydra_dir / "overrides.yaml"))
            experiment = next((o.split("=", 1)[1] for o in overrides
                               if o.startswith(("experiment=", "+experiment=", "+experiments="))), None)
        break
    return sweep_group(sweep_dir, experiment)


def quiet_third_party() -> None:
    """Keep the console to sirt's own progress bars: no per-map bars from datasets, no
    weight-loading bars or advisory warnings from transformers. Downloads keep their bars
    (huggingface_hub's, which transformers' switch turns off too): an 8B model's 16 GB would
    otherwise arrive in silence."""
    import datasets
    import huggingface_hub.utils
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    huggingface_hub.utils.enable_progress_bars()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


class SweepReport(Callback):
    """Hydra callback: each job leaves ``job_status.json`` and refreshes the sweep's
    ``failed_jobs.json``, so the report is complete however the sweep ends (Hydra's basic
    sweeper raises the first failure once every job has run, skipping ``on_multirun_end``).

    Files rather than memory, so it works when a launcher runs jobs in other processes. The sweep's
    directory is kept in the launching process (:attr:`sweep_dir`), where a launcher's jobs never run.
    """

    sweep_dir: Path | None = None  # the multirun this process launched, set before its first job

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepReport.sweep_dir = Path(config.hydra.sweep.dir)

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
