"""A sampled response: what every stage after the solver reads."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Sample:
    """One response: its text, its token count (EOS included) and its total log-prob.

    ``token_ids`` and ``token_logprobs`` are the kept tokens and the sampler's log-prob of each, as the
    backend computed them; the sampler agreement probe (:mod:`sirt.stages.agreement`) re-scores a few
    of them with the training model. Empty where a sample did not come from a sampler (a teacher).
    """

    text: str
    n_tokens: int
    logprob: float
    token_ids: list[int] = field(default_factory=list, repr=False)
    token_logprobs: list[float] = field(default_factory=list, repr=False)

    @property
    def nll(self) -> float:
        """U(y|x) = -log pi(y|x), the response's total uncertainty."""
        return -self.logprob
