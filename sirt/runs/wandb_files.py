"""Reading W&B's offline run files back: what a run sent to W&B, without a server.

An offline run leaves ``<dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb``: W&B's transaction
log, a LevelDB-style log of ``wandb.proto.wandb_internal_pb2.Record`` messages (blocks of 32 KiB,
each record a 7-byte header — CRC-32 of type and data, length, type — and its data, long records
in pieces). wandb 0.31 ships no reader of its own (its ``DataStore`` is gone), so this is one:
the tests read back what reached W&B, and ``wandb sync`` uploads exactly these records.

A file cut short (the writer killed mid-record) is read up to its last whole record.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version 0
RECORD = struct.Struct("<IHB")  # CRC-32, length, type
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator[Any]:
    """The ``Record`` messages of one ``.wandb`` file, in the order they were written."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if len(data) < HEADER.size:
        return
    ident, magic, version = HEADER.unpack_from(data)
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, pieces = HEADER.size, b""
    while True:
        left = BLOCK - pos % BLOCK
        if left < RECORD.size:  # the rest of a block too short for a header is padding
            pos += left
            continue
        if pos + RECORD.size > len(data):
            return
        crc, length, kind = RECORD.unpack_from(data, pos)
        payload = data[pos + RECORD.size : pos + RECORD.size + length]
        if kind == 0 or len(payload) < length or zlib.crc32(payload, zlib.crc32(bytes([kind]))) != crc:
            return  # zeros or a record cut short: the writer stopped here
        pos += RECORD.size + length
        if kind in (FIRST, MIDDLE):
            pieces = (b"" if kind == FIRST else pieces) + payload
            continue
        record = pb.Record()
        record.ParseFromString(pieces + payload if kind == LAST else payload)
        pieces = b""
        yield record


def _items(items: Iterable[Any], into: dict[str, Any]) -> dict[str, Any]:
    """History, summary or config items (``key`` or ``nested_key`` and ``value_json``) into a dict."""
    for item in items:
        keys = list(item.nested_key) or [item.key]
        node = into
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = json.loads(item.value_json)
    return into


def offline_runs(root: str | Path, run_id: str | None = None) -> list[Path]:
    """Every ``run-<id>.wandb`` under ``root`` (a run directory or its ``wandb/``), oldest segment first."""
    pattern = f"run-{run_id}.wandb" if run_id else "run-*.wandb"
    return sorted(Path(root).rglob(pattern), key=lambda p: p.parent.name.split("-")[2])


def history(paths: str | Path | Iterable[str | Path]) -> list[dict[str, Any]]:
    """The history rows of one or more ``.wandb`` files, in order (media as their JSON references)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    return [_items(r.history.item, {}) for p in paths for r in records(p) if r.HasField("history")]


def read_run(path: str | Path) -> dict[str, Any]:
    """One ``.wandb`` file as a dict: id, project, group, job_type, name, tags, config, history, summary,
    exit_code (None when the run never finished), artifacts (name, type, aliases, files) and n_stats
    (system metric samples)."""
    run: dict[str, Any] = {"history": [], "summary": {}, "exit_code": None, "artifacts": [], "n_stats": 0}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run.update(id=r.run.run_id, project=r.run.project, group=r.run.run_group, job_type=r.run.job_type,
                       name=r.run.display_name, config=_items(r.run.config.update, {}), tags=list(r.run.tags))
        elif kind == "history":
            run["history"].append(_items(r.history.item, {}))
        elif kind == "summary":
            _items(r.summary.update, run["summary"])
            for item in r.summary.remove:
                run["summary"].pop(item.key or item.nested_key[0], None)
        elif kind == "exit":
            run["exit_code"] = r.exit.exit_code
        elif kind == "artifact":
            run["artifacts"].append({"name": r.artifact.name, "type": r.artifact.type,
                                     "aliases": list(r.artifact.aliases),
                                     "files": sorted(e.path for e in r.artifact.manifest.contents)})
        elif kind == "stats":
            run["n_stats"] += 1
    return run
