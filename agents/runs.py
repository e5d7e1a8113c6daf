"""Run directories: layout, resolved configs, CSV metrics, checkpoints, learning curves.

Layout of a run directory ``RUN``::

    RUN/config.json          resolved configuration (train, scenario, algorithm), JSON
    RUN/config.toml          the same, TOML (readable, editable for a new run)
    RUN/metrics.csv          training metrics, one row per log interval
    RUN/eval.csv             deterministic evaluations during training (Fig. 3 curves)
    RUN/checkpoints/latest.pt   everything to resume exactly
    RUN/learning_curve.png   reward / sum rate vs training steps
    RUN/bundle/              the exported actor bundle (agents/bundle.py)
    RUN/tb/                  TensorBoard events, only when tensorboard is installed

Every file that a crash could leave half-written is written to a temporary file in the same
directory and moved in place with ``os.replace``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from twin.errors import ConfigError

CONFIG_JSON = "config.json"
CONFIG_TOML = "config.toml"
METRICS_CSV = "metrics.csv"
EVAL_CSV = "eval.csv"
CHECKPOINT = "checkpoints/latest.pt"
CURVE_PNG = "learning_curve.png"
BUNDLE_DIR = "bundle"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()  # the process umask, read once (reading it means setting it)
FILE_MODE = 0o666 & ~UMASK  # what open() would give; mkstemp alone gives 0600


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch_atomic(obj: Any, path: str | os.PathLike) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_atomic(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint this package wrote: tensors and plain containers only when possible."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--resume: no checkpoint at {path}; start without --resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        # An algorithm may keep non-tensor state (e.g. numpy RNG state) in its state_dict; this
        # file is the user's own checkpoint, written by this package, so a full load is acceptable.
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise ConfigError(f"{path}: checkpoint is unreadable ({str(exc).splitlines()[0]}); delete it to start over") from None


class RunLock:
    """An exclusive lock on a run directory (RUN/.lock, flock: released if the process dies)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"--out: another process is training into {self.path.parent}; wait for it or choose a new directory") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


# --------------------------------------------------------------------------- TOML

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escaping is valid TOML basic-string escaping
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ConfigError(f"config: cannot write a {type(v).__name__} to TOML")


def to_toml(config: Mapping[str, Any]) -> str:
    """Nested dict -> TOML text (tables for nested dicts, scalars and arrays as values)."""
    lines: list[str] = []

    def table(prefix: str, d: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in d.items() if not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in d.items() if isinstance(v, Mapping)]
        if prefix and (scalars or not tables):
            lines.append(f"[{prefix}]")
        for k, v in scalars:
            # TOML has no null: leave the key out (a reload then takes the field's default).
            lines.append(f"# {_key(k)} = (none)" if v is None else f"{_key(k)} = {_toml_value(v)}")
        if scalars:
            lines.append("")
        for k, v in tables:
            table(f"{prefix}.{_key(k)}" if prefix else _key(k), v)

    table("", config)
    return "\n".join(lines).rstrip() + "\n"


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)


def save_config(run_dir: Path, config: Mapping[str, Any]) -> None:
    write_atomic(run_dir / CONFIG_JSON, json.dumps(config, indent=2, sort_keys=False) + "\n")
    write_atomic(run_dir / CONFIG_TOML, to_toml(config))


def load_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG_JSON
    if not path.is_file():
        raise ConfigError(f"RUN: {path} is missing; is {run_dir} a run directory written by `ristwin train`?")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    # A hand-edited or foreign config.json must fail here, by name, not as a KeyError later.
    train = config.get("train") if isinstance(config, dict) else None
    if not isinstance(train, dict) or not isinstance(config.get("scenario"), dict):
        raise ConfigError(f"{path}: expected an object with 'train' and 'scenario' tables, "
                          "as written by `ristwin train`")
    for key in ("scenario", "algo"):
        if not isinstance(train.get(key), str):
            raise ConfigError(f"{path}: train.{key} is missing or not a string; "
                              "was it written by `ristwin train`?")
    return config


# --------------------------------------------------------------------------- CSV metrics

class MetricsCSV:
    """Append-only CSV whose header grows when new metric names appear (file rewritten once).

    Rows are keyed by ``step``; ``truncate_after(step)`` drops rows logged after a checkpoint,
    so a resumed run's CSV equals an uninterrupted run's.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.fields: list[str] = []
        if self.path.is_file():
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), None)
            self.fields = list(header or [])

    def read(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: Iterable[Mapping[str, Any]]) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.fields, extrasaction="raise", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in self.fields})
        write_atomic(self.path, buf.getvalue())

    def append(self, row: Mapping[str, Any]) -> None:
        row = {k: _fmt(v) for k, v in row.items()}
        new = [k for k in row if k not in self.fields]
        if new or not self.path.is_file():
            old_rows = self.read()
            self.fields += new
            self._rewrite([*old_rows, row])
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields, lineterminator="\n").writerow({k: row.get(k, "") for k in self.fields})

    def ensure(self, fields: Iterable[str]) -> None:
        """Create the file with a header if it does not exist (a run shorter than one interval)."""
        if not self.path.is_file():
            self.fields = list(fields)
            self._rewrite([])

    def truncate_after(self, step: int) -> None:
        if self.path.is_file():
            self._rewrite([r for r in self.read() if int(float(r["step"])) <= step])


def _fmt(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item()
    if isinstance(v, float):
        return repr(v)  # round-trips exactly, so CSVs of identical runs compare equal
    return v


def read_series(path: Path, key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one CSV column, skipping empty cells."""
    xs, ys = [], []
    for row in MetricsCSV(path).read():
        if row.get(key, "") not in ("", None):
            xs.append(float(row["step"]))
            ys.append(float(row[key]))
    return xs, ys


# --------------------------------------------------------------------------- TensorBoard

class TensorBoard:
    """SummaryWriter when tensorboard is installed; silently nothing otherwise (it is optional)."""

    def __init__(self, log_dir: Path) -> None:
        self._writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package
        except Exception:
            return
        self._writer = SummaryWriter(str(log_dir))

    @property
    def enabled(self) -> bool:
        return self._writer is not None

    def scalars(self, step: int, values: Mapping[str, Any]) -> None:
        if self._writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and k != "step":
                self._writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
