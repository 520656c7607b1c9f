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
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sirt.config.entry import HydraCommand, one_line
from sirt.config.errors import ConfigError, InputError
from sirt.loop.checks import resume_state, validated
from sirt.loop.ranks import launched
from sirt.loop.trainer import run
from sirt.runs.rundir import RunDir, failed_jobs, job_label, keep_hydra_files, lock_run_dir, restore_hydra_files
from sirt.runs.tracker import SweepReport, quiet_third_party, sweep_group

log = logging.getLogger("sirt.train")


def hydra_files(cfg: DictConfig) -> dict[str, str]:
    """The texts of the files Hydra wrote into ``<run>/.hydra`` for this job, made again from memory."""
    hydra_cfg = HydraConfig.instance().cfg
    return {"config.yaml": OmegaConf.to_yaml(cfg), "hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
            "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task)}


COMMAND = HydraCommand("train")  # the one-line contract of every sirt command (sirt.config.entry)
_cli = {"run_dir": None}  # what main() works on, for the line a stopped command ends with (its sweep: SweepReport)


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """One job. Bad input ends a single run with one message and exit code 2; in a multirun the
    job fails (and is reported at the end) while the other jobs go on.

    The run directory is locked first, so a second process on it stops here. Hydra has already
    rewritten ``<run>/.hydra`` by then: a refused command puts back the files of the run the
    directory holds (kept in ``<run>/.sirt/hydra`` once a run is accepted).
    """
    COMMAND.started()
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir)
    _cli["run_dir"] = run_dir
    lock, main_rank = None, int(os.environ.get("RANK", "0")) == 0
    try:
        check_ranks(hydra_cfg, multirun)
        lock = lock_run_dir(run_dir) if main_rank else None  # rank 0 works in the directory; the others read it
        if not multirun and hydra_cfg.sweeper.get("params"):  # a study's sweep would silently shrink to one job
            raise ConfigError(unswept(hydra_cfg))
        if "experiments" in cfg:  # the form before the studies became a group: it would apply nothing
            raise ConfigError(f"+experiments={cfg.experiments}: the studies are a config group now, "
                              f"use experiment={cfg.experiments}")
        config = validated(cfg)
        resume_state(RunDir(run_dir), config)  # refuses before the run's Hydra files are replaced
        if hydra_cfg.output_subdir is not None and main_rank:
            keep_hydra_files(run_dir, hydra_cfg.output_subdir, hydra_files(cfg))
        if multirun and config.logger.group is None:  # the W&B runs of one sweep (and its compare run) share a group
            config.logger.group = sweep_group(hydra_cfg.sweep.dir, hydra_cfg.runtime.choices.get("experiment"))
        quiet_third_party()
        job_name = hydra_cfg.job.override_dirname or run_dir.name
        run(config, run_dir, job_name)
    except InputError as err:
        if hydra_cfg.output_subdir is not None and main_rank:
            restore_hydra_files(run_dir, hydra_cfg.output_subdir)
        if multirun:
            raise
        print(f"sirt.train: {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        if lock is not None:
            lock.release()


def unswept(hydra_cfg) -> str:
    """The refusal of a sweeping config started as one run: what it sweeps and the command with ``-m``."""
    swept = ", ".join(f"{k}={v}" for k, v in hydra_cfg.sweeper.params.items())
    study = hydra_cfg.runtime.choices.get("experiment")
    what = f"experiment={study}" if study not in (None, "null") else "this config"
    command = " ".join(["python -m sirt.train -m", *map(shlex.quote, sys.argv[1:])])
    return f"{what} sweeps {swept} (hydra.sweeper.params): add -m to run its jobs: {command}"


def check_ranks(hydra_cfg, multirun: bool) -> None:
    """Several ranks (torchrun, accelerate launch) work in one run directory, so it must be named: each rank
    resolves Hydra's default ``${now:...}`` at its own start. A sweep is one job per launch."""
    if not launched():
        return
    size = os.environ.get("WORLD_SIZE")
    if multirun:
        raise ConfigError(f"a sweep (-m) under a launcher of {size} ranks: launch one torchrun job per sweep "
                          "point, each with its own hydra.run.dir")
    if not any(o.startswith("hydra.run.dir=") for o in hydra_cfg.overrides.hydra):
        raise ConfigError(f"{size} ranks need one run directory: add hydra.run.dir=DIR (every rank resolves the "
                          "default ${now:...} at its own start)")


def cli() -> None:
    """``python -m sirt.train``: a command line Hydra cannot compose (an unknown key, a missing group
    option) or a run or sweep directory it cannot make is refused like any bad input, in one line with
    exit code 2 (:class:`~sirt.config.entry.HydraCommand`). A sweep (``-m``) whose jobs failed ends with
    one line listing them and exit code 1, once every job has run.
    """
    multirun = bool({"-m", "--multirun"} & set(sys.argv[1:]))
    try:
        with stop_on_signals():
            COMMAND.run(sweep if multirun else main, keep=multirun)
    except Interrupted as err:
        print(f"sirt.train: {stopped(err)}", file=sys.stderr)
        sys.exit(err.exit_code)


def sweep() -> None:
    """A multirun: Hydra's sweeper re-raises the first failed job's error once every job has run; the
    command ends instead with one line naming every failed job (from ``failed_jobs.json``), exit code 1."""
    try:
        main()
    except Exception as err:
        sweep_dir = SweepReport.sweep_dir  # set in this process also when a launcher runs the jobs elsewhere
        if sweep_dir is None or not any(sweep_dir.glob("*/job_status.json")):
            raise  # before any job ended (a job's config Hydra cannot compose): refused by COMMAND
        print(f"sirt.train: {sweep_failures(sweep_dir, err)}", file=sys.stderr)
        sys.exit(1)


def sweep_failures(sweep_dir: Path, err: BaseException) -> str:
    """The sweep's last line: how many jobs failed, each one's overrides and error, where they are listed."""
    try:
        failed = failed_jobs(sweep_dir)
    except InputError:
        failed = []
    total = len(list(sweep_dir.glob("*/job_status.json")))
    listed = "; ".join(f"{job_label(job)}: {job.get('error')}" for job in failed)
    if not failed:  # e.g. a later job's config could not be composed: no job_status.json names it
        return f"the sweep {sweep_dir} stopped: {one_line(err)}"
    return (f"the sweep {sweep_dir}: {len(failed)} of {total} jobs failed ({listed}); listed in "
            f"{sweep_dir / 'failed_jobs.json'}")


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
    run_dir, sweep_dir = _cli["run_dir"], SweepReport.sweep_dir
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


if __name__ == "__main__":
    cli()
