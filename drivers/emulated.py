"""``emu://`` : a board emulator on a private pty plus the serial driver talking to it.

For self-tests and CI without hardware: ``ristwin board test "emu://?elements=256&bits=1"``.
Emulator parameters: elements, bits, baud, wire (1 = model wire time, default), latch_us,
drop, corrupt, stuck, slow_ms, reboot_every, seed, watchdog_ms (armed at power-on),
energy_uj / harvest_uw / switch_nj (harvested-energy buffer); driver parameters as for serial://
(timeout_ms, retries, reconnect_ms, verify). Closing the driver stops the emulator.
"""

from __future__ import annotations

from drivers.base import param, reject_unknown, split_url
from drivers.emulator import BoardEmulator, EnergyModel, Faults, parse_bits
from drivers.serial_driver import SerialDriver
from twin.errors import ConfigError

_EMU = {
    "elements", "bits", "baud", "wire", "latch_us", "drop", "corrupt", "stuck", "slow_ms", "reboot_every", "seed",
    "energy_uj", "harvest_uw", "switch_nj", "watchdog_ms",
}
_DRV = {"timeout_ms", "retries", "reconnect_ms", "verify"}


class EmulatedDriver(SerialDriver):
    emulator: BoardEmulator

    @classmethod
    def from_url(cls, url: str) -> "EmulatedDriver":
        scheme, _, q = split_url(url)
        reject_unknown(q, _EMU | _DRV, url)
        try:
            bits = parse_bits(q.get("bits", "1"))
            stuck = tuple(int(x) for x in q.get("stuck", "").split(",") if x.strip())
            faults = Faults(
                drop=param(q, "drop", float, 0.0, url), corrupt=param(q, "corrupt", float, 0.0, url),
                stuck=stuck, slow_ms=param(q, "slow_ms", float, 0.0, url),
                reboot_every=param(q, "reboot_every", int, 0, url), seed=param(q, "seed", int, 0, url),
            )
            baud = param(q, "baud", int, 115200, url)
            capacity = param(q, "energy_uj", float, None, url)
            energy = None if capacity is None else EnergyModel(
                capacity, param(q, "harvest_uw", float, 2000.0, url), param(q, "switch_nj", float, 50.0, url)
            )
            emu = BoardEmulator(
                param(q, "elements", int, 64, url), bits, baud=baud,
                model_wire=param(q, "wire", int, 1, url) != 0, latch_us=param(q, "latch_us", float, 100.0, url),
                faults=faults, energy=energy, boot_watchdog_ms=param(q, "watchdog_ms", int, 0, url),
            )
        except ValueError as exc:
            raise ConfigError(f"url: {exc}") from None
        driver = cls(
            emu.path, baud=baud,
            timeout_s=param(q, "timeout_ms", float, 50.0, url) / 1000.0,
            retries=param(q, "retries", int, 8, url),
            reconnect_s=param(q, "reconnect_ms", float, 1000.0, url) / 1000.0,
            verify=q.get("verify", "crc"), url=url,
        )
        driver.emulator = emu
        return driver

    def connect(self):
        if self.emulator._thread is None:
            self.emulator.start()
        return super().connect()

    def close(self) -> None:
        super().close()
        self.emulator.stop()
