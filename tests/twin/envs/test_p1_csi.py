"""P1 observation extension ``observation="csi"`` (project extension; the default is the paper's MDP)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from twin.envs.p1 import P1Env
from twin.scenarios import get_scenario


def random_action(env: P1Env, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    act = env.sample_actions(g)
    act["bs0"]["V"] = act["bs0"]["V"] * 0.3
    return act


def test_default_is_the_papers_observation():
    env = P1Env(2, get_scenario("p1"), seed=0)
    obs = env.reset()
    K, L = env.K, env.L
    assert env.cfg.observation == "paper"
    assert obs["irs0"].shape == (2, K + 1) and obs["bs0"].shape == (2, K)
    assert env.state_dim == L * (K + 1) + K == env.state().shape[1] == env.state_space.shape[0]


def test_csi_dims_spaces_and_state():
    cfg = get_scenario("p1", observation="csi", n_irs=3, n_users=2, n_elements=5, n_bs_antennas=3)
    env = P1Env(4, cfg, seed=1)
    obs = env.reset(seed=1)
    K, L, N, M = env.K, env.L, env.N, env.M
    irs_dim, bs_dim = K + 1 + 2 * K * N + K, K + 2 * K * M + K
    for t in range(3):
        assert obs["bs0"].shape == (4, bs_dim)
        for a in env.irs_ids:
            assert obs[a].shape == (4, irs_dim)
        for a in env.agent_ids:
            assert env.observation_spaces[a].shape == obs[a].shape[1:]
            assert all(env.observation_spaces[a].contains(o.numpy()) for o in obs[a]), a
            assert torch.equal(env.local_observation(a), obs[a])
        state = env.state()
        assert state.shape == (4, env.state_dim) == (4, L * irs_dim + bs_dim)
        assert torch.equal(state, torch.cat([obs[a] for a in env.irs_ids] + [obs["bs0"]], 1))
        assert all(env.state_space.contains(s.numpy()) for s in state)
        obs = env.step(random_action(env, t)).obs


def test_csi_leaves_the_paper_part_and_the_dynamics_unchanged():
    paper = P1Env(3, get_scenario("p1"), seed=5)
    csi = P1Env(3, get_scenario("p1", observation="csi"), seed=5)
    op, oc = paper.reset(seed=5), csi.reset(seed=5)
    for t in range(4):
        for a in paper.agent_ids:
            assert torch.equal(oc[a][:, :op[a].shape[1]], op[a])
        act = random_action(paper, t)
        rp, rc = paper.step(act), csi.step(act)
        assert torch.equal(rp.rewards["bs0"], rc.rewards["bs0"])
        op, oc = rp.obs, rc.obs


def test_irs_phasor_aligns_the_element_with_the_direct_path():
    """One user, one antenna, one element: conj of the observed phasor is the best grid phase
    (eq. 1 here: G = g_dir + g_irs e^{j theta}, largest when both terms are in phase)."""
    cfg = get_scenario("p1", observation="csi", n_irs=1, n_elements=1, n_bs_antennas=1, n_users=1)
    env = P1Env(1, cfg, seed=0, dtype=torch.complex128)
    env.reset()
    rng = np.random.default_rng(3)
    for _ in range(5):
        g_irs, g_dir = complex(*rng.normal(size=2)), complex(*rng.normal(size=2))
        one = lambda x, *s: torch.tensor(x, dtype=torch.complex128).reshape(*s)
        env.set_scene(H_BR=one(1.0, 1, 1, 1, 1), h_RU=one(np.conj(g_irs), 1, 1, 1, 1), h_BU=one(np.conj(g_dir), 1, 1, 1))
        obs = env.local_observation("irs0")[0].double()
        q = complex(obs[2].item(), obs[3].item())                   # phasor after [f, E]
        expect = g_irs * np.conj(g_dir) / abs(g_irs * g_dir)         # q = conj(h_RU) H_BR h_BU
        assert abs(q - expect) < 1e-6
        rho = abs(g_irs) * abs(g_dir) / abs(g_dir) ** 2
        assert obs[4].item() == pytest.approx(rho / (1 + rho), rel=1e-5)
        gains = [abs(g_dir + g_irs * np.exp(2j * math.pi * i / 8)) for i in range(8)]
        best = int(np.argmax(gains))
        aligned = int(round(-math.atan2(q.imag, q.real) / (2 * math.pi) * 8)) % 8
        assert best == aligned
        bs = env.local_observation("bs0")[0].double()
        assert abs(complex(bs[1].item(), bs[2].item()) - np.conj(g_dir) / abs(g_dir)) < 1e-6
        snr = math.log10(cfg.p_max_w * abs(g_dir) ** 2 / cfg.noise_w)
        assert bs[3].item() == pytest.approx(min(max(snr, -5), 5), abs=1e-5)


def test_batched_csi_observations_equal_single_envs():
    cfg = get_scenario("p1", observation="csi")
    big = P1Env(4, cfg, seed=11)
    big.reset()
    big.step(random_action(big, 0))
    for i in range(4):
        one = P1Env(1, cfg, seed=99)
        one.reset()
        one.set_scene(big.scene.index(i), r_req=big.r_req[i:i + 1])
        one.energy, one.prev_rate, one.prev_power = (x[i:i + 1].clone() for x in (big.energy, big.prev_rate, big.prev_power))
        for a in big.agent_ids:
            assert torch.allclose(one.local_observation(a), big.local_observation(a)[i:i + 1], rtol=1e-5, atol=1e-6), a
