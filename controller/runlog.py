"""The append-only run log: one JSON line per slot, flushed as it is written.

The first line is a ``start`` record (deployment, bundle hash, seed, agents); then exactly
one ``slot`` record per slot (actions, the configurations the boards reported as applied,
which agents missed, metrics); a ``stop`` record closes a clean run. Readers tolerate a
torn last line (a crash mid-write), so a log is always readable up to the last full slot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "tolist"):  # torch tensors
        return value.tolist()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


class RunLog:
    """Append JSON records to ``path`` (created with its parent directory)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def append(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(_jsonable(record), separators=(",", ":")) + "\n")
        self._fh.flush()  # one slot never sits in a buffer: a crash loses at most the slot in flight

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_runlog(path: str | os.PathLike, kind: str | None = None) -> list[dict[str, Any]]:
    return list(iter_runlog(path, kind))


def iter_runlog(path: str | os.PathLike, kind: str | None = None) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                return  # torn last line of a crashed writer
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if kind is None or rec.get("type") == kind:
                yield rec
