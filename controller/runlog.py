"""The append-only run log: one JSON line per slot, written with one ``write`` as it is made.

The first line is a ``start`` record (deployment, bundle hash, seed, agents); then exactly
one ``slot`` record per slot (actions, the configurations the boards reported as applied,
which agents missed, metrics); a ``stop`` record closes a clean run. Readers tolerate a
torn last line (a crash mid-write), so a log is always readable up to the last full slot.

Encoding: the C JSON encoder walks the record itself and calls :func:`_leaf` only for the
values it cannot encode (numpy arrays and scalars, torch tensors, a ``SurfaceConfig``), so a
slot record costs one pass instead of a Python walk over every dict and list. A record with a
non-finite float anywhere takes the old recursive :func:`_jsonable` walk, so every line is
byte-for-byte what that walk gave (a non-finite Python float as the string ``"nan"``).
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


def _leaf(value: Any) -> Any:
    """What the encoder cannot write itself, as :func:`_jsonable` turns it into JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "tolist"):  # numpy arrays, torch tensors
        return value.tolist()
    raise TypeError(f"run log: a {type(value).__name__} cannot be written as JSON")


_FAST = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False, default=_leaf)
_SLOW = json.JSONEncoder(separators=(",", ":"))


def encode_record(record: dict[str, Any]) -> bytes:
    """One run-log line (UTF-8, with its newline)."""
    try:
        text = _FAST.encode(record)
    except (ValueError, TypeError):
        # a non-finite float (or a key / value the encoder refuses): the recursive walk
        text = _SLOW.encode(_jsonable(record))
    return (text + "\n").encode("utf-8")


class RunLog:
    """Append JSON records to ``path`` (created with its parent directory).

    Each record is one ``write`` on an ``O_APPEND`` descriptor (no buffer to flush): a line
    never sits in memory, and another writer appending to the same file cannot land inside it.
    A crash loses at most the slot in flight (a torn last line, which readers skip)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict[str, Any]) -> None:
        if self._fd is None:
            raise ValueError(f"run log {self.path}: append after close")
        line = encode_record(record)
        written = os.write(self._fd, line)
        while written < len(line):   # a short write (a full disk, a signal): finish the line
            written += os.write(self._fd, line[written:])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RunLogTail:
    """The records a growing run log gained since the last :meth:`poll`, each line read once.

    A supervisor that shows a run's progress several times a second would otherwise re-read and
    re-parse the whole file each time: over a day of slots that is gigabytes per refresh, on the
    cores the control loop runs on. A line without its newline yet (being written, or torn by a
    crash) waits for the rest; a file replaced or truncated under the reader is read from its start."""

    def __init__(self, path: str | os.PathLike, kind: str | None = None) -> None:
        self.path = Path(path)
        self.kind = kind
        self._offset = 0
        self._partial = b""
        self._inode: int | None = None

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if self._inode is not None and (st.st_ino != self._inode or st.st_size < self._offset):
                    self._offset, self._partial = 0, b""
                self._inode = st.st_ino
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        out = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:     # JSONDecodeError, UnicodeDecodeError; an empty line
                continue
            if isinstance(rec, dict) and (self.kind is None or rec.get("type") == self.kind):
                out.append(rec)
        return out


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
