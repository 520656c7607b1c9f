"""Issue 25: every refusal in one line, from every command (exit 2, ``sirt.<cli>: ...``, no traceback).

The cases of a bad-input battery that ended in a traceback, a wrong exit code or silence, by kind:
1. config values nothing checked; 2. messages that named the wrong field; 3. run and sweep directories
Hydra cannot make; 4. sweep endings; 5. the other CLIs; 6. ``debug=micro`` training in every round.
Most are checked in this process on the functions the commands call; a few run the command itself, for
the one-line contract.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from sirt.config.compose import compose
from sirt.config.defaults import default
from sirt.config.entry import check_output_dirs, output_dir_problem
from sirt.config.errors import ConfigError, InputError
from sirt.loop.checks import check_lora_targets, validated
from sirt.models.load import char_tokenizer, save, tiny_llama
from sirt.simulate import simulate
from sirt.tasks.rows import rows_to_problems
from tests.conftest import MICRO, ROOT, sirt_command

ROOT_USER = os.geteuid() == 0  # root writes into read-only directories: those cases cannot be made


def command(cli: str, *args: str, cwd: Path = ROOT, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(sirt_command(cli, *args), cwd=cwd, capture_output=True, text=True, timeout=timeout)


def refusal(result: subprocess.CompletedProcess, cli: str, code: int = 2) -> str:
    """The one line a refused command prints (its exit code, no traceback)."""
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"sirt.{cli}: "), result.stderr[-3000:]
    return lines[0]


def in_process(main, argv: list[str], capsys) -> str:
    """The one line an argparse CLI's ``main(argv)`` refuses with (exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


# --- 1. config values that reached a library ------------------------------------------------------------

@pytest.mark.parametrize(("override", "field"), [
    ("rounds=1000000000000000", "rounds"),
    ("generation.top_k=-1", "generation.top_k"),
    ("verifier.batch_size=0", "verifier.batch_size"),
    ("trainer.grad_accum=0", "trainer.grad_accum"),
    ("model.lora.target_modules=[nonexistent_proj]", "model.lora.target_modules"),
    ("model.lora.dropout=2.0", "model.lora.dropout"),
    ("seed=-5", "seed"),
    (f"seed={2**32 - 1}", "seed"),  # round t seeds numpy with seed + t
    ("dataset.max_operand=0", "dataset.max_operand"),
    ("model.tiny.hidden_size=33", "model.tiny.hidden_size"),
    ("model.tiny.hidden_size=34", "model.tiny.hidden_size"),  # 17 per head: RoPE needs an even width
    ("dataset.prompt_template='{nope}'", "dataset.prompt_template"),
    ("dataset.prompt_template='Q: {question'", "dataset.prompt_template"),
    ("dataset.prompt_template='Q: A: '", "dataset.prompt_template"),  # poses no question
    ("verifier.template='{prompt}'", "verifier.template"),
    ("generation.batch_size=0", "generation.batch_size"),
    ("dataset.n_train=1000000000", "dataset.n_train"),
    ("model.teach.garble_rate=1.5", "model.teach.garble_rate"),
    ("model.teach.seed=-1", "model.teach.seed"),
])
def test_config_values_a_library_would_fail_on_are_refused_naming_the_field(override, field):
    with pytest.raises(ConfigError, match=re.escape(field)):
        validated(compose(*MICRO, override))


def test_lora_targets_are_checked_on_the_loaded_model():
    """A named model's layer names are known once it loads: sirt.train and sirt.preflight check them then."""
    model = tiny_llama(default("model.tiny"), 16, seed=0)
    check_lora_targets(model, default("model.lora"))
    check_lora_targets(model, default("model.lora", target_modules=["self_attn.q_proj", "all-linear"]))
    with pytest.raises(ConfigError, match=r"model\.lora\.target_modules=\['qkv_proj'\].*no linear layer named qkv_"):
        check_lora_targets(model, default("model.lora", target_modules=["qkv_proj"]))


@pytest.mark.slow
def test_a_huge_train_split_is_refused_in_seconds(tmp_path):
    start = time.time()
    try:
        result = command("train", f"hydra.run.dir={tmp_path / 'run'}", "dataset.n_train=1000000000", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("dataset.n_train=1000000000 was not refused within 60 s")
    assert "dataset.n_train=1000000000" in refusal(result, "train")
    assert time.time() - start < 60


# --- 2. messages that name the field the user set --------------------------------------------------------

@pytest.mark.parametrize("micro", [True, False], ids=["debug=micro", "default"])
@pytest.mark.parametrize("path", ["missing", "empty"])
def test_a_model_path_without_a_model_is_refused_naming_model_name_or_path(tmp_path, micro, path):
    model_dir = tmp_path / "model"
    if path == "empty":
        model_dir.mkdir()
    overrides = [*MICRO] * micro + ["model=hf", f"model.name_or_path={model_dir}"]
    with pytest.raises(ConfigError, match=re.escape(f"model.name_or_path='{model_dir}'")) as err:
        validated(compose(*overrides))
    assert ("does not exist" if path == "missing" else "holds no model") in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("cli", ["train", "preflight"])
def test_the_commands_refuse_an_empty_model_directory_in_one_line(tmp_path, cli):
    (tmp_path / "model").mkdir()
    result = command(cli, f"hydra.run.dir={tmp_path / 'run'}", "model=hf", f"model.name_or_path={tmp_path / 'model'}")
    assert "model.name_or_path" in refusal(result, cli)


@pytest.mark.slow
@pytest.mark.parametrize("cli", ["train", "preflight", "bench"])
def test_the_commands_refuse_lora_targets_the_named_model_lacks_in_one_line(tmp_path, cli):
    save(tiny_llama(default("model.tiny"), len(char_tokenizer()), seed=0), char_tokenizer(), tmp_path / "model")
    result = command(cli, f"hydra.run.dir={tmp_path / 'run'}", "model=hf", f"model.name_or_path={tmp_path / 'model'}",
                     "model.chat_template=false", "model.lora.target_modules=[qkv_proj]", "logger=none")
    line = refusal(result, cli)
    assert "model.lora.target_modules=['qkv_proj']: the model has no linear layer named qkv_proj" in line


@pytest.mark.parametrize(("row", "named"), [
    ({"question": "1+1", "answer": "2 #### 2", "level": "hard"}, "field 'level' must be an integer >= 1, not 'hard'"),
    ({"question": "1+1", "answer": "2 #### 2", "level": -1}, "field 'level'"),
    ({"question": "", "answer": "2 #### 2"}, "field 'question' is empty"),
    ({"question": "   ", "answer": "2 #### 2"}, "field 'question' is empty"),
    ({"question": "1+1", "answer": ""}, "field 'answer' is empty"),
])
def test_data_rows_name_the_field_that_is_wrong(row, named):
    with pytest.raises(InputError, match=re.escape(f"data.jsonl: line 3: {named}")) as err:
        rows_to_problems([row], "data.jsonl", [3])
    if "level" in named:
        assert "'question' and 'answer'" not in str(err.value)


# --- 3. run and sweep directories Hydra cannot make --------------------------------------------------------

DIR_CASES = [("hydra.run.dir", "file"), ("hydra.run.dir", "in-file"), ("hydra.sweep.dir", "file")]


def blocked_dir(tmp_path: Path, where: str) -> Path:
    (tmp_path / "afile").write_text("")
    return tmp_path / "afile" if where == "file" else tmp_path / "afile" / "run"


@pytest.mark.parametrize(("key", "where"), DIR_CASES)
def test_run_and_sweep_dirs_hydra_cannot_make_are_refused_before_it_tries(tmp_path, key, where):
    target = blocked_dir(tmp_path, where)
    with pytest.raises(InputError, match=re.escape(f"{key}={target}: {tmp_path / 'afile'} is a file")):
        check_output_dirs(["-m", "seed=1", f"{key}='{target}'"])
    check_output_dirs([f"{key}={tmp_path}/${{now:%H}}", f"{key}={tmp_path / 'new' / 'run'}"])  # left to Hydra; fine


@pytest.mark.slow
@pytest.mark.parametrize(("key", "where"), DIR_CASES)
def test_run_and_sweep_dirs_hydra_cannot_make_are_refused_in_one_line(tmp_path, key, where):
    target = blocked_dir(tmp_path, where)
    args = ["-m", f"{key}={target}", "logger=none"] if key == "hydra.sweep.dir" else [f"{key}={target}"]
    assert f"{key}={target}: {tmp_path / 'afile'} is a file" in refusal(command("train", *args), "train")


@pytest.fixture
def locked(tmp_path_factory):
    """A read-only directory (0o555) that the command's user can reach, and the command prefix of that user.

    Root writes into read-only directories, so as root the command runs as ``nobody`` (``setpriv``), in a
    directory outside pytest's (which only root may enter).
    """
    prefix = []
    if ROOT_USER:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: no user to whom a directory is read-only")
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    base = Path(tempfile.mkdtemp(prefix="sirt-locked-"))
    base.chmod(0o755)
    (base / "locked").mkdir()
    (base / "locked").chmod(0o555)
    (base / "home").mkdir(mode=0o777)
    (base / "home").chmod(0o777)  # the user's HOME: caches of the libraries the command imports
    yield base / "locked", prefix
    (base / "locked").chmod(0o755)
    shutil.rmtree(base)


@pytest.mark.parametrize("where", ["itself", "parent"])
def test_a_run_dir_that_is_not_writable_is_refused(locked, where):
    directory, user = locked
    target = directory if where == "itself" else directory / "run"
    if not user:
        assert f"{directory} is not writable" in (output_dir_problem(target) or "")
    home = directory.parent / "home"  # the user's own HOME and caches (the suite's XDG_CACHE_HOME is root's)
    home = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    result = subprocess.run([*user, *sirt_command("train", f"hydra.run.dir={target}")], cwd=ROOT,
                            capture_output=True, text=True, timeout=120, env=home)
    assert f"{directory} is not writable" in refusal(result, "train")
    assert list(directory.iterdir()) == []  # refused before anything was made


def test_a_writable_or_new_dir_is_fine(tmp_path):
    assert output_dir_problem(tmp_path) is None and output_dir_problem(tmp_path / "a" / "b") is None


# --- 4. sweeps ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_an_unknown_key_under_multirun_is_one_line():
    assert "foo" in refusal(command("train", "-m", "foo=1,2"), "train")


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "parallel"])  # parallel: the jobs run in joblib's worker processes
def test_a_sweep_with_a_failing_job_ends_with_one_line_naming_it(tmp_path, cache_dir, launcher):
    sweep = tmp_path / "sweep"  # budget 100 > the 8 prompts of a round: job 1 fails at its start
    result = command("train", "-m", f"hydra.sweep.dir={sweep}", f"hydra/launcher={launcher}", *MICRO, "rounds=1",
                     "logger=none", "fit.enabled=false",
                     "schedule=early", "external.budget=4,100", timeout=600)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"sirt.train: the sweep {sweep}: 1 of 2 jobs failed (job 1 (")
    assert "external.budget=100" in last and str(sweep / "failed_jobs.json") in last
    log = (result.stdout + result.stderr).splitlines()
    assert sum("FAILED" in line for line in log) == 1  # the failing job: one line of the log
    assert json.loads((sweep / "failed_jobs.json").read_text())[0]["job"] == "1"


# --- 5. the other CLIs --------------------------------------------------------------------------------------

def write_job(job: Path, rows: list[dict] | None = None, config: bool = True) -> None:
    """A job folder as sirt.train leaves it (metrics.jsonl and Hydra's config), written for these tests."""
    (job / ".hydra").mkdir(parents=True)
    if config:
        cfg = {"seed": 0, "threads": 1, "schedule": {"name": "none"}, "external": {"source": "gold", "budget": 0},
               "model": {"teach": {"seed": 0}}, "dataset": {"name": "arithmetic"}, "curriculum": {"name": "none"}}
        (job / ".hydra" / "config.yaml").write_text(json.dumps(cfg))
    rows = rows or [{"round": t, "acc": 0.1 * t, "U_s": 1.0, "G": 0.2, "pick_precision": 0.5, "sample_acc": 0.4,
                     "acc_level": {"1": 0.1}} for t in range(2)]
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def a_sweep_with_a_failed_job(sweep: Path) -> None:
    write_job(sweep / "0")
    (sweep / "1").mkdir(parents=True)
    failed = [{"job": "1", "overrides": ["external.budget=100"], "status": "FAILED",
               "error": "ConfigError('external.budget=100: too many')"}]
    (sweep / "failed_jobs.json").write_text(json.dumps(failed))


def sweep_cli(name: str):
    from sirt import compare, curriculum, robustness
    return {"compare": compare.main, "robustness": robustness.main, "curriculum": curriculum.main}[name]


@pytest.mark.parametrize("cli", ["compare", "robustness", "curriculum"])
@pytest.mark.parametrize(("case", "named"), [
    ("missing", "is not a directory"),
    ("empty", "holds no job of a sweep"),
    ("a run", "is a single run's directory, not a sweep"),
    ("no config", ".hydra/config.yaml is missing"),
    ("damaged metrics", "metrics.jsonl: line 2 is damaged"),
    ("all failed", "no job of"),
])
def test_sweep_tables_refuse_bad_sweep_dirs_in_one_line(tmp_path, capsys, cli, case, named):
    sweep = tmp_path / "sweep"
    if case == "empty":
        sweep.mkdir()
    elif case == "a run":
        write_job(sweep)
    elif case == "no config":
        write_job(sweep / "0", config=False)
    elif case == "damaged metrics":
        write_job(sweep / "0")
        lines = (sweep / "0" / "metrics.jsonl").read_text().splitlines()
        (sweep / "0" / "metrics.jsonl").write_text(f"{lines[0]}\n{lines[1][:12]}\n")  # a line cut in half
    elif case == "all failed":
        a_sweep_with_a_failed_job(sweep)
        (sweep / "0" / "metrics.jsonl").unlink()
    line = in_process(sweep_cli(cli), [str(sweep), *(["--no-wandb"] if cli == "compare" else [])], capsys)
    assert line.startswith(f"sirt.{cli}: ") and named in line
    if case == "all failed":
        assert "job 1 (external.budget=100) failed" in line


@pytest.mark.parametrize("cli", ["compare", "robustness", "curriculum"])
def test_sweep_tables_list_the_failed_jobs_by_name(tmp_path, capsys, cli):
    sweep = tmp_path / "sweep"
    a_sweep_with_a_failed_job(sweep)
    sweep_cli(cli)([str(sweep), *(["--no-wandb"] if cli == "compare" else [])])
    out = capsys.readouterr().out
    assert "1 failed job(s), not in the table" in out
    assert "- job 1 (external.budget=100): ConfigError('external.budget=100: too many')" in out
    if cli != "curriculum":
        assert "- job 1 (external.budget=100)" in (sweep / f"{cli}.md").read_text()


def test_fit_refuses_a_metrics_file_that_is_not_utf8(tmp_path, capsys):
    from sirt.fit import main
    (tmp_path / "metrics.jsonl").write_bytes(b'{"round": 0, "U_s": 1.0}\n\xff\xfe\n')
    line = in_process(main, [str(tmp_path)], capsys)
    assert line == f"sirt.fit: {tmp_path / 'metrics.jsonl'}: line 2 is not UTF-8 text (byte 0xff); sirt writes " \
                   "UTF-8 JSON lines: restore the file"


@pytest.mark.parametrize(("argv", "named"), [
    (["--dry-run", "--levels", "0", "-3"], "argument --levels: 0 must be >= 1"),
    (["--dry-run", "--pass-k", "0"], "argument --pass-k: 0 must be >= 1"),
    (["--dry-run", "--levels", "x"], "argument --levels: 'x' is not an integer"),
    (["--dry-run"], "dashboard.json cannot be written"),  # dashboard.json is a directory
])
def test_dashboard_refuses_bad_arguments_in_one_line(tmp_path, monkeypatch, capsys, argv, named):
    from sirt.dashboard import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dashboard.json").mkdir()
    assert named in in_process(main, argv, capsys)


@pytest.mark.parametrize("cli", ["simulate", pytest.param("preflight", marks=pytest.mark.slow),
                                 pytest.param("bench", marks=pytest.mark.slow)])
def test_hydra_clis_refuse_an_unknown_key_in_one_line(tmp_path, cli):
    assert "'foo'" in refusal(command(cli, f"hydra.run.dir={tmp_path}", "foo=1"), cli)


def test_simulate_refuses_a_huge_T():
    with pytest.raises(ConfigError, match=r"T=1000000000: must be an integer in 1\.\.10000"):
        simulate(compose("T=1000000000", config_name="simulate"))
    with pytest.raises(ConfigError, match=r"T=1000000000"):
        simulate(compose("mode=curriculum", "T=1000000000", config_name="simulate"))


# --- 6. debug=micro trains in every round ------------------------------------------------------------------

@pytest.mark.slow
def test_micro_runs_train_in_every_round(tmp_path, micro_loop):
    metrics = micro_loop(tmp_path / "run", "logger=none", "fit.enabled=false")
    assert [r["round"] for r in metrics] == [0, 1, 2]
    assert all(r["n_train_rows"] > 0 for r in metrics[1:]), [r.get("n_train_rows") for r in metrics]
    assert all((tmp_path / "run" / "rounds" / str(t) / "adapter").is_dir() for t in (1, 2))  # LoRA trained
