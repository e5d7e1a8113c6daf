"""The P1 BS heads with MRT directions (``power-mrt``: learned per-user shares;
``snr-power-mrt``: one learned exponent, shares ~ SNR^c): their map, the critics' view of
an executed beam, numpy export, refusal without channel observations, and that it learns."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from agents import registry
from agents.bundle import export_bundle, load_bundle
from agents.maq import PowerShareBSActor, SNRPowerBSActor
from agents.runtime import load_runtime
from agents.training import TrainConfig, Trainer
from twin.errors import ConfigError

CSI = ["observation=csi"]
HEADS = {"power-mrt": PowerShareBSActor, "snr-power-mrt": SNRPowerBSActor}


def _env(num_envs: int, extra=()):
    return registry.make_env("p1", registry.scenario_config("p1", CSI + list(extra)), num_envs)


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("algo", ["maq-wp", "maq-pg", "maddpg", "il"])
def test_head_beams_mrt_with_its_power_split_and_critics_see_it(algo: str, head: str) -> None:
    env = _env(8)
    obs = env.reset(seed=3)
    cls, cfg_cls = registry.algorithm(algo)
    agent = cls(env, cfg_cls(bs_head=head), 0)
    bs = agent.actors()["bs0"]
    assert type(bs) is HEADS[head]
    o = obs["bs0"]
    with torch.no_grad():
        bs.net.net[-1].bias.copy_(torch.tensor([0.5, -0.3, 0.0, 1.0][:bs.net.out_dim]))   # an unequal split
        V = bs(o)["V"]
        p = bs.params(o)
    if head == "power-mrt":
        shares = torch.softmax(2.0 * p, -1)
        seen = torch.softmax(2.0 * bs.critic_action(o, V), -1)          # centred log-amplitudes
    else:                                                                # shares ~ SNR^c, log10 SNR last in obs
        shares = torch.softmax(p * math.log(10.0) * o[:, -4:], -1)
        seen = bs.critic_action(o, V)
        assert torch.allclose(seen, p, atol=1e-3)                         # the critic recovers c itself
        seen = shares
    Vc = torch.complex(V[:, 0], V[:, 1]).to(torch.complex128)           # (B, M, K)
    h = env.scene.h_BU.to(torch.complex128)                             # (B, K, M); MRT: v_k along h_BU,k
    cos = (h.conj() * Vc.transpose(1, 2)).sum(-1).abs() / (h.norm(dim=-1) * Vc.norm(dim=1))
    assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)
    assert torch.allclose(V.square().sum((1, 2)) / env.cfg.p_max_w, shares, atol=1e-5)
    assert torch.allclose(seen, shares, atol=1e-5)
    assert not torch.allclose(shares, torch.full_like(shares, 0.25), atol=1e-3)
    res = env.step({**env.sample_actions(torch.Generator().manual_seed(0)), "bs0": {"V": V}})   # a valid action
    assert torch.isfinite(res.rewards["bs0"]).all()


def test_heads_need_channel_observations() -> None:
    env = registry.make_env("p1", registry.scenario_config("p1", []), 2)
    cls, cfg_cls = registry.algorithm("il")
    for head in HEADS:
        with pytest.raises(ConfigError, match="observation=csi"):
            cls(env, cfg_cls(bs_head=head), 0)
    with pytest.raises(ConfigError, match="bs_head"):
        cls(_env(2), cfg_cls(bs_head="zf"), 0)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_head_bundle_runs_in_numpy_with_the_same_actions(head: str, tmp_path) -> None:
    env = _env(1)
    cls, cfg_cls = registry.algorithm("maq-wp")
    agent = cls(env, cfg_cls(bs_head=head, k=4), 0)
    bs = agent.actors()["bs0"]
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in bs.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    role_of = {a: agent.role_of(a) for a in env.agent_ids}
    path = export_bundle(tmp_path / "b", "maq-wp", "p1", env.cfg, agent.actors(), role_of,
                         dict(env.observation_spaces), dict(env.action_spaces))
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["roles"]["bs0"]["runtime"]["backend"] == "numpy", manifest["roles"]["bs0"]["runtime"]
    tb, rt = load_bundle(path), load_runtime(path, allow_torch=False)
    obs = _env(16).reset(seed=5)["bs0"]
    with torch.no_grad():
        ref = bs(obs)["V"].numpy()
    assert np.array_equal(tb.act({"bs0": obs})["bs0"]["V"].numpy(), ref)     # torch bundle: bit-identical
    got = rt.act({"bs0": obs.numpy()})["bs0"]["V"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6 * math.sqrt(env.cfg.p_max_w))


def _train_il(tmp_path, lr_actor: float) -> float:
    """A tiny IL run with the snr-power-mrt head; the final evaluation reward."""
    cls, cfg_cls = registry.algorithm("il")
    cfg = dataclasses.replace(cfg_cls(), bs_head="snr-power-mrt", gamma=0.0, lr_actor=lr_actor, lr_critic=1e-3,
                              noise=0.3, bs_noise=1.0, hidden=(64, 64), learning_starts=256, batch_size=64,
                              updates_per_step=2)
    scenario = registry.scenario_config("p1", CSI + ["episode_steps=20"])
    train = TrainConfig(scenario="p1", algo="il", steps=100, num_envs=16, seed=0, log_every=50,
                        eval_every=10**6, eval_episodes=16, checkpoint_every=10**6)
    result = Trainer(tmp_path / f"lr{lr_actor}", train, scenario, cfg).run(plot=False)   # 1,600 transitions, ~170 updates
    return result.final_eval["eval_reward"]


def test_tiny_budget_learns_a_better_power_split_than_its_start(tmp_path) -> None:
    # With lr_actor = 0 the actors keep their initialization: MRT with an equal split (c ~ 0).
    # Learning moves c towards the strong users (eq. 19 trades the sum rate against the rate
    # requirements); the reward must show it.
    frozen = _train_il(tmp_path, lr_actor=0.0)
    learned = _train_il(tmp_path, lr_actor=1e-3)
    assert learned > frozen + 0.01, (frozen, learned)
