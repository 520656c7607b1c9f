"""The trainer: paper 1's loop over one run directory, built from the config groups.

``Trainer(config, run_dir, job_name).fit()`` reads like the algorithm: for every round from the last
committed one, train model_t on round t-1's picks (+ its external items), measure it (sample, probe,
verify, select, evaluate), commit the round; then the levels plot, the fit and the tracker's end. The
setup (model, data, schedule, verifier, teacher, tracker, ranks) is done once, before round 0 or a resumed
round, and a directory this config cannot continue is refused before any model loads.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from functools import cached_property
from pathlib import Path

import torch

from sirt.config.errors import ConfigError
from sirt.config.schema import Config
from sirt.loop.checks import check_adapter, config_hash, resume_state
from sirt.loop.organism import REPLAYS, gate_summary, load_model, organism_path, replay_rows
from sirt.loop.preflight import require as require_preflight
from sirt.loop.ranks import World, world
from sirt.loop.round import Stopwatch, one_round, round_row, seed_round, train_rows
from sirt.loop.teacher import make_teacher
from sirt.models.load import load_pretrained, save
from sirt.models.prompts import few_shot_split, posed_config, verifier_schema
from sirt.plan.curriculum import plot_levels, round_problems
from sirt.plan.schedule import allocate, eta_schedule
from sirt.plan.seeds import round_seed
from sirt.runs.rundir import RunDir
from sirt.runs.tracker import Tracker
from sirt.stages import training
from sirt.stages.backends import backend
from sirt.stages.external import SOURCES
from sirt.stages.verification import Verifier
from sirt.tasks.registry import load_splits
from sirt.theory.report import fit_run

log = logging.getLogger("sirt.train")


def train_model(model, tokenizer, rows: list[dict[str, str]], config: Config, t: int, adapter_dir: Path | None,
                ranks: int = 1):
    """model_t: one round of SFT (LoRA, merged) on ``rows``, seeded by (seed, t), with the global batch of one
    process on any number of ``ranks`` (the per-device batch divided among them)."""
    cfg = config.trainer
    if ranks > 1:
        cfg = dataclasses.replace(cfg, batch_size=cfg.batch_size // ranks)
    lora = config.model.lora if cfg.lora else None
    return training.sft(model, tokenizer, rows, cfg, seed=round_seed(config.seed, t, "sft"), lora=lora,
                        dtype=config.model.dtype, adapter_dir=adapter_dir)


def with_replay(rows: list[dict], replays: dict[str, list[dict[str, str]]], shares: dict[str, float],
                rng: random.Random) -> list[dict]:
    """``rows`` and teaching rows of the organism, each pool making up its share of the result
    (``trainer.verifier_replay``, ``trainer.solver_replay``: the organism only; a deviation from paper 1,
    which trains on the picks alone)."""
    used = [field for field in REPLAYS if replays.get(field) and shares[field] > 0]  # REPLAYS' order: draws replay
    if not rows or not used:
        return rows
    total = len(rows) / (1 - sum(shares[field] for field in used))
    return rows + [row for field in used
                   for row in rng.sample(list(replays[field]), min(len(replays[field]), round(total * shares[field])))]


class Trainer:
    """One job: its config, run directory and ranks; :meth:`fit` runs its rounds."""

    def __init__(self, config: Config, run_dir: Path, job_name: str, ranks: World | None = None):
        self.config, self.run, self.job_name = config, RunDir(run_dir), job_name
        self.world = ranks or world()
        if config.threads:
            torch.set_num_threads(config.threads)
        if config.trainer.batch_size % self.world.size:
            raise ConfigError(f"trainer.batch_size={config.trainer.batch_size}: the global batch is split among "
                              f"{self.world.size} ranks, so it must be a multiple of {self.world.size}")
        self.state = resume_state(self.run, config)
        self.start = self.state.get("round", -1) + 1

    def fit(self) -> list[dict]:
        """Paper 1's algorithm, from the last committed round to ``config.rounds``, then the fit."""
        if self.start > self.config.rounds:  # every round is committed: refit only, needing no model or data
            log.info("run directory: %s (finished: round %d is committed, nothing to train)", self.run.root,
                     self.config.rounds)
            with self.make_tracker() as self.tracker:
                self.tracker.catch_up(self.run)
                return self.wrap_up()
        self.setup()
        with self.make_tracker() as self.tracker:
            self.tracker.summarize(self.gate)
            self.tracker.catch_up(self.run)  # the committed rounds, however the last process ended
            for t in range(self.start, self.config.rounds + 1):
                seed_round(self.config.seed, t)
                clock = Stopwatch()
                trained = self.train(t, clock) if t > 0 else {"ext_used": 0}
                problems = round_problems(self.train_split, self.config, t, self.run.metrics())
                measured, records = one_round(t, self.model, self.tokenizer, self.verifier, problems,
                                              self.test_split, self.posed, clock, self.world)
                self.commit(t, round_row(t, measured, trained, self.eta_of(t), clock.seconds), records, clock)
            return self.wrap_up()

    # --- the setup, once per process ----------------------------------------------------------------------

    def make_tracker(self) -> Tracker:
        """W&B on rank 0; the other ranks log nothing."""
        logger = self.config.logger if self.world.main else dataclasses.replace(self.config.logger, name="none")
        return Tracker(logger, self.config, self.run.root, self.state.get("wandb_id"), self.job_name)

    def setup(self) -> None:
        """Data, schedule, model, verifier and teacher; the preflight checks before round 0."""
        c = self.config
        self.eta = eta_schedule(c.schedule, c.rounds)
        self.ext = allocate(self.eta, c.external.budget)
        train, self.test_split = load_splits(c.dataset)
        shots, self.train_split = few_shot_split(train, c.dataset)  # a base model's worked examples, out of every round
        n_prompts = len(round_problems(self.train_split, c, 0))
        if max(self.ext) > n_prompts:
            raise ConfigError(f"external.budget={c.external.budget}: a round would use {max(self.ext)} external "
                              f"items but has only {n_prompts} prompts")
        how = f"resuming at round {self.start}" if self.start else "new run"
        log.info("run directory: %s (%s)", self.run.root, how)
        self.model, self.tokenizer = self.first_model()
        check_adapter(self.model, c)  # a named model's layer names are known once it loads: before any sampling
        self.gate, self.replay = self.organism_teaching()
        self.replay_shares = {field: getattr(c.trainer, field) for field in REPLAYS}
        self.posed = posed_config(c, self.tokenizer, shots)  # the rounds' prompts and stops; c itself is the run's id
        if self.start == 0:  # what a new model can get wrong, before any sampling (random state kept)
            require_preflight(self.model, self.tokenizer, self.posed, self.train_split)
        self.verifier = Verifier(self.tokenizer, verifier_schema(self.tokenizer, self.posed))
        self.teacher = self.make_teacher()

    @cached_property
    def held_out(self) -> set[str]:
        return {p.question for p in self.test_split}

    def load_base(self):
        return load_model(self.config.model, self.config.dataset, self.held_out)

    def first_model(self):
        """The model the first round of this process starts from: the base (rank 0 first: it may teach the
        organism into the cache the others then read) or the last committed checkpoint."""
        if self.start > 0:
            return load_pretrained(self.run.model_dir(self.start - 1), self.config.model)
        if self.world.main:
            loaded = self.load_base()
        self.world.barrier()
        return loaded if self.world.main else self.load_base()

    def organism_teaching(self) -> tuple[dict[str, float], dict[str, list[dict[str, str]]]]:
        """The organism's gate figures (for the W&B summary) and the teaching rows its rounds replay
        (``trainer.verifier_replay``, ``trainer.solver_replay``); nothing for a named model."""
        c = self.config
        if c.model.name_or_path:
            return {}, {}
        path = organism_path(c.model, c.dataset, self.held_out)
        return gate_summary(path), {field: replay_rows(path, field) for field in REPLAYS
                                    if getattr(c.trainer, field) > 0}

    def make_teacher(self):
        """The external source's teacher, where it needs one and a round left to run uses it (with
        ``trainer.restart_from_base``, the earlier rounds' too)."""
        c = self.config
        needed = self.ext if c.trainer.restart_from_base else self.ext[max(self.start, 1) - 1 :]
        if not (SOURCES[c.external.source].needs_teacher and any(needed)):
            return None
        return make_teacher(c.external.teacher, c.dataset, c.generation, self.held_out).respond

    # --- a round ----------------------------------------------------------------------------------------------

    def eta_of(self, t: int) -> float:
        return self.eta[t - 1] if t > 0 else 0.0

    def train(self, t: int, clock: Stopwatch) -> dict:
        """model_t from round t-1's picks and round t's external items (from the base model on every round's
        rows so far, with ``trainer.restart_from_base``)."""
        with clock("train"):
            rows, used, rng = train_rows(self.run, self.config, t, self.ext, self.teacher)
            rows = with_replay(rows, self.replay, self.replay_shares, rng)
            if self.config.trainer.restart_from_base:
                self.model, _ = self.load_base()  # the tokenizer is the run's own
            adapter_dir = self.run.adapter_dir(t) if self.world.main else None
            self.model, stats = train_model(self.model, self.tokenizer, rows, self.config, t, adapter_dir,
                                            self.world.size)
        return {**stats, "ext_used": used, "n_train_rows": len(rows)}

    def commit(self, t: int, row: dict, records: list[dict], clock: Stopwatch) -> None:
        """Rank 0 checkpoints and commits round t atomically, then logs it; every rank waits for the commit
        (round t+1 reads its picks from the run directory)."""
        if self.world.main:
            with clock("checkpoint"):
                save(self.model, self.tokenizer, self.run.model_dir(t))
            self.run.commit_round(t, row, records, {"config_hash": config_hash(self.config),
                                                    "wandb_id": self.tracker.run_id})
            if self.config.keep_models == "last":
                self.run.prune_models(keep=t)
            self.tracker.log_round(row, records)
            log.info("round %d | acc %.3f | U_s %.2f U_v %.2f G %.2f | acceptance %.2f | %.0fs", t, row["acc"],
                     row["U_s"], row["U_v"], row["G"], row["acceptance"], sum(row["seconds"].values()))
        self.world.barrier()

    # --- the end ------------------------------------------------------------------------------------------

    def wrap_up(self) -> list[dict]:
        return wrap_up(self.run, self.config, self.tracker, self.job_name, self.world.main)


def wrap_up(run: RunDir, config: Config, tracker: Tracker, job_name: str, main: bool = True) -> list[dict]:
    """The end of a run, or all a rerun of a finished run does (rank 0): the levels plot, the fitting
    callback, the tracker with the run's files as an artifact."""
    if main:
        levels = plot_levels(run.metrics(), run.root / "plots" / "levels.png", job_name)
        if levels is not None:
            tracker.summarize({}, [levels])  # plots/levels in the W&B summary, beside the fit's plots
        fit_callback(run.root, config, tracker)
        tracker.log_run_data(run)
    tracker.finish()
    log.info("done: %s", run.root)
    return run.metrics()


def run(config: Config, run_dir: Path, job_name: str) -> list[dict]:
    """The whole job; returns the rows of metrics.jsonl. The backend's engines (and temp dirs) end with it."""
    try:
        return Trainer(config, run_dir, job_name).fit()
    finally:
        backend(config.generation).close()


def fit_callback(run_dir: Path, config: Config, tracker: Tracker) -> None:
    """Fit paper 1's dynamics to the run; never fails the run (a failed fit says why in fit.json)."""
    if not config.fit.enabled:
        return
    try:
        report = fit_run(run_dir, forecast_k=config.fit.forecast_k, make_plots=config.fit.plots)
    except Exception as err:
        log.warning("fitting callback failed: %r", err)
        return
    joint = report.get("joint", {})
    summary = {f"fit/{k}": v for k, v in joint.items() if isinstance(v, (int, float))}
    summary.update({f"fit/r2_{q}": c["r2"] for q, c in report.get("curves", {}).items()
                    if isinstance(c, dict) and "r2" in c})
    summary["fit/status"] = report.get("status")
    images = [run_dir / p for p in report.get("plots", {}).get("files", [])]
    tracker.summarize(summary, images)
    log.info("fit: %s", report.get("status"))
