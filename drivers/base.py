"""The surface-driver interface, its errors, and ``open(url)`` which picks a driver by URL scheme.

Every driver (sim, serial, socket, emulated, third-party) offers the same operations:
connect, info, apply(config) -> the configuration the board reports as latched, readback,
status, watchdog, close, and works as a context manager. A readback mismatch (e.g. a stuck
element) is never hidden: ``apply`` raises ``ReadbackMismatch`` or, with
``on_mismatch="return"``, returns the read-back configuration for the caller to compare.
"""

from __future__ import annotations

import abc
import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from urllib.parse import parse_qs, urlsplit

import numpy as np

from twin.errors import ConfigError, DriverError
from twin.surface_config import SurfaceConfig

ENTRY_POINT_GROUP = "ristwin.drivers"

# Plain-dict registry: URL scheme -> driver class or "module:attribute" (imported on use,
# so `import drivers` has no side effects). Third parties add schemes through the
# `ristwin.drivers` entry-point group (name = scheme, value = "pkg.module:DriverClass").
DRIVERS: dict[str, object] = {
    "sim": "drivers.sim_driver:SimDriver",
    "serial": "drivers.serial_driver:SerialDriver",
    "socket": "drivers.serial_driver:SerialDriver",
    "emu": "drivers.emulated:EmulatedDriver",
}


# ------------------------------------------------------------------------------ errors


class LinkError(DriverError):
    """The link to the board failed: no valid reply within the retry budget, or unplugged."""


class NackError(DriverError):
    """The board refused a request with an error code."""

    def __init__(self, message: str, code: int, detail: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail


class ApplyError(DriverError):
    """A configuration was not (verifiably) latched.

    ``latched`` is the state read back after the failure (None when the link is down and
    the board's state is unknown); the message says which.
    """

    def __init__(self, message: str, requested: SurfaceConfig, latched: SurfaceConfig | None) -> None:
        super().__init__(message)
        self.requested = requested
        self.latched = latched


class ReadbackMismatch(DriverError):
    """The board latched something other than the request (stuck element, driver fault)."""

    def __init__(self, requested: SurfaceConfig, applied: SurfaceConfig, mismatched: np.ndarray) -> None:
        shown = ", ".join(str(int(i)) for i in mismatched[:8]) + (" ..." if mismatched.size > 8 else "")
        super().__init__(
            f"readback: {mismatched.size} element(s) latched differently from the request "
            f"(elements {shown}); check those elements' switches or mark them stuck"
        )
        self.requested = requested
        self.applied = applied
        self.mismatched = mismatched


# ------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class BoardInfo:
    n_elements: int
    resolutions: tuple[int, ...]
    max_baud: int
    firmware: str
    protocol_version: int
    max_payload: int = 1024
    codebook_slots: int = 0
    name: str = ""

    def to_dict(self) -> dict:
        return {
            "n_elements": self.n_elements, "resolutions": list(self.resolutions),
            "max_baud": self.max_baud, "firmware": self.firmware,
            "protocol_version": self.protocol_version, "max_payload": self.max_payload,
            "codebook_slots": self.codebook_slots, "name": self.name,
        }


@dataclass(frozen=True)
class BoardStatus:
    uptime_s: float
    supply_v: float
    energy_j: float | None  # harvested-energy buffer, None when the board has none
    boot_count: int
    latch_count: int
    watchdog_s: float  # 0 = disarmed
    safe_active: bool  # the watchdog's safe pattern is latched
    counters: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "uptime_s": self.uptime_s, "supply_v": self.supply_v, "energy_j": self.energy_j,
            "boot_count": self.boot_count, "latch_count": self.latch_count,
            "watchdog_s": self.watchdog_s, "safe_active": self.safe_active, **self.counters,
        }


@dataclass
class ApplyRecord:
    """What the last apply cost and found (for self-tests, benches and run logs)."""

    verified: bool = False
    mismatched: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    retries: int = 0
    seconds: float = 0.0
    host_cpu_s: float = 0.0


# ------------------------------------------------------------------------------ interface


class SurfaceDriver(abc.ABC):
    """One surface behind one URL."""

    url: str = ""

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str) -> "SurfaceDriver":
        """Build an unconnected driver from its URL."""

    @abc.abstractmethod
    def connect(self) -> BoardInfo:
        """Open the link and identify the board."""

    @abc.abstractmethod
    def info(self) -> BoardInfo:
        ...

    @abc.abstractmethod
    def apply(self, config: SurfaceConfig, *, on_mismatch: str = "raise") -> SurfaceConfig:
        """Latch ``config``; return the configuration the board reports as latched.

        on_mismatch="raise" raises ReadbackMismatch when they differ; "return" returns the
        read-back configuration (compare with ``config.mismatched_elements``).
        Raises ApplyError when nothing verifiable was latched.
        """

    @abc.abstractmethod
    def readback(self) -> SurfaceConfig:
        """The latched state as the board reads it back."""

    @abc.abstractmethod
    def status(self) -> BoardStatus:
        ...

    @abc.abstractmethod
    def watchdog(self, timeout_s: float, safe: SurfaceConfig | None = None) -> None:
        """Arm (timeout_s > 0) or disarm (0) the host-loss watchdog.

        After ``timeout_s`` without a valid frame the board latches ``safe`` (default: every
        element OFF). Every driver call feeds the watchdog.
        """

    @abc.abstractmethod
    def close(self) -> None:
        ...

    stats: dict

    @property
    def last_apply(self) -> ApplyRecord:
        return getattr(self, "_last_apply", ApplyRecord())

    def __enter__(self) -> "SurfaceDriver":
        if not getattr(self, "connected", False):
            self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_config(config: SurfaceConfig, info: BoardInfo) -> None:
    if not isinstance(config, SurfaceConfig):
        raise ConfigError(f"config: expected a SurfaceConfig, got {type(config).__name__}")
    if config.n_elements != info.n_elements:
        raise ConfigError(
            f"n_elements: the board has {info.n_elements} elements but the configuration has "
            f"{config.n_elements}; build the configuration for this board"
        )
    if config.bits not in info.resolutions:
        raise ConfigError(
            f"bits: the board supports resolutions {list(info.resolutions)}, not {config.bits}; "
            "quantize the configuration to one of them"
        )


def finish_apply(
    requested: SurfaceConfig, applied: SurfaceConfig, on_mismatch: str
) -> tuple[SurfaceConfig, np.ndarray]:
    """Compare request and readback; raise or return per ``on_mismatch``."""
    if on_mismatch not in ("raise", "return"):
        raise ConfigError(f"on_mismatch: {on_mismatch!r} is not 'raise' or 'return'")
    mismatched = requested.mismatched_elements(applied) if applied.n_elements == requested.n_elements \
        else np.arange(requested.n_elements)
    if mismatched.size and on_mismatch == "raise":
        raise ReadbackMismatch(requested, applied, mismatched)
    return applied, mismatched


# ------------------------------------------------------------------------------ URLs


def split_url(url: str) -> tuple[str, str, dict[str, str]]:
    """'scheme://location?k=v' -> (scheme, location, {k: v}); repeated keys keep the last."""
    parts = urlsplit(url)
    if not parts.scheme:
        raise ConfigError(
            f"url: {url!r} has no scheme; use sim://?elements=N, serial:///dev/ttyUSB0?baud=B, "
            "socket://host:port or emu://?elements=N"
        )
    params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return parts.scheme.lower(), parts.netloc + parts.path, params


def param(params: dict[str, str], key: str, cast, default, url: str):
    if key not in params:
        return default
    try:
        return cast(params[key])
    except (TypeError, ValueError):
        raise ConfigError(f"url: parameter {key}={params[key]!r} in {url!r} is not a valid {cast.__name__}") from None


def reject_unknown(params: dict[str, str], known: set[str], url: str) -> None:
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"url: unknown parameter(s) {unknown} in {url!r}; known: {sorted(known)}")


def driver_class(scheme: str) -> type[SurfaceDriver]:
    target = DRIVERS.get(scheme)
    if target is None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == scheme:
                target = ep.load()
                break
    if target is None:
        known = sorted(set(DRIVERS) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
        raise ConfigError(
            f"url: no driver for scheme {scheme!r}; known schemes: {known} (third-party drivers "
            f"register under the '{ENTRY_POINT_GROUP}' entry-point group)"
        )
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    return target  # type: ignore[return-value]


def open(url: str, *, connect: bool = True) -> SurfaceDriver:  # noqa: A001 - mirrors serial_for_url
    """Open the surface behind ``url``; the scheme picks the driver class."""
    scheme, _, _ = split_url(url)
    driver = driver_class(scheme).from_url(url)
    if connect:
        driver.connect()
    return driver
