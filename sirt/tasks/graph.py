"""The graph task (paper 2's synthetic reasoning task, our version): follow edges to a goal.

A question lists the directed edges of a small graph, then a start and a goal node:
``"ab dc bc ed | a>c"`` (edge ``xy`` is x -> y). The answer is the path's nodes in order, in
the GSM8K convention: ``"#### abc"``. The level is the number of hops of the shortest path;
every graph of a dataset has the same number of nodes, so path length is the only difficulty,
and a level-d question takes d - 1 look-ups (the last hop lands on the goal the question names),
each of which can go wrong. Writing the path without separators makes each look-up the
simplest one a small transformer learns (an induction step: after ``b``, copy the letter that
follows ``b`` in an edge); the organism still needs twice the arithmetic task's teaching
steps to learn it (see conf/experiment/curriculum_graph_tiny.yaml).

The graphs are built so that following *any* out-edge from any node ends at the goal (every
edge leads one step closer to it): the nodes off the start's path are branches that flow into
it, and a few chords give alternative routes of the same length. The reward is exact: a
response is correct when it is a simple path from start to goal along listed edges, whether
or not it is the reference path. Jumping to the goal too early (``ac`` for ``abc``) is the
task's typical mistake (the goal is in plain sight in the question), and one a verifier can
see: ``ac`` is not an edge.

With the default size (6 nodes) a question has under 30 characters and an answer under 10:
short enough for the character-level organism (:mod:`sirt.loop.organism` teaches it this task).
"""

from __future__ import annotations

import random
import re
import string
from collections import deque
from collections.abc import Callable
from itertools import pairwise

from sirt.config.schema import GraphSchema
from sirt.tasks.problem import Problem

NODES = string.ascii_lowercase
QUESTION_RE = re.compile(r"((?:[a-z]{2} )*[a-z]{2}) \| ([a-z])>([a-z])")
PATH_RE = re.compile(r"[a-z]+")
Edges = set[tuple[str, str]]


def parse_question(question: str) -> tuple[Edges, str, str]:
    """(edges, start, goal) of a question; ValueError for text that is not one."""
    match = QUESTION_RE.fullmatch(question.strip())
    if match is None:
        raise ValueError(f"not a graph question: {question!r}")
    edges = {(pair[0], pair[1]) for pair in match[1].split()}
    return edges, match[2], match[3]


def shortest_path(edges: Edges, start: str, goal: str) -> list[str] | None:
    """Breadth-first search over out-edges in alphabetical order: the reference path, deterministic."""
    parent: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while (prev := parent[path[-1]]) is not None:
                path.append(prev)
            return path[::-1]
        for u, v in sorted(edges):
            if u == node and v not in parent:
                parent[v] = node
                queue.append(v)
    return None


def is_valid_path(path: list[str], edges: Edges, start: str, goal: str) -> bool:
    """A simple path from start to goal whose every hop is a listed edge."""
    return (len(path) >= 2 and path[0] == start and path[-1] == goal and len(set(path)) == len(path)
            and all(hop in edges for hop in pairwise(path)))


def response_path(response: str) -> list[str] | None:
    """The nodes after ``####`` (to the end of that line), or None unless they are letters only."""
    if "####" not in response:
        return None
    text = response.split("####", 1)[1].split("\n", 1)[0].strip()
    return list(text) if PATH_RE.fullmatch(text) else None


def path_is_valid(response: str, problem: Problem) -> bool:
    """The exact reward: the response's final path is valid in the question's graph (any valid path)."""
    path = response_path(response)
    if path is None:
        return False
    edges, start, goal = parse_question(problem.question)
    return is_valid_path(path, edges, start, goal)


CHECKERS: dict[str, Callable[[str, Problem], bool]] = {"path": path_is_valid}


def error_kind(response: str, problem: Problem) -> str:
    """What kind of mistake a wrong response is: ``malformed`` (no path of letters after ``####``), ``jump``
    (from the start along listed edges, then straight to the goal: :func:`solve_path`'s taught impatience)
    or ``invalid`` (any other path)."""
    path = response_path(response)
    if path is None:
        return "malformed"
    edges, start, goal = parse_question(problem.question)
    missing = [i for i, hop in enumerate(pairwise(path)) if hop not in edges]
    return "jump" if path[0] == start and path[-1] == goal and missing == [len(path) - 2] else "invalid"


def solve_path(question: str, slip: Callable[[], bool] | None = None) -> str:
    """The reference answer ``#### abc``; before each inner node, ``slip()`` decides whether the
    solver jumps straight to the goal instead.

    The jump models an impatient solver (``ac``): the path it writes is then invalid, a mistake
    a level-d question offers d - 1 chances to make.
    """
    edges, start, goal = parse_question(question)
    path = shortest_path(edges, start, goal)
    assert path is not None, f"goal unreachable in {question!r}"
    written = [start]
    for node in path[1:-1]:
        if slip is not None and slip():
            break
        written.append(node)
    return "#### " + "".join([*written, goal])


def graph_edges(rng: random.Random, level: int, cfg: GraphSchema) -> tuple[list[tuple[str, str]], str, str]:
    """The edges (shuffled), start and goal of a ``cfg.nodes``-node graph whose shortest path has ``level`` hops.

    Every edge goes from a node at distance k from the goal to one at distance k - 1 (a tree
    into the goal, then chords between consecutive distances), so every walk along out-edges
    from the start reaches the goal in exactly ``level`` hops: chords add routes, never shortcuts.
    """
    names = rng.sample(NODES, cfg.nodes)
    path = names[: level + 1]
    depth = {node: level - i for i, node in enumerate(path)}
    edges = list(pairwise(path))
    for node in names[level + 1 :]:  # branches that flow into the graph built so far
        parent = rng.choice(sorted(depth))
        edges.append((node, parent))
        depth[node] = depth[parent] + 1
    chords = [(u, v) for u in sorted(depth) for v in sorted(depth)
              if depth[v] == depth[u] - 1 and (u, v) not in edges]
    rng.shuffle(chords)
    edges += chords[: cfg.chords]
    rng.shuffle(edges)
    return edges, path[0], path[-1]


def graph_problem(rng: random.Random, level: int, cfg: GraphSchema) -> Problem:
    """One question of the given level, with its reference path."""
    edges, start, goal = graph_edges(rng, level, cfg)
    question = " ".join(u + v for u, v in edges) + f" | {start}>{goal}"
    return Problem(question=question, answer=solve_path(question), level=level, kind="path")


def graph_split(n: int, levels: list[int], cfg: GraphSchema, seed: int) -> list[Problem]:
    """``n`` problems with levels drawn uniformly from ``levels``; reproducible from ``seed``."""
    rng = random.Random(seed)
    return [graph_problem(rng, rng.choice(levels), cfg) for _ in range(n)]
