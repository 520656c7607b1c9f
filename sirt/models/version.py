"""Which weights a model holds, as the loop knows them: a number that each training round renews.

A sampler that keeps its own copy of the weights (vLLM) pushes them when this number changes. It is
driven by what the loop did (:func:`bump` after every SFT and merge), not read from tensor metadata:
PEFT's merge and the fp32 master copy write through ``.data``, which changes neither a tensor's
``data_ptr()`` nor its ``_version``, so a check on those misses every merged round.
"""

from __future__ import annotations

import itertools

from torch import nn

ATTRIBUTE = "sirt_weights_version"
_numbers = itertools.count(1)  # one sequence per process: no two models, nor two rounds, share a number


def bump(model: nn.Module) -> int:
    """Give ``model`` a new version number (its weights changed); returns it."""
    number = next(_numbers)
    setattr(model, ATTRIBUTE, number)
    return number


def weights_version(model: nn.Module) -> int:
    """The number of the weights ``model`` holds; a model the loop has not seen before gets a new one."""
    number = getattr(model, ATTRIBUTE, None)
    return bump(model) if number is None else number
