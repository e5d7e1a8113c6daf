"""Decision time of BFS-AO on P4 (one environment, one thread), the paper's Table II reference.

One decision = brute force over the C(K,S) schedules with AO precoding for each (all
schedules solved together on the batch axis), from statistical CSI, as
``agents.bfs_ao.bfs_ao`` does it. Each row times ``--decisions`` fresh p4 scenes (B = 1) and
reports the mean / p50 / p95 wall time and the mean CPU time of the thread, the mean AO iterations of the chosen schedule, and the
ergodic-rate approximation next to the random-precoding and random-RIS baselines.

    /work/venv/bin/python bench/bfs_ao_time.py [--decisions 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agents import bfs_ao as ao  # noqa: E402
from twin.scenarios import get_scenario  # noqa: E402
from twin.scene import sample_p4  # noqa: E402


def run(overrides: dict, decisions: int, seed: int) -> dict:
    scn = get_scenario("p4", **overrides)
    p_max = 10 ** ((scn.p_max_dbm - 30) / 10)
    noise = 10 ** ((scn.noise_dbm - 30) / 10)
    g = torch.Generator().manual_seed(seed)
    times, cpu, iters, rates, rand_w, rand_phi = [], [], [], [], [], []
    ao.bfs_ao(sample_p4(scn, 1, g), scn.n_scheduled, noise, p_max)  # warm-up
    for _ in range(decisions):
        st = sample_p4(scn, 1, g)
        t0, c0 = time.perf_counter(), time.thread_time()
        res = ao.bfs_ao(st, scn.n_scheduled, noise, p_max)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)  # CPU time of this thread: immune to preemption
        iters.append(res.history.shape[0] - 1)
        rates.append(float(res.sum_rate))
        rand_w.append(float(ao.random_precoding(st, scn.n_scheduled, noise, p_max, g).sum_rate))
        rand_phi.append(float(ao.random_ris(st, scn.n_scheduled, noise, p_max, g).sum_rate))
    ms = np.asarray(times) * 1e3
    return {
        "setting": f"L={scn.n_ris} N={scn.n_rows * scn.n_cols} M={scn.n_bs_antennas} K={scn.n_users} S={scn.n_scheduled}",
        "schedules": math.comb(scn.n_users, scn.n_scheduled),
        "mean_ms": ms.mean(), "p50_ms": np.percentile(ms, 50), "p95_ms": np.percentile(ms, 95), "cpu_ms": float(np.mean(cpu)) * 1e3,
        "iters": float(np.mean(iters)), "rate": float(np.mean(rates)),
        "rand_w": float(np.mean(rand_w)), "rand_phi": float(np.mean(rand_phi)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [run({}, args.decisions, args.seed), run({"n_ris": 4}, args.decisions, args.seed + 1)]
    table = Table(title=f"BFS-AO decision time (B = 1, {args.threads} thread(s), {args.decisions} scenes per row)")
    for col in ("setting", "C(K,S)", "mean ms", "p50 ms", "p95 ms", "cpu ms", "AO iters", "rate b/s/Hz", "random W", "random RIS"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["setting"], str(r["schedules"]), f"{r['mean_ms']:.1f}", f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['cpu_ms']:.1f}",
                      f"{r['iters']:.1f}", f"{r['rate']:.3f}", f"{r['rand_w']:.3f}", f"{r['rand_phi']:.3f}")
    Console(width=160).print(table)
    print(f"SUMMARY bfs_ao_decision_ms p4_default={rows[0]['mean_ms']:.1f} p4_L4={rows[1]['mean_ms']:.1f} (mean over {args.decisions} decisions, B=1)")


if __name__ == "__main__":
    main()
