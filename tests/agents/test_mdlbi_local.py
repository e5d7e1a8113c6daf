"""MDLBI's "local" precoder head (P2): precoders and phases from the BS's own CSI only."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from agents.bundle import export_bundle
from agents.mdlbi import MDLBI, MDLBIConfig
from agents.runtime import load_runtime
from twin import multicell as mc
from twin.envs.p2 import P2Env
from twin.scenarios import get_scenario

SMALL = dict(n_users=4, n_irs=2, n_bs_antennas=2, n_elements=4, episode_steps=20)
LOCAL = MDLBIConfig(hidden=(16, 16), precoder_head="local")


def small_env(num_envs: int = 4, seed: int = 0) -> P2Env:
    return P2Env(num_envs=num_envs, cfg=get_scenario("p2", **SMALL), seed=seed)


def two_users_per_cell_env() -> tuple[P2Env, dict[str, torch.Tensor]]:
    """The small env with users 0, 1 in BS 0's cell and 2, 3 in BS 1's, and its observations."""
    env = small_env()
    env.reset(seed=3)
    env.set_scene(user_cell=torch.tensor([[0, 0, 1, 1]]).expand(env.num_envs, -1).clone())
    return env, env._observe()


def raw(env: P2Env, q: list[float], r: float, c: list[float]) -> torch.Tensor:
    return torch.tensor(q + [r] + c).float().expand(env.num_envs, -1)


def test_one_user_gets_mrt_on_its_effective_channel_with_the_claimed_irs_cophased():
    """A BS with a single user: w is MRT on that user's effective channel (direct + the claimed
    IRS, co-phased), so |g w| = ||g|| ||w||, and the co-phased channel is at least the direct one."""
    env = small_env()
    obs = env.reset(seed=2)
    env.set_scene(user_cell=torch.tensor([[0, 1, 1, 1]]).expand(env.num_envs, -1).clone())
    obs = env._observe()
    actor = MDLBI(env, LOCAL, seed=0).actor_nets["bs0"]
    act0 = actor.split(raw(env, [0.3, -0.5, 0.9, 0.0], 0.0, [-0.2, 0.4]), obs["bs0"])    # claims IRS 1
    act1 = actor.split(raw(env, [0.0] * 4, 0.0, [-1.0, -1.0]), obs["bs1"])             # claims nothing
    d = env.decode_actions({"bs0": act0, "bs1": act1})
    assert d["user_irs"][:, 0].tolist() == [1] * env.num_envs
    s = env.scene
    owner = mc.resolve_claims(d["claims"])
    g = mc.effective_channel(s.H_BI, s.h_IU, s.h_BU, d["phi"], owner, s.user_cell, d["user_irs"])[:, 0]   # (B, Nb)
    w = d["W"][:, 0, :, 0]
    gain = (g * w).sum(-1).abs()
    assert torch.allclose(gain, torch.linalg.vector_norm(g, dim=-1) * torch.linalg.vector_norm(w, dim=-1), rtol=1e-4)
    direct = torch.linalg.vector_norm(s.h_BU[:, 0, 0], dim=-1)
    assert bool((torch.linalg.vector_norm(g, dim=-1) >= direct * (1 - 1e-5)).all())
    assert torch.allclose(d["W"][:, 0, :, 1:].abs().sum((-1, -2)), torch.zeros(env.num_envs))   # other cells' users: 0


def test_power_entries_select_users_and_the_head_reads_only_its_own_observation():
    env, obs = two_users_per_cell_env()
    actor = MDLBI(env, LOCAL, seed=0).actor_nets["bs1"]
    a = actor.split(raw(env, [0.0, 0.0, 1.0, -1.0], 0.0, [-1.0, -1.0]), obs["bs1"])
    col = a["W"].square().sum((1, 2))                                      # (B, K) column powers
    assert torch.allclose(col[:, 3] / col[:, 2], torch.full((env.num_envs,), math.exp(-10.0)), rtol=1e-4)  # exp(5 (q - 1))
    # Perturbing BS 0's private channels leaves BS 1's decision unchanged.
    obs2 = observe_with_bs0_private_perturbed(env, 2.0)
    b = actor.split(raw(env, [0.0, 0.0, 1.0, -1.0], 0.0, [-1.0, -1.0]), obs2["bs1"])
    assert torch.equal(a["W"], b["W"]) and torch.equal(a["theta"], b["theta"])


@pytest.mark.parametrize("cfg", [LOCAL, dataclasses.replace(LOCAL, gain_features=True),
                                 dataclasses.replace(LOCAL, gain_features=True, centralized=True)],
                         ids=["local", "gain-features", "central"])
def test_local_head_bundle_runs_in_the_numpy_runtime_with_the_same_actions(tmp_path, cfg):
    env = small_env(num_envs=3)
    algo = MDLBI(env, cfg, seed=1)
    # claims on: make the probe and the check exercise the IRS branch
    wants = assert_numpy_runtime_matches(tmp_path, env, algo, claim_bias=[0.5, 1.0], atol=1e-6)
    assert all(bool((w["theta"].abs().sum((-1, -2)) > 0).all()) for w in wants.values())


def observe_with_bs0_private_perturbed(env: P2Env, own_user_scale: float) -> dict[str, torch.Tensor]:
    """The observations after BS 0's private channels change: noise on its direct links and its
    own users' IRS links scaled (what BS 1 must not see)."""
    s = env.scene
    g = torch.Generator().manual_seed(0)
    h_BU = s.h_BU.clone()
    h_BU[:, 0] += torch.randn(h_BU[:, 0].shape, generator=g, dtype=h_BU.dtype)
    h_IU = torch.where((s.user_cell == 0)[:, None, :, None], own_user_scale * s.h_IU, s.h_IU)
    env.set_scene(h_BU=h_BU, h_IU=h_IU)
    return env._observe()


def assert_numpy_runtime_matches(tmp_path, env: P2Env, algo: MDLBI, claim_bias: list[float],
                                 atol: float) -> dict[str, dict[str, torch.Tensor]]:
    """Export ``algo`` (its actors' last-layer claim biases set to ``claim_bias``) and check the
    bundle runs in the numpy runtime with the torch actors' W, theta and assoc on one reset;
    returns the torch actions per agent."""
    with torch.no_grad():
        for net in algo.actor_nets.values():
            net.net.net[-1].bias.view(-1, net.act_dim)[:, -len(claim_bias):] = torch.tensor(claim_bias)
    path = export_bundle(tmp_path / "b", "mdlbi", "p2", env.cfg, algo.actors(), {a: algo.role_of(a) for a in env.agent_ids},
                         env.observation_spaces, env.action_spaces)
    roles = json.loads((path / "manifest.json").read_text())["roles"]
    assert {r: v["runtime"]["backend"] for r, v in roles.items()} == {"bs0": "numpy", "bs1": "numpy"}
    rt = load_runtime(path)
    obs = env.reset(seed=5)
    wants = {}
    for a in env.agent_ids:
        with torch.no_grad():
            wants[a] = algo.actors()[a](obs[a])
        for b in range(env.num_envs):
            got = rt.decide(a, obs[a][b].numpy())
            for k in ("W", "theta", "assoc"):
                np.testing.assert_allclose(np.asarray(got[k]), wants[a][k][b].numpy(), atol=atol)
    return wants
