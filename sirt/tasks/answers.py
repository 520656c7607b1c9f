"""Answer checkers of the real datasets: is a free-text response's final answer the reference's?

Chat models do not always follow the requested answer format, so each checker reads the
answer the way the community grades these benchmarks: GSM8K by the number after ``####``,
else a boxed number, else the number after "the answer is", else the last number (the
"flexible extract" of lm-evaluation-harness), compared as exact fractions so that separators,
units and spellings (``$1,080.00`` = ``1080``, ``3/4`` = ``0.75``) do not matter; MATH with
math-verify, which parses ``\\boxed{}`` LaTeX and compares the expressions symbolically;
ProntoQA by the True/False verdict after ``####``, else the last such word.

Checkers take ``(response, problem)`` and read only ``problem.answer`` (the reference solution),
so this module does not import :mod:`sirt.tasks.registry`, which registers them in ``CHECKERS``.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

from sirt.tasks.problem import Problem

NUMBER_RE = re.compile(
    r"(?P<sign>-)?\$?\s*"
    r"(?:\\frac\{(?P<num>\d+)\}\{(?P<den>\d+)\}"  # LaTeX fraction
    r"|(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?P<dec>\.\d+)?(?:\s*/\s*(?P<over>\d+)(?!\.\d))?)"  # 1,234.5 or 3/4
)
BOXED_RE = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
ANSWER_IS_RE = re.compile(r"answer\s*(?:is|:)", re.IGNORECASE)
VERDICT_RE = re.compile(r"\b(true|false)\b", re.IGNORECASE)


def _normalise(text: str) -> str:
    """Unicode minus, LaTeX fraction spellings and spacing/dollar escapes become plain forms."""
    for old, new in (("\u2212", "-"), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\!", ""), ("\\,", ""),
                     ("\\$", "$")):
        text = text.replace(old, new)
    return text


def _to_fraction(match: re.Match) -> Fraction | None:
    """The exact value of one NUMBER_RE match (None for a fraction over zero)."""
    sign = -1 if match["sign"] else 1
    if match["num"] is not None:
        numerator, denominator = int(match["num"]), int(match["den"])
    else:
        numerator = Fraction(match["int"].replace(",", "") + (match["dec"] or ""))
        denominator = int(match["over"]) if match["over"] else 1
    return sign * Fraction(numerator) / denominator if denominator else None


def parse_number(text: str, last: bool = False) -> Fraction | None:
    """The first (or last) number in ``text`` as an exact fraction; None if there is none."""
    values = [v for m in NUMBER_RE.finditer(_normalise(text)) if (v := _to_fraction(m)) is not None]
    if not values:
        return None
    return values[-1] if last else values[0]


def final_number(response: str) -> Fraction | None:
    """The response's final answer, from the most explicit place it gives one.

    ``#### n`` (the requested format), else the last ``\\boxed{n}``, else after the last "the
    answer is", else the last number anywhere: stricter cues first, so a worked solution's
    intermediate numbers never win over a stated answer.
    """
    if "####" in response:
        return parse_number(response.split("####", 1)[1].strip().split("\n", 1)[0])
    boxed = BOXED_RE.findall(response)
    if boxed:
        return parse_number(boxed[-1])
    stated = list(ANSWER_IS_RE.finditer(response))
    if stated:
        value = parse_number(response[stated[-1].end() :])
        if value is not None:
            return value
    return parse_number(response, last=True)


def gsm8k_matches(response: str, problem: Problem) -> bool:
    """GSM8K: the response's final number equals the reference's ``#### n`` exactly."""
    gold = final_number(problem.answer)
    return gold is not None and final_number(response) == gold


@lru_cache(maxsize=65536)
def _parsed_reference(solution: str) -> list:
    """math-verify's parse of a reference solution (cached: every sample of a prompt reuses it)."""
    from math_verify import parse

    return parse(solution)


def math_matches(response: str, problem: Problem) -> bool:
    """MATH: math-verify finds the final (boxed) answer of both and compares them symbolically."""
    from math_verify import parse, verify

    gold = _parsed_reference(problem.answer)
    return bool(gold) and verify(gold, parse(response))


def verdict(text: str) -> bool | None:
    """A True/False verdict: the word after ``####``, else the last such word; None if absent."""
    tail = text.split("####", 1)[1] if "####" in text else None
    if tail is not None and (first := VERDICT_RE.search(tail)):
        return first[1].lower() == "true"
    words = VERDICT_RE.findall(text)
    return words[-1].lower() == "true" if words else None


def truefalse_matches(response: str, problem: Problem) -> bool:
    """ProntoQA: the response's verdict equals the reference's."""
    gold = verdict(problem.answer)
    return gold is not None and verdict(response) == gold


CHECKERS = {"gsm8k": gsm8k_matches, "math": math_matches, "truefalse": truefalse_matches}
