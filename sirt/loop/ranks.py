"""Ranks of one job (``torchrun --nproc_per_node K -m sirt.train ...`` or ``accelerate launch``): who does what.

Every rank samples and verifies its share of a round's fixed chunks; the results are gathered
(``all_gather_object``: gloo on a CPU, NCCL on GPUs) so that every rank holds the whole round, and the
selection, the external items and the SFT rows are the same everywhere. SFT runs through DDP (the HF
Trainer sees the process group) with the global batch of one process. Rank 0 alone writes the run
directory, W&B and the fit; the others wait for its commit at a barrier. A single process is a world of
one, and every path below is the same code with K = 1.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")
TIMEOUT = datetime.timedelta(minutes=10)  # a collective that waits longer (a rank died mid-round) raises


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def chunked(self, fn: Callable[[list[T], int], list[R]], items: Sequence[T], size: int,
                key: Callable[[T], Any] | None = None, desc: str | None = None) -> list[R]:
        """``fn(chunk, c)`` over a fixed partition of ``items`` (sorted by ``key``, then ``size`` at a time),
        chunk c on rank c mod K, the results gathered and put back in the order of ``items``.

        The partition depends on the items alone, never on K, so a chunk's result is the same on any
        number of ranks (given the same kernels): one process is K = 1 of the same code.
        """
        order = sorted(range(len(items)), key=lambda i: key(items[i])) if key else list(range(len(items)))
        chunks = [order[i : i + max(1, size)] for i in range(0, len(order), max(1, size))]
        own = [c for c in range(len(chunks)) if c % self.size == self.rank]
        bar = tqdm(own, desc=desc, leave=False, disable=desc is None or len(own) < 2)  # one bar over the chunks
        mine = {c: fn([items[i] for i in chunks[c]], c) for c in bar}
        done = {c: r for part in self.gather(mine) for c, r in part.items()}
        out: list[R | None] = [None] * len(items)
        for c, chunk in enumerate(chunks):
            for i, result in zip(chunk, done[c]):
                out[i] = result
        return out  # type: ignore[return-value]


def launched() -> bool:
    """Whether a launcher (torchrun, accelerate launch, SLURM through either) started several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world() -> World:
    """This process's world: the launcher's ranks (the process group made once), else one process."""
    if not launched():
        return World()
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=TIMEOUT)
    return World(dist.get_rank(), dist.get_world_size())


SOLO = World()  # one process: the world of every run not started by a launcher
