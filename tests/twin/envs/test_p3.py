"""P3 environment: increment actions, feasibility, local (eq. 16) and global (eq. 15) rewards."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from twin import star
from twin.envs import make_env
from twin.envs.p3 import P3Env, bs_action, star_action
from twin.scene import P3Scene
from twin.errors import ActionError
from twin.signal import sinr as sinr_fn


def noop(env: P3Env) -> dict:
    B = env.num_envs
    return {**{a: torch.full((B,), env.n_star_actions - 1) for a in env.star_ids},
            "bs0": torch.full((B,), env.n_bs_actions - 1)}


def small(**kw) -> P3Env:
    return make_env("p3", num_envs=2, overrides={"n_elements": 4, "n_users": 3, "n_bs_antennas": 2, **kw}, seed=1)


def ee_of(env: P3Env, beta_idx, theta_idx, t_sign, on, W) -> torch.Tensor:
    """EE in Mbit/J computed straight from twin.star (the paper's eqs. 4-11)."""
    c, s = env.cfg, env.scene
    cR, cT = star.es_coefficients(beta_idx.float() * c.delta_beta, theta_idx.float() * c.delta_theta_rad, t_sign, on)
    omega = star.effective_channel(s.G_BS, s.G_SS, s.h_SU, s.h_BU, cR, cT, s.user_region)
    rate = (c.bandwidth_hz * torch.log2(1 + sinr_fn(omega, W, c.noise_w))).sum(-1).double()
    power = c.element_power_w * on.flatten(1).sum(-1).double() + W.abs().square().sum((-2, -1)).double()
    return rate / power * 1e-6


def test_spaces_and_random_walks_stay_feasible():
    env = small()
    for a in env.agent_ids:
        env.action_spaces[a].seed(3)
    for _ in range(60):
        act = {a: torch.as_tensor(np.array([env.action_spaces[a].sample() for _ in range(2)])) for a in env.agent_ids}
        res = env.step(act)
        for a in env.agent_ids:
            assert all(env.observation_spaces[a].contains(o) for o in res.obs[a].numpy()), a
        assert all(env.state_space.contains(s) for s in env.state().numpy())
        assert torch.allclose(env.W.abs().square().sum((-2, -1)), torch.full((2,), env.cfg.p_max_w), rtol=1e-4)


def test_local_rewards_apply_only_own_change_and_global_applies_all():
    env = small()
    b0, t0, s0, on0, W0 = env.beta_idx.clone(), env.theta_idx.clone(), env.t_sign.clone(), env.on.clone(), env.W.clone()
    act = noop(env)
    act["star0"] = torch.tensor([star_action(1, 5, 4), star_action(2, 0, 4)])   # toggle element 1 / beta+ on element 2
    act["star1"] = torch.tensor([star_action(0, 2, 4), star_action(3, 4, 4)])   # theta+ / flip sign
    act["bs0"] = torch.tensor([bs_action(1, 2, True, False, 3), bs_action(0, 0, False, True, 3)])
    res = env.step(act)
    on_a = on0.clone(); on_a[0, 0, 1] = False
    beta_a = b0.clone(); beta_a[1, 0, 2] += 1
    theta_b = t0.clone(); theta_b[0, 1, 0] += 1
    sign_b = s0.clone(); sign_b[1, 1, 3] = -1
    W = W0.clone(); W[0, 1, 2] += 1j * env.delta_w; W[1, 0, 0] -= env.delta_w
    W = W * torch.sqrt(env.cfg.p_max_w / W.abs().square().sum((-2, -1), keepdim=True))
    expect = {
        "star0": ee_of(env, beta_a, t0, s0, on_a, W0),
        "star1": ee_of(env, b0, theta_b, sign_b, on0, W0),
        "bs0": ee_of(env, b0, t0, s0, on0, W),
    }
    for a, e in expect.items():
        assert torch.allclose(res.rewards[a].double(), e, rtol=1e-4), a
    glob = ee_of(env, beta_a, theta_b, sign_b, on_a, W)
    assert torch.allclose(res.info["global_reward"].double(), glob, rtol=1e-4)
    assert res.info["n_on"].tolist() == [2 * 4 - 1, 2 * 4]
    # Power: one element OFF saves exactly p (eq. 9-10), transmit power stays P_max.
    p = env.cfg.element_power_w
    assert res.info["power_w"][0].item() == pytest.approx(7 * p + env.cfg.p_max_w, rel=1e-5)


def test_all_noop_gives_equal_local_and_global_rewards():
    env = small()
    res = env.step(noop(env))
    for a in env.agent_ids:
        assert torch.allclose(res.rewards[a], res.info["global_reward"])


def test_illegal_increments_leave_the_state_unchanged():
    env = small()
    env.beta_idx[:] = env.beta_levels          # beta_R = 1
    env.theta_idx[:] = 0                        # theta_R = 0
    act = noop(env)
    act["star0"] = torch.tensor([star_action(0, 0, 4), star_action(0, 3, 4)])  # beta+ at 1 / theta- at 0
    env.step(act)
    assert env.beta_idx[0, 0, 0].item() == env.beta_levels and env.theta_idx[1, 0, 0].item() == 0
    act["star0"] = torch.tensor([star_action(0, 1, 4), star_action(0, 2, 4)])  # legal moves work
    env.step(act)
    assert env.beta_idx[0, 0, 0].item() == env.beta_levels - 1 and env.theta_idx[1, 0, 0].item() == 1
    obs = env.local_observation("star0")
    assert obs[0, 0].item() == pytest.approx((env.beta_levels - 1) * env.cfg.delta_beta)
    assert obs[1, 4].item() == pytest.approx(env.cfg.delta_theta_rad)
    assert obs[1, 8].item() == pytest.approx(env.cfg.delta_theta_rad + math.pi / 2)   # theta_T = theta_R + pi/2


def test_global_turn_period_and_truncation():
    env = small(global_period=3, episode_steps=7)
    turns, trunc = [], []
    for _ in range(7):
        r = env.step(noop(env))
        turns.append(bool(r.info["global_turn"][0])); trunc.append(bool(r.truncated[0]))
    assert turns == [True, False, False, True, False, False, True]
    assert trunc == [False] * 6 + [True]


def test_batched_equals_single_and_determinism():
    big = small()
    gen = torch.Generator().manual_seed(0)
    act = {a: torch.randint(0, big.action_spaces[a].n, (2,), generator=gen) for a in big.agent_ids}
    res = big.step(act)
    for i in range(2):
        one = make_env("p3", 1, overrides={"n_elements": 4, "n_users": 3, "n_bs_antennas": 2}, seed=50)
        sl = lambda x: tuple(y[i:i + 1] for y in x) if isinstance(x, tuple) else x[i:i + 1]
        fresh = small()   # same seed as big before its step: configuration and scene of slot 0
        one.set_scene(P3Scene(*(sl(getattr(fresh.scene, f.name)) for f in dataclasses.fields(P3Scene))))
        one.W = fresh.W[i:i + 1].clone()
        r1 = one.step({a: x[i:i + 1] for a, x in act.items()})
        for a in big.agent_ids:
            assert torch.allclose(r1.rewards[a], res.rewards[a][i:i + 1], rtol=1e-4), a
    again = small()
    r2 = again.step(act)
    assert all(torch.equal(r2.rewards[a], res.rewards[a]) for a in big.agent_ids), (r2.rewards, res.rewards)


@pytest.mark.parametrize("agent,bad,needle", [
    ("star0", torch.tensor([25, 0]), "star0.increment"),
    ("star1", torch.tensor([-1, 0]), "star1.increment"),
    ("bs0", torch.tensor([0.5, 1.0]), "bs0.increment"),
    ("bs0", torch.tensor([0]), "bs0.increment"),
])
def test_invalid_actions_rejected(agent, bad, needle):
    env = small()
    act = noop(env)
    act[agent] = bad
    with pytest.raises(ActionError, match=needle.replace(".", r"\.")):
        env.step(act)


@pytest.mark.parametrize("region", [0, 1])
def test_energy_efficiency_by_hand_on_one_element(region):
    """V = N = M = K = 1: EE = B log2(1 + |d + h Theta g w|^2 / sigma^2) / (p + P_max)."""
    env = make_env("p3", 1, overrides={"n_surfaces": 1, "n_elements": 1, "n_users": 1, "n_bs_antennas": 1}, seed=0)
    c = env.cfg
    cx = lambda z, *s: torch.tensor(z, dtype=torch.complex64).reshape(*s)
    g, h, d = 2e-4 + 1e-4j, 3e-4 - 2e-4j, 1e-6j
    env.set_scene(G_BS=cx(g, 1, 1, 1, 1), G_SS=cx(0.0, 1, 1, 1, 1, 1), h_SU=cx(np.conj(h), 1, 1, 1, 1),
                  h_BU=cx(np.conj(d), 1, 1, 1), user_region=torch.tensor([[region]]))
    act = noop(env)
    act["star0"] = torch.tensor([star_action(0, 2, 1)])            # theta_R += Delta
    res = env.step(act)
    w = complex(env.W[0, 0, 0])                                    # MRT on the direct link, |w|^2 = P_max
    assert abs(w) ** 2 == pytest.approx(c.p_max_w, rel=1e-5)
    beta_R = round(0.5 / c.delta_beta) * c.delta_beta
    theta_R = c.delta_theta_rad
    coef = (beta_R * np.exp(1j * theta_R) if region == 0                       # reflected side
            else math.sqrt(1 - beta_R ** 2) * np.exp(1j * (theta_R + math.pi / 2)))  # transmitted side
    snr = abs((d + h * coef * g) * w) ** 2 / c.noise_w
    ee = c.bandwidth_hz * math.log2(1 + snr) / (c.element_power_w + c.p_max_w)
    assert res.rewards["star0"].item() == pytest.approx(ee * 1e-6, rel=1e-4)
    assert res.info["global_reward"].item() == pytest.approx(ee * 1e-6, rel=1e-4)
