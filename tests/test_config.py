"""Config validation: bad values are refused before any model loads, with the field named."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sirt.config.errors import ConfigError
from sirt.config.schema import Config
from sirt.loop.checks import validated as validate
from sirt.simulate import simulate
from sirt.theory import montecarlo
from tests.conftest import ROOT, sirt_command


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def test_default_config_is_valid():
    config = validate(composed())
    assert config.rounds == 10 and config.generation.n_samples == 16 and config.verifier.sigma == 0.5


@pytest.mark.parametrize(
    "override,field",
    [
        ("generation.n_samples=0", "generation.n_samples"),
        ("verifier.sigma=1.5", "verifier.sigma"),
        ("verifier.sigma=-0.1", "verifier.sigma"),
        ("rounds=0", "rounds"),
        ("trainer.lr=0", "trainer.lr"),
        ("trainer.lr=-1e-5", "trainer.lr"),
        ("verifier.method=maybe", "verifier.method"),
        ("schedule=custom", "schedule.eta"),  # 10 shares but rounds=3 below
        ("generation.n_samples=many", "n_samples"),
        ("trainer.verifier_replay=1.0", "trainer.verifier_replay"),
        ("trainer.solver_replay=-0.1", "trainer.solver_replay"),
        ("threads=-1", "threads"),
        ("model.teach.gate_samples=1", "model.teach.gate_problems"),
        ("trainer.gradient_checkpointing=maybe", "trainer.gradient_checkpointing"),
        ("trainer.gradient_checkpointing=2", "trainer.gradient_checkpointing"),
        ("trainer.sampling_strategy=sorted", "trainer.sampling_strategy"),
    ],
)
def test_bad_values_name_the_field(override, field):
    overrides = [override] + (["rounds=3"] if override == "schedule=custom" else [])
    with pytest.raises(ConfigError, match=re.escape(field)):
        validate(composed(*overrides))


def test_every_top_level_field_of_the_schema_is_set_by_the_yaml():
    """conf/ is the single source of defaults: a field only the schema has is read by nothing (eval_every was)."""
    assert {f.name for f in dataclasses.fields(Config)} == set(composed())


def test_gradient_checkpointing_is_auto_unless_forced():
    assert validate(composed()).trainer.gradient_checkpointing == "auto"
    for model in ("tiny", "smollm2_135m", "llama3_8b"):  # every trainer group inherits trainer/default.yaml
        assert composed(f"model={model}").trainer.gradient_checkpointing == "auto"
    assert validate(composed("trainer.gradient_checkpointing=true")).trainer.gradient_checkpointing is True
    assert validate(composed("trainer.gradient_checkpointing=false")).trainer.gradient_checkpointing is False


def test_the_organism_replays_its_teaching_and_real_models_do_not():
    trainer = validate(composed()).trainer  # model=tiny chooses trainer=organism
    assert (trainer.verifier_replay, trainer.solver_replay) == (0.125, 0.25)
    for model in ("hf model.name_or_path=/tmp", "smollm2_135m", "llama3_8b"):
        name, *rest = model.split()
        cfg = composed(f"model={name}", *rest)
        assert cfg.trainer.verifier_replay == 0 == cfg.trainer.solver_replay
        assert cfg.trainer.lr == (3e-4 if name == "smollm2_135m" else 1e-5)  # the model's own trainer group
    for field in ("verifier_replay", "solver_replay"):
        with pytest.raises(ConfigError, match=rf"trainer\.{field}=0.25: replays the organism's teaching"):
            validate(composed("model=hf", "model.name_or_path=/tmp", f"trainer.{field}=0.25"))
    with pytest.raises(ConfigError, match=r"trainer\.solver_replay=0.5: .* leave room for the picks"):
        validate(composed("trainer.verifier_replay=0.5", "trainer.solver_replay=0.5"))


@pytest.mark.parametrize(
    "override,field",
    [
        ("external.teacher.base_url=ftp://127.0.0.1/v1", "external.teacher.base_url"),
        ("external.teacher.base_url=http:///v1", "external.teacher.base_url"),
        ("external.teacher.timeout=0", "external.teacher.timeout"),
        ("external.teacher.retries=-1", "external.teacher.retries"),
        ("external.teacher.concurrency=0", "external.teacher.concurrency"),
        ("external.teacher.endpoint=responses", "external.teacher.endpoint"),
        ("+external.teacher.threads=8", "external.teacher.threads"),
        ("external.teacher.timeout=soon", "external.teacher.timeout"),
    ],
)
def test_an_http_teacher_that_cannot_run_is_refused_in_one_line(override, field):
    http = ["external=teacher", "external.teacher.kind=http", "external.teacher.base_url=http://127.0.0.1:8000/v1"]
    assert validate(composed(*http)).external.source == "teacher"
    with pytest.raises(ConfigError, match=re.escape(field)) as err:
        validate(composed(*http, override))
    assert "\n" not in str(err.value)


def test_a_local_teachers_weights_are_checked_before_any_model_loads():
    with pytest.raises(ConfigError, match=re.escape("external.teacher.model.name_or_path='/nonexistent/teacher'")):
        validate(composed("external=teacher", "external.teacher.model.name_or_path=/nonexistent/teacher"))


def test_a_teacher_without_its_composed_defaults_is_refused():
    """The teacher's defaults live in conf/external/teacher.yaml only: source=teacher on gold's empty block fails."""
    assert validate(composed("external=teacher")).external.teacher["retries"] == 3
    with pytest.raises(ConfigError, match=r"external\.teacher\.kind: a value is required") as err:
        validate(composed("external.source=teacher"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("eta", ["[0.5,0.6,0,0,0,0,0,0,0,0]", "[1.5,-0.5,0,0,0,0,0,0,0,0]", "[1,0]"])
def test_custom_schedules_that_cannot_run_are_refused(eta):
    with pytest.raises(ConfigError, match="schedule"):
        validate(composed("schedule=custom", f"schedule.eta={eta}"))


def test_late_round_must_fit_the_run():
    with pytest.raises(ConfigError, match=r"schedule\.round"):
        validate(composed("schedule=late", "rounds=5"))


def test_cli_refuses_sigma_before_anything_heavy(tmp_path):
    """Validation comes before teaching or loading a model: nothing reaches the cache or the run directory
    (a check of order, not of the clock, so that it holds on a loaded machine)."""
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    result = subprocess.run(sirt_command("train", "verifier.sigma=1.5", f"hydra.run.dir={run_dir}"), cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2
    assert "sigma" in result.stderr and "Traceback" not in result.stderr
    assert not (cache / "sirt").exists()  # no organism taught or looked up
    assert not any((run_dir / name).exists() for name in ("metrics.jsonl", "rounds", "wandb", "state.json"))


def test_cli_refuses_an_unknown_group_option():
    result = subprocess.run(sirt_command("train", "verifier=maybe"), cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode != 0 and "verifier" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("launcher,target", [("slurm", "SlurmLauncher"), ("parallel", "JoblibLauncher")])
def test_launchers_compose(launcher, target):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)


TRAIN_EXPERIMENTS = sorted(
    p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml") if "sirt.simulate" not in p.read_text()
)


@pytest.mark.parametrize("name", TRAIN_EXPERIMENTS)
def test_experiments_compose_into_the_schema(name):
    cfg = composed(f"experiment={name}")
    if cfg.model.name_or_path is None:  # runs here: the full check
        validate(cfg)
    else:  # real weights are not available offline: check the structure only
        OmegaConf.merge(OmegaConf.structured(Config), cfg)


SIMULATE_EXPERIMENTS = sorted(
    p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml") if "sirt.simulate" in p.read_text()
)


@pytest.mark.parametrize("name", SIMULATE_EXPERIMENTS)
def test_simulate_experiments_compose_with_the_simulator_config(name):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="simulate", overrides=[f"experiment={name}"])
        plain = compose(config_name="simulate")
    assert set(cfg) == set(plain)  # it changes fields of conf/simulate.yaml, adds none
    if cfg.mode == "curriculum":
        mc, T, _ = montecarlo.settings(cfg)
        montecarlo.curricula(mc, T)


def test_the_old_experiments_form_is_refused_naming_the_new_one():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        cfg = compose(config_name="simulate", overrides=["+experiments=curriculum_simulation"])
    with pytest.raises(ConfigError, match=r"use experiment=curriculum_simulation$"):
        simulate(cfg)  # else a plain key that applies nothing (sirt.train refuses it alike)


def test_debug_micro_shrinks_the_run_after_the_groups_and_the_experiment():
    micro = validate(composed("debug=micro"))
    assert (micro.rounds, micro.dataset.n_train, micro.generation.n_samples, micro.model.teach.gate) == (2, 8, 4, False)
    ablation = validate(composed("experiment=passk_ablation_tiny", "debug=micro"))  # N = 64 in the experiment
    assert ablation.generation.n_samples == 4 and ablation.generation.pass_k == [1, 4]
    assert validate(composed("debug=micro", "rounds=3")).rounds == 3  # the command line still wins
