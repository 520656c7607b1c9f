"""Answer checkers of the real datasets: is a free-text response's final answer the reference's?

Chat models do not always follow the requested answer format, so GSM8K is graded by one named
rule, *sirt's final-answer rule* (:func:`final_number`): the last ``####`` line that holds a
number (``#### 18``; a markdown heading ``#### Step 1: ...`` holds words, not an answer), else the
last final-answer phrase followed by a number ("the answer is", "answer:") or ``\\boxed{}``, else
the last number of the response. Where the answer is an expression (``5 + 3 = 8``) the result after
its last ``=`` counts. Numbers compare as exact fractions, so currency, thousands commas, trailing
zeros and U+2212 minus signs do not matter (``$1,080.00`` = ``1080``, ``3/4`` = ``0.75``).
lm-evaluation-harness's two GSM8K filters are kept beside it as extra metrics
(:func:`strict_match`, :func:`flexible_match`) so a run can be set against published numbers.
MATH is graded with math-verify, which parses ``\\boxed{}`` LaTeX and compares the expressions
symbolically; ProntoQA by the True/False verdict after ``####``, else the last such word.

Checkers take ``(response, problem)`` and read only ``problem.answer`` (the reference solution),
so this module does not import :mod:`sirt.tasks.registry`, which registers them in ``CHECKERS``.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

from sirt.tasks.problem import Problem

NUMBER_RE = re.compile(
    r"(?:(?<![\w)\]}])(?P<sign>-))?(?:[$\u20ac\u00a3\u00a5]\s?)?(?P<sign2>-)?"  # -5, -$5, $-5 (not 10-3)
    r"(?:\\frac\{(?P<num>\d+)\}\{(?P<den>\d+)\}"  # LaTeX fraction
    r"|(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?P<dec>\.\d+)?(?:\s*/\s*(?P<over>\d+)(?!\.\d))?"  # 1,234.5 or 3/4
    r"|(?<![\w.])(?P<bare>\.\d+))"  # .5
)
BOXED_RE = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")
PHRASE_RE = re.compile(r"\banswer(?:\s+is\b(?!\s+not\b)|\**\s*:)", re.IGNORECASE)
MARKUP_RE = re.compile(r"(?:[\s*:#$\u20ac\u00a3\u00a5(\[{]|\\boxed\{|\\\(|\\\[)*")
HEADING_RE = re.compile(r"\d+[.):]\s+[A-Za-z]")  # "#### 3. Total cost": a numbered heading, not an answer
CLAUSE_END_RE = re.compile(r"\.(?=\s|$)|[;\n]")
VERDICT_RE = re.compile(r"\b(true|false)\b", re.IGNORECASE)
STRICT_RE = re.compile(r"#### (\-?[0-9\.\,]+)")  # lm-evaluation-harness gsm8k, strict-match
FLEXIBLE_RE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")  # ... flexible-extract (its last match)
IGNORED_RE = [re.compile(r","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$")]


def _normalise(text: str) -> str:
    """Unicode minus, LaTeX fraction spellings and spacing/dollar escapes become plain forms."""
    for old, new in (("\u2212", "-"), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\!", ""), ("\\,", ""),
                     ("\\$", "$")):
        text = text.replace(old, new)
    return text


def _to_fraction(match: re.Match) -> Fraction | None:
    """The exact value of one NUMBER_RE match (None for a fraction over zero)."""
    sign = -1 if match["sign"] or match["sign2"] else 1
    if match["num"] is not None:
        numerator, denominator = int(match["num"]), int(match["den"])
    elif match["bare"] is not None:
        numerator, denominator = Fraction(match["bare"]), 1
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


def _result(clause: str) -> Fraction | None:
    """The value a clause states: the number after its last ``=`` (``5 + 3 = 8``), else its first number."""
    tail = clause.rsplit("=", 1)[-1] if "=" in clause else clause
    value = parse_number(tail)
    return value if value is not None else parse_number(clause)


def _stated(text: str) -> Fraction | None:
    """The value that opens ``text`` (after markup such as ``**``, ``$``, ``\\boxed{``), read to the clause's
    end; None when the text opens with words (``#### Step 1: ...``, "the answer is not ...")."""
    text = _normalise(text)
    rest = text[MARKUP_RE.match(text).end():]
    if NUMBER_RE.match(rest) is None:
        return None
    end = CLAUSE_END_RE.search(rest)
    return _result(rest[: end.start()] if end else rest)


def final_number(response: str) -> Fraction | None:
    """The response's final answer by sirt's final-answer rule (see the module docstring).

    Stricter cues first, so a worked solution's intermediate numbers never win over a stated answer,
    and the last of each kind, so a self-correction (``#### 12`` ... ``#### 18``) counts as corrected.
    """
    for line in reversed(response.splitlines()):
        tail = line.rsplit("####", 1)[1] if "####" in line else ""
        if tail and not HEADING_RE.match(tail.lstrip(" *")) and (value := _stated(tail)) is not None:
            return value
    cues = [(m.end(), "phrase") for m in PHRASE_RE.finditer(response)]
    cues += [(m.start(), "boxed") for m in BOXED_RE.finditer(response)]
    for start, kind in sorted(cues, reverse=True):
        boxed = BOXED_RE.match(response, start) if kind == "boxed" else None
        value = _result(_normalise(boxed[1])) if boxed else _stated(response[start:])
        if value is not None:
            return value
    return parse_number(response, last=True)


def gsm8k_matches(response: str, problem: Problem) -> bool:
    """GSM8K: the response's final number equals the reference's ``#### n`` exactly."""
    gold = final_number(problem.answer)
    return gold is not None and final_number(response) == gold


def _harness_equal(prediction: str, reference: str) -> bool:
    """lm-evaluation-harness's exact_match for gsm8k: both sides lose commas, ``$``, everything up to
    ``#### `` and a final period, then compare as lower-case strings (so ``18.00`` is not ``18``)."""
    for pattern in IGNORED_RE:
        prediction, reference = pattern.sub("", prediction), pattern.sub("", reference)
    return prediction.lower() == reference.lower()


def strict_match(response: str, problem: Problem) -> bool:
    """lm-eval's strict-match: the first ``#### <digits>`` of the response against the reference."""
    found = STRICT_RE.findall(response)
    return _harness_equal(found[0].strip() if found else "[invalid]", problem.answer)


def flexible_match(response: str, problem: Problem) -> bool:
    """lm-eval's flexible-extract: the last number-like run of the response against the reference."""
    matches = FLEXIBLE_RE.findall(response)
    found = [group for group in matches[-1] if group] if matches else []
    return _harness_equal(found[0].strip() if found else "[invalid]", problem.answer)


HARNESS = {"acc_strict": strict_match, "acc_flexible": flexible_match}
"""The harness's GSM8K metrics, reported beside ``acc`` for tasks whose answers are ``#### <number>``."""
HARNESS_KINDS = {"number", "gsm8k"}


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
