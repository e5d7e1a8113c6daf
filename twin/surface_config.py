"""The surface configuration that every package speaks: resolution, phase indices, ON/OFF.

A PIN-diode board latches, per element, one of 2^b phase states and an ON/OFF switch.
``SurfaceConfig`` is that latched state for one surface; the twin turns it into the
reflection coefficients phi_n = rho_n e^{j theta_n} (P1 eq. 2, ON/OFF as amplitude rho).
It is plain numpy because it crosses process and serial boundaries; batched physics
converts it with :func:`SurfaceConfig.coefficients`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from twin.errors import ConfigError

MAX_PHASE_BITS = 8


@dataclass(frozen=True, eq=False)
class SurfaceConfig:
    """Latched state of one surface.

    bits: phase resolution b (paper symbol b_l); the grid is F_b = {2 pi i / 2^b} (P1 eq. 6).
    phase_idx: (N,) integers in [0, 2^b), element n has theta_n = 2 pi phase_idx[n] / 2^b.
    on: (N,) bool, the ON/OFF mask rho_n.
    """

    bits: int
    phase_idx: np.ndarray
    on: np.ndarray

    def __post_init__(self) -> None:
        idx = np.asarray(self.phase_idx)
        on = np.asarray(self.on)
        if not isinstance(self.bits, (int, np.integer)) or not 1 <= int(self.bits) <= MAX_PHASE_BITS:
            raise ConfigError(
                f"bits: resolution {self.bits!r} is unsupported; use an integer in 1..{MAX_PHASE_BITS}"
            )
        if idx.ndim != 1 or on.shape != idx.shape:
            raise ConfigError(
                f"phase_idx/on: expected two 1-D arrays of the same length, got shapes "
                f"{idx.shape} and {on.shape}"
            )
        if idx.size and idx.dtype.kind not in "iu":   # signed or unsigned integers (not bool)
            raise ConfigError("phase_idx: must be integers (indices into the 2^b phase grid)")
        if idx.size and (idx.min() < 0 or idx.max() >= (1 << int(self.bits))):
            raise ConfigError(
                f"phase_idx: values must lie in [0, {1 << int(self.bits)}) for bits={self.bits}; "
                f"got range [{idx.min()}, {idx.max()}]"
            )
        object.__setattr__(self, "bits", int(self.bits))
        object.__setattr__(self, "phase_idx", idx.astype(np.uint8, copy=False))
        object.__setattr__(self, "on", on.astype(bool, copy=False))

    @classmethod
    def of_uint8(cls, bits: int, phase_idx: np.ndarray, on: np.ndarray) -> "SurfaceConfig":
        """The same as ``SurfaceConfig(bits, phase_idx, on)``, cheaper when the arrays are already
        what it keeps (1-D uint8 indices, a bool mask of the same length; e.g. decoded from the
        wire): the same rules, checked without its numpy conversions and reductions. Anything
        else, or anything that breaks a rule, goes through the constructor (and its error)."""
        if (type(bits) is int and 1 <= bits <= MAX_PHASE_BITS and type(phase_idx) is np.ndarray
                and type(on) is np.ndarray and phase_idx.dtype == np.uint8 and on.dtype == np.bool_
                and phase_idx.ndim == 1 and on.shape == phase_idx.shape
                and (not phase_idx.size or max(phase_idx.tobytes()) < 1 << bits)):
            config = object.__new__(cls)
            object.__setattr__(config, "bits", bits)
            object.__setattr__(config, "phase_idx", phase_idx)
            object.__setattr__(config, "on", on)
            return config
        return cls(bits=bits, phase_idx=phase_idx, on=on)

    @property
    def n_elements(self) -> int:
        return int(self.phase_idx.size)

    @property
    def levels(self) -> int:
        return 1 << self.bits

    def phases_rad(self) -> np.ndarray:
        """theta_n in radians on the b-bit grid."""
        return self.phase_idx.astype(np.float64) * (2.0 * math.pi / self.levels)

    def coefficients(self) -> np.ndarray:
        """phi_n = rho_n e^{j theta_n}: an OFF element reflects nothing (project reading of P1)."""
        return self.on * np.exp(1j * self.phases_rad())

    @classmethod
    def from_phases(cls, theta: np.ndarray, on: np.ndarray | None = None, bits: int = 1) -> "SurfaceConfig":
        """Round continuous phases (radians) to the nearest point of the b-bit grid."""
        theta = np.asarray(theta, dtype=np.float64)
        if not np.all(np.isfinite(theta)):
            raise ConfigError("theta: phases must be finite (found NaN or inf)")
        levels = 1 << int(bits)
        idx = np.mod(np.rint(theta / (2.0 * math.pi / levels)), levels).astype(np.int64)
        mask = np.ones(theta.shape, dtype=bool) if on is None else np.asarray(on, dtype=bool)
        return cls(bits=int(bits), phase_idx=idx, on=mask)

    @classmethod
    def safe(cls, n_elements: int, bits: int = 1) -> "SurfaceConfig":
        """The safe pattern: every element OFF at phase 0 (what a watchdog falls back to)."""
        return cls(bits=bits, phase_idx=np.zeros(n_elements, np.int64), on=np.zeros(n_elements, bool))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SurfaceConfig):
            return NotImplemented
        return (
            self.bits == other.bits
            and np.array_equal(self.phase_idx, other.phase_idx)
            and np.array_equal(self.on, other.on)
        )

    def mismatched_elements(self, other: "SurfaceConfig") -> np.ndarray:
        """Indices of elements whose latched phase or ON state differ (for readback checks)."""
        if self.n_elements != other.n_elements:
            raise ConfigError(
                f"n_elements: cannot compare a {self.n_elements}-element config with a "
                f"{other.n_elements}-element one"
            )
        diff = (self.phase_idx != other.phase_idx) | (self.on != other.on)
        if self.bits != other.bits:
            diff[:] = True
        return np.flatnonzero(diff)

    def to_dict(self) -> dict:
        return {"bits": self.bits, "phase_idx": self.phase_idx.tolist(), "on": self.on.astype(int).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "SurfaceConfig":
        try:
            return cls(bits=d["bits"], phase_idx=np.asarray(d["phase_idx"]), on=np.asarray(d["on"]))
        except KeyError as exc:
            raise ConfigError(f"{exc.args[0]}: missing from the surface configuration") from None
