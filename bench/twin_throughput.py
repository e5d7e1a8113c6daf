"""Twin throughput: full P1 signal evaluations per second, batched torch vs a numpy loop.

One evaluation = effective channel (P1 eq. 1) + SINR (eq. 4) + rates (eq. 5) + transmit
power + IRS power (eq. 7) for one environment of the P1 preset (M=4, K=4, L=2, N=10),
complex64. The batched twin (twin/signal.py under torch.inference_mode) runs at batch
1, 64, 1024, 4096 next to a straightforward per-environment numpy loop of the same
computation. Channels are sampled once with twin/scene.py; phases/ON/beamformers random.

    /work/venv/bin/python bench/twin_throughput.py [--seconds 1.0] [--threads 0]

Prints a table and ends with one summary line.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from twin import signal
from twin.scenarios import get_scenario
from twin.scene import sample_p1

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
    """Batched: coefficients, effective channel, SINR, rates, powers for every environment."""
    theta = idx.to(torch.float32) * (2 * torch.pi / (1 << bits).unsqueeze(-1).to(torch.float32))
    phi = torch.polar(on.to(torch.float32), theta)
    G = signal.effective_channel(H_BR, h_RU, h_BU, phi)
    gamma = signal.sinr(G, V, noise_w)
    rate = signal.rate_bps_hz(gamma)
    return rate.sum(-1), signal.tx_power_w(V).sum(-1), (on.sum(-1) * mu[bits]).sum(-1)


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
    fn()  # warm-up
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n, elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time budget per measurement")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
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

    n, el = timed(np_loop, args.seconds)
    np_rate = n * H.shape[0] / el

    # check that both paths compute the same thing on a few environments
    with torch.inference_mode():
        ref = torch_eval(scene.H_BR, scene.h_RU, scene.h_BU, bits, idx, on, V, mu, noise_w)
    for i in (0, 500, 1023):
        got = numpy_eval_one(H[i], h[i], hb[i], b[i], ix[i], o[i], v[i], m, noise_w)
        assert np.allclose(got, [float(r[i]) for r in ref], rtol=1e-3), (i, got)

    table = Table(title=f"P1 signal evaluations/s (torch threads = {torch.get_num_threads()})")
    for col in ("batch", "torch batched (eval/s)", "us per call", "numpy loop (eval/s)", "speed-up"):
        table.add_column(col, justify="right")
    results = {}
    for B in BATCHES:
        scene, bits, idx, on, V, mu = make_inputs(scn, B, seed=B)
        with torch.inference_mode():
            n, el = timed(lambda: torch_eval(scene.H_BR, scene.h_RU, scene.h_BU, bits, idx, on, V, mu, noise_w),
                          args.seconds)
        rate = n * B / el
        results[B] = rate
        table.add_row(str(B), f"{rate:,.0f}", f"{el / n * 1e6:,.1f}", f"{np_rate:,.0f}", f"{rate / np_rate:,.1f}x")
    Console().print(table)
    r = results[1024]
    print(f"SUMMARY twin_throughput: batch 1024 = {r:,.0f} eval/s ({r / np_rate:,.0f}x numpy loop {np_rate:,.0f} eval/s); "
          f"batch 4096 = {results[4096]:,.0f} eval/s; targets >= 1,000,000 eval/s and >= 50x: "
          f"{'met' if r >= 1e6 and r / np_rate >= 50 else 'NOT met'}")


if __name__ == "__main__":
    main()
