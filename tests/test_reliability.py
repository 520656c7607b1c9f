"""Reliability (issue 15): one process per run directory, data files checked before any model
loads, damaged or incomplete run directories refused in one line, refused commands leave the
run's Hydra files alone, and config mistakes Hydra or the schema catch exit with code 2.

Every refusal is one line on stderr prefixed ``sirt.train:``, exit code 2, no traceback. The
data rows below are written for these tests in GSM8K's format; none is copied from a dataset.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from sirt.config.defaults import default
from sirt.config.errors import ConfigError, InputError
from sirt.config.validate import validate
from sirt.runs.rundir import lock_run_dir
from sirt.tasks.registry import load_splits
from tests.conftest import MICRO, ROOT, sirt_command

# The micro loop, one round, no W&B and no fit. The gate overrides let the micro organism (too
# small to pass the default teaching gate) into a run; these tests are about the run, not the gate.
RUN = [*MICRO, "rounds=1", "logger=none", "fit.enabled=false"]
GSM8K = [*RUN, "dataset=gsm8k"]  # debug=micro's dataset.levels go unused: gsm8k has no levels

ROWS = [  # {question, answer} in GSM8K's format, written for these tests
    {"question": "A shelf holds 7 red jars and 5 blue jars. How many jars are on the shelf?",
     "answer": "7 + 5 = <<7+5=12>>12 jars.\n#### 12"},
    {"question": "Lena reads 9 pages a day for 4 days. How many pages does she read?",
     "answer": "9 * 4 = <<9*4=36>>36 pages.\n#### 36"},
    {"question": "A farmer has 30 eggs and sells 18. How many eggs are left?",
     "answer": "30 - 18 = <<30-18=12>>12 eggs.\n#### 12"},
    {"question": "Six friends share 42 stickers equally. How many stickers does each get?",
     "answer": "42 / 6 = <<42/6=7>>7 stickers.\n#### 7"},
]


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def write_splits(directory: Path, name: str, train: str | bytes, test: str | bytes | None = None) -> str:
    """Write ``<name>_train.jsonl`` and ``<name>_test.jsonl``; returns the ``{split}`` pattern."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, content in (("train", train), ("test", jsonl(ROWS[2:]) if test is None else test)):
        path = directory / f"{name}_{split}.jsonl"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(directory / f"{name}_{{split}}.jsonl")


def train(run_dir: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = sirt_command("train", f"hydra.run.dir={run_dir}", *overrides)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def refusal(result: subprocess.CompletedProcess) -> str:
    """The one line of a refusal (exit 2, no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sirt.train: "), result.stderr[-3000:]
    return lines[0]


def rounds(run_dir: Path) -> list[int]:
    return [json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def hydra_files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((run_dir / ".hydra").iterdir())}


# --- 1. one process per run directory ------------------------------------------------------------


def test_the_lock_names_its_holder_and_dies_with_it(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from sirt.runs.rundir import lock_run_dir; "
         "lock_run_dir(Path(sys.argv[1])); print('locked', flush=True); time.sleep(300)", str(tmp_path)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=re.escape(f"{tmp_path} is in use by another run (pid {holder.pid}")):
            lock_run_dir(tmp_path)
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
        holder.wait()
    assert (tmp_path / ".lock").read_text().strip() == str(holder.pid)  # a stale lock file of a dead process ...
    lock = lock_run_dir(tmp_path)  # ... does not block
    try:
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
    finally:
        lock.release()


@pytest.mark.slow
def test_a_second_run_on_a_busy_run_dir_exits_2_and_the_first_finishes(tmp_path, cache_dir):
    run_dir, lock = tmp_path / "run", tmp_path / "run" / ".lock"
    with open(tmp_path / "first.log", "w") as log:  # a file, not a pipe: a frozen reader must not block the run
        first = subprocess.Popen(sirt_command("train", f"hydra.run.dir={run_dir}", *RUN, "rounds=2"), cwd=ROOT,
                                 stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 240
        while time.time() < deadline and first.poll() is None:
            if lock.exists() and lock.read_text().strip() == str(first.pid):
                break
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second could start"
        os.kill(first.pid, signal.SIGSTOP)  # frozen while it holds the lock, so the second surely meets it
        try:
            started = time.time()
            second = train(run_dir, *RUN, "rounds=2", "verifier.sigma=0.9")
            elapsed = time.time() - started
        finally:
            os.kill(first.pid, signal.SIGCONT)
        code = first.wait(timeout=300)
    line = refusal(second)
    assert str(run_dir) in line and f"pid {first.pid}" in line and ".lock" in line
    assert elapsed < 120
    assert code == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert rounds(run_dir) == [0, 1, 2]  # each round once
    assert "verifier.sigma=0.9" not in (run_dir / ".hydra" / "overrides.yaml").read_text()  # the first's files


# --- 2. data files ---------------------------------------------------------------------------------


BAD_FILES = [  # (train file content, what the message says, the line it names)
    (b"", "empty file", None),
    (b"   \n\n", "empty file", None),
    (jsonl(ROWS[:2]).encode() + b"{'question': 'single quotes'}\n", "not JSON", 3),
    (jsonl(ROWS[:1]).encode() + b'{"question": "caf\xe9?", "answer": "#### 1"}\n', "not UTF-8", 2),
    (b'["a list", "not an object"]\n', "JSON object", 1),
    (jsonl([ROWS[0], {"question": "How many?"}]).encode(), "missing field 'answer'", 2),
    (jsonl([{"question": 12, "answer": "#### 12"}]).encode(), "field 'question' must be a string", 1),
    (jsonl([{"question": "How many?", "answer": "twelve"}]).encode(), "#### <number>", 1),
]
BAD_IDS = ["empty", "blank-lines", "not-json", "not-utf8", "not-an-object", "missing-field", "non-string-field",
           "no-final-answer"]


@pytest.mark.parametrize("name", ["gsm8k", "arithmetic"])  # sirt.tasks.benchmarks' loader and data's plain JSONL reader
@pytest.mark.parametrize(("content", "problem", "line"), BAD_FILES, ids=BAD_IDS)
def test_bad_data_files_are_refused_naming_file_and_line(tmp_path, name, content, problem, line):
    rows = content if name == "gsm8k" else content.replace(b"<<", b"").replace(b">>", b"")
    cfg = default("dataset", name=name, path=write_splits(tmp_path, "bad", rows))
    with pytest.raises(InputError) as err:
        load_splits(cfg)
    message = str(err.value)
    assert message.startswith(str(tmp_path / "bad_train.jsonl")) and problem in message, message
    assert (f": line {line}:" in message) if line else (": line " not in message), message


def test_a_bad_test_file_is_named_too(tmp_path):
    cfg = default("dataset", name="gsm8k", path=write_splits(tmp_path, "x", jsonl(ROWS), test=b"{\n"))
    with pytest.raises(InputError, match=r"x_test\.jsonl: line 1: not JSON"):
        load_splits(cfg)


def test_duplicates_and_train_test_overlap_are_dropped_with_a_warning(tmp_path, caplog):
    spaced = {**ROWS[1], "question": ROWS[1]["question"].replace(" ", "  ")}  # the same question, respaced
    train_rows = [ROWS[0], ROWS[1], ROWS[0], spaced, ROWS[2], ROWS[3]]  # 2 duplicates, ROWS[2:] are in test
    cfg = default("dataset", name="gsm8k", path=write_splits(tmp_path, "d", jsonl(train_rows), jsonl(ROWS[2:] * 2)),
                        n_train=100, n_test=100)
    with caplog.at_level(logging.WARNING, logger="sirt.tasks.registry"):
        train_set, test_set = load_splits(cfg)
    assert sorted(p.question for p in train_set) == sorted(r["question"] for r in ROWS[:2])
    assert sorted(p.question for p in test_set) == sorted(r["question"] for r in ROWS[2:])
    warnings = " | ".join(r.getMessage() for r in caplog.records)
    assert "dropped 2 duplicate question(s) of the train split" in warnings
    assert "dropped 2 duplicate question(s) of the test split" in warnings
    assert "removed 2 train question(s) that are also in the test split" in warnings


def test_a_train_file_that_is_all_test_questions_is_refused(tmp_path):
    cfg = default("dataset", name="gsm8k", path=write_splits(tmp_path, "same", jsonl(ROWS[2:])))
    with pytest.raises(InputError, match="no train question is left"):
        load_splits(cfg)


@pytest.mark.slow
@pytest.mark.parametrize(("content", "problem", "line"), [BAD_FILES[0], BAD_FILES[2], BAD_FILES[3]],
                         ids=["empty", "not-json", "not-utf8"])
def test_the_cli_refuses_bad_data_before_any_model_loads(tmp_path, content, problem, line):
    pattern = write_splits(tmp_path / "data", "x", content)
    cache = tmp_path / "cache"  # an empty organism cache: a model built or loaded would land here
    result = train(tmp_path / "run", *GSM8K, f"dataset.path='{pattern}'",
                   env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    message = refusal(result)
    assert str(tmp_path / "data" / "x_train.jsonl") in message and problem in message
    if line:
        assert f"line {line}" in message
    assert not (cache / "sirt").exists()


# --- 3./4. damaged run directories and refused commands --------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, cache_dir) -> Path:
    """A finished micro run (rounds 0 and 1), copied by each test that damages it."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = train(run_dir, *RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def copy_of(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


@pytest.mark.slow
def test_a_finished_run_needs_no_model(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    shutil.rmtree(run_dir / "rounds" / "1" / "model")
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    fit = subprocess.run(sirt_command("fit", str(run_dir)), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert fit.returncode == 0, fit.stderr[-3000:]
    again = train(run_dir, *RUN)  # also shows that the stale .lock of the finished run does not block
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics


@pytest.mark.slow
def test_a_metrics_line_cut_in_half_is_refused_in_one_line(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text("\n".join([*lines[:-1], lines[-1][: len(lines[-1]) // 2]]))
    message = refusal(train(run_dir, *RUN))
    assert f"{run_dir / 'metrics.jsonl'}: line {len(lines)} is damaged" in message


@pytest.mark.slow
def test_a_damaged_state_or_a_missing_checkpoint_is_refused(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    state = (run_dir / "state.json").read_text()
    (run_dir / "state.json").write_text(state[: len(state) // 2])
    assert f"{run_dir / 'state.json'} is damaged" in refusal(train(run_dir, *RUN))
    # As if killed after committing round 0: round 1 needs round 0's checkpoint, pruned once round 1 was kept.
    (run_dir / "state.json").write_text(json.dumps({**json.loads(state), "round": 0}))
    assert f"{run_dir / 'rounds' / '0' / 'model'} is missing" in refusal(train(run_dir, *RUN))


@pytest.mark.slow
def test_refused_commands_leave_the_hydra_files_of_the_run(finished_run, tmp_path):
    run_dir = copy_of(finished_run, tmp_path)
    before = hydra_files(run_dir)
    assert set(before) == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    assert "different config" in refusal(train(run_dir, *RUN, "verifier.sigma=0.7"))
    assert hydra_files(run_dir) == before
    assert "verifier.sigma" in refusal(train(run_dir, *RUN, "verifier.sigma=1.5"))  # a bad value
    assert hydra_files(run_dir) == before


# --- 5. config mistakes ----------------------------------------------------------------------------


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def test_pass_k_beyond_n_is_refused():
    with pytest.raises(ConfigError, match=r"generation\.pass_k=\[1, 8\].*n_samples=4"):
        validate(composed("generation.pass_k=[1,8]", "generation.n_samples=4"))
    validate(composed(*MICRO))  # pass_k=[1,4] with N = 4 stays valid


def test_a_data_path_without_split_is_refused():
    with pytest.raises(ConfigError, match=r"dataset\.path.*\{split\}"):
        validate(composed("dataset=gsm8k", "dataset.path=data/gsm8k.jsonl"))


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "named"), [
    (("generation.pass_k=[1,8]", "generation.n_samples=4"), "generation.pass_k"),
    (("foo=1",), "foo"),
    (("model=nonexistent",), "model/nonexistent"),
    (("dataset=gsm8k", "dataset.path=x_{split}.jsonl"), "dataset.path"),  # unquoted braces
])
def test_config_mistakes_exit_2_in_one_line(tmp_path, overrides, named):
    assert named in refusal(train(tmp_path / "run", *overrides))


def test_a_task_too_small_for_the_teaching_is_refused_before_it_starts(micro_loop, tmp_path):
    """Operands 1..2 at levels 1-2 give a few dozen questions: after the run's own train and test questions are
    taken out of 464 draws, none is left for phase 2. One line naming the fields, before any teaching step."""
    with pytest.raises(InputError, match=r"model\.teach\.solve_problems=400: .* none left for phase 2"):
        micro_loop(tmp_path / "run", *RUN[len(MICRO):], "dataset.max_operand=2")
