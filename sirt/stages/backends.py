"""Generation backends by ``generation.backend`` name (the option names the config accepts).

Every backend's ``sample`` has one signature, ``(model, tokenizer, prompts, cfg, n=None, greedy=False,
desc=...) -> list[list[Sample]]``, and returns per-token ids and plain-model log-probs with every sample
(the probe of :mod:`sirt.stages.agreement` reads them). Around it a backend says whether it can run here,
how it ends, the extra length limit it imposes and the device memory its engine reserves. vLLM is imported
only when chosen, so a CPU machine never loads it. Adding a backend is one :class:`Backend` entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sirt.config.schema import GenerationSchema
from sirt.stages.samples import Sample

SampleFn = Callable[..., list[list[Sample]]]


def _nothing(*args) -> None:
    return None


@dataclass(frozen=True)
class Backend:
    sample: Callable[[], SampleFn]  # the sampling function (imported when first asked for)
    check_available: Callable[[], None] = _nothing  # one InputError naming what to install, before compute
    close: Callable[[], None] = _nothing  # the end of a run: free engines, groups, temp dirs
    length_limit: Callable[[GenerationSchema], tuple[str, int] | None] = _nothing  # (field, tokens)
    pool_bytes: Callable[[GenerationSchema, int], int | None] = _nothing  # memory reserved of a device
    chunk_size: Callable[[GenerationSchema, int, int, int], int] = lambda g, prompts, ranks, n: _per_call(g, n)
    """Prompts per chunk of a round over the ranks: (generation, prompts, ranks, samples per prompt) -> size.
    The transformers backend's samples depend on its batches, so its chunks are its own batches (fixed by the
    prompts alone); vLLM's do not (a seed per request), so each rank takes one large share."""


def _per_call(g: GenerationSchema, n: int) -> int:
    from sirt.stages.generation import prompts_per_call

    return prompts_per_call(g, n)


def _transformers() -> SampleFn:
    from sirt.stages.generation import sample

    return sample


def _vllm() -> SampleFn:
    from sirt.stages.generation_vllm import sample

    return sample


def _require_vllm() -> None:
    from sirt.stages.generation_vllm import require_vllm

    require_vllm()


def _teardown_vllm() -> None:
    import sys

    if "sirt.stages.generation_vllm" in sys.modules:  # an engine exists only where the module was used
        sys.modules["sirt.stages.generation_vllm"].teardown()


BACKENDS: dict[str, Backend] = {
    "transformers": Backend(_transformers),
    "vllm": Backend(_vllm, _require_vllm, _teardown_vllm,
                    length_limit=lambda g: ("generation.vllm.max_model_len", g.vllm.max_model_len),
                    pool_bytes=lambda g, total: int(g.vllm.gpu_memory_utilization * total),
                    chunk_size=lambda g, prompts, ranks, n: max(1, -(-prompts // ranks))),
}


def backend(cfg: GenerationSchema) -> Backend:
    return BACKENDS[cfg.backend]


def sampler(cfg: GenerationSchema) -> SampleFn:
    """The sampling function of ``generation.backend``."""
    return backend(cfg).sample()
