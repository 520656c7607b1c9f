"""The two kinds of bad input; every layer raises them, so they sit at the bottom."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input from the user (a config value, a data file, a missing model): one clear message."""


class ConfigError(InputError):
    """A config value that cannot run; the message names the field."""
