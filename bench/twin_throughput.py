"""Twin throughput: full P1 signal evaluations per second, batched torch and fused C vs a numpy loop.

One evaluation = effective channel (P1 eq. 1) + SINR (eq. 4) + rates (eq. 5) + transmit
power + IRS power (eq. 7) for one environment of the P1 preset (M=4, K=4, L=2, N=10),
complex64. Two batched paths of the twin run at batch 1, 64, 1024, 4096 next to a
straightforward per-environment numpy loop of the same computation:
  torch  the twin's torch ops (twin/signal.py, twin/surfaces.py) under torch.inference_mode,
         with the fused kernels switched off (RISTWIN_FUSED=0 while it is timed);
  fused  twin.signal.p1_metrics: one C pass per environment (twin/kernels, compiled on first
         use; without a C compiler it falls back to the torch path and the table says so).
Channels are sampled once with twin/scene.py; phases/ON/beamformers random.

    /work/venv/bin/python bench/twin_throughput.py [--seconds 1.0] [--threads 1,2]

Prints a table and ends with one summary line.
"""

from __future__ import annotations

import argparse
import os
import time

# Idle OpenMP threads sleep instead of spinning (as bench/env_throughput.py): on the shared,
# oversubscribed machine spinning threads stole the working thread's CPU and 2-thread runs
# collapsed to ~7k eval/s. Set before torch loads OpenMP; an explicit value in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from twin import kernels, signal, surfaces  # noqa: E402
from twin.scenarios import get_scenario  # noqa: E402
from twin.scene import sample_p1  # noqa: E402

BATCHES = (1, 64, 1024, 4096)


def make_inputs(scn, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    scene = sample_p1(scn, batch, g)
    L, N, M, K = scn.n_irs, scn.n_elements, scn.n_bs_antennas, scn.n_users
    bits = torch.randint(1, 4, (batch, L), generator=g)
    idx = torch.randint(0, 8, (batch, L, N), generator=g) % (1 << bits).unsqueeze(-1)
    on = torch.rand(batch, L, N, generator=g) > 0.2
    V = torch.randn(batch, M, K, generator=g, dtype=torch.complex64) * (scn.p_max_w / (M * K)) ** 0.5
    mu = torch.tensor([0.0] + [scn.element_power_w(b) for b in (1, 2, 3)], dtype=torch.float32)
    return scene, bits, idx, on, V, mu


def torch_eval(H_BR, h_RU, h_BU, bits, idx, on, V, mu, noise_w):
    """Batched, with the twin's own functions (as twin/envs/p1.py's physics step):
    coefficients (eq. 2), effective channel (eq. 1), SINR (eq. 4), rates (eq. 5), powers (eq. 7)."""
    phi = surfaces.coefficients(bits, idx, on, dtype=H_BR.dtype)
    G = signal.effective_channel(H_BR, h_RU, h_BU, phi)
    rate = signal.rate_bps_hz(signal.sinr(G, V, noise_w))
    return rate.sum(-1), signal.tx_power_w(V).sum(-1), (on.sum(-1) * mu[bits]).sum(-1)


def fused_eval(H_BR, h_RU, h_BU, bits, idx, on, V, mu, noise_w):
    """The same evaluation through twin.signal.p1_metrics (the fused C kernel when available)."""
    rate, tx, irs = signal.p1_metrics(H_BR, h_RU, h_BU, bits, idx, on, V, noise_w, mu)
    return rate.sum(-1), tx.sum(-1), irs.sum(-1)


def torch_only(fn):
    """fn run with the fused kernels switched off (twin/kernels reads RISTWIN_FUSED per call)."""
    def run(*args):
        old = os.environ.get("RISTWIN_FUSED")
        os.environ["RISTWIN_FUSED"] = "0"
        try:
            return fn(*args)
        finally:
            if old is None:
                del os.environ["RISTWIN_FUSED"]
            else:
                os.environ["RISTWIN_FUSED"] = old
    return run


def numpy_eval_one(H_BR, h_RU, h_BU, bits, idx, on, V, mu, noise_w):
    """One environment, plain numpy: the same computation as torch_eval."""
    theta = idx * (2 * np.pi / (1 << bits))[:, None]
    phi = on * np.exp(1j * theta)
    G = h_BU.conj().copy()
    for l in range(H_BR.shape[0]):
        G += (h_RU[l].conj() * phi[l]) @ H_BR[l]
    gain = np.abs(G @ V) ** 2
    signal_pw = np.diag(gain)
    gamma = signal_pw / (gain.sum(-1) - signal_pw + noise_w)
    rate = np.log2(1 + gamma)
    return rate.sum(), (np.abs(V) ** 2).sum(), (on.sum(-1) * mu[bits]).sum()


def timed(fn, seconds):
    """Calls per wall second and per process-CPU second (the latter is robust when other
    processes load the machine: it counts only the time this process ran)."""
    fn()  # warm-up
    n, start, cpu0 = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n, elapsed, max(time.process_time() - cpu0, 1e-9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time budget per measurement")
    ap.add_argument("--threads", default=f"1,{torch.get_num_threads()}",
                    help="comma-separated torch thread counts to measure (default: 1 and torch's default)")
    args = ap.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    scn = get_scenario("p1")
    noise_w = scn.noise_w

    # numpy loop: its per-environment cost does not depend on the batch; measure once on 1024 envs.
    scene, bits, idx, on, V, mu = make_inputs(scn, 1024)
    np_args = [x.numpy() for x in (scene.H_BR, scene.h_RU, scene.h_BU, bits, idx, on, V)] + [mu.numpy().astype(np.float64)]
    H, h, hb, b, ix, o, v, m = np_args
    o = o.astype(np.float32)

    def np_loop():
        for i in range(H.shape[0]):
            numpy_eval_one(H[i], h[i], hb[i], b[i], ix[i], o[i], v[i], m, noise_w)

    # check that the three paths compute the same thing on a few environments
    fused_on = kernels.enabled() and kernels.load() is not None
    fused_label = "fused" if fused_on else "fused (UNAVAILABLE: torch fallback)"
    with torch.inference_mode():
        ref = torch_only(torch_eval)(scene.H_BR, scene.h_RU, scene.h_BU, bits, idx, on, V, mu, noise_w)
        fz = fused_eval(scene.H_BR, scene.h_RU, scene.h_BU, bits, idx, on, V, mu, noise_w)
    for i in (0, 500, 1023):
        got = numpy_eval_one(H[i], h[i], hb[i], b[i], ix[i], o[i], v[i], m, noise_w)
        assert np.allclose(got, [float(r[i]) for r in ref], rtol=1e-3), (i, got)
        assert np.allclose(got, [float(r[i]) for r in fz], rtol=1e-3), (i, got, "fused")

    results = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        # numpy loop re-measured next to each table so both see the same machine load
        n, el, cpu = timed(np_loop, args.seconds)
        np_rate, np_cpu = n * H.shape[0] / el, n * H.shape[0] / cpu
        table = Table(title=f"P1 signal evaluations/s, torch threads = {threads}, "
                            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, numpy loop {np_rate:,.0f} eval/s "
                            f"wall / {np_cpu:,.0f} per CPU-second")
        for col in ("batch", "torch eval/s (wall)", "torch us/call", f"{fused_label} eval/s (wall)", "fused us/call",
                    "fused eval/s (CPU)", "speed-up torch (wall)", "speed-up fused (wall)", "speed-up fused (CPU)"):
            table.add_column(col, justify="right")
        for B in BATCHES:
            scene, bits, idx, on, V, mu = make_inputs(scn, B, seed=B)
            inputs = (scene.H_BR, scene.h_RU, scene.h_BU, bits, idx, on, V, mu, noise_w)
            with torch.inference_mode():
                n, el, cpu = timed(lambda: torch_only(torch_eval)(*inputs), args.seconds)
                fn, fel, fcpu = timed(lambda: fused_eval(*inputs), args.seconds)
            rate, f_rate, f_cpu = n * B / el, fn * B / fel, fn * B / fcpu
            results[threads, B] = (rate, f_rate, f_cpu, np_rate, np_cpu)
            table.add_row(str(B), f"{rate:,.0f}", f"{el / n * 1e6:,.1f}", f"{f_rate:,.0f}", f"{fel / fn * 1e6:,.1f}",
                          f"{f_cpu:,.0f}", f"{rate / np_rate:,.1f}x", f"{f_rate / np_rate:,.1f}x", f"{f_cpu / np_cpu:,.1f}x")
        Console(width=170).print(table)
    try:
        load = " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = "n/a"
    best = max(thread_counts, key=lambda t: results[t, 1024][1])
    best_torch = max(thread_counts, key=lambda t: results[t, 1024][0])
    r, fr, fc, np_rate, np_cpu = results[best, 1024]
    tr, tnp = results[best_torch, 1024][0], results[best_torch, 1024][3]
    met = fused_on and fr >= 1e6 and fr / np_rate >= 50
    print(f"SUMMARY twin_throughput: batch 1024 fused = {fr:,.0f} eval/s wall ({fr / np_rate:,.0f}x numpy loop), "
          f"{fc:,.0f} per CPU-second ({fc / np_cpu:,.0f}x), best at {best} thread(s); torch eager = {tr:,.0f} eval/s "
          f"({tr / tnp:,.0f}x) at {best_torch} thread(s); batch 4096 fused = {results[best, 4096][1]:,.0f} eval/s; "
          f"load avg {load}; targets (>= 1e6 eval/s and >= 50x at 1024, wall) with the fused path: "
          f"{'met' if met else 'NOT met' + ('' if fused_on else ' (fused kernel unavailable)')}")


if __name__ == "__main__":
    main()
