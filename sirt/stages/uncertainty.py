"""Uncertainty: U = -log pi(y|x) of a response under the current model, averaged over prompts.

U_s is the solver's uncertainty, E_{y ~ pi}[-log pi(y|x)]: paper 1 estimates it from one sample
per prompt; sirt averages all N samples it has drawn anyway — the same expectation with N times
less variance, so that G is not drowned in sampling noise (the one-sample estimate is logged as
``U_s_first``). U_v is measured on the verifier's choice; their gap G = U_s - U_v is the quantity
whose dynamics paper 1 models. Totals (nats per response) follow the paper; per-token means
(``*_tok``) make models with different lengths comparable.
"""

from __future__ import annotations

from collections.abc import Sequence

from sirt.stages.samples import Sample


def mean_uncertainty(samples: Sequence[Sample]) -> tuple[float, float]:
    """(mean total NLL, mean per-token NLL) over the given samples."""
    if not samples:
        return float("nan"), float("nan")
    total = sum(s.nll for s in samples) / len(samples)
    per_token = sum(s.nll / max(s.n_tokens, 1) for s in samples) / len(samples)
    return total, per_token


def standard_error(per_prompt: Sequence[float]) -> float:
    """Standard error of a mean over prompts: the sampling noise of U in one round (the fit's weights)."""
    n = len(per_prompt)
    if n < 2:
        return float("nan")
    mean = sum(per_prompt) / n
    return (sum((x - mean) ** 2 for x in per_prompt) / (n - 1) / n) ** 0.5


def solver_verifier_gap(solver: Sequence[Sequence[Sample]], verifier: Sequence[Sample]) -> dict[str, float]:
    """U_s (over every prompt's N samples), U_v (one choice per prompt) and G, in total and per-token form,
    with the standard errors of U_s and U_v over prompts."""
    U_s, U_s_tok = mean_uncertainty([s for row in solver for s in row])
    U_v, U_v_tok = mean_uncertainty(verifier)
    U_s_first, _ = mean_uncertainty([row[0] for row in solver if row])
    return {"U_s": U_s, "U_v": U_v, "G": U_s - U_v, "U_s_tok": U_s_tok, "U_v_tok": U_v_tok,
            "G_tok": U_s_tok - U_v_tok, "U_s_first": U_s_first,
            "U_s_se": standard_error([mean_uncertainty(row)[0] for row in solver if row]),
            "U_v_se": standard_error([s.nll for s in verifier])}
