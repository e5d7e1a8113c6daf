"""P2 environment: per-BS reward by hand, collision outcome, overheard claims, mobility, errors."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from twin.envs import make_env
from twin.envs.p2 import P2Env
from twin.errors import ActionError
from twin.scene import P2Scene


def sampled(env: P2Env, seed: int = 0) -> dict:
    out = {}
    for i, a in enumerate(env.agent_ids):
        sp = env.action_spaces[a]
        sp.seed(seed + i)
        draws = [sp.sample() for _ in range(env.num_envs)]
        out[a] = {f: torch.as_tensor(np.stack([d[f] for d in draws])) for f in ("W", "theta", "assoc")}
    return out


def test_spaces_and_sampled_actions():
    env = make_env("p2", num_envs=3, overrides={"n_users": 6, "n_irs": 2}, seed=0)
    for t in range(4):
        res = env.step(sampled(env, t))
        for a in env.agent_ids:
            assert res.obs[a].shape == (3, env.obs_dim) and torch.isfinite(res.obs[a]).all()
            assert all(env.observation_spaces[a].contains(o) for o in res.obs[a].numpy())
            assert res.rewards[a].shape == (3,)
        assert torch.allclose(res.info["bs_sum_rate"].sum(-1), res.info["sum_rate"])
        assert env.state().shape == (3, env.state_dim)


def tiny() -> P2Env:
    """2 BSs, 2 users (user k in cell k), 1 IRS, 1 antenna, 1 element: everything by hand."""
    env = make_env("p2", num_envs=1, overrides={"n_users": 2, "n_irs": 1, "n_bs_antennas": 1, "n_elements": 1}, seed=0)
    env = P2Env(1, env.cfg, seed=0, dtype=torch.complex128)
    env.reset()
    c = lambda z, *s: torch.tensor(z, dtype=torch.complex128).reshape(*s)
    env.set_scene(H_BI=c([2e-4, 1e-4j], 1, 2, 1, 1, 1), h_IU=c([3e-4, 1e-4 + 1e-4j], 1, 1, 2, 1),
                  h_BU=c([1e-5, 0.0, 0.0, 2e-5j], 1, 2, 2, 1), user_cell=torch.tensor([[0, 1]]))
    return env


def act(assoc0: float, assoc1: float, theta=(0.25, -0.5)) -> dict:
    return {f"bs{m}": {"W": torch.tensor([[[[0.3, 0.0]], [[0.4, 0.0]]]]) if m == 0 else torch.tensor([[[[0.0, -1.0]], [[0.0, 0.0]]]]),
                      "theta": torch.tensor([[[theta[m]]]]),
                      "assoc": torch.tensor([[[a], [a]]])}
            for m, a in ((0, assoc0), (1, assoc1))}


def hand_rates(env: P2Env, irs_for: set[int]) -> list[float]:
    """Per-BS rate: user m in cell m; the IRS helps user m iff m in irs_for."""
    p, noise = env.cfg.p_max_w, env.cfg.noise_w
    w = [math.sqrt(p) * (0.3 + 0.4j) / 0.5, math.sqrt(p) * (-1.0)]     # W scaled to P_max
    hBI, hIU, hBU = [2e-4, 1e-4j], [3e-4, 1e-4 + 1e-4j], [1e-5, 2e-5j]
    out = []
    for m in range(2):
        g = np.conj(hBU[m])
        if m in irs_for:
            g = g + np.conj(hIU[m]) * np.exp(1j * math.pi * (0.25, -0.5)[m]) * hBI[m]
        out.append(math.log2(1 + abs(g * w[m]) ** 2 / noise))
    return out


@pytest.mark.parametrize("assoc,served,collided", [
    ((0.5, -0.5), {0}, 0),      # only BS 0 claims: it owns the IRS
    ((-0.5, 0.9), {1}, 0),      # only BS 1 claims
    ((0.5, 0.9), set(), 1),     # both claim: collision, nobody gets the reflected path
    ((-0.1, -0.9), set(), 0),   # nobody claims
])
def test_per_bs_reward_and_collision_outcome_by_hand(assoc, served, collided):
    env = tiny()
    res = env.step(act(*assoc))
    expect = hand_rates(env, served)
    for m in range(2):
        assert res.rewards[f"bs{m}"].item() == pytest.approx(expect[m], rel=1e-5)
    assert res.info["collisions"].item() == collided
    assert res.info["owner"].item() == (next(iter(served)) if served else -1)
    assert torch.allclose(res.info["bs_power_w"], torch.full((1, 2), env.cfg.p_max_w, dtype=torch.float64))


def test_overheard_claims_are_the_other_bss_previous_claims():
    env = tiny()
    res = env.step(act(0.5, -0.5))
    # Last entry of each observation: the other BS's claim on IRS 0 in the previous slot.
    assert res.obs["bs1"][0, -1].item() == 1.0 and res.obs["bs0"][0, -1].item() == 0.0
    res = env.step(act(-0.5, 0.5))
    assert res.obs["bs1"][0, -1].item() == 0.0 and res.obs["bs0"][0, -1].item() == 1.0


def test_observation_hides_other_cells_users_and_follows_mobility():
    env = make_env("p2", num_envs=4, overrides={"user_speed_mps": 20.0}, seed=3)
    K, Nb = env.K, env.Nb
    handovers = 0
    for t in range(30):
        cell = env.scene.user_cell
        for m, a in enumerate(env.agent_ids):
            o = env.local_observation(a)
            mask = o[:, -(K + (env.n_bs - 1) * env.L):-(env.n_bs - 1) * env.L]
            assert torch.equal(mask.bool(), cell == m)
            direct_re = o[:, :K * Nb].reshape(-1, K, Nb)
            assert (direct_re[cell != m] == 0).all()
        handovers += int(env.step(sampled(env, t)).info["handovers"].sum())
    assert handovers > 0


def test_batched_equals_single_and_seeded():
    big = make_env("p2", num_envs=3, overrides={"n_users": 6, "n_irs": 2}, seed=8)
    scene0 = big.scene
    a = sampled(big, 5)
    res = big.step(a)
    for i in range(3):
        one = make_env("p2", num_envs=1, overrides={"n_users": 6, "n_irs": 2}, seed=99)
        one.set_scene(P2Scene(*(getattr(scene0, f.name)[i:i + 1] for f in dataclasses.fields(P2Scene))))
        r1 = one.step({ag: {f: x[i:i + 1] for f, x in d.items()} for ag, d in a.items()})
        for ag in big.agent_ids:
            assert torch.allclose(r1.rewards[ag], res.rewards[ag][i:i + 1], rtol=1e-5), ag
    again = make_env("p2", num_envs=3, overrides={"n_users": 6, "n_irs": 2}, seed=8)
    r2 = again.step(a)
    assert all(torch.equal(r2.rewards[ag], res.rewards[ag]) for ag in big.agent_ids)
    assert all(torch.equal(r2.obs[ag], res.obs[ag]) for ag in big.agent_ids)


@pytest.mark.parametrize("field,value,needle", [
    ("W", lambda x: x * 2.0 + 1.5, "bs1.W"),
    ("theta", lambda x: x * float("nan"), "bs1.theta"),
    ("assoc", lambda x: x[:, :, :0], "bs1.assoc"),
    ("W", None, "bs1.W"),
])
def test_invalid_actions_rejected(field, value, needle):
    env = make_env("p2", num_envs=2, seed=0)
    a = sampled(env)
    if value is None:
        a["bs1"].pop(field)
    else:
        a["bs1"][field] = value(a["bs1"][field])
    with pytest.raises(ActionError, match=needle.replace(".", r"\.")):
        env.step(a)
