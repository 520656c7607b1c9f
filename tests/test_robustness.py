"""The organism robustness table: one row per (teaching seed, threads) job, the default run's promises checked."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sirt.robustness import study


def write_job(job: Path, seed: int, threads: int, accs: list[float], G: list[float], prec0: float, sacc0: float,
              joint: dict) -> None:
    (job / ".hydra").mkdir(parents=True)
    cfg = OmegaConf.create({"threads": threads, "model": {"teach": {"seed": seed}}})
    OmegaConf.save(cfg, job / ".hydra/config.yaml")
    rows = [{"round": t, "acc": a, "G": g, "pick_precision": prec0 if t == 0 else 0.9,
             "sample_acc": sacc0 if t == 0 else 0.8, "verifier_auc": 0.9} for t, (a, g) in enumerate(zip(accs, G))]
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (job / "fit.json").write_text(json.dumps({"joint": joint}))


def test_the_table_checks_every_promise_per_job(tmp_path: Path, capsys) -> None:
    ok_joint = {"status": "ok", "beta_over_alpha": 0.6}
    write_job(tmp_path / "0", 0, 1, [0.40, 0.50, 0.60], [0.3, 0.2, 0.1], 0.55, 0.45, ok_joint)
    write_job(tmp_path / "1", 1, 1, [0.40, 0.42, 0.44], [0.3, 0.2, 0.1], 0.55, 0.45, ok_joint)  # gains 4 points
    write_job(tmp_path / "2", 2, 2, [0.40, 0.50, 0.60], [0.3, -0.01, 0.1], 0.55, 0.45, ok_joint)  # G < 0 once
    write_job(tmp_path / "10", 0, 2, [0.40, 0.50, 0.60], [0.3, 0.2, 0.1], 0.47, 0.45,  # picks barely better
              {"status": "inconsistent with Proposition 3.1", "beta_over_alpha": 1.4})
    (tmp_path / "3").mkdir()  # a job that never committed a round is left out
    rows = study(tmp_path)
    assert [r["job"] for r in rows] == ["0", "1", "2", "10"]  # numeric job order
    assert [r["self_improves"] for r in rows] == [True, False, False, False]
    assert [r["in_theory"] for r in rows] == [True, True, True, False]
    assert rows[0]["gain"] == pytest.approx(0.2) and rows[2]["G_min"] == -0.01 and rows[3]["threads"] == 2
    table = (tmp_path / "robustness.md").read_text()
    assert "1 of 4 runs self-improve" in table and "3 of 4 joint fits" in table
    assert json.loads((tmp_path / "robustness.json").read_text()) == rows
    assert "| 10 | 0 | 2 |" in capsys.readouterr().out
