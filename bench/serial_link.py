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
Placement: by default the emulator process and the driver thread share one CPU (the one
least busy once each emulator is up) for table 2; `--placement free` leaves them to the
scheduler. On a VM whose idle vCPUs halt, each wake-up across CPUs (request to the emulator,
ACK to the driver) costs tens of microseconds more than a switch on the same CPU, and free
placement lands on either layout from run to run. The model (wire time, latch) is the same.
"floor" is the same round trip with the emulator's wire model off (--no-wire): the cost of
two processes, a pty and the scheduler on this machine, which adds to the wire time.
4. The boards of the control loop (`bench/control_loop.py`, issue #9): four 10-element
   emulators (`board emulate --tcp`, 921600 baud, default 100 us latch), each driven over
   `socket://` by its own process that applies a new configuration at the same instant
   every 5 ms, building the `SurfaceConfig` from action arrays as the surface daemon does.
   Reported: apply p50/p99 (all, and the slowest of the four per slot, which is what a
   slot waits for), the driver thread's CPU per apply, and the emulators' CPU per apply.
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
PLACEMENT = "same"  # --placement: emulator and driver on one CPU ("same") or wherever the OS puts them


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


def cpu_busy() -> dict[int, int]:
    """Busy clock ticks per CPU so far (Linux /proc/stat; empty elsewhere)."""
    busy = {}
    try:
        for line in open("/proc/stat"):
            if line.startswith("cpu") and line[3].isdigit():
                f = line.split()
                busy[int(f[0][3:])] = sum(map(int, f[1:])) - int(f[4]) - int(f[5])  # minus idle, iowait
    except (OSError, ValueError, IndexError):
        pass
    return busy


def one_cpu() -> set[int] | None:
    """The CPU the emulator and the driver share (``--placement same``), or None: of the CPUs
    this process may use, the one least busy over the next 0.1 s (others' load avoided)."""
    if PLACEMENT != "same" or not hasattr(os, "sched_setaffinity") or not os.path.isdir("/proc/self/task"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    b0 = cpu_busy()
    time.sleep(0.1)
    b1 = cpu_busy()
    return {min(allowed, key=lambda c: (b1.get(c, 0) - b0.get(c, 0), -c))}


def pin_together(pid: int) -> set[int] | None:
    """--placement same: move the emulator process (every thread) and this thread onto one
    CPU, chosen once the emulator is up (just before the measured applies)."""
    cpu_set = one_cpu()
    if cpu_set:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), cpu_set)
        os.sched_setaffinity(0, cpu_set)
    return cpu_set


def round_trips(n, bits, baud, count, rng, wire=True):
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    proc, path = start_emulator(n, bits, baud, wire)
    try:
        pin_together(proc.pid)
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
        if before is not None:
            os.sched_setaffinity(0, before)
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


SURFACES, SURFACE_ELEMENTS, SURFACE_BAUD, SLOT_S = 4, 10, 921600, 0.005


def proc_cpu_s(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def surface_worker(port: int, slots: int, start_at: float, seed: int) -> None:
    """One surface daemon's board path: every SLOT_S, arrays -> SurfaceConfig -> verified apply."""
    import json

    import drivers

    rng = np.random.default_rng(seed)
    actions = []
    for _ in range(slots):
        bits = int(rng.integers(1, 4))
        actions.append({"bits": np.array(bits), "phase_idx": rng.integers(0, 1 << bits, SURFACE_ELEMENTS),
                        "on": rng.random(SURFACE_ELEMENTS) < 0.8})
    drv = drivers.open(f"socket://127.0.0.1:{port}?baud={SURFACE_BAUD}")
    times, cpus, wires = [], [], []
    for i, action in enumerate(actions):
        while (left := start_at + i * SLOT_S - time.time()) > 0:
            time.sleep(left)
        t0, c0 = time.perf_counter(), time.thread_time()
        requested = SurfaceConfig(bits=int(np.asarray(action["bits"]).reshape(())),
                                  phase_idx=np.asarray(action["phase_idx"]).astype(np.int64),
                                  on=np.asarray(action["on"]).astype(bool))
        applied = drv.apply(requested, on_mismatch="return")
        times.append(time.perf_counter() - t0)
        cpus.append(time.thread_time() - c0)
        assert applied == requested
        ex = p.set_exchange_bytes(requested)
        wires.append(p.wire_seconds(ex.request_bytes + ex.response_bytes, SURFACE_BAUD))
    drv.close()
    print(json.dumps({"apply": times, "cpu": cpus, "wire": wires}))


def concurrent_surfaces(slots: int, seed: int) -> dict:
    import json
    import socket

    root = os.path.join(os.path.dirname(__file__), "..")
    emus = [subprocess.Popen(
        [sys.executable, "-m", "controller", "board", "emulate", "--tcp", "0", "--elements", str(SURFACE_ELEMENTS),
         "--bits", "1,2,3", "--baud", str(SURFACE_BAUD)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=root) for _ in range(SURFACES)]
    workers = []
    try:
        ports = [int(e.stdout.readline().strip().rsplit(":", 1)[1]) for e in emus]
        for port in ports:
            socket.create_connection(("127.0.0.1", port), 5).close()
        start_at = time.time() + 3.0  # after the workers' imports
        workers = [subprocess.Popen([sys.executable, __file__, "--worker", str(port), str(slots), repr(start_at),
                                     str(seed + k)], stdout=subprocess.PIPE, text=True, cwd=root)
                   for k, port in enumerate(ports)]
        cpu0 = [proc_cpu_s(e.pid) for e in emus]
        outs = [json.loads(w.communicate(timeout=120)[0]) for w in workers]
        cpu1 = [proc_cpu_s(e.pid) for e in emus]
    finally:
        for proc in workers + emus:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=10)
    warm = min(20, slots // 10)
    applies = np.array([o["apply"][warm:] for o in outs]) * 1e3  # (surfaces, slots)
    return {
        "p50": np.percentile(applies, 50), "p99": np.percentile(applies, 99),
        "slow_p50": np.percentile(applies.max(axis=0), 50), "slow_p99": np.percentile(applies.max(axis=0), 99),
        "wire": float(np.median([o["wire"] for o in outs])) * 1e3,
        "cpu": float(np.median([o["cpu"][warm:] for o in outs])) * 1e3,
        "emu_cpu": (sum(cpu1) - sum(cpu0)) / (SURFACES * slots) * 1e3,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        surface_worker(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=200, help="applies per board and baud")
    ap.add_argument("--slots", type=int, default=400, help="slots of the four-surface run (0 skips it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--placement", choices=("same", "free"), default="same",
                    help="same: pin the emulator process and the driver to one CPU for the round-trip "
                         "table (a wake-up across CPUs costs ~0.1 ms per exchange on this VM); free: the OS places them")
    args = ap.parse_args()
    global PLACEMENT
    PLACEMENT = args.placement
    rng = np.random.default_rng(args.seed)

    print("Bytes on the wire per update")
    print("\n".join(wire_table()))
    print()
    print(f"Verified apply round trip against the emulator ({args.count} applies each, random configs, 80 % ON, "
          f"placement {PLACEMENT}{': one CPU, the least busy once the emulator is up' if PLACEMENT == 'same' else ''})")
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
    four = ""
    if args.slots > 0:
        r = concurrent_surfaces(args.slots, args.seed)
        print()
        print(f"{SURFACES} surfaces applying together every {SLOT_S * 1e3:g} ms ({SURFACE_ELEMENTS} elements, "
              f"socket://, {SURFACE_BAUD} baud, 100 us latch, {args.slots} slots)")
        print("| wire ms | apply p50 ms | apply p99 ms | slowest-of-4 p50 ms | slowest-of-4 p99 ms | p50 / wire "
              "| driver thread CPU p50 ms | emulator CPU per apply ms |")
        print("|---|---|---|---|---|---|---|---|")
        print(f"| {r['wire']:.3f} | {r['p50']:.3f} | {r['p99']:.3f} | {r['slow_p50']:.3f} | {r['slow_p99']:.3f} "
              f"| {r['p50'] / r['wire']:.2f}x | {r['cpu']:.3f} | {r['emu_cpu']:.3f} |")
        four = f"; {SURFACES} surfaces: apply p50 {r['p50'] / r['wire']:.2f}x wire, slowest-of-4 p50 {r['slow_p50']:.3f} ms"
    print()
    print(f"serial_link: worst p50/wire {worst_ratio:.2f}x (target <= 1.2x), worst driver CPU "
          f"{worst_cpu:.3f} ms/apply (target < 0.2 ms): {'PASS' if ok else 'MISS'}{four}")


if __name__ == "__main__":
    main()
