"""Reference decisions against closed forms and against each other (agents/reference.py)."""

from __future__ import annotations

import math

import pytest
import torch

from agents import reference as ref
from twin.errors import ConfigError
from twin.signal import effective_channel


def _channels(B, L, N, M, K, seed, dtype=torch.complex64, direct=0.3):
    g = torch.Generator().manual_seed(seed)
    H_BR = torch.randn(B, L, N, M, dtype=dtype, generator=g)
    h_RU = torch.randn(B, L, K, N, dtype=dtype, generator=g)
    h_BU = direct * torch.randn(B, K, M, dtype=dtype, generator=g)
    return H_BR, h_RU, h_BU, g


def _G(B, K, M, seed, dtype=torch.complex64):
    return torch.randn(B, K, M, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def test_mrt_is_optimal_for_one_user():
    B, M, P, s2 = 256, 4, 2.0, 0.5
    G = _G(B, 1, M, 1, torch.complex128)
    rate = ref.sum_rate(G, ref.mrt(G, s2, P), s2)
    closed = torch.log2(1 + G.abs().square().sum((-2, -1)) * P / s2)  # ||h||^2 P / sigma^2
    torch.testing.assert_close(rate, closed, rtol=1e-10, atol=1e-10)
    rand = ref.sum_rate(G, ref.random_precoder(B, M, 1, P, torch.Generator().manual_seed(2), torch.complex128), s2)
    assert bool((rand <= closed + 1e-10).all())
    assert float((closed - rand).mean()) > 0.3  # random beams lose on average
    # WMMSE and RZF collapse to MRT for a single user.
    torch.testing.assert_close(ref.sum_rate(G, ref.wmmse(G, s2, P), s2), closed, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_zf_nulls_interference(dtype):
    B, K, M = 64, 4, 6
    G = _G(B, K, M, 3, dtype)
    Y = (G @ ref.zf(G, 1.0, 5.0)).abs()
    off = Y * (1 - torch.eye(K))
    diag = torch.diagonal(Y, dim1=-2, dim2=-1)
    tol = 1e-4 if dtype == torch.complex64 else 1e-10
    assert float((off.amax((-2, -1)) / diag.amin(-1)).max()) < tol
    with pytest.raises(ConfigError, match="M=3 < K=4"):
        ref.zf(_G(2, 4, 3, 0, dtype), 1.0, 1.0)


def test_rzf_tends_to_zf_at_high_snr_and_to_mrt_at_low_snr():
    G = _G(32, 3, 4, 4, torch.complex128)
    def cos(a, b):  # |<a_k, b_k>| / (||a_k|| ||b_k||) per stream
        return ((a.conj() * b).sum(-2).abs() / (a.norm(dim=-2) * b.norm(dim=-2))).min()
    assert float(cos(ref.rzf(G, 1e-9, 1.0), ref.zf(G, 0, 1.0))) > 1 - 1e-6
    assert float(cos(ref.rzf(G, 1e6, 1.0), ref.mrt(G, 0, 1.0))) > 1 - 1e-4


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_every_precoder_meets_the_power_budget_exactly(dtype):
    B, K, M = 16, 3, 4
    G = _G(B, K, M, 5, dtype)
    G[0, 1] = 0  # a user with no channel must not break the budget
    p = torch.linspace(0.01, 3.0, B, dtype=torch.float64)
    rtol = 1e-5 if dtype == torch.complex64 else 1e-12
    for name, rule in ref.PRECODERS.items():
        if name == "zf":
            Gz = G.clone(); Gz[0, 1] = 1.0  # ZF needs full row rank
            V = rule(Gz, 0.1, p)
        else:
            V = rule(G, 0.1, p)
        assert V.dtype == dtype
        torch.testing.assert_close(V.abs().square().sum((-2, -1)).double(), p, rtol=rtol, atol=0, msg=name)
    V = ref.random_precoder(B, M, K, p, torch.Generator().manual_seed(0), dtype)
    torch.testing.assert_close(V.abs().square().sum((-2, -1)).double(), p, rtol=rtol, atol=0)


def test_wmmse_beats_zf_and_mrt_and_never_decreases():
    B, K, M = 128, 4, 4
    G = _G(B, K, M, 6, torch.complex128)
    s2, P = 1.0, 10.0  # 10 dB per unit-gain antenna: moderate SNR
    r_zf = ref.sum_rate(G, ref.zf(G, s2, P), s2)
    r_mrt = ref.sum_rate(G, ref.mrt(G, s2, P), s2)
    for V0 in (None, ref.mrt(G, s2, P)):  # default (RZF) start and the MRT start
        sol = ref.wmmse_solve(G, s2, P, V0=V0, iters=200, tol=1e-9)
        assert float(sol.history.diff(dim=0).min()) > -1e-9  # monotone over iterations
        assert float(sol.sum_rate.mean()) > float(r_zf.mean()) + 0.5
        assert float(sol.sum_rate.mean()) > float(r_mrt.mean()) + 0.5
        assert float((sol.sum_rate >= r_zf - 1e-6).double().mean()) > 0.9
    assert float(sol.history[-1].mean()) > float(sol.history[0].mean()) + 1.0  # it really iterates


def test_quantize_picks_the_nearest_grid_point():
    g = torch.Generator().manual_seed(7)
    theta = (torch.rand(4, 3, 50, generator=g, dtype=torch.float64) - 0.5) * 6 * math.pi
    bits = torch.tensor([[1, 2, 3]] * 4)
    idx = ref.quantize_phases(theta, bits)
    levels = (2 ** bits)[..., None]
    assert bool(((idx >= 0) & (idx < levels)).all())
    err = torch.remainder(theta - 2 * math.pi * idx / levels + math.pi, 2 * math.pi) - math.pi
    assert bool((err.abs() <= math.pi / levels + 1e-12).all())
    phi = ref.phases_from_idx(idx, bits, dtype=torch.complex128)
    torch.testing.assert_close(ref.quantize_phases(phi, bits), idx)  # round trip through phi


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_quantized_alignment_loses_the_expected_factor(bits):
    # Single antenna, no direct link: aligned gain (sum_n |a_n|)^2, quantized one ~ sinc^2 times it.
    B, N = 64, 1024
    H_BR, h_RU, h_BU, _ = _channels(B, 1, N, 1, 1, 10 + bits, torch.complex128, direct=0.0)
    phi, _ = ref.align_phases(H_BR, h_RU, h_BU, user=0)
    assert bool(torch.allclose(phi.abs(), torch.ones(()).double()))
    gain = lambda p: effective_channel(H_BR, h_RU, h_BU, p).abs().square().squeeze()  # noqa: E731
    upper = (h_RU[:, 0, 0].abs() * H_BR[:, 0, :, 0].abs()).sum(-1).square()
    torch.testing.assert_close(gain(phi), upper, rtol=1e-9, atol=0)
    phi_q = ref.phases_from_idx(ref.quantize_phases(phi, bits), bits, dtype=torch.complex128)
    x = math.pi / 2**bits
    expected = (math.sin(x) / x) ** 2
    assert abs(float((gain(phi_q) / upper).mean()) - expected) < 0.02


def test_alignment_to_a_chosen_user_beats_random_phases():
    B, L, N, M, K = 64, 2, 16, 4, 3
    H_BR, h_RU, h_BU, g = _channels(B, L, N, M, K, 20)
    for user in range(K):
        phi, v = ref.align_phases(H_BR, h_RU, h_BU, user=user)
        snr = (effective_channel(H_BR, h_RU, h_BU, phi)[:, user] * v).sum(-1).abs().square()
        rand = effective_channel(H_BR, h_RU, h_BU, ref.random_phases(B, L, N, g))[:, user].norm(dim=-1).square()
        assert bool((snr > rand).all())  # beats random phases even with the random case's MRT
    phi = ref.align_phases_multiuser(H_BR, h_RU, h_BU)
    assert phi.shape == (B, L, N) and bool(torch.allclose(phi.abs(), torch.ones(())))
    best = ref.strongest_user(H_BR, h_RU, h_BU)
    phi_s, _ = ref.align_phases(H_BR, h_RU, h_BU)
    phi_b, _ = ref.align_phases(H_BR, h_RU, h_BU, user=best)
    torch.testing.assert_close(phi_s, phi_b)


@pytest.mark.parametrize("reprecode,rule", [("candidate", "zf"), ("sweep", "mrt"), ("end", "mrt")])
def test_coordinate_ascent_never_decreases_and_beats_random(reprecode, rule):
    B, L, N, M, K = 32, 2, 8, 4, 3
    H_BR, h_RU, h_BU, g = _channels(B, L, N, M, K, 30, torch.complex128)
    bits = torch.randint(1, 4, (B, L), generator=g)
    start = ref.random_phase_idx(B, L, N, bits, g)
    res = ref.coordinate_ascent_phases(H_BR, h_RU, h_BU, 1.0, 10.0, bits, precoder=rule, reprecode=reprecode,
                                       sweeps=3, phase_idx=start, optimize_on=True)
    assert float(res.history.diff(dim=0).min()) > -1e-9
    assert bool(((res.phase_idx >= 0) & (res.phase_idx < (2 ** bits)[..., None])).all())
    G = effective_channel(H_BR, h_RU, h_BU, ref.phases_from_idx(res.phase_idx, bits, res.on, torch.complex128))
    torch.testing.assert_close(ref.sum_rate(G, res.V, 1.0), res.sum_rate)  # reported = achieved
    G0 = effective_channel(H_BR, h_RU, h_BU, ref.phases_from_idx(start, bits, dtype=torch.complex128))
    rand = ref.sum_rate(G0, ref.PRECODERS[rule](G0, 1.0, 10.0), 1.0)  # the random start, same rule
    assert float(res.sum_rate.mean()) > float(rand.mean()) + 1.0
    assert bool((res.sum_rate >= rand - 1e-9).all())


def test_wmmse_phase_search_is_monotone_and_beats_wmmse_on_random_phases():
    B, L, N, M, K = 16, 2, 8, 4, 4
    H_BR, h_RU, h_BU, g = _channels(B, L, N, M, K, 40, torch.complex128)
    res = ref.wmmse_phase_search(H_BR, h_RU, h_BU, 1.0, 10.0, 2, rounds=2)
    assert float(res.history[-1].mean()) > float(res.history[0].mean()) + 1.0
    assert float(res.history.diff(dim=0).min()) > -1e-9
    torch.testing.assert_close(res.V.abs().square().sum((-2, -1)), torch.full((B,), 10.0, dtype=torch.float64))
    G_rand = effective_channel(H_BR, h_RU, h_BU, ref.phases_from_idx(ref.random_phase_idx(B, L, N, 2, g), 2, dtype=torch.complex128))
    assert float(res.sum_rate.mean()) > float(ref.sum_rate(G_rand, ref.wmmse(G_rand, 1.0, 10.0), 1.0).mean()) + 1.0


def test_on_off_masks_and_random_configs_are_seeded():
    B, L, N = 8, 3, 11
    m1 = ref.half_on(B, L, N, torch.Generator().manual_seed(1))
    m2 = ref.half_on(B, L, N, torch.Generator().manual_seed(1))
    assert torch.equal(m1, m2) and bool((m1.sum(-1) == N // 2).all())
    assert len({tuple(r.tolist()) for r in m1.reshape(-1, N)}) > 1  # a random half, not a fixed one
    assert bool(ref.all_on(B, L, N).all())
    i1 = ref.random_phase_idx(B, L, N, 3, torch.Generator().manual_seed(2))
    assert torch.equal(i1, ref.random_phase_idx(B, L, N, 3, torch.Generator().manual_seed(2)))
    assert int(i1.min()) == 0 and int(i1.max()) == 7
