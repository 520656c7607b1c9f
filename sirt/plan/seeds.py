"""One formula for every per-round random stream, so a resumed round draws exactly what an uninterrupted one did."""

from __future__ import annotations

STREAMS = {  # stream -> multiplier of the run's seed (kept as they were first written: runs stay reproducible)
    "torch": 1009,  # torch's and Python's global generators at the start of a round
    "prompts": 7919,  # which train questions a round uses (prompts_per_round, curricula)
    "train_rows": 104729,  # which external items and replayed verdicts a round trains on
    "sft": 1,  # the SFT trainer's seed (data order, dropout)
}


def round_seed(seed: int, t: int, stream: str) -> int:
    """The seed of ``stream`` in round ``t`` of a run seeded with ``seed``."""
    return seed * STREAMS[stream] + t
