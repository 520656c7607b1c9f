"""The contract of every ``python -m sirt.<cli>``: bad input is refused in one line, exit code 2, no traceback.

Each command line app goes through one of three doors: :class:`Parser` for argparse apps (a bad argument
is one ``sirt.<cli>: ...`` line, not argparse's usage block), :func:`refusals` around the work of any app
(an :class:`~sirt.config.errors.InputError` becomes that line), and :class:`HydraCommand` for the Hydra
apps (a command line Hydra cannot compose, such as an unknown key, is that line too, not Hydra's
multi-line message). Here, below every layer, so that no app imports another to share it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from sirt.config.errors import InputError

REFUSED = 2  # the exit code of a refused command


def refuse(cli: str, what: object) -> NoReturn:
    """End the command ``sirt.<cli>`` with one line on stderr naming what is wrong, and exit code 2."""
    text = " ".join(str(what).split()) or type(what).__name__
    print(f"sirt.{cli}: {text}", file=sys.stderr)
    sys.exit(REFUSED)


@contextlib.contextmanager
def refusals(cli: str) -> Iterator[None]:
    """Bad input raised by the work inside (an InputError from any layer) ends the command in one line."""
    try:
        yield
    except InputError as err:
        refuse(cli, err)


class Parser(argparse.ArgumentParser):
    """argparse whose errors follow the contract: ``sirt.<cli>: <what is wrong>`` (see ``--help``), exit 2."""

    def __init__(self, cli: str, **kwargs):
        super().__init__(prog=f"python -m sirt.{cli}", **kwargs)
        self.cli = cli

    def error(self, message: str) -> NoReturn:
        refuse(self.cli, f"{message} (see python -m sirt.{self.cli} --help)")


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low`` (argparse names the option when it raises)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be >= {low}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def one_line(err: BaseException) -> str:
    """Hydra's multi-line composition error as one line (its cause appended, the search path left out)."""
    text = str(err).split("\nConfig search path", 1)[0]
    if err.__cause__ is not None and str(err.__cause__) not in text:
        text += f": {err.__cause__}"
    override = getattr(err, "override", None)  # a parse error: name the override
    if override and override not in text:
        text = f"{override!r}: {text}"
    if override and "{" in override:
        text += " (quote a value with braces: \"key='a_{x}'\")"
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


class HydraCommand:
    """A Hydra app under the contract: a command line Hydra cannot compose is refused in one line.

    Hydra prints such errors itself and exits 1; with ``HYDRA_FULL_ERROR=1`` it raises them instead, so
    :meth:`run` sets it until the app's job starts (:meth:`started`, the first thing the job calls), which
    unsets it again for a single run: a job's own unexpected errors are Hydra's to report. A user's own
    ``HYDRA_FULL_ERROR`` is left alone (they asked for Hydra's traces). ``keep`` leaves it set for the
    whole command (sirt.train's sweeps: the sweeper's re-raised job failure then reaches the app).
    """

    def __init__(self, cli: str):
        self.cli, self.job_started, self.full_error, self.keep = cli, False, False, False

    def started(self) -> None:
        self.job_started = True
        if self.full_error and not self.keep:
            self.full_error = False
            os.environ.pop("HYDRA_FULL_ERROR", None)

    def run(self, main: Callable[[], object], keep: bool = False) -> None:
        """``main()`` (a ``@hydra.main`` function); composition errors before the job starts are refused."""
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        with refusals(self.cli):
            check_output_dirs(sys.argv[1:])
        if "HYDRA_FULL_ERROR" not in os.environ:
            os.environ["HYDRA_FULL_ERROR"] = "1"
            self.full_error, self.keep = True, keep
        try:
            with refusals(self.cli):
                main()
        except (HydraException, OmegaConfBaseException, OSError) as err:
            if self.job_started or not self.full_error:
                raise
            refuse(self.cli, one_line(err) if not isinstance(err, OSError) else f"Hydra's output directory: {err}")


OUTPUT_DIRS = ("hydra.run.dir", "hydra.sweep.dir")  # the directories Hydra makes before an app's job starts


def output_dir_problem(path: Path) -> str | None:
    """Why Hydra could not make ``path`` or write in it (a file in the way, a directory not writable); None if fine."""
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a directory"
    nearest = path
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        return f"{nearest} is a file, so {path} cannot be made"
    if not os.access(nearest, os.W_OK | os.X_OK):
        return f"{nearest} is not writable" + ("" if nearest == path else f", so {path} cannot be made")
    return None


def check_output_dirs(argv: list[str]) -> None:
    """The run and sweep directories a command line names, checked before Hydra makes them (InputError).

    Only literal paths are checked; one with an interpolation (``${now:...}``) is left to Hydra.
    """
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        literal = key in OUTPUT_DIRS and sep and value and "${" not in value
        if literal and (problem := output_dir_problem(Path(value))):
            raise InputError(f"{key}={value}: {problem}; choose another {key}")
