"""The theory simulator: config validation in-process, the Hydra app as a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from sirt.config.errors import ConfigError
from sirt.simulate import simulate
from sirt.theory.dynamics import Dynamics

ROOT = Path(__file__).resolve().parents[1]


def config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config_name="simulate", overrides=list(overrides))


def run_app(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sirt.simulate", f"hydra.run.dir={run_dir}",
                           *overrides], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


def test_rows_follow_the_theory() -> None:
    cfg = config("T=6")
    rows = simulate(cfg)
    model = Dynamics(cfg.alpha, cfg.beta, cfg.k, cfg.b, cfg.U_s0, cfg.U_v0)
    assert [row["round"] for row in rows] == list(range(7))
    assert [row["U_s"] for row in rows] == pytest.approx(model.U_s(range(7)).tolist(), abs=1e-12)
    assert all(row["G"] == pytest.approx(row["U_s"] - row["U_v"]) for row in rows)
    assert all(row["eta"] == 0 and row["ext_used"] == 0 for row in rows)


def test_external_data_lower_the_verifier_and_are_all_used() -> None:
    eta = "eta=[0.3333,0.3333,0.3334,0,0]"
    plain, fed = simulate(config("T=5", "gamma=0.5")), simulate(config("T=5", "gamma=0.5", eta))
    assert sum(row["ext_used"] for row in fed) == 100
    assert [row["ext_used"] for row in fed] == [0, 33, 33, 34, 0, 0]  # row t: what trained round t
    assert fed[0]["U_v"] == plain[0]["U_v"] and fed[-1]["U_v"] < plain[-1]["U_v"]


def test_noise_is_seeded() -> None:
    assert simulate(config("noise=0.01", "seed=3")) == simulate(config("noise=0.01", "seed=3"))
    assert simulate(config("noise=0.01", "seed=3")) != simulate(config("noise=0.01", "seed=4"))


@pytest.mark.parametrize(("override", "field"), [
    ("beta=1.5", "beta"), ("beta=-0.1", "beta"), ("alpha=0", "alpha"), ("k=0", "k"),
    ("T=0", "T"), ("T=2.5", "T"), ("noise=-0.01", "noise"), ("gamma=-1", "gamma"),
    ("eta=[0.5,0.5]", "eta"), ("eta=[1.5,-0.5,0,0,0,0,0,0,0,0]", "eta"),
    ("eta=[0.5,0,0,0,0,0,0,0,0,0]", "eta"), ("mode=nope", "mode"),
])
def test_invalid_config_names_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}="):
        simulate(config(override))


def test_app_writes_a_run_that_fits(tmp_path: Path) -> None:
    run = tmp_path / "sim"
    done = run_app(run, "noise=0.003", "seed=1", "T=12")
    assert done.returncode == 0, done.stderr
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 13
    assert (run / ".hydra" / "config.yaml").is_file()
    fit = json.loads((run / "fit.json").read_text())
    assert fit["status"] == "ok", fit["status"]
    assert fit["joint"]["r2"] > 0.99
    assert fit["curves"]["U_s"]["r2"] > 0.99 and fit["curves"]["U_v"]["r2"] > 0.99
    assert fit["joint"]["rate"] == pytest.approx(0.5 * (1.0 - 0.4), rel=0.05)
    assert sorted(p.name for p in (run / "plots").iterdir()) == [
        "dG_vs_G.png", "forecast_fan.png", "trajectories.png"]
    assert "joint (one rate)" in done.stdout


def test_app_refuses_a_bad_config_with_exit_2(tmp_path: Path) -> None:
    done = run_app(tmp_path / "sim", "beta=2")
    assert done.returncode == 2
    assert done.stderr.strip() == "sirt.simulate: beta=2: must be in [0, alpha=1.0)"
    assert not (tmp_path / "sim" / "metrics.jsonl").exists()


def test_app_logs_a_simulate_run_to_wandb_on_request(tmp_path: Path) -> None:
    """wandb=true: the simulated rows against round, the fit in the summary, job_type simulate (offline)."""
    from sirt.runs.wandb_files import offline_runs, read_run

    run = tmp_path / "sim"
    done = run_app(run, "T=6", "wandb=true")
    assert done.returncode == 0, done.stderr
    (path,) = offline_runs(run)
    logged = read_run(path)
    assert logged["job_type"] == "simulate" and logged["tags"] == ["mode:dynamics"] and logged["exit_code"] == 0
    assert [row["round"] for row in logged["history"]] == list(range(7))
    assert "fit/status" in logged["summary"] and logged["summary"]["plots/trajectories"]["_type"] == "image-file"
    assert run_app(tmp_path / "plain", "T=6").returncode == 0
    assert not (tmp_path / "plain" / "wandb").exists()  # off by default
