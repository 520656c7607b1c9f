"""One formula for every per-round random stream, so a resumed round draws exactly what an uninterrupted one did."""

from __future__ import annotations

import hashlib

STREAMS = {  # stream -> multiplier of the run's seed (kept as they were first written: runs stay reproducible)
    "torch": 1009,  # torch's and Python's global generators at the start of a round
    "prompts": 7919,  # which train questions a round uses (prompts_per_round, curricula)
    "train_rows": 104729,  # which external items and replayed verdicts a round trains on
    "sft": 1,  # the SFT trainer's seed (data order, dropout)
    "generate": 15485863,  # the round's sampling: per chunk (transformers) or per request (vLLM)
}


def round_seed(seed: int, t: int, stream: str) -> int:
    """The seed of ``stream`` in round ``t`` of a run seeded with ``seed``."""
    return seed * STREAMS[stream] + t


def request_seed(base: int, prompt: str, j: int) -> int:
    """The seed of sample ``j`` of ``prompt`` in a round seeded with ``base``: a hash of the three, so no two
    samples of a round share one (``base + i`` per prompt and ``+ j`` per sample overlap), and a prompt's
    samples never depend on where it stands in a batch, a shard or a list (31 bits, as vLLM takes them)."""
    digest = hashlib.blake2b(f"{base}\x00{j}\x00{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 2**31


def chunk_seed(base: int, prompts: list[str]) -> int:
    """The seed of one generate call over ``prompts`` in a round seeded with ``base``: a hash of both, so the
    chunk's samples are the same whichever rank draws it and whatever else the round holds."""
    return request_seed(base, "\x00".join(prompts), len(prompts))
