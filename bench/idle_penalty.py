"""What idling costs the next slot: a daemon's first work after an idle gap, with and without a
CPU wake-up latency bound held (deployment.cpu_latency_us; controller/cpu_latency.py).

For each idle gap (a sleep, as a surface daemon sleeps through its board exchange) it times
the thread CPU of the first observation decode after the gap and of the one right after it,
then the same with ``/dev/cpu_dma_latency`` held at 0 us if this user may write it. The first
decode after a long gap pays for whatever the idle CPU gave away (caches, on this VM the
whole vCPU); the second shows the warm cost. Medians and p90 over ``--reps`` gaps.

    /work/venv/bin/python bench/idle_penalty.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(gaps_ms: list[float], reps: int) -> list[tuple[float, float, float, float]]:
    from controller import messages as m

    payload = m.encode(m.Observation(1, "irs0", np.linspace(0, 1, 5, dtype=np.float32), time.time() + 3600,
                                     time.time()))

    def decode_us() -> float:
        t = time.thread_time_ns()
        m.decode(payload)
        return (time.thread_time_ns() - t) / 1e3

    for _ in range(2000):
        decode_us()
    rows = []
    for gap in gaps_ms:
        first, second = [], []
        for _ in range(reps):
            time.sleep(gap / 1e3)
            first.append(decode_us())
            second.append(decode_us())
        rows.append((gap, float(np.median(first)), float(np.percentile(first, 90)), float(np.median(second))))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--gaps-ms", default="0,0.5,2,10,20")
    args = ap.parse_args()
    from controller.cpu_latency import CpuLatencyHold

    gaps = [float(g) for g in args.gaps_ms.split(",")]
    print(f"{'bound':>12s} {'gap ms':>7s} {'1st decode p50 us':>18s} {'p90 us':>7s} {'2nd decode p50 us':>18s}")
    summary = {}
    for us in (None, 0):
        with CpuLatencyHold(us) as hold:
            if us is not None and not hold.held:
                print(f"{'0 us':>12s} skipped: {hold.status}")
                continue
            for gap, p50, p90, warm in measure(gaps, args.reps):
                print(f"{hold.status:>12s} {gap:7.1f} {p50:18.1f} {p90:7.1f} {warm:18.1f}")
                summary[(us, gap)] = p50
    longest = max(gaps)
    print(f"summary: first decode after {longest:g} ms idle {summary.get((None, longest), float('nan')):.1f} us "
          f"without a bound, {summary.get((0, longest), float('nan')):.1f} us holding 0 us; back to back "
          f"{summary.get((None, min(gaps)), float('nan')):.1f} us")


if __name__ == "__main__":
    main()
