"""``python -m sirt.train``: paper 1's self-improvement loop, one round per iteration.

Round t measures model_t and prepares the data that trains model_{t+1}:

    model    = SFT(model, picks of round t-1 + external items of round t)   (t >= 1)
    samples  = N samples per prompt, with log-probs         -> U_s (mean over the N)
    scores   = the model verifies its own samples (TF or QE)
    picks    = Best-of-N among s >= sigma, lowest NLL/token -> U_v, acceptance
    accuracy = greedy on the test split; pass@k from the samples
    log      = one row of metrics.jsonl and W&B; checkpoint; commit the round

Round 0 measures the untouched model. A killed run restarted in the same directory goes on
from the last committed round. At the end the fitting callback fits paper 1's dynamics.
One process at a time works in a run directory (``<run>/.lock``); a command the directory
cannot take (busy, another config, damaged) exits 2 in one line and leaves its files as they were.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shlex
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sirt import data, evaluation, models, training
from sirt.config import Config, ConfigError, InputError, validate
from sirt.curriculum import plot_levels, round_problems
from sirt.external import allocate, eta_schedule, training_rows
from sirt.generation import sampler
from sirt.judging import verifier_quality
from sirt.prompts import solver_prompt, verifier_schema
from sirt.selection import select
from sirt.teacher import make_teacher
from sirt.tracking import (
    RunDir,
    Tracker,
    keep_hydra_files,
    lock_run_dir,
    quiet_third_party,
    restore_hydra_files,
    sweep_group,
)
from sirt.uncertainty import solver_verifier_gap
from sirt.verification import Verifier

log = logging.getLogger("sirt.train")


class Stopwatch:
    """Seconds per stage of a round (the ``seconds`` dict of metrics.jsonl)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        yield
        self.seconds[stage] += time.perf_counter() - start


def seed_round(seed: int, t: int) -> None:
    """Seed every generator from (seed, round), so a resumed round repeats an uninterrupted one."""
    s = seed * 1009 + t
    random.seed(s)
    torch.manual_seed(s)


def config_hash(config: Config) -> str:
    """Identity of what a run computes (logging excluded), to refuse resuming a different run."""
    blob = OmegaConf.to_container(OmegaConf.structured(config))
    blob.pop("logger")
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def one_round(t, model, tokenizer, verifier, problems, test, config: Config, clock: Stopwatch):
    """Measure model_t on the round's prompts and pick next round's data: (row, selections)."""
    gen = config.generation
    prompts = [solver_prompt(p.question, tokenizer, config) for p in problems]
    with clock("generate"):
        samples = sampler(gen)(model, tokenizer, prompts, gen, desc=f"round {t}: generate")
    with clock("verify"):
        pairs = [(p, s.text) for p, row in zip(prompts, samples) for s in row]
        flat = verifier.score(model, pairs, desc=f"round {t}: verify")
        N = gen.n_samples
        scores = [flat[i * N : (i + 1) * N] for i in range(len(prompts))]
    with clock("select"):
        records = select(prompts, problems, samples, scores, config.verifier.sigma)
        picks = [r for r in records if r["pick"] is not None]
    with clock("eval"):
        greedy = sampler(gen)(model, tokenizer, [solver_prompt(p.question, tokenizer, config) for p in test],
                        gen, n=1, greedy=True, desc=f"round {t}: eval")
        correct = [data.is_correct(g[0].text, p) for g, p in zip(greedy, test)]
    gap = solver_verifier_gap(samples, [row[r["verifier_choice"]] for row, r in zip(samples, records)])
    levels = [r["level"] for r in records]
    row = {
        "round": t,
        "acc": evaluation.accuracy(correct),
        "acc_level": evaluation.level_accuracy(correct, [p.level for p in test]),
        "acceptance_level": evaluation.level_accuracy([r["pick"] is not None for r in records], levels),
        "n_selected_level": {str(lv): sum(r["pick"] is not None for r in records if r["level"] == lv)
                             for lv in sorted(set(levels))},
        "pass_at_k": evaluation.mean_pass_at_k([r["correct"] for r in records], gen.pass_k),
        **gap,
        "acceptance": len(picks) / len(records),
        **verifier_quality(records),
        "n_selected": len(picks),
        "tokens_generated": sum(s.n_tokens for row in samples for s in row),
    }
    return row, records


def train_model(model, tokenizer, run: RunDir, config: Config, t: int, ext_items: int, load_base, teacher,
                replay: list[dict[str, str]] = ()):
    """model_t: SFT on round t-1's picks (+ external items), or from the base on all picks so far.

    ``replay``: verdict rows mixed in as a share ``trainer.verifier_replay`` of the round's rows
    (the organism only; a deviation from paper 1, which trains on the picks alone).
    """
    rng = random.Random(config.seed * 104729 + t)
    rows, used = training_rows(run.selections(t - 1), ext_items, config.external.source, rng, teacher)
    if config.trainer.restart_from_base:  # STaR style: every round restarts on everything so far
        rows = [r for s in range(t - 1) for r in training_rows(run.selections(s), 0, "gold", rng)[0]] + rows
        model = load_base()
    share = config.trainer.verifier_replay
    if share > 0 and rows and replay:
        rows = rows + rng.sample(list(replay), min(len(replay), round(len(rows) * share / (1 - share))))
    lora = config.model.lora if config.trainer.lora else None
    model, stats = training.sft(model, tokenizer, rows, config.trainer, seed=config.seed + t, lora=lora,
                                dtype=config.model.dtype)
    return model, {**stats, "ext_used": used, "n_train_rows": len(rows)}


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
    """The whole loop; returns the rows of metrics.jsonl."""
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
    train, test = data.load_splits(config.dataset)
    n_prompts = len(round_problems(train, config, 0))
    if max(ext) > n_prompts:
        raise ConfigError(f"external.budget={config.external.budget}: a round would use {max(ext)} external "
                          f"items but has only {n_prompts} prompts")
    log.info("run directory: %s (%s)", run_dir, f"resuming at round {start}" if start else "new run")

    held_out = {p.question for p in test}
    def load_base():
        return models.load(config.model, config.dataset, held_out)
    model, tokenizer = load_base() if start == 0 else models.load_pretrained(run.model_dir(start - 1), config.model)
    gate, replay = organism_teaching(config, held_out)
    verifier = Verifier(tokenizer, verifier_schema(tokenizer, config))
    teacher = None
    if config.external.source == "teacher" and any(ext[max(start, 1) - 1 :]):
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
                    model, stats = train_model(model, tokenizer, run, config, t, ext[t - 1], load_base, teacher,
                                               replay)
            problems = round_problems(train, config, t, run.metrics())  # a curriculum may read past acceptance
            row, records = one_round(t, model, tokenizer, verifier, problems, test, config, clock)
            row.update(eta=eta[t - 1] if t > 0 else 0.0, **stats, seconds=dict(clock.seconds))
            with clock("checkpoint"):
                models.save(model, tokenizer, run.model_dir(t))
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
    from sirt.organism import gate_summary, organism_path, verdict_rows

    path = organism_path(config.model, config.dataset, held_out)
    return gate_summary(path), verdict_rows(path) if config.trainer.verifier_replay > 0 else []


def fit_callback(run_dir: Path, config: Config, tracker: Tracker) -> None:
    """Fit paper 1's dynamics to the run; never fails the run (a failed fit says why in fit.json)."""
    if not config.fit.enabled:
        return
    try:
        from sirt.fitting import fit_run

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


def hydra_files(cfg: DictConfig) -> dict[str, str]:
    """The texts of the files Hydra wrote into ``<run>/.hydra`` for this job, made again from memory."""
    hydra_cfg = HydraConfig.instance().cfg
    return {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
            "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task)}


_cli = {"job_started": False, "full_error": False, "run_dir": None, "sweep_dir": None}  # see cli()


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """One job. Bad input ends a single run with one message and exit code 2; in a multirun the
    job fails (and is reported at the end) while the other jobs go on.

    The run directory is locked first, so a second process on it stops here. Hydra has already
    rewritten ``<run>/.hydra`` by then: a refused command puts back the files of the run the
    directory holds (kept in ``<run>/.sirt/hydra`` once a run is accepted).
    """
    _cli["job_started"] = True
    if _cli["full_error"]:  # set by cli() for the composition only: a job's own errors are Hydra's to report
        _cli["full_error"] = False
        os.environ.pop("HYDRA_FULL_ERROR", None)
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir)
    _cli["run_dir"], _cli["sweep_dir"] = run_dir, Path(hydra_cfg.sweep.dir) if multirun else None
    lock = None
    try:
        lock = lock_run_dir(run_dir)
        config = validate(cfg)
        resume_state(RunDir(run_dir), config)  # refuses before the run's Hydra files are replaced
        if hydra_cfg.output_subdir is not None:
            keep_hydra_files(run_dir, hydra_cfg.output_subdir, hydra_files(cfg))
        if multirun and config.logger.group is None:  # the W&B runs of one sweep (and its compare run) share a group
            config.logger.group = sweep_group(hydra_cfg.sweep.dir, hydra_cfg.runtime.choices.get("experiments"))
        quiet_third_party()
        job_name = hydra_cfg.job.override_dirname or run_dir.name
        run(config, run_dir, job_name)
    except InputError as err:
        if hydra_cfg.output_subdir is not None:
            restore_hydra_files(run_dir, hydra_cfg.output_subdir)
        if multirun:
            raise
        print(f"sirt.train: {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        if lock is not None:
            os.close(lock)


def cli() -> None:
    """``python -m sirt.train``: a command line Hydra cannot compose (an unknown key, a missing group
    option) is refused like any bad input, in one line with exit code 2.

    Hydra prints such errors itself and exits 1; with ``HYDRA_FULL_ERROR=1`` it raises them instead,
    so cli() sets it until main() starts (then unsets it: a job's own errors are reported by Hydra
    as before). A user's own HYDRA_FULL_ERROR, and a sweep (``-m``), are left to Hydra.
    """
    if "HYDRA_FULL_ERROR" not in os.environ and not {"-m", "--multirun"} & set(sys.argv[1:]):
        os.environ["HYDRA_FULL_ERROR"] = "1"
        _cli["full_error"] = True
    try:
        with stop_on_signals():
            main()
    except Interrupted as err:
        print(f"sirt.train: {stopped(err)}", file=sys.stderr)
        sys.exit(err.exit_code)
    except (HydraException, OmegaConfBaseException) as err:
        if _cli["job_started"] or not _cli["full_error"]:
            raise
        print(f"sirt.train: {one_line(err)}", file=sys.stderr)
        sys.exit(2)


class Interrupted(BaseException):
    """SIGINT or SIGTERM: the round in progress is abandoned (redone on resume), W&B is finished with
    ``exit_code``, and the process exits with it (128 + the signal's number: 130, 143)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.exit_code = signum, 128 + signum


@contextlib.contextmanager
def stop_on_signals():
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread, wherever it is; the committed rounds
    stay as they are (a round commits atomically). A second signal during the clean-up ends the process at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def first(signum, frame):
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, again)
        raise Interrupted(signum)

    def again(signum, frame):
        os.write(2, f"sirt.train: stopped at once by a second {signal.Signals(signum).name}\n".encode())
        os._exit(128 + signum)

    old = {s: signal.signal(s, first) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def stopped(err: Interrupted) -> str:
    """The one line an interrupted command ends with: what is committed and the command that resumes."""
    run_dir, sweep_dir = _cli["run_dir"], _cli["sweep_dir"]
    if run_dir is None:
        return f"stopped by {err} before a run started"
    kept = [a for a in sys.argv[1:] if not a.startswith(("hydra.run.dir=", "hydra.sweep.dir="))]
    target = f"hydra.sweep.dir={sweep_dir}" if sweep_dir is not None else f"hydra.run.dir={run_dir}"
    command = " ".join(["python -m sirt.train", *map(shlex.quote, [*kept, target])])
    try:
        last = RunDir(run_dir).state().get("round")
    except InputError:
        last = None
    done = {None: "no round is committed", 0: "round 0 is committed"}.get(last, f"rounds 0..{last} are committed")
    what = "the sweep" if sweep_dir is not None else "the run"
    return f"stopped by {err} ({run_dir}: {done}, a round in progress is redone); resume {what} with: {command}"


def one_line(err: BaseException) -> str:
    """Hydra's multi-line composition error as one line (its cause appended, the search path left out)."""
    text = str(err).split("\nConfig search path", 1)[0]
    if err.__cause__ is not None and str(err.__cause__) not in text:
        text += f": {err.__cause__}"
    override = getattr(err, "override", None)  # a parse error: name the override
    if override and override not in text:
        text = f"{override!r}: {text}"
    if override and "{" in override:
        text += " (quote a value with braces: \"key='a_{x}'\")"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


if __name__ == "__main__":
    cli()
