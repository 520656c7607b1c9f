"""Atomic file writes, JSONL and markdown tables: every file of a run directory goes through here."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from sirt.config.errors import InputError


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]],
                   fmt: Callable[[Any], str] = str) -> list[str]:
    """A GitHub markdown table's lines: the header, its rule, one line per row (cells through ``fmt``; a ``|``
    inside a cell escaped, so a value cannot split its row)."""
    def cell(value: Any) -> str:
        return (value if isinstance(value, str) else fmt(value)).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file sirt wrote ([] if it does not exist); a damaged line is an InputError."""
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise InputError(f"{path}: line {n} is damaged ({err.msg}); restore the file or start the run "
                                 "again in a new hydra.run.dir") from None
    return rows


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)
