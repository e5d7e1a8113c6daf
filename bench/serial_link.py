"""Serial link cost of protocol v1: bytes per update, round trip vs wire time, host CPU per apply.

    /work/venv/bin/python bench/serial_link.py [--count 200]

1. Bytes on the wire per update (request + ACK) for 256x1, 1024x1 and 1024x3 boards, next
   to the ASCII command of the public 256-element OpenSourceRIS board (`!0X<64 hex>\\n`,
   68 bytes, answered by `#OK\\n`; the 1024-element ASCII sizes are extrapolated).
2. Round trip of a verified apply (`driver.apply`, the board's read-back CRC in the ACK)
   against the emulator in its own process (`ristwin board emulate`, wire time modelled
   at 10 bits per byte, 64 us latch), at 115200 and 921600 baud, next to the wire time.
3. Host-side processing per apply: "driver CPU" is the driver's own work (check, pack,
   chunk, frame, CRC, decode the ACK, verify, record) with the port stubbed; "thread CPU"
   is the calling thread's CPU time inside `apply` on the live pty link, which adds the
   kernel's pty/tty work for the write and the wake-up (waiting itself excluded).
   "predicted ACKs" counts replies the driver matched byte for byte against the ACK it
   predicted (protocol doc, section 10); the rest were decoded.
"floor" is the same round trip with the emulator's wire model off (--no-wire): the cost of
two processes, a pty and the scheduler on this machine, which adds to the wire time.
Targets: p50 round trip <= 1.2x the wire time; host processing < 0.2 ms per apply.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from drivers import protocol as p  # noqa: E402
from drivers.base import BoardInfo  # noqa: E402
from drivers.serial_driver import SerialDriver  # noqa: E402
from twin.surface_config import SurfaceConfig  # noqa: E402

BOARDS = [(256, 1), (1024, 1), (1024, 3)]
BAUDS = [115200, 921600]
ASCII_OK = 4  # "#OK\n"
LATCH_US = 64  # OpenSourceRIS shift-and-latch time for 256 elements (derived in research/hardware.md)


def ascii_bytes(n: int, bits: int) -> int:
    return 3 + (n * bits) // 4 + 1  # "!0X" + hex digits + "\n" (phases only; no ON mask, no CRC)


def random_config(rng, n, bits, on_prob=0.8):
    return SurfaceConfig(bits, rng.integers(0, 1 << bits, n), rng.random(n) < on_prob)


def wire_table() -> list[str]:
    rows = ["| board | ASCII cmd + reply (B) | v1 all ON: req + ACK (B) | v1 with mask: req + ACK (B) | frames |",
            "|---|---|---|---|---|"]
    for n, bits in BOARDS:
        all_on = p.set_exchange_bytes(SurfaceConfig(bits, np.zeros(n, int), np.ones(n, bool)))
        masked = p.set_exchange_bytes(SurfaceConfig(bits, np.zeros(n, int), np.arange(n) % 2 == 0))
        a = ascii_bytes(n, bits)
        note = "" if (n, bits) == (256, 1) else " (extrapolated)"
        rows.append(
            f"| {n}x{bits}-bit | {a} + {ASCII_OK}{note} | {all_on.request_bytes} + {all_on.response_bytes} "
            f"| {masked.request_bytes} + {masked.response_bytes} | {len(masked.frames)} |"
        )
    return rows


def start_emulator(n, bits, baud, wire=True):
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller", "board", "emulate", "--elements", str(n), "--bits", str(bits),
         "--baud", str(baud), "--latch-us", str(LATCH_US)] + ([] if wire else ["--no-wire"]),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        cwd=os.path.join(os.path.dirname(__file__), ".."),
    )
    return proc, proc.stdout.readline().strip()


def round_trips(n, bits, baud, count, rng, wire=True):
    proc, path = start_emulator(n, bits, baud, wire)
    try:
        drv = SerialDriver(path, baud=baud, timeout_s=0.2)
        drv.connect()
        rtt, cpu, wires = [], [], []
        for i in range(count + 5):
            config = random_config(rng, n, bits)
            ex = p.set_exchange_bytes(config)
            t0 = time.perf_counter()
            applied = drv.apply(config)
            dt = time.perf_counter() - t0
            assert applied == config
            if i >= 5:  # warm-up
                rtt.append(dt)
                cpu.append(drv.last_apply.host_cpu_s)
                wires.append(p.wire_seconds(ex.request_bytes + ex.response_bytes, baud))
        retries, predicted = drv.stats["retries"], drv.stats["predicted"]
        drv.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return np.array(rtt) * 1e3, np.array(cpu) * 1e3, float(np.median(wires)) * 1e3, retries, predicted


def driver_cpu_ms(n, bits, rng, count=2000) -> float:
    """The driver's own work per verified apply with the port stubbed out (no OS serial stack):
    check, pack, chunk, frame, CRC, decode the ACK, compare the read-back CRC, record."""
    drv = SerialDriver("stub", baud=921600)
    drv.connected, drv._needs_handshake = True, False
    drv._info = BoardInfo(n, (bits,), 921600, "stub", p.PROTOCOL_VERSION)
    configs = [random_config(rng, n, bits) for _ in range(count)]
    first = drv._seq + 1
    acks = [
        p.encode_frame(p.Frame(p.MsgType.ACK, (first + i) & 0xFFFF, bytes([p.MsgType.SET_CONFIG])
                               + p.LatchAck(True, i, p.image_crc(c)).pack()))
        for i, c in enumerate(configs)
    ]
    drv._send = lambda wire: None
    drv._port = object()
    replies = iter(acks)
    drv._read_some = lambda deadline: next(replies)
    c0 = time.thread_time()
    for c in configs:
        drv.apply(c)
    return (time.thread_time() - c0) / count * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=200, help="applies per board and baud")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)

    print("Bytes on the wire per update")
    print("\n".join(wire_table()))
    print()
    print(f"Verified apply round trip against the emulator ({args.count} applies each, random configs, 80 % ON)")
    print("| board | baud | wire ms | wire+latch ms | p50 ms | p99 ms | p50 / wire | floor p50 ms | thread CPU p50 ms | driver CPU ms | retries | predicted ACKs |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    worst_ratio, worst_cpu = 0.0, 0.0
    for n, bits in BOARDS:
        codec = driver_cpu_ms(n, bits, rng)
        floor = np.percentile(round_trips(n, bits, 921600, args.count, rng, wire=False)[0], 50)
        for baud in BAUDS:
            rtt, cpu, wire, retries, predicted = round_trips(n, bits, baud, args.count, rng)
            p50, p99 = np.percentile(rtt, 50), np.percentile(rtt, 99)
            ratio = p50 / wire
            cpu50, cpu99 = np.percentile(cpu, 50), np.percentile(cpu, 99)
            worst_ratio, worst_cpu = max(worst_ratio, ratio), max(worst_cpu, codec)
            print(f"| {n}x{bits}-bit | {baud} | {wire:.3f} | {wire + LATCH_US / 1000:.3f} | {p50:.3f} | "
                  f"{p99:.3f} | {ratio:.2f}x | {floor:.3f} | {cpu50:.3f} | {codec:.3f} | {retries} | {predicted} |")
    ok = worst_ratio <= 1.2 and worst_cpu < 0.2
    print()
    print(f"serial_link: worst p50/wire {worst_ratio:.2f}x (target <= 1.2x), worst driver CPU "
          f"{worst_cpu:.3f} ms/apply (target < 0.2 ms): {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
