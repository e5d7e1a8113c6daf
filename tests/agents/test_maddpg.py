"""MADDPG (continuous relaxation, quantized at execution) and independent learners on P1."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given, settings, strategies as st

from agents import registry
from agents.evaluation import p1_reference_policies, rollout
from agents.il import ILConfig, IndependentLearners
from agents.maddpg import MADDPG, MADDPGConfig
from agents.training import TrainConfig, Trainer, derive_seed, learn_step
from twin.errors import ConfigError

SMALL = ["n_elements=4", "n_users=2", "episode_steps=20", "power_table_mw=5,10,15,45,60"]


def small_env(num_envs: int, resolutions: str = "1,2,3"):
    return registry.make_env("p1", registry.scenario_config("p1", SMALL + [f"resolutions={resolutions}"]), num_envs)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3), explore=st.booleans(),
       resolutions=st.sampled_from(["1,2,3", "2,3", "1"]), local=st.booleans())
def test_quantized_actions_are_always_valid(seed: int, scale: float, explore: bool, resolutions: str, local: bool) -> None:
    env = small_env(num_envs=6, resolutions=resolutions)
    cls = IndependentLearners if local else MADDPG
    algo = cls(env, None, seed)
    g = torch.Generator().manual_seed(seed)
    # Observations far outside the training range and perturbed weights must still give valid actions.
    obs = {a: torch.randn(6, sp.shape[0], generator=g) * scale for a, sp in env.observation_spaces.items()}
    with torch.no_grad():
        for p in algo.actor_nets.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale ** 0.5)
    env.reset(seed=seed)
    for actions in (algo.act(obs, env.state(), explore),
                    {a: algo.actors()[algo.role_of(a)](obs[a]) for a in env.agent_ids}):
        env.decode_actions(actions)            # ActionError on any invalid field
        for a in env.agent_ids:
            if a.startswith("irs"):
                bits = actions[a]["bits"]
                assert bool((actions[a]["phase_idx"] < (1 << bits).unsqueeze(-1)).all())


def test_tiny_budget_beats_random_decisions(tmp_path) -> None:
    cfg = dataclasses.replace(MADDPGConfig(), learning_starts=256, batch_size=64)
    scenario = registry.scenario_config("p1", SMALL)
    train = TrainConfig(scenario="p1", algo="maddpg", steps=100, num_envs=16, seed=0, log_every=50,
                        eval_every=10**6, eval_episodes=32, checkpoint_every=10**6)
    trainer = Trainer(tmp_path / "maddpg", train, scenario, cfg)
    result = trainer.run()
    random_policy = p1_reference_policies(trainer.eval_env, seed=0, include_upper=False)["random"]
    random_reward = float(rollout(trainer.eval_env, random_policy, derive_seed(0, "eval"))["reward"].mean())
    assert result.final_eval["eval_reward"] > random_reward + 0.1


def run(cls, cfg, seed: int, steps: int = 10):
    env = small_env(num_envs=8)
    algo = cls(env, cfg, seed)
    obs = env.reset(seed=1)
    state = env.state()
    for _ in range(steps):
        _, result, state, _ = learn_step(algo, env, obs, state)
        obs = result.obs
    return algo


@pytest.mark.parametrize("cls,cfg", [(MADDPG, MADDPGConfig(learning_starts=32, batch_size=16)),
                                     (IndependentLearners, ILConfig(learning_starts=32, batch_size=16))])
def test_seeded_runs_reproduce(cls, cfg) -> None:
    a, b, c = run(cls, cfg, 3), run(cls, cfg, 3), run(cls, cfg, 4)
    assert a.updates > 0
    sa, sb, sc = (x.actor_nets.state_dict() for x in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_critic_inputs_global_vs_local() -> None:
    env = small_env(num_envs=2)
    g, l = MADDPG(env, None, 0), IndependentLearners(env, None, 0)
    joint = sum(g.act_dims.values())
    env.reset(seed=0)
    assert g.critics["irs0"].in_dim == env.state().shape[1] + joint
    assert l.critics["irs0"].in_dim == env.observation_spaces["irs0"].shape[0] + g.act_dims["irs0"]
    assert l.critics["bs0"].in_dim == env.observation_spaces["bs0"].shape[0] + g.act_dims["bs0"]
    with pytest.raises(ConfigError, match="critic"):
        MADDPG(env, MADDPGConfig(critic="both"), 0)


# One user, two BS antennas, channel observations (project extension): the only thing worth
# learning is the beam, and MRT doubles the expected SNR of a channel-blind beam, so the sum rate
# of a policy that learned nothing equals random decisions' (docs/RESULTS.md, P1 diagnosis).
CSI_SMALL = ["n_users=1", "n_bs_antennas=2", "n_irs=1", "n_elements=4", "episode_steps=20", "observation=csi"]


def test_tiny_budget_learns_beams_from_channel_observations(tmp_path) -> None:
    # Independent learners: the BS critic sees only its own observation and beam, the cheapest
    # case (MADDPG's global critic needs more updates than fit in a fast test; RESULTS, P1).
    algo = "il"
    cls, cfg_cls = registry.algorithm(algo)
    cfg = dataclasses.replace(cfg_cls(), gamma=0.0, lr_actor=1e-3, lr_critic=1e-3, noise=0.5,
                              learning_starts=128, batch_size=64, updates_per_step=3)
    scenario = registry.scenario_config("p1", CSI_SMALL)
    train = TrainConfig(scenario="p1", algo=algo, steps=200, num_envs=16, seed=0, log_every=100,
                        eval_every=10**6, eval_episodes=32, checkpoint_every=10**6)
    trainer = Trainer(tmp_path / algo, train, scenario, cfg)
    result = trainer.run(plot=False)                    # 3,200 transitions, ~600 updates
    refs = p1_reference_policies(trainer.eval_env, seed=0, include_upper=False)
    rate = {name: float(rollout(trainer.eval_env, refs[name], derive_seed(0, "eval"))["sum_rate"].mean())
            for name in ("random", "all-on+align+mrt")}
    learned = result.final_eval["eval_sum_rate"]
    assert learned > 1.4 * rate["random"], (learned, rate)
    assert learned < 1.1 * rate["all-on+align+mrt"], (learned, rate)   # sanity: not above the full-CSI design
