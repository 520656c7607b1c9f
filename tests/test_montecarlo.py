"""The Monte-Carlo of paper 2: seeded, budget-exact, the feedback loop and saturation, the map's verdicts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from sirt.config.errors import ConfigError
from sirt.simulate import simulate
from sirt.theory import montecarlo

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["mode=curriculum", "mc.seeds=20", "T=6"]


def config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config_name="simulate", overrides=[*SMALL, *overrides])


def trajectory(cfg: DictConfig, curriculum: str, p0: float, prompts: int, seed: int = 0) -> montecarlo.Trajectory:
    mc, T, _ = montecarlo.settings(cfg)
    return montecarlo.run_rounds(mc, montecarlo.curricula(mc, T)[curriculum], p0, prompts, T,
                                 np.random.default_rng(seed))


def test_the_simulator_reproduces_itself_from_its_seed():
    assert simulate(config("seed=3")) == simulate(config("seed=3"))
    assert simulate(config("seed=3")) != simulate(config("seed=4"))


def test_rows_compare_every_curriculum_in_metrics_keys():
    rows = simulate(config())
    assert [row["round"] for row in rows] == list(range(7))
    for row in rows:
        assert set(row) == {"round", "mixture", "easy_to_hard", "hard_only"}
        for stats in row["mixture"], row["easy_to_hard"]:
            assert set(stats) >= {"acc", "acceptance", "n_selected", "acc_level", "acceptance_level",
                                  "n_selected_level"}
    assert rows[0]["mixture"]["acc"] == pytest.approx(np.mean([0.5 ** d for d in range(1, 6)]))


@pytest.mark.parametrize("curriculum", ["mixture", "easy_to_hard", "hard_only"])
def test_every_round_spends_exactly_the_budget(curriculum):
    traj = trajectory(config(), curriculum, 0.5, 35)
    assert (traj.prompts.sum(-1) == 35).all()
    assert (traj.accepted <= traj.prompts).all()


def test_feedback_loop_more_skill_more_acceptance_more_data():
    traj = trajectory(config("T=8"), "mixture", 0.4, 40)
    reward, accepted = traj.reward().mean(1), traj.accepted.sum(-1).mean(1)
    assert (np.diff(reward) > 0).all()
    assert accepted[-1] > 1.5 * accepted[0]


def test_saturation_at_the_ceiling_and_no_learning_from_a_stiff_policy():
    traj = trajectory(config("T=10", "mc.ceiling=0.9"), "mixture", 0.5, 2000)
    assert traj.skill[-1].mean() == pytest.approx(0.9, abs=0.01)
    assert traj.reward()[-1].mean() == pytest.approx(np.mean([0.9 ** d for d in range(1, 6)]), abs=0.02)
    stiff = trajectory(config("mc.stiffness=1e12"), "mixture", 0.5, 40)
    assert np.allclose(stiff.skill, 0.5)


def test_map_knows_where_easy_to_hard_wins_and_where_it_loses():
    cfg = config("T=10", "mc.seeds=60", "mc.map.p0=[0.3,0.75]", "mc.map.prompts=[80]")
    mc, T, seed = montecarlo.settings(cfg)
    weak, strong = montecarlo.advantage_map(mc, T, seed)
    assert (weak["p0"], weak["verdict"]) == (0.3, "win") and weak["delta"] > 0.1  # mixture wastes its budget
    assert (strong["p0"], strong["verdict"]) == (0.75, "loss")  # mixture trains every level from round 0
    shared = montecarlo.advantage_map(*montecarlo.settings(config("T=10", "mc.seeds=60", "mc.map.p0=[0.75]",
                                                                 "mc.map.prompts=[80]", "mc.transfer=1.0")))
    assert shared[0]["verdict"] != "loss"  # with one shared skill, nothing is lost by climbing


@pytest.mark.parametrize(("override", "field"), [
    ("mc.p0=0", "mc.p0"), ("mc.ceiling=1.5", "mc.ceiling"), ("mc.transfer=2", "mc.transfer"),
    ("mc.stiffness=0", "mc.stiffness"), ("mc.seeds=1", "mc.seeds"), ("mc.levels=[0,1]", "mc.levels"),
    ("mc.map.compare=[easy_to_hard]", "mc.map.compare"), ("mc.map.prompts=[0]", "mc.map.prompts"),
    ("T=0", "T"), ("+mc.curricula.custom={per_round: [[1, 0]]}", "mc.curricula"),
])
def test_invalid_settings_name_the_field(override, field):
    with pytest.raises(ConfigError, match=rf"^{re.escape(field)}[.=:]"):
        simulate(config(override))


def test_app_writes_simulation_plots_and_tables(tmp_path):
    run = tmp_path / "sim"
    done = subprocess.run([sys.executable, "-m", "sirt.simulate", f"hydra.run.dir={run}", *SMALL,
                           "mc.map.p0=[0.3,0.9]", "mc.map.prompts=[10,80]"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads((run / "simulation.json").read_text())
    assert len(result["map"]["cells"]) == 4 and {"delta", "se", "verdict"} <= set(result["map"]["cells"][0])
    assert sorted(p.name for p in (run / "plots").iterdir()) == [
        "curricula.png", "levels_easy_to_hard.png", "levels_hard_only.png", "levels_mixture.png", "map.png"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 7
    assert "easy_to_hard - mixture" in done.stdout and not (run / "fit.json").exists()
