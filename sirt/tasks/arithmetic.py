"""The embedded arithmetic task, the model organism's world.

A chain of ``level`` additions/subtractions solved one step per line, so that a solution can be
checked step by step (which makes verifying easier than solving).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from sirt.tasks.problem import Problem


def arithmetic_problem(rng: random.Random, level: int, max_operand: int) -> Problem:
    """A chain of ``level`` +/- operations, kept non-negative, solved one operation per line.

    Each line evaluates the first operation and copies the rest (``7+9-8 -> 16-8 -> 8``): a
    scratchpad a small transformer can learn, and one whose every line can be checked.
    """
    total = rng.randint(1, max_operand)
    terms = []
    for _ in range(level):
        operand = rng.randint(1, max_operand)
        op = "-" if operand <= total and rng.random() < 0.5 else "+"
        total = total + operand if op == "+" else total - operand
        terms.append(f"{op}{operand}")
    question = f"{total - sum(int(t) for t in terms)}" + "".join(terms)
    return Problem(question=question, answer=solve_chain(question), level=level)


def solve_chain(expression: str, slip: Callable[[], bool] | None = None,
                space: Callable[[], bool] | None = None) -> str:
    """The scratchpad of ``expression``: one line per operation down to the total, then ``#### total``.

    ``slip`` models a bad habit: on a chain of three or more operations, ``slip()`` decides
    whether the solution applies the last operation once more after the work is done
    (``...;6+4;10+4;14 #### 14`` where ``...;6+4;10 #### 10`` is right). A checker sees it at a
    glance — a right scratchpad uses each operation of the question once, the habit's last line has
    one the question does not — while the solver's choice between the two is one token, so its most
    likely answer is wrong wherever the habit is its likelier continuation. The habit's text is the
    longer one, so a right answer costs fewer tokens than the mistake: Best-of-N picks likely texts and
    training on them sharpens the samples (a habit that stopped early made the right answer the costlier
    text, and picking it moved U_v as fast as U_s). A chance that would go below zero is not offered.

    ``space`` models harmless layout: before each operation, at each line break and before ``####``,
    ``space()`` decides whether one more space is written (``16 -8; 8  #### 8``). It changes no line and no answer, so
    it gives the samples' uncertainty a tail of choices that do not matter, as a real model's
    phrasing does, and that self-training can sharpen away round by round.
    """
    numbers = [int(x) for x in re.findall(r"[+-]?\d+", expression)]
    totals, rest = [numbers[0]], numbers[1:]
    for operand in rest:
        totals.append(totals[-1] + operand)
    def gap() -> str:
        return " " if space is not None and space() else ""

    lines = [f"{totals[i + 1]}" + "".join(f"{gap()}{x:+d}" for x in rest[i + 1 :]) for i in range(len(rest))]
    answer = totals[-1]
    if slip is not None and len(rest) >= 3 and answer + rest[-1] >= 0 and slip():
        lines[-1] += f"{gap()}{rest[-1]:+d}"
        answer += rest[-1]
        lines.append(f"{answer}")
    n_lines = len(lines)
    return "".join(line + (";" + gap() if i < n_lines - 1 else "") for i, line in enumerate(lines)) + (
        f"{gap()} #### {answer}")


def plain_layout(response: str) -> str:
    """A response without its layout choices (:func:`solve_chain`'s ``space``): the text a line-by-line check reads."""
    work, sep, answer = response.partition("####")
    return work.replace(" ", "") + (f" {sep}{answer}" if sep else "")


WORK_RE = re.compile(r"[0-9+\-;]+ #### -?\d+")  # a scratchpad in the task's format, layout removed


def error_kind(response: str, problem: Problem) -> str:
    """What kind of mistake a wrong response is: the taught ``habit`` (:func:`solve_chain`'s slip), ``malformed``
    (not a scratchpad of the task's format), ``miscount`` (more or fewer lines than the question's operations:
    an operation dropped, repeated or invented) or ``slip`` (the right number of lines, a wrong value in one)."""
    plain = plain_layout(response)
    if plain == solve_chain(problem.question, slip=lambda: True):
        return "habit"
    if not WORK_RE.fullmatch(plain):
        return "malformed"
    return "miscount" if plain.count(";") != problem.answer.count(";") else "slip"


def arithmetic_split(n: int, levels: list[int], max_operand: int, seed: int) -> list[Problem]:
    """``n`` problems with levels drawn uniformly from ``levels``; reproducible from ``seed``."""
    rng = random.Random(seed)
    return [arithmetic_problem(rng, rng.choice(levels), max_operand) for _ in range(n)]
