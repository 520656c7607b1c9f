"""Generation backends by ``generation.backend`` name: each is a ``sample`` function with one signature,
``(model, tokenizer, prompts, cfg, n=None, greedy=False, desc=...) -> list[list[Sample]]``, returning
per-token ids and plain-model log-probs with every sample (the probe of :mod:`sirt.stages.agreement`
reads them). vLLM is imported only when it is chosen, so a CPU machine never loads it.
"""

from __future__ import annotations

from collections.abc import Callable

from sirt.config.schema import GenerationSchema
from sirt.stages.samples import Sample


def _transformers() -> Callable[..., list[list[Sample]]]:
    from sirt.stages.generation import sample

    return sample


def _vllm() -> Callable[..., list[list[Sample]]]:
    from sirt.stages.generation_vllm import sample

    return sample


BACKENDS: dict[str, Callable[[], Callable[..., list[list[Sample]]]]] = {"transformers": _transformers, "vllm": _vllm}


def sampler(cfg: GenerationSchema) -> Callable[..., list[list[Sample]]]:
    """The sampling function of ``generation.backend``."""
    return BACKENDS[cfg.backend]()
