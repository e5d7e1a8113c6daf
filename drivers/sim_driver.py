"""The sim driver: the driver interface over the twin's model of a surface, no I/O.

``sim://?elements=64&bits=1,2,3&stuck=3,17&latency_ms=0.5`` keeps the latched
``SurfaceConfig`` in memory. With ``energy_uj=C`` (buffer capacity; optional
``harvest_uw``, ``switch_nj``) switching is paid from a harvested-energy buffer updated
with the twin's P1 eq. 9 (``twin.energy``): an unaffordable apply is refused, as a board
with an empty supercap would. Stuck elements (phase 0, ON, whatever is commanded) show in
the readback exactly as on a board, and the host-loss watchdog latches the safe pattern
when no call arrived for its timeout, so code written against this driver meets the same
failures on hardware.
"""

from __future__ import annotations

import time

import numpy as np

from drivers.base import (
    ApplyError,
    ApplyRecord,
    BoardInfo,
    BoardStatus,
    NackError,
    SurfaceDriver,
    check_config,
    finish_apply,
    param,
    reject_unknown,
    split_url,
)
from drivers.protocol import ErrorCode
from twin.errors import ConfigError, DriverError
from twin.surface_config import MAX_PHASE_BITS, SurfaceConfig

_NO_MISMATCH = np.zeros(0, np.int64)
_NO_MISMATCH.flags.writeable = False   # shared by every verified ApplyRecord

_KNOWN = {"elements", "bits", "stuck", "latency_ms", "energy_uj", "harvest_uw", "switch_nj"}


def _int_list(text: str, field: str, url: str) -> tuple[int, ...]:
    try:
        return tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise ConfigError(f"url: {field}={text!r} in {url!r} is not a comma-separated list of integers") from None


class SimDriver(SurfaceDriver):
    def __init__(
        self,
        n_elements: int,
        resolutions: tuple[int, ...] = (1,),
        *,
        stuck: tuple[int, ...] = (),
        latency_s: float = 0.0,
        energy_uj: float | None = None,
        harvest_uw: float = 2000.0,
        switch_nj: float = 50.0,
        url: str = "",
    ) -> None:
        if n_elements < 1:
            raise ConfigError(f"elements: a surface needs at least 1 element, got {n_elements}")
        if not resolutions or any(not 1 <= b <= MAX_PHASE_BITS for b in resolutions):
            raise ConfigError(f"bits: resolutions must lie in 1..{MAX_PHASE_BITS}, got {list(resolutions)}")
        if any(not 0 <= i < n_elements for i in stuck):
            raise ConfigError(f"stuck: element indices must lie in 0..{n_elements - 1}, got {list(stuck)}")
        self.url = url or f"sim://?elements={n_elements}"
        self._info = BoardInfo(n_elements, tuple(sorted(resolutions)), 0, "sim", 1, 1 << 16, 8, "ristwin-sim")
        self.stuck = np.asarray(stuck, dtype=np.int64)
        self.latency_s = latency_s
        self.connected = False
        self._boot = time.monotonic()
        self._latched = self._effective(SurfaceConfig.safe(n_elements, self._info.resolutions[0]))
        self._latch_count = 0
        self._watchdog: tuple[float, SurfaceConfig | None] | None = None
        self._codebook: dict[int, SurfaceConfig] = {}
        self._last_contact = self._boot
        self._safe_active = False
        self._trips = 0
        self._last_apply = ApplyRecord()
        self.stats = dict(requests=0, retries=0, timeouts=0, reconnects=0, reboots=0)
        # Energy buffer in uJ (emulator defaults, not from a paper); None = mains powered.
        self._capacity_uj, self._harvest_uw, self._switch_nj = energy_uj, harvest_uw, switch_nj
        self._energy_uj = energy_uj
        self._energy_t = self._boot

    @classmethod
    def from_url(cls, url: str) -> "SimDriver":
        scheme, _, params = split_url(url)
        if scheme != "sim":
            raise ConfigError(f"url: SimDriver handles sim://, not {scheme}://")
        reject_unknown(params, _KNOWN, url)
        return cls(
            param(params, "elements", int, 64, url),
            _int_list(params.get("bits", "1"), "bits", url),
            stuck=_int_list(params.get("stuck", ""), "stuck", url),
            latency_s=param(params, "latency_ms", float, 0.0, url) / 1000.0,
            energy_uj=param(params, "energy_uj", float, None, url),
            harvest_uw=param(params, "harvest_uw", float, 2000.0, url),
            switch_nj=param(params, "switch_nj", float, 50.0, url),
            url=url,
        )

    def _effective(self, config: SurfaceConfig) -> SurfaceConfig:
        if not self.stuck.size:
            return config
        idx, on = config.phase_idx.copy(), config.on.copy()
        idx[self.stuck], on[self.stuck] = 0, True
        return SurfaceConfig(config.bits, idx, on)

    def _contact(self) -> None:
        """Every call is a frame to the board: first let an expired watchdog fire, then feed it."""
        if not self.connected:
            raise DriverError(f"driver for {self.url} is closed; call connect() first")
        now = time.monotonic()
        if self._watchdog is not None and not self._safe_active and now - self._last_contact > self._watchdog[0]:
            safe = self._watchdog[1] or SurfaceConfig.safe(self._info.n_elements, self._latched.bits)
            self._latched = self._effective(safe)
            self._latch_count += 1
            self._safe_active = True
            self._trips += 1
        self._last_contact = now
        self.stats["requests"] += 1
        if self.latency_s:
            time.sleep(self.latency_s)

    def connect(self) -> BoardInfo:
        self.connected = True
        self._last_contact = time.monotonic()
        return self._info

    def info(self) -> BoardInfo:
        return self._info

    def _pay(self, new: SurfaceConfig) -> bool:
        """Harvest since the last update, then pay the switching if affordable (P1 eq. 9)."""
        if self._capacity_uj is None:
            return True
        import torch

        from twin.energy import affordable, step_buffer

        now = time.monotonic()
        e = torch.tensor(self._energy_uj, dtype=torch.float64)
        arrived = torch.tensor(self._harvest_uw * (now - self._energy_t), dtype=torch.float64)
        e = step_buffer(e, torch.zeros_like(e), arrived, 0.0, self._capacity_uj)
        self._energy_t = now
        changed = new.n_elements if new.bits != self._latched.bits else new.mismatched_elements(self._latched).size
        cost = torch.tensor(changed * self._switch_nj / 1000.0, dtype=torch.float64)
        ok = bool(affordable(e, cost, 0.0))
        if ok:
            e = step_buffer(e, cost, torch.zeros_like(e), 0.0, self._capacity_uj)
        self._energy_uj = float(e)
        return ok

    def apply(self, config: SurfaceConfig, *, on_mismatch: str = "raise") -> SurfaceConfig:
        t0, c0 = time.perf_counter(), time.thread_time()
        check_config(config, self._info)
        self._contact()
        latched = self._effective(config)
        if not self._pay(latched):
            raise ApplyError(
                f"SET_CONFIG: board refused the request (ENERGY: buffer {self._energy_uj:.1f} uJ); "
                "nothing was latched, the board keeps its previous configuration", config, self._latched,
            )
        self._latched = latched
        self._latch_count += 1
        self._safe_active = False
        if latched is config:
            # No stuck element: the board holds the request object itself, so the readback
            # equals the request without comparing arrays (the per-slot case).
            applied, mism = latched, _NO_MISMATCH
        else:
            applied, mism = finish_apply(config, latched, "return")
        self._last_apply = ApplyRecord(mism.size == 0, mism, 0, time.perf_counter() - t0, time.thread_time() - c0)
        if mism.size or on_mismatch not in ("raise", "return"):
            return finish_apply(config, applied, on_mismatch)[0]   # raises per on_mismatch
        return applied          # read back as requested: no second comparison

    def readback(self) -> SurfaceConfig:
        self._contact()
        return self._latched

    def status(self) -> BoardStatus:
        self._contact()
        if self._capacity_uj is not None:
            self._pay(self._latched)  # harvest up to now; re-latching the same state costs nothing
        return BoardStatus(
            time.monotonic() - self._boot, 5.0,
            None if self._energy_uj is None else self._energy_uj * 1e-6, 1, self._latch_count,
            self._watchdog[0] if self._watchdog else 0.0, self._safe_active,
            dict(watchdog_trips=self._trips),
        )

    def codebook_store(self, slot: int, config: SurfaceConfig) -> None:
        check_config(config, self._info)
        if not 0 <= slot < self._info.codebook_slots:
            raise ConfigError(f"slot: {slot} is outside the board's codebook 0..{self._info.codebook_slots - 1}")
        self._contact()
        self._codebook[slot] = config

    def codebook_apply(self, slot: int) -> SurfaceConfig:
        """Latch a stored entry; returns the read-back state (stuck elements included)."""
        self._contact()
        if slot not in self._codebook:
            raise NackError(
                f"CODEBOOK_APPLY: board refused the request (EMPTY_SLOT, detail {slot}); store the slot first",
                ErrorCode.EMPTY_SLOT, slot,
            )
        self._latched = self._effective(self._codebook[slot])
        self._latch_count += 1
        self._safe_active = False
        return self._latched

    def watchdog(self, timeout_s: float, safe: SurfaceConfig | None = None) -> None:
        if timeout_s < 0:
            raise ConfigError("timeout_s: must be >= 0 (0 disarms the watchdog)")
        if safe is not None:
            check_config(safe, self._info)
        self._contact()
        self._watchdog = (timeout_s, safe) if timeout_s > 0 else None

    def close(self) -> None:
        self.connected = False
