"""A run: rounds from the last committed one to ``config.rounds`` (each one :mod:`sirt.loop.round`),
committed atomically, then the levels plot, the fitting callback and the tracker's end.

A killed run restarted in the same directory goes on from the last committed round; a directory
this config cannot continue is refused before any model loads (:func:`resume_state`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from omegaconf import OmegaConf

from sirt.config.errors import ConfigError, InputError
from sirt.config.schema import Config
from sirt.loop.checks import check_lora_targets
from sirt.loop.organism import gate_summary, load_model, organism_path, verdict_rows
from sirt.loop.preflight import require as preflight
from sirt.loop.round import Stopwatch, one_round, seed_round, train_model
from sirt.loop.teacher import make_teacher
from sirt.models.load import load_pretrained, save
from sirt.models.prompts import few_shot_split, posed_config, verifier_schema
from sirt.plan.curriculum import plot_levels, round_problems
from sirt.plan.schedule import allocate, eta_schedule
from sirt.runs.rundir import RunDir
from sirt.runs.tracker import Tracker
from sirt.stages.generation_vllm import teardown
from sirt.stages.verification import Verifier
from sirt.tasks.registry import load_splits
from sirt.theory.report import fit_run

log = logging.getLogger("sirt.train")


def config_hash(config: Config) -> str:
    """Identity of what a run computes (logging excluded), to refuse resuming a different run."""
    blob = OmegaConf.to_container(OmegaConf.structured(config))
    blob.pop("logger")
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def resume_state(run: RunDir, config: Config) -> dict:
    """The committed state a run goes on from ({} for a new run), once the directory is checked.

    Raises InputError (one message, before any model loads) for a directory this config cannot
    continue: another config's run, a damaged state.json or metrics.jsonl, or a missing file the
    next round needs (the newest checkpoint and its picks). A finished run needs neither.
    """
    state = run.state()
    if not state:
        return {}
    if state.get("config_hash") != config_hash(config):
        raise ConfigError(f"{run.root} holds a run with a different config; resume it unchanged or use a new "
                          "hydra.run.dir")
    last = state["round"]
    rounds = [row.get("round") for row in run.metrics()]
    if rounds != list(range(last + 1)):
        raise InputError(f"{run.metrics_path} holds rounds {rounds}, but state.json commits rounds 0..{last}; "
                         "restore the file or start again in a new hydra.run.dir")
    if last < config.rounds:  # round last+1 starts from round last's checkpoint and trains on its picks
        picks = range(last + 1) if config.trainer.restart_from_base else [last]
        for path in [run.model_dir(last), *(run.round_dir(t) / "selections.jsonl" for t in picks)]:
            if not path.exists():
                raise InputError(f"{path} is missing: round {last + 1} resumes from it; restore it or start again "
                                 "in a new hydra.run.dir")
    return state


def run(config: Config, run_dir: Path, job_name: str) -> list[dict]:
    """The whole loop; returns the rows of metrics.jsonl. A vLLM engine (and its temp dir) ends with the run."""
    try:
        return run_rounds(config, run_dir, job_name)
    finally:
        if config.generation.backend == "vllm":
            teardown()


def run_rounds(config: Config, run_dir: Path, job_name: str) -> list[dict]:
    """Rounds from the last committed one to ``config.rounds``, then the fit (or only the fit, when done)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    run = RunDir(run_dir)
    state = resume_state(run, config)
    start = state.get("round", -1) + 1
    if start > config.rounds:  # every round is committed: refit only, needing no model, data or teacher
        log.info("run directory: %s (finished: round %d is committed, nothing to train)", run_dir, config.rounds)
        tracker = Tracker(config.logger, config, run_dir, state.get("wandb_id"), job_name)
        try:
            tracker.catch_up(run)
        except BaseException as err:
            tracker.finish(exit_code=getattr(err, "exit_code", 1))
            raise
        return wrap_up(run, config, tracker, job_name)
    eta = eta_schedule(config.schedule, config.rounds)
    ext = allocate(eta, config.external.budget)
    train, test = load_splits(config.dataset)
    shots, train = few_shot_split(train, config.dataset)  # a base model's worked examples, out of every round
    n_prompts = len(round_problems(train, config, 0))
    if max(ext) > n_prompts:
        raise ConfigError(f"external.budget={config.external.budget}: a round would use {max(ext)} external "
                          f"items but has only {n_prompts} prompts")
    log.info("run directory: %s (%s)", run_dir, f"resuming at round {start}" if start else "new run")

    held_out = {p.question for p in test}
    def load_base():
        return load_model(config.model, config.dataset, held_out)
    model, tokenizer = load_base() if start == 0 else load_pretrained(run.model_dir(start - 1), config.model)
    if config.trainer.lora:  # a named model's layer names are known once it loads: before any sampling
        check_lora_targets(model, config.model.lora)
    gate, replay = organism_teaching(config, held_out)
    posed = posed_config(config, tokenizer, shots)  # the rounds' prompts and stops; config itself is the run's id
    if start == 0:  # what a new model can get wrong, before any sampling (random state kept)
        preflight(model, tokenizer, posed, train)
    verifier = Verifier(tokenizer, verifier_schema(tokenizer, posed))
    teacher = None
    needed = ext if config.trainer.restart_from_base else ext[max(start, 1) - 1 :]  # restart: earlier rounds' too
    if config.external.source == "teacher" and any(needed):
        teacher = make_teacher(config.external.teacher, config.dataset, config.generation, held_out).respond
    tracker = Tracker(config.logger, config, run_dir, state.get("wandb_id"), job_name)
    try:
        tracker.summarize(gate)
        tracker.catch_up(run)  # the committed rounds, however the last process ended
        for t in range(start, config.rounds + 1):
            seed_round(config.seed, t)
            clock, stats = Stopwatch(), {"ext_used": 0}
            if t > 0:
                with clock("train"):
                    model, stats = train_model(model, tokenizer, run, config, t, ext, load_base, teacher, replay)
            problems = round_problems(train, config, t, run.metrics())  # a curriculum may read past acceptance
            row, records = one_round(t, model, tokenizer, verifier, problems, test, posed, clock)
            row.update(eta=eta[t - 1] if t > 0 else 0.0, **stats, seconds=dict(clock.seconds))
            with clock("checkpoint"):
                save(model, tokenizer, run.model_dir(t))
            run.commit_round(t, row, records, {"config_hash": config_hash(config), "wandb_id": tracker.run_id})
            if config.keep_models == "last":
                run.prune_models(keep=t)
            tracker.log_round(row, records)
            log.info("round %d | acc %.3f | U_s %.2f U_v %.2f G %.2f | acceptance %.2f | %.0fs", t, row["acc"],
                     row["U_s"], row["U_v"], row["G"], row["acceptance"], sum(row["seconds"].values()))
    except BaseException as err:
        tracker.finish(exit_code=getattr(err, "exit_code", 1))  # 128 + the signal's number for Interrupted
        raise
    return wrap_up(run, config, tracker, job_name)


def wrap_up(run: RunDir, config: Config, tracker: Tracker, job_name: str) -> list[dict]:
    """The end of a run, or all a rerun of a finished run does: the levels plot, the fit, the tracker
    (with the run's files as an artifact)."""
    try:
        plot_levels(run.metrics(), run.root / "plots" / "levels.png", job_name)
        fit_callback(run.root, config, tracker)
        tracker.log_run_data(run)
    except BaseException as err:
        tracker.finish(exit_code=getattr(err, "exit_code", 1))
        raise
    tracker.finish()
    log.info("done: %s", run.root)
    return run.metrics()


def organism_teaching(config: Config, held_out: set[str]) -> tuple[dict[str, float], list[dict[str, str]]]:
    """The organism's gate figures (for the W&B summary) and, when rounds replay them
    (``trainer.verifier_replay``), its teaching verdicts; nothing for a named model."""
    if config.model.name_or_path:
        return {}, []
    path = organism_path(config.model, config.dataset, held_out)
    return gate_summary(path), verdict_rows(path) if config.trainer.verifier_replay > 0 else []


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
