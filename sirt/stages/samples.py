"""A sampled response: what every stage after the solver reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Sample:
    """One response: its text, its token count (EOS included) and its total log-prob."""

    text: str
    n_tokens: int
    logprob: float

    @property
    def nll(self) -> float:
        """U(y|x) = -log pi(y|x), the response's total uncertainty."""
        return -self.logprob
