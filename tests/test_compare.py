"""sirt.compare on hand-written job directories: seeds of one arm are pooled, the verdict reads arm means."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sirt.compare import compare


def write_job(sweep: Path, num: int, schedule: str, seed: int, acc: list[float]) -> None:
    """A finished job as sirt.train leaves it: metrics.jsonl and Hydra's config and overrides."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    cfg = {"seed": seed, "schedule": {"name": schedule}, "external": {"source": "gold", "budget": 64}}
    OmegaConf.save(OmegaConf.create(cfg), job / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create([f"schedule={schedule}", f"seed={seed}"]), job / ".hydra" / "overrides.yaml")
    rows = [{"round": t, "acc": a, "U_s": 1.0 - a, "ext_used": 0} for t, a in enumerate(acc)]
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_seeds_of_an_arm_are_pooled_and_the_verdict_reads_means(tmp_path):
    finals = {"none": [0.40, 0.46], "early": [0.50, 0.44], "uniform": [0.39, 0.49]}
    num = 0
    for schedule, accs in finals.items():
        for seed, final in enumerate(accs):
            write_job(tmp_path, num, schedule, seed, [0.3, 0.35, final])
            num += 1
    summary = compare(tmp_path)
    arms = {a["schedule"]: a for a in summary["arms"]}
    assert {a["n_seeds"] for a in arms.values()} == {2}
    assert arms["early"]["acc_final"] == pytest.approx(0.47)
    assert arms["early"]["acc_final_se"] == pytest.approx(0.03)  # sd 0.0424 / sqrt(2)
    # one seed alone would say uniform (0.39) loses to none (0.46); the means say +1 point
    assert summary["min_gain_over_none"] == pytest.approx(0.44 - 0.43)
    assert summary["acc_spread"] == pytest.approx(0.03)
    table = (tmp_path / "compare.md").read_text()
    assert "| schedule=uniform | uniform | 64 | 2 | 0.3 ± 0 | 0.44 ± 0.05 |" in table


def test_the_same_overrides_in_another_order_are_one_arm(tmp_path):
    """A seed run later with the schedule on the command line (not the sweep's parameters) joins its arm."""
    for num, (schedule, seed) in enumerate([("none", 0), ("none", 1), ("late", 0)]):
        write_job(tmp_path, num, schedule, seed, [0.3, 0.4 + 0.02 * seed])
        order = ["experiment=xi", f"schedule={schedule}"]
        overrides = [*(order[::-1] if num == 1 else order), f"seed={seed}"]
        OmegaConf.save(OmegaConf.create(overrides), tmp_path / str(num) / ".hydra" / "overrides.yaml")
    arms = {a["schedule"]: a for a in compare(tmp_path)["arms"]}
    assert arms["none"]["n_seeds"] == 2 and arms["none"]["acc_final"] == pytest.approx(0.41)
    assert arms["none"]["arm"] == "experiment=xi schedule=none"


def test_jobs_without_hydra_overrides_are_grouped_by_schedule_not_pooled(tmp_path):
    for num, schedule in enumerate(["none", "early", "late"]):
        write_job(tmp_path, num, schedule, 0, [0.3, 0.4])
        (tmp_path / str(num) / ".hydra" / "overrides.yaml").unlink()
    summary = compare(tmp_path)
    assert sorted(a["schedule"] for a in summary["arms"]) == ["early", "late", "none"]
    assert all(a["n_seeds"] == 1 for a in summary["arms"])


def test_U_s_inf_is_reported_only_from_a_joint_fit_the_theory_accepts(tmp_path):
    fits = {"early": {"status": "ok", "U_s_inf": 0.31}, "late": {"status": "inconsistent with Proposition 3.1",
                                                               "U_s_inf": -20.7}}
    for num, schedule in enumerate(["none", "early", "late"]):
        write_job(tmp_path, num, schedule, 0, [0.3, 0.4])
        if schedule in fits:
            (tmp_path / str(num) / "fit.json").write_text(json.dumps({"joint": fits[schedule]}))
    compare(tmp_path)
    jobs = {j["schedule"]: j for j in json.loads((tmp_path / "compare.json").read_text())["jobs"]}
    assert jobs["early"]["U_s_inf"] == 0.31 and jobs["late"]["U_s_inf"] is None
    assert jobs["late"]["fit_status"].startswith("inconsistent") and jobs["none"]["fit_status"] == "no fit.json"
    assert "2 of 3 jobs' fits are not" in (tmp_path / "compare.md").read_text()


def test_markdown_tables_escape_a_pipe_in_a_cell():
    """One helper writes the tables of compare, robustness and curriculum; a | in a value cannot split a row."""
    from sirt.runs.files import markdown_table

    lines = markdown_table(["arm", "acc"], [["schedule=a|b", 0.123456]], lambda v: f"{v:.2f}")
    assert lines == ["| arm | acc |", "|---|---|", "| schedule=a\\|b | 0.12 |"]
