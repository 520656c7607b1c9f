"""A problem and its GSM8K-style answer: rows of ``{question, answer, level}``.

Every answer ends in ``#### <number>`` so that one extractor serves the embedded arithmetic
task and GSM8K alike; other kinds of answer name their checker in ``Problem.kind``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ANSWER_RE = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


@dataclass(frozen=True)
class Problem:
    """One task instance; ``answer`` is a full reference solution ending in ``#### n``.

    ``kind`` names the ground-truth checker in :data:`CHECKERS` (how a response is graded).
    """

    question: str
    answer: str
    level: int
    kind: str = "number"

    @property
    def target(self) -> str:
        """The final number of the reference solution."""
        value = extract_answer(self.answer)
        assert value is not None, f"reference solution has no '#### n': {self.answer!r}"
        return value


def extract_answer(text: str) -> str | None:
    """The number after the first ``####`` (GSM8K convention), normalised; None if absent."""
    match = ANSWER_RE.search(text)
    if match is None:
        return None
    number = match.group(1).replace(",", "")
    if "." in number:
        number = number.rstrip("0").rstrip(".")
    return str(int(number)) if re.fullmatch(r"-?\d+", number) else number


def number_matches(response: str, problem: Problem) -> bool:
    """GSM8K-style check: the final numbers after ``####`` agree."""
    return extract_answer(response) == problem.target
