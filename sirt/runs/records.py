"""The run directory's two record types, typed: a row of ``metrics.jsonl`` and a record of ``selections.jsonl``.

Every part that writes or reads them (the round, the tracker, the fit, compare) names these types, so the
contract is written once. ``total=False`` on the metrics row: rows of older runs may lack the newer keys.
"""

from __future__ import annotations

from typing import TypedDict


class SelectionRecord(TypedDict):
    """One prompt of a round: its N samples with scores, NLLs and ground truth, and the picks."""

    prompt: str  # the solver's prompt text
    question: str  # the dataset question
    level: int  # difficulty level
    reference: str  # the dataset's reference solution
    samples: list[str]  # the N responses
    n_tokens: list[int]  # tokens per response (EOS included)
    nll: list[float]  # U(y|x) = -log pi(y|x) per response
    scores: list[float]  # self-verification scores s in [0, 1]
    correct: list[bool]  # ground truth per response (never seen by the loop's choices)
    pick: int | None  # Best-of-N among s >= sigma (None: no sample reached sigma)
    verifier_choice: int  # the sample U_v is measured on


class MetricsRow(TypedDict, total=False):
    """One round of ``metrics.jsonl`` (round 0 measures the untouched model)."""

    round: int
    acc: float  # greedy accuracy on the test split
    acc_strict: float  # ... by lm-eval's gsm8k strict-match (tasks answered by "#### n" only)
    acc_flexible: float  # ... by lm-eval's gsm8k flexible-extract
    acc_level: dict[str, float]  # ... per difficulty level
    acceptance_level: dict[str, float]  # share of prompts with a pick, per level
    n_selected_level: dict[str, int]
    pass_at_k: dict[str, float]  # unbiased pass@k from the N samples
    U_s: float  # solver uncertainty: mean NLL of the samples
    U_v: float  # verifier uncertainty: mean NLL of the verifier's choices
    G: float  # the solver-verifier gap U_s - U_v
    U_s_tok: float
    U_v_tok: float
    G_tok: float
    U_s_first: float
    U_s_se: float  # standard errors over prompts
    U_v_se: float
    acceptance: float  # share of prompts with a pick
    verifier_auc: float  # within-question AUC of the scores
    pick_precision: float  # share of picks that are right
    sample_acc: float  # share of samples that are right
    n_selected: int
    tokens_generated: int
    backend_logprob_err: float  # largest per-token |sampler log-prob - training model's| over generation.probe_samples
    eta: float  # share of the external budget this round trained on
    ext_used: int  # external items used
    n_train_rows: int
    train_loss: float
    train_steps: int
    seconds: dict[str, float]  # per stage: generate, verify, select, eval, train, checkpoint
