"""Where the YAML lives, and the one way code (tests, the organism, notebooks) composes a config from it.

YAML under ``conf/`` is the single source of every default; code never writes a default of its own.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose(*overrides: str, config_name: str = "config") -> DictConfig:
    """The config ``python -m sirt.<app> OVERRIDES`` would run with (without Hydra's own ``hydra`` block)."""
    if GlobalHydra.instance().is_initialized():
        raise RuntimeError("compose() builds a config outside a Hydra app; inside one, use the app's config")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    return cfg
