"""P4 environment: spaces, ergodic-approximation reward by hand, fairness mix, sizes, batching, errors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from twin.envs import make_env
from twin.envs.p4 import P4Env
from twin.errors import ActionError
from twin.scenarios import get_scenario
from twin.scene import P4Scene


def sampled(env: P4Env, seed: int = 0) -> dict:
    out = {}
    for i, a in enumerate(env.agent_ids):
        sp = env.action_spaces[a]
        sp.seed(seed + i)
        out[a] = torch.as_tensor(np.stack([np.asarray(sp.sample()) for _ in range(env.num_envs)]))
    return out


def test_spaces_and_sampled_actions():
    env = make_env("p4", num_envs=3, seed=0)
    obs = {a: env.local_observation(a) for a in env.agent_ids}
    for _ in range(3):
        for a in env.agent_ids:
            assert obs[a].dtype == torch.float32 and torch.isfinite(obs[a]).all()
            assert all(env.observation_spaces[a].contains(o) for o in obs[a].numpy())
        assert env.state().shape == (3, env.state_dim)
        res = env.step(sampled(env, env.t))
        obs = res.obs
        assert torch.equal(res.rewards["sched"], res.rewards["ris1"])
        assert (res.info["schedule"].sum(-1) == env.S).all()


def test_observation_size_does_not_grow_with_n_or_l():
    dims = set()
    for L, rows in [(1, 2), (2, 4), (4, 6)]:
        env = make_env("p4", num_envs=1, overrides={"n_ris": L, "n_rows": rows, "n_cols": rows}, seed=0)
        dims.add((env.observation_spaces["sched"].shape, env.observation_spaces["bs0"].shape,
                  env.observation_spaces["ris0"].shape, env.state_dim))
        assert env.action_spaces["ris0"].shape == (rows * rows,)
    assert len(dims) == 1


def tiny_env(**kw) -> P4Env:
    cfg = get_scenario("p4", n_ris=1, n_rows=1, n_cols=1, n_bs_antennas=1, n_users=2, n_scheduled=1, **kw)
    env = P4Env(1, cfg, seed=0, dtype=torch.complex128)
    env.reset()
    c = lambda z, *s: torch.tensor(z, dtype=torch.complex128).reshape(*s)
    r = lambda x, *s: torch.tensor(x, dtype=torch.float64).reshape(*s)
    env.set_scene(G_bar=c(1.0, 1, 1, 1, 1), h_bar=c([1.0, 1j], 1, 1, 2, 1),
                  beta_G=r(1e-6, 1, 1), kappa_G=r(4.0, 1, 1), beta_h=r([1e-5, 2e-5], 1, 1, 2), kappa_h=r([1.0, 3.0], 1, 1, 2))
    return env


@pytest.mark.parametrize("codeword", [0, 1])
def test_reward_is_the_ergodic_approximation_by_hand(codeword):
    env = tiny_env()
    c = env.cfg
    theta, w_raw = 0.7, 0.3 - 0.2j          # any raw scale: the env scales W to P_max
    act = {"sched": torch.tensor([codeword]),
           "bs0": torch.tensor([[[[w_raw.real, 5.0]], [[w_raw.imag, -1.0]]]]),
           "ris0": torch.tensor([[theta]])}
    res = env.step(act)
    k = codeword                              # codebook C(2, 1): codeword k serves user k
    beta_G, kap_G = 1e-6, 4.0
    beta_h, kap_h = [1e-5, 2e-5][k], [1.0, 3.0][k]
    hbar = [1.0, 1j][k]
    a2, b2 = beta_h * kap_h / (1 + kap_h), beta_h / (1 + kap_h)
    c2, d2 = beta_G * kap_G / (1 + kap_G), beta_G / (1 + kap_G)
    w = math.sqrt(c.p_max_w) * w_raw / abs(w_raw)
    los = a2 * c2 * abs(np.conj(hbar) * np.exp(1j * theta) * 1.0 * w) ** 2
    ex = los + a2 * d2 * abs(w) ** 2 + b2 * c2 * abs(w) ** 2 + b2 * d2 * abs(w) ** 2
    rate = math.log2(1 + ex / c.noise_w)      # the other user's stream is zero: no interference
    assert res.info["rate"][0, k].item() == pytest.approx(rate, rel=1e-6)
    assert res.info["rate"][0, 1 - k].item() == 0.0
    assert res.rewards["bs0"].item() == pytest.approx(rate, rel=1e-5)
    assert res.info["tx_power_w"].item() == pytest.approx(c.p_max_w, rel=1e-9)


def test_fairness_weight_mixes_jain_index_of_throughput_so_far():
    env = tiny_env(fairness_weight=1.0)
    act = lambda k: {"sched": torch.tensor([k]), "bs0": torch.ones(1, 2, 1, 2), "ris0": torch.zeros(1, 1)}
    r1 = env.step(act(0))
    assert r1.rewards["bs0"].item() == pytest.approx(0.5)          # one of two users served: J = 1/K
    r2 = env.step(act(1))
    x = r1.info["rate"][0] + r2.info["rate"][0]
    assert r2.rewards["bs0"].item() == pytest.approx((x.sum() ** 2 / (2 * x.square().sum())).item(), rel=1e-6)
    env2 = tiny_env(fairness_weight=0.25)
    r = env2.step(act(0))
    assert r.rewards["bs0"].item() == pytest.approx(0.75 * r.info["sum_rate"].item() + 0.25 * 0.5, rel=1e-5)


def test_static_statistics_and_actions_feed_next_observation():
    env = make_env("p4", num_envs=2, seed=3)
    act = sampled(env, 1)
    r1, r2 = env.step(act), env.step(act)
    assert torch.equal(r1.rewards["bs0"], r2.rewards["bs0"])       # same statistics, same action
    assert torch.equal(r1.obs["bs0"], r2.obs["bs0"])
    other = dict(act, bs0=act["bs0"] * 3.0)                      # scale changes the observation,
    r3 = env.step(other)
    assert torch.allclose(r3.rewards["bs0"], r1.rewards["bs0"], rtol=1e-5)   # not the scaled reward
    assert not torch.allclose(r3.obs["bs0"], r1.obs["bs0"])


def test_batched_equals_single_and_seeded():
    big = make_env("p4", num_envs=4, seed=5)
    act = sampled(big, 2)
    res = big.step(act)
    for i in range(4):
        one = make_env("p4", num_envs=1, seed=77)
        one.set_scene(P4Scene(*(getattr(big.scene, f.name)[i:i + 1] for f in dataclasses.fields(P4Scene))))
        r1 = one.step({a: x[i:i + 1] for a, x in act.items()})
        assert torch.allclose(r1.rewards["bs0"], res.rewards["bs0"][i:i + 1], rtol=1e-5)
        for a in big.agent_ids:
            assert torch.allclose(r1.obs[a], res.obs[a][i:i + 1], rtol=1e-4, atol=1e-5)
    again = make_env("p4", num_envs=4, seed=5)
    assert torch.equal(again.step(act).rewards["bs0"], res.rewards["bs0"])
    assert not torch.equal(make_env("p4", num_envs=4, seed=6).step(act).rewards["bs0"], res.rewards["bs0"])


def test_reset_draws_new_statistics_and_truncates():
    env = make_env("p4", num_envs=2, overrides={"episode_steps": 2}, seed=0)
    u0 = env.scene.user_pos.clone()
    act = sampled(env)
    assert [env.step(act).truncated.tolist() for _ in range(2)] == [[False, False], [True, True]]
    env.reset()
    assert not torch.equal(u0, env.scene.user_pos)


@pytest.mark.parametrize("agent,bad,needle", [
    ("sched", torch.tensor([6, 0]), "sched.codeword"),
    ("sched", torch.tensor([0.0, 1.0]), "sched.codeword"),
    ("bs0", torch.full((2, 2, 4, 4), float("nan")), "bs0.W"),
    ("bs0", torch.zeros(2, 4, 4), "bs0.W"),
    ("ris1", torch.full((2, 16), float("inf")), "ris1.theta"),
    ("ris0", torch.zeros(2, 15), "ris0.theta"),
])
def test_invalid_actions_rejected(agent, bad, needle):
    env = make_env("p4", num_envs=2, seed=0)
    act = sampled(env)
    act[agent] = bad
    with pytest.raises(ActionError, match=needle.replace(".", r"\.")):
        env.step(act)
