"""Curricula: the budget is exact and equal, levels follow the rules, draws are seeded, bad configs refused."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sirt.config.defaults import default
from sirt.config.errors import ConfigError
from sirt.config.schema import Config, CurriculumSchema
from sirt.loop.checks import validated as validate
from sirt.plan import curriculum
from sirt.tasks.arithmetic import arithmetic_split
from sirt.tasks.problem import Problem
from tests.conftest import ROOT

TRAIN = arithmetic_split(90, [2, 3, 4], 9, seed=7)
CURRICULA = ["mixture", "easy_to_hard", "hard_only", "custom"]


def composed(*overrides: str) -> Config:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return validate(compose(config_name="config", overrides=list(overrides)))


def history(*rates: dict[str, float]) -> list[dict]:
    """metrics.jsonl rows of rounds 0.. with the given per-level acceptance."""
    return [{"round": t, "acceptance_level": r} for t, r in enumerate(rates)]


def levels_of(problems: list[Problem]) -> Counter:
    return Counter(p.level for p in problems)


@pytest.mark.parametrize("name", CURRICULA)
@pytest.mark.parametrize("budget", [12, 30, 200])
def test_every_curriculum_spends_exactly_the_budget(name, budget):
    config = composed(f"curriculum={name}", f"prompts_per_round={budget}")
    rows = history(*[{"2": 1.0, "3": 1.0, "4": 1.0}] * 10)
    for t in range(config.rounds + 1):
        assert len(curriculum.round_problems(TRAIN, config, t, rows)) == budget


@pytest.mark.parametrize("name", CURRICULA)
def test_budget_zero_means_as_many_prompts_as_the_train_split(name):
    assert len(curriculum.round_problems(TRAIN, composed(f"curriculum={name}"), 3)) == len(TRAIN)


def test_none_is_the_split_or_a_seeded_draw_as_before():
    assert curriculum.round_problems(TRAIN, composed(), 4) == TRAIN
    config = composed("prompts_per_round=10", "seed=3")
    assert curriculum.round_problems(TRAIN, config, 4) == random.Random(3 * 7919 + 4).sample(TRAIN, 10)


def test_mixture_follows_its_weights_and_hard_only_takes_the_hardest():
    mixture = curriculum.round_problems(TRAIN, composed("curriculum=mixture", "prompts_per_round=20",
                                                       "curriculum.weights=[1,1,2]"), 0)
    assert levels_of(mixture) == {2: 5, 3: 5, 4: 10}
    equal = curriculum.round_problems(TRAIN, composed("curriculum=mixture", "prompts_per_round=30"), 0)
    assert levels_of(equal) == {2: 10, 3: 10, 4: 10}
    hard = curriculum.round_problems(TRAIN, composed("curriculum=hard_only", "prompts_per_round=20"), 0)
    assert levels_of(hard) == {4: 20}


def test_custom_follows_its_rows_and_the_last_row_holds():
    config = composed("curriculum=custom", "prompts_per_round=30")
    assert [levels_of(curriculum.round_problems(TRAIN, config, t)) for t in (0, 1, 2, 7)] == [
        {2: 30}, {2: 15, 3: 15}, {2: 10, 3: 10, 4: 10}, {2: 10, 3: 10, 4: 10}]


def stages(cfg: CurriculumSchema, rates: list[list[float]]) -> list[int]:
    return [curriculum.easy_to_hard_stage(cfg, 3, t, rates) for t in range(len(rates) + 1)]


def test_easy_to_hard_advances_on_schedule_or_on_acceptance():
    low, high = [0.1, 0.0, 0.0], [0.9, 0.9, 0.9]
    by_schedule = default("curriculum", name="easy_to_hard", advance_every=2)
    assert stages(by_schedule, [low] * 6) == [0, 0, 1, 1, 2, 2, 2]
    by_threshold = default("curriculum", name="easy_to_hard", threshold=0.5)
    assert stages(by_threshold, [low, high, low, high, high]) == [0, 0, 1, 1, 2, 2]
    either = default("curriculum", name="easy_to_hard", advance_every=3, threshold=0.5)
    assert stages(either, [high, low, low, low, low]) == [0, 1, 1, 1, 2, 2]
    assert stages(by_threshold, [[math.nan] * 3] * 3) == [0, 0, 0, 0]  # no prompts at a level: no evidence


def test_easy_to_hard_reads_acceptance_from_metrics_rows_and_replays_passed_levels():
    config = composed("curriculum=easy_to_hard", "prompts_per_round=20", "curriculum.advance_every=0",
                      "curriculum.threshold=0.8", "curriculum.replay=0.2")
    rows = history({"2": 0.9}, {"3": 0.5})
    assert levels_of(curriculum.round_problems(TRAIN, config, 0, rows)) == {2: 20}
    assert levels_of(curriculum.round_problems(TRAIN, config, 1, rows)) == {2: 4, 3: 16}
    assert levels_of(curriculum.round_problems(TRAIN, config, 2, rows)) == {2: 4, 3: 16}
    later = [*rows, {"round": 5, "acceptance_level": {"3": 1.0}}]  # rows of rounds >= t are not read
    assert curriculum.round_problems(TRAIN, config, 2, later) == curriculum.round_problems(TRAIN, config, 2, rows)


def test_draws_are_seeded_by_seed_and_round():
    config = composed("curriculum=mixture", "prompts_per_round=15")
    first = curriculum.round_problems(TRAIN, config, 2)
    assert curriculum.round_problems(TRAIN, config, 2) == first
    assert curriculum.round_problems(TRAIN, config, 3) != first
    reseeded = composed("curriculum=mixture", "prompts_per_round=15", "seed=1")
    assert curriculum.round_problems(TRAIN, reseeded, 2) != first


def test_a_short_pool_repeats_only_after_it_is_exhausted():
    pool = TRAIN[:4]
    drawn = curriculum.draw(pool, 10, random.Random(0))
    assert len(drawn) == 10 and set(drawn) == set(pool)
    assert max(Counter(drawn).values()) == 3 and sorted(drawn[:4], key=TRAIN.index) == pool


@pytest.mark.parametrize(("overrides", "field"), [
    (["curriculum=mixture", "curriculum.weights=[1,-1,1]"], "curriculum.weights"),
    (["curriculum=mixture", "curriculum.weights=[0,0,0]"], "curriculum.weights"),
    (["curriculum=easy_to_hard", "curriculum.threshold=1.5"], "curriculum.threshold"),
    (["curriculum=easy_to_hard", "curriculum.replay=1"], "curriculum.replay"),
    (["curriculum=easy_to_hard", "curriculum.advance_every=-1"], "curriculum.advance_every"),
    (["curriculum=easy_to_hard", "curriculum.advance_every=0", "curriculum.threshold=null"],
     "curriculum.advance_every"),
    (["curriculum=custom", "curriculum.per_round=[]"], "curriculum.per_round"),
    (["curriculum=custom", "curriculum.per_round=[[1,0],[1,1,1]]"], "curriculum.per_round"),
    (["curriculum=custom", "curriculum.per_round=[[0,0,0]]"], "curriculum.per_round"),
    (["curriculum=custom", "rounds=1", "curriculum.per_round=[[1,0,0],[1,1,0],[1,1,1]]"], "curriculum.per_round"),
    (["curriculum.name=sideways"], "curriculum.name"),
])
def test_bad_curricula_are_refused_naming_the_field(overrides, field):
    with pytest.raises(ConfigError, match=rf"^{field}="):
        composed(*overrides)


def test_weights_for_another_number_of_levels_are_refused_before_any_compute():
    config = composed("curriculum=mixture", "curriculum.weights=[1,1]", "prompts_per_round=10")
    with pytest.raises(ConfigError, match=r"2 level weights .* for 3 levels"):
        curriculum.round_problems(TRAIN, config, 0)


@pytest.mark.parametrize("name", ["curriculum_arithmetic_tiny", "curriculum_graph_tiny"])
def test_experiments_compose_with_an_equal_budget(name):
    config = composed(f"experiment={name}")
    assert config.prompts_per_round > 0 and config.dataset.n_train >= config.prompts_per_round


def test_levels_plot_is_written_from_metrics_rows(tmp_path):
    rows = [{"round": t, "acc_level": {"2": 0.5 + t / 10, "3": 0.2}, "acceptance_level": {"2": 0.9},
             "n_selected_level": {"2": 12, "3": 3}} for t in range(3)]
    path = curriculum.plot_levels(rows, tmp_path / "plots" / "levels.png", "test")
    assert path is not None and path.stat().st_size > 0
    assert curriculum.plot_levels([{"round": 0, "acc": 0.5}], tmp_path / "none.png", "test") is None


@pytest.mark.slow
def test_the_loop_follows_the_curriculum_on_the_graph_task(tmp_path, micro_loop):
    run_dir = tmp_path / "run"
    rows = micro_loop(run_dir, "dataset=graph", "logger=none", "fit.enabled=false", "curriculum=easy_to_hard",
                      "curriculum.advance_every=1", "prompts_per_round=6")
    levels = [{json.loads(line)["level"] for line in (run_dir / f"rounds/{t}/selections.jsonl").open()}
              for t in range(3)]
    assert levels == [{1}, {2}, {2}]  # debug=micro's levels [1, 2], one round each, then the last level stays
    assert all({"acc_level", "acceptance_level", "n_selected_level"} <= set(row) for row in rows)


def write_curriculum_sweep(sweep: Path) -> Path:
    """Three finished jobs as sirt.train leaves them: one mixture, two easy-to-hard (seeds of one curriculum)."""
    for num, (name, gain) in enumerate([("mixture", 0.1), ("easy_to_hard", 0.2), ("easy_to_hard", 0.3)]):
        job = sweep / str(num)
        (job / ".hydra").mkdir(parents=True)
        OmegaConf.save(OmegaConf.create({"dataset": {"name": "graph"}, "curriculum": {"name": name}}),
                       job / ".hydra" / "config.yaml")
        rows = [{"round": t, "acc": 0.3 + gain * t / 2, "acc_level": {"1": 0.6 + gain * t / 4, "2": 0.1 + gain * t / 2},
                 "n_selected_level": {"1": 5, "2": t}} for t in range(3)]
        (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return sweep


def test_the_sweep_figure_compares_the_curricula(tmp_path, capsys):
    """sirt.curriculum SWEEP_DIR: the table, and one figure of every curriculum (its jobs' mean) side by side."""
    from sirt import curriculum as cli

    sweep = write_curriculum_sweep(tmp_path / "sweep")
    groups = cli.by_curriculum(sweep)
    assert {name: len(runs) for name, runs in groups.items()} == {"mixture": 1, "easy_to_hard": 2}
    assert cli.accepted(groups["easy_to_hard"][0]) == {"1": 10, "2": 1}  # the last round's picks train nothing
    cli.main([str(sweep), "--no-wandb"])
    out = capsys.readouterr().out
    assert out.count("| graph | easy_to_hard | 0.300 |") == 2 and "curricula compared: " in out  # one row per job
    # the seeds of a curriculum pooled: final acc 0.5 and 0.6 -> 0.550 ± 0.050; a single job has no spread
    assert "| graph | easy_to_hard | 2 | 0.550 ± 0.050 | L1=0.725 ± 0.025 L2=0.350 ± 0.050 |" in out
    assert "| graph | mixture | 1 | 0.400 | L1=0.650 L2=0.200 |" in out
    assert (sweep / "curricula.png").stat().st_size > 10_000 and not (sweep / "wandb").exists()
    assert cli.plot_curricula({}, tmp_path / "none.png", "empty") is None
