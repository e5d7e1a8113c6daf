"""BFS-AO (P4 Algorithm 1) and the P4 baselines on the p4 preset (agents/bfs_ao.py)."""

from __future__ import annotations

import math

import pytest
import torch

from agents import bfs_ao as ao
from agents.reference import power_constrained_solve, scale_to_power
from twin.scenarios import get_scenario
from twin.scene import sample_p4
from twin.statistical import ergodic_rate_approx, schedule_codebook

SCN = get_scenario("p4")
P_MAX = 10 ** ((SCN.p_max_dbm - 30) / 10)
NOISE = 10 ** ((SCN.noise_dbm - 30) / 10)


def _scene(B, seed, dtype=torch.complex128):
    return sample_p4(SCN, B, torch.Generator().manual_seed(seed), dtype)


def _twin_rate(st, W, phi, noise=NOISE):
    return ergodic_rate_approx(st.G_bar, st.beta_G, st.kappa_G, st.h_bar, st.beta_h, st.kappa_h, phi, W, noise).sum(-1)


def _random_point(st, users, g):
    B, L, N, M = st.G_bar.shape
    W = torch.randn(B, M, users.shape[1], dtype=st.G_bar.dtype, generator=g)
    theta = 2 * math.pi * torch.rand(B, L, N, generator=g, dtype=torch.float64)
    return W, torch.polar(torch.ones_like(theta), theta).to(st.G_bar.dtype)


def test_internal_objective_matches_the_twin_closed_form():
    st = _scene(6, 0)
    g = torch.Generator().manual_seed(1)
    users = torch.tensor([[0, 2]] * 6)
    W, phi = _random_point(st, users, g)
    mom = ao._moments(st, users, torch.full((6,), NOISE, dtype=torch.float64))
    full = ao._full_W(W, users, SCN.n_users)
    torch.testing.assert_close(ao._objective(mom, W, phi), _twin_rate(st, full, phi), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_each_ao_block_and_the_ao_never_decrease(dtype):
    st = _scene(8, 2, dtype)
    g = torch.Generator().manual_seed(3)
    users = torch.tensor([[1, 3]] * 8)
    W, phi = _random_point(st, users, g)
    p = torch.full((8,), P_MAX, dtype=st.G_bar.real.dtype)
    W = scale_to_power(W, p)  # a feasible start
    mom = ao._moments(st, users, torch.full((8,), NOISE, dtype=p.dtype))
    cfg = ao.AoConfig()
    tol = 1e-5 if dtype == torch.complex64 else 1e-10
    for _ in range(5):  # from a random point: every block step is an ascent
        before = ao._objective(mom, W, phi)
        W_new = ao._active_step(mom, W, phi, p, cfg)
        mid = ao._objective(mom, W_new, phi)
        phi_new = ao._passive_step(mom, W_new, phi, cfg)
        after = ao._objective(mom, W_new, phi_new)
        assert bool((mid >= before - tol * before.abs()).all()) and bool((after >= mid - tol * mid.abs()).all())
        W, phi = W_new, phi_new
    res = ao.ao_precoding(st, users, NOISE, P_MAX, W0=W, phi0=phi)
    steps = res.history.diff(dim=0)
    assert float(steps.min()) >= -tol * float(res.history.abs().max())
    assert float(res.history[-1].mean()) > float(res.history[0].mean())


def test_bfs_ao_meets_the_constraints_and_picks_the_best_schedule():
    B = 8
    st = _scene(B, 4)
    p = torch.linspace(0.1, 2.0, B, dtype=torch.float64)  # per-environment budgets
    res = ao.bfs_ao(st, SCN.n_scheduled, NOISE, p)
    torch.testing.assert_close(res.W.abs().square().sum((-2, -1)), p, rtol=1e-12, atol=0)  # tr(W W^H) = P_max
    torch.testing.assert_close(res.phi.abs(), torch.ones_like(res.phi.abs()), rtol=0, atol=1e-12)  # unit modulus
    assert bool((res.schedule.sum(-1) == SCN.n_scheduled).all())
    unscheduled = ~res.schedule[:, None, :].expand_as(res.W)
    assert bool((res.W[unscheduled] == 0).all())
    torch.testing.assert_close(res.sum_rate, res.rate_per_schedule.max(0).values)
    torch.testing.assert_close(res.sum_rate, _twin_rate(st, res.W, res.phi))  # reported = the twin's objective
    book = schedule_codebook(SCN.n_users, SCN.n_scheduled)
    assert torch.equal(book[res.schedule_index], res.schedule)
    torch.testing.assert_close(res.history[-1], res.sum_rate)
    torch.testing.assert_close(res.history[1], _twin_rate(st, res.first_W, res.first_phi))  # first iterate


def test_power_bisection_is_exact_when_active_and_off_when_not():
    g = torch.Generator().manual_seed(5)
    X = torch.randn(4, 3, 3, dtype=torch.complex128, generator=g)
    A = X @ X.mH + 0.1 * torch.eye(3)
    Bm = torch.randn(4, 3, 2, dtype=torch.complex128, generator=g)
    free = torch.linalg.solve(A, Bm)
    small = 0.5 * free.abs().square().sum((-2, -1))
    V = power_constrained_solve(A, Bm, small)
    torch.testing.assert_close(V.abs().square().sum((-2, -1)), small, rtol=1e-9, atol=0)
    torch.testing.assert_close(power_constrained_solve(A, Bm, 2 * small / 0.5), free)  # mu = 0


def test_bfs_ao_beats_random_precoding_random_ris_and_round_robin():
    B = 12
    st = _scene(B, 6, torch.complex64)
    g = torch.Generator().manual_seed(7)
    best = ao.bfs_ao(st, SCN.n_scheduled, NOISE, P_MAX)
    rand_w = ao.random_precoding(st, SCN.n_scheduled, NOISE, P_MAX, g)
    rand_phi = ao.random_ris(st, SCN.n_scheduled, NOISE, P_MAX, g)
    for base in (rand_w, rand_phi):
        assert bool((base.phi.abs() - 1).abs().max() < 1e-5)
        torch.testing.assert_close(base.W.abs().square().sum((-2, -1)), torch.full((B,), P_MAX), rtol=1e-5, atol=0)
        assert float(best.sum_rate.mean()) > float(base.sum_rate.mean()) + 0.5
        assert float((best.sum_rate > base.sum_rate).float().mean()) >= 0.9
    C = math.comb(SCN.n_users, SCN.n_scheduled)
    seen = torch.stack([ao.round_robin_schedule(t, SCN.n_users, SCN.n_scheduled) for t in range(C)])
    assert torch.equal(seen, schedule_codebook(SCN.n_users, SCN.n_scheduled))  # every schedule once per cycle
    for t in (0, 1):
        rr = ao.round_robin(st, SCN.n_scheduled, NOISE, P_MAX, t)
        assert bool((rr.schedule_index == t).all())
        assert bool((best.sum_rate >= rr.sum_rate - 1e-4 * rr.sum_rate).all())


def test_a_bfs_ao_decision_scores_its_rate_in_the_p4_environment():
    from twin.envs.p4 import P4Env

    env = P4Env(num_envs=4, cfg=SCN, dtype=torch.complex128)
    env.reset(seed=8)
    res = ao.bfs_ao(env.scene, SCN.n_scheduled, SCN.noise_w, SCN.p_max_w)
    step = env.step(ao.env_actions(res))
    torch.testing.assert_close(step.info["sum_rate"], res.sum_rate, rtol=1e-5, atol=1e-6)  # float32 actions
    first = env.step(ao.env_actions(res, first_iterate=True))
    assert bool((first.info["sum_rate"] <= step.info["sum_rate"] + 1e-4).all())
    assert float(step.info["sum_rate"].mean()) > float(env.step(env.sample_actions(torch.Generator().manual_seed(0))).info["sum_rate"].mean())
