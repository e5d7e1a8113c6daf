"""Holding a bound on the CPUs' wake-up latency (Linux PM QoS) while a deployment runs.

A slot with serial boards leaves the host idle for most of the board exchange (~10 ms for a
256-element board at 115200 baud). An idle CPU enters its idle state; a deep one (a C6 state
on bare metal, a halted vCPU in a VM) gives its caches away, so the next slot's decode,
decision and frame encode start cold: on the project's 2-core VM an observation decode took
~50 us after a 10 ms sleep against ~8 us right after another one (``bench/idle_penalty.py``,
docs/BENCHMARKS.md). Real-time Linux setups keep such a process's CPUs shallow with PM QoS:
while a file descriptor of ``/dev/cpu_dma_latency`` holds a value, the idle governor picks
no state with a longer exit latency (0 us: the CPUs poll instead of halting). It costs
power (idle CPUs stay busy), so it is opt-in: ``cpu_latency_us`` in the deployment file.

Writing the device needs root (or the device given to a group, e.g. by a udev rule). When
it is not possible the process says why once and runs without the bound: a latency setting
is never a reason to leave a board without its daemon.
"""

from __future__ import annotations

import logging
import os
import struct

DEVICE = "/dev/cpu_dma_latency"
MAX_US = 2_000_000_000   # the device takes a signed 32-bit value

log = logging.getLogger("ristwin.cpu_latency")


def valid_us(value: object) -> bool:
    """Whether ``value`` is a bound the device takes: whole microseconds in 0..MAX_US."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_US


class CpuLatencyHold:
    """The bound while this object is open: ``status`` says what holds ("held: 0 us") or why
    nothing does; ``close()`` (or exiting the process) releases it."""

    def __init__(self, us: int | None, device: str | None = None) -> None:
        device = device or DEVICE   # read at call time: tests point it at a file
        self.us = us
        self._fd: int | None = None
        if us is None:
            self.status = "off"
            return
        if not valid_us(us):
            raise ValueError(f"cpu_latency_us: {us!r} is not a whole number of microseconds in 0..{MAX_US}")
        try:
            fd = os.open(device, os.O_WRONLY)
        except PermissionError:
            self.status = (f"not held: {device} is not writable by this user; run the deployment as root, "
                           f"or give the device to its group (e.g. a udev rule), or drop cpu_latency_us")
        except FileNotFoundError:
            self.status = f"not held: this kernel has no {device} (PM QoS); drop cpu_latency_us"
        except OSError as exc:
            self.status = f"not held: cannot open {device} ({exc.strerror})"
        else:
            try:
                os.write(fd, struct.pack("=i", us))   # the binary form the device documents
            except OSError as exc:
                os.close(fd)
                self.status = f"not held: {device} refused {us} ({exc.strerror})"
            else:
                self._fd = fd
                self.status = f"held: {us} us"
        if self._fd is None:
            log.warning("cpu_latency_us = %s %s", us, self.status)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.status = "released"

    def __enter__(self) -> "CpuLatencyHold":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
