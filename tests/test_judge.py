"""Kinds of mistake, the verifier's AUC per kind, and ``python -m sirt.judge`` on a hand-written run."""

from __future__ import annotations

import json

import pytest

from sirt import judge
from sirt.stages.judging import quality_by_kind
from sirt.tasks import arithmetic, graph
from sirt.tasks.arithmetic import solve_chain
from sirt.tasks.problem import Problem
from sirt.tasks.registry import error_kind

CHAIN = Problem("1+2+3+4", solve_chain("1+2+3+4"), 3)  # 3+3+4;6+4;10 #### 10


@pytest.mark.parametrize("response,kind", [
    ("3+3+4;6+4;10+4;14 #### 14", "habit"),
    ("3 +3+4; 6+4;10 +4;14  #### 14", "habit"),  # the habit in another layout
    ("3+3+4;6+4;11 #### 11", "slip"),  # a wrong value, the right number of lines
    ("3+2+4;5+4;9 #### 9", "slip"),
    ("3+3;6 #### 6", "miscount"),  # an operation dropped
    ("3+3+4;6+4;10+1;11 #### 11", "miscount"),  # one invented (not the habit's)
    ("3+3+4;6+?;10 #### 10", "malformed"),
    ("#### J5", "malformed"),
])
def test_arithmetic_mistakes_are_sorted_by_kind(response, kind):
    assert arithmetic.error_kind(response, CHAIN) == kind == error_kind("arithmetic", response, CHAIN)


def test_graph_mistakes_are_sorted_by_kind():
    question = "ab bc cd ae | a>d"
    problem = Problem(question, graph.solve_path(question), 3, kind="path")
    assert problem.answer == "#### abcd"
    assert graph.error_kind(graph.solve_path(question, slip=lambda: True), problem) == "jump"  # #### ad
    assert graph.error_kind("#### abd", problem) == "jump"
    assert graph.error_kind("#### aed", problem) == "jump"  # along ae, then to the goal
    assert graph.error_kind("#### acd", problem) == "invalid"  # the first hop is no edge
    assert graph.error_kind("#### dcba", problem) == "invalid"
    assert graph.error_kind("the path is abcd", problem) == "malformed"
    assert error_kind("gsm8k", "#### 7", problem) == "wrong"  # a task without kinds of its own


def test_quality_by_kind_separates_the_kinds_the_overall_auc_mixes():
    right, habit, slip = "3+3+4;6+4;10 #### 10", "3+3+4;6+4;10+4;14 #### 14", "3+3+4;6+4;11 #### 11"
    record = {"question": CHAIN.question, "reference": CHAIN.answer, "level": 3,
              "samples": [right, habit, habit, slip, right], "correct": [True, False, False, False, True],
              "scores": [0.9, 0.1, 0.2, 0.9, 0.8]}
    kinds = quality_by_kind([record], lambda r, s: arithmetic.error_kind(s, CHAIN))
    assert kinds["habit"] == {"share": 2 / 3, "verifier_auc": 1.0}
    assert kinds["slip"] == {"share": 1 / 3, "verifier_auc": 0.25}  # 0.9 ties 0.9 (a half), 0.8 loses
    assert set(kinds) == {"habit", "slip"}


def _run(tmp_path, rounds):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("dataset:\n  name: arithmetic\n")
    for t, records in enumerate(rounds):
        (tmp_path / "rounds" / str(t)).mkdir(parents=True)
        (tmp_path / "rounds" / str(t) / "selections.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp_path


def test_judge_writes_the_table_the_json_and_the_plot(tmp_path, capsys):
    right, habit, slip = "3+3+4;6+4;10 #### 10", "3+3+4;6+4;10+4;14 #### 14", "3+3+4;6+4;11 #### 11"
    base = {"question": CHAIN.question, "reference": CHAIN.answer, "level": 3, "pick": 0, "correct": [True, False]}
    run = _run(tmp_path, [[{**base, "samples": [right, habit], "scores": [0.9, 0.1]}],
                          [{**base, "samples": [right, slip], "scores": [0.4, 0.6]}]])
    judge.main([str(run)])
    out = capsys.readouterr().out
    assert "| 0 | 1.000 | 0.500 | 1.00 / 1.000 | - |" in out and "| 1 | 0.000 | 0.500 | - | 1.00 / 0.000 |" in out
    saved = json.loads((run / "judge.json").read_text())
    assert saved["task"] == "arithmetic" and [r["round"] for r in saved["rounds"]] == [0, 1]
    assert saved["rounds"][1]["kinds"] == {"slip": {"share": 1.0, "verifier_auc": 0.0}}
    assert (run / "plots" / "verifier_by_kind.png").stat().st_size > 0 and (run / "judge.md").exists()


def test_judge_refuses_a_run_without_rounds_in_one_line(tmp_path, capsys):
    run = _run(tmp_path, [])
    with pytest.raises(SystemExit) as exit_:
        judge.main([str(run)])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("sirt.judge: ") and "no round with a selections.jsonl" in err
    with pytest.raises(SystemExit):
        judge.main([str(tmp_path / "elsewhere")])
    assert "config.yaml does not exist: name the task with --task" in capsys.readouterr().err
