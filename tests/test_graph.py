"""The graph task: generated problems are valid and levelled, and the reward accepts exactly the valid paths."""

from __future__ import annotations

import random

import pytest
from hydra import compose, initialize_config_dir

from sirt.config.defaults import default
from sirt.config.errors import ConfigError
from sirt.loop import organism
from sirt.loop.checks import validated as validate
from sirt.tasks import graph
from sirt.tasks.problem import Problem
from sirt.tasks.registry import is_correct, load_splits
from tests.conftest import ROOT

TWO_ROUTES = Problem("ab bc ad dc ce | a>e", "#### abce", level=3, kind="path")


def walks(edges: graph.Edges, node: str) -> list[list[str]]:
    """Every maximal walk along out-edges from ``node``."""
    nexts = sorted(v for u, v in edges if u == node)
    return [[node]] if not nexts else [[node, *rest] for v in nexts for rest in walks(edges, v)]


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5, 6])
def test_problems_are_valid_levelled_and_short(level):
    rng = random.Random(level)
    for _ in range(50):
        problem = graph.graph_problem(rng, level, default("dataset.graph", nodes=8, chords=2))
        edges, start, goal = graph.parse_question(problem.question)
        assert problem.kind == "path" and problem.level == level
        assert len(problem.question) < 120 and len(problem.answer) < 40
        assert is_correct(problem.answer, problem)
        assert len(graph.shortest_path(edges, start, goal)) == level + 1
        assert len({u for u, _ in edges} | {v for _, v in edges}) == 8
        # whichever out-edge a solver follows, it reaches the goal in exactly `level` hops
        assert all(walk[-1] == goal and len(walk) == level + 1 for walk in walks(edges, start))


def test_chords_give_other_valid_paths_and_any_of_them_is_rewarded():
    rng = random.Random(0)
    problems = [graph.graph_problem(rng, 4, default("dataset.graph", nodes=10, chords=4)) for _ in range(200)]
    alternatives = 0
    for problem in problems:
        edges, start, _ = graph.parse_question(problem.question)
        for walk in walks(edges, start):
            assert is_correct("#### " + "".join(walk), problem)
            alternatives += "#### " + "".join(walk) != problem.answer
    assert alternatives > 0


@pytest.mark.parametrize("response", ["#### abce", "#### adce", "#### abce\nmore text", "x #### adce "])
def test_any_valid_path_is_accepted(response):
    assert graph.path_is_valid(response, TWO_ROUTES)


@pytest.mark.parametrize(("response", "why"), [
    ("#### ace", "skips a node: ac is not an edge"),
    ("#### ae", "jumps to the goal"),
    ("#### bce", "wrong start"),
    ("#### abc", "stops before the goal"),
    ("#### ecba", "walks edges backwards"),
    ("#### abcee", "repeats a node"),
    ("#### abce!", "trailing garbage"),
    ("#### ab-ce", "malformed"),
    ("#### ABCE", "not the graph's nodes"),
    ("abce", "no ####"),
    ("####", "empty"),
])
def test_invalid_paths_are_rejected(response, why):
    assert not graph.path_is_valid(response, TWO_ROUTES), why


def test_a_walk_through_a_cycle_is_not_a_path():
    problem = Problem("ab ba bc | a>c", "#### abc", level=2, kind="path")
    assert graph.path_is_valid("#### abc", problem)
    assert not graph.path_is_valid("#### ababc", problem)


def test_a_slip_jumps_to_the_goal():
    question = "ab bc cd | a>d"
    assert graph.solve_path(question) == "#### abcd"
    assert graph.solve_path(question, lambda: True) == "#### ad"
    assert graph.solve_path(question, lambda: False) == "#### abcd"
    slips = iter([False, True])
    assert graph.solve_path(question, lambda: next(slips)) == "#### abd"


def test_parse_rejects_other_text():
    with pytest.raises(ValueError, match="not a graph question"):
        graph.parse_question("7+9-8")


def test_splits_are_seeded_disjoint_and_levelled():
    cfg = default("dataset", name="graph", levels=[2, 3, 4], n_train=60, n_test=40)
    train, test = load_splits(cfg)
    assert (len(train), len(test)) == (60, 40)
    assert not {p.question for p in train} & {p.question for p in test}
    assert {p.level for p in train} == {2, 3, 4} and {p.kind for p in train + test} == {"path"}
    assert load_splits(cfg) == (train, test)


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def test_graph_dataset_config_is_valid_and_sizes_are_checked():
    config = validate(composed("dataset=graph"))
    assert config.dataset.name == "graph" and config.dataset.graph.nodes > max(config.dataset.levels)
    with pytest.raises(ConfigError, match=r"^dataset\.graph\.nodes="):
        validate(composed("dataset=graph", "dataset.levels=[2,8]", "dataset.graph.nodes=8"))
    with pytest.raises(ConfigError, match=r"^dataset\.graph\.chords="):
        validate(composed("dataset=graph", "dataset.graph.chords=-1"))


def test_the_organism_is_taught_the_graph_task():
    cfg = default("dataset", name="graph", levels=[2, 3])
    task = organism.teaching_task(cfg)
    problems = task.problems(20, cfg, 0)
    assert {p.kind for p in problems} == {"path"}
    rows = organism.solve_rows(problems, cfg, default("model.teach", slip_rate=1.0), random.Random(0))
    assert all(len(row["completion"]) == len("#### ab") for row in rows)  # straight to the goal
    bigger = default("dataset", name="graph", levels=[2, 3], graph=default("dataset.graph", nodes=9))
    arithmetic = default("dataset", name="arithmetic", levels=[2, 3])
    keys = {organism.organism_key(default("model"), ds, set()) for ds in (cfg, bigger, arithmetic)}
    keys.add(organism.organism_key(default("model"), cfg, {"ab | a>b"}))
    assert len(keys) == 4  # a different task, graph size or held-out set is a different organism


def test_another_n_train_holds_out_other_questions_and_gets_its_own_organism():
    """Test questions skip train ones, so n_train moves the held-out set: the cache must not be shared."""
    small, large = (default("dataset", levels=[2, 3], n_train=n, n_test=100) for n in (40, 400))
    keys, tests = [], []
    for ds in (small, large):
        train, test = load_splits(ds)
        assert not {p.question for p in train} & {p.question for p in test}
        tests.append(test)
        keys.append(organism.organism_key(default("model"), ds, {p.question for p in test}))
    assert tests[0] != tests[1] and keys[0] != keys[1]
