"""Schema objects made from the YAML, for code that needs a config without a command line (tests, the organism).

The YAML under ``conf/`` is the only place a default is written, so code never builds ``XSchema(...)`` from
values of its own: it takes the default config's section (:func:`default`) or one option file (:func:`option`)
and states what it changes.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from operator import attrgetter
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from sirt.config.compose import CONF_DIR, compose
from sirt.config.errors import ConfigError
from sirt.config.schema import Config
from sirt.config.validate import validate

T = TypeVar("T")


@functools.cache
def _default_config() -> Config:
    return validate(compose())


def default(section: str, /, **changes: Any) -> Any:
    """The schema object at ``section`` (``"dataset"``, ``"model.tiny"``; ``""``: the whole config) of the
    default config, with ``changes``."""
    node = copy.deepcopy(attrgetter(section)(_default_config()) if section else _default_config())
    return dataclasses.replace(node, **changes) if changes else node


def option_node(group: str, name: str) -> DictConfig:
    """``conf/<group>/<name>.yaml`` as Hydra composes it, for files whose defaults list names options of their own
    group (``_base``, ``default``) and ``_self_``; reads the files alone (no Hydra state), so a running app can call it.
    """
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"{group}={name}: no such option in conf/{group}")
    node = OmegaConf.load(path)
    parts = []
    for entry in node.pop("defaults", ["_self_"]):
        if entry == "_self_":
            parts.append(node)
        elif isinstance(entry, str):
            parts.append(option_node(group, entry))
        else:
            raise ConfigError(f"conf/{group}/{name}.yaml: its defaults list reaches other groups; compose it instead")
    if "_self_" not in node and node not in parts:
        parts.append(node)
    return OmegaConf.merge(*parts)


def option(group: str, name: str, schema: type[T], **changes: Any) -> T:
    """``conf/<group>/<name>.yaml`` (with ``changes``) as its schema object."""
    merged = OmegaConf.merge(OmegaConf.structured(schema), option_node(group, name), changes)
    return OmegaConf.to_object(merged)
