"""MAQ-WP / MAQ-PG (agents.maq) and the monotonic mixers (agents.mixers) on P1."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from agents import knn, registry
from agents.bundle import load_bundle
from agents.evaluation import p1_reference_policies, rollout
from agents.maq import (MAQPG, MAQWP, MAQPGConfig, MAQWPConfig, MappingEstimator, PolicyGradientMapping,
                        WolpertingerMapping, encode_discrete)
from agents.mixers import MonotonicMixer
from agents.training import TrainConfig, Trainer, derive_seed, learn_step
from twin.errors import ConfigError

# A small P1 where decisions matter within a tiny budget: element power 10x the preset's,
# so random resolutions and ON masks drain the energy buffers (eq. 19 part 4).
SMALL = ["n_elements=4", "n_users=2", "episode_steps=20", "power_table_mw=5,10,15,45,60"]
FAST = {"learning_starts": 256, "batch_size": 64, "eps_decay_steps": 1600}


def small_env(num_envs: int = 4, seed: int = 0):
    return registry.make_env("p1", registry.scenario_config("p1", SMALL), num_envs)


# --------------------------------------------------------------------------- mixers

def test_mixer_is_monotonic_in_every_agent_value() -> None:
    torch.manual_seed(0)
    mixer = MonotonicMixer(n_agents=3, cond_dim=7, embed_dim=8, hyper_hidden=16)
    q = (torch.randn(256, 3) * 5).requires_grad_(True)
    cond = torch.randn(256, 7) * 3
    mixer(q, cond).sum().backward()
    assert bool((q.grad >= 0).all())
    w1, w2 = mixer.weights(cond)
    assert bool((w1 >= 0).all()) and bool((w2 >= 0).all())
    # And the greedy per-agent choice is the joint argmax: raising any q_i never lowers Q_tot.
    with torch.no_grad():
        base = mixer(q, cond)
        for i in range(3):
            bumped = q.clone()
            bumped[:, i] += torch.rand(256) * 2
            assert bool((mixer(bumped, cond) >= base - 1e-6).all())


# --------------------------------------------------------------------------- mappings

def test_wolpertinger_picks_the_best_neighbour_by_q() -> None:
    g = torch.Generator().manual_seed(1)
    B, N, k = 6, 3, 7
    e = torch.rand(B, 2 * N, generator=g)
    bits = torch.tensor([1, 2, 3, 1, 2, 3])
    weights = torch.randn(3 * N, generator=g)
    q_fn = lambda x: x @ weights  # an arbitrary critic over encoded actions
    idx, on = WolpertingerMapping(k).to_discrete(e, bits, q_fn)
    nb = knn.k_nearest(e[:, :N], e[:, N:], bits, k)
    q_all = q_fn(encode_discrete(nb.phase_idx, nb.on, bits))
    best = q_all.argmax(-1)
    assert torch.equal(idx, nb.phase_idx[torch.arange(B), best])
    assert torch.equal(on, nb.on[torch.arange(B), best])
    # k = 1 is the rounding, whatever Q says.
    idx1, on1 = WolpertingerMapping(1).to_discrete(e, bits, q_fn)
    idx_r, on_r = knn.nearest(e[:, :N], e[:, N:], bits)
    assert torch.equal(idx1, idx_r) and torch.equal(on1, on_r)


def test_policy_gradient_of_lemma_1_raises_q_and_estimator_learns_the_mapping() -> None:
    torch.manual_seed(0)
    N, B = 3, 64
    mapping = PolicyGradientMapping(init_log_std=-0.5, samples=8)
    policy = mapping.make_policy(2, N, (32,))
    estimator = MappingEstimator(N, max_bits=2, hidden=(64,))
    opt = torch.optim.Adam(list(policy.parameters()) + list(estimator.parameters()), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    bits = torch.full((B,), 2)
    inp = torch.randn(B, 2, generator=gen)
    q_fn = lambda x: x[..., 2 * N:].sum(-1)            # Q = number of ON elements
    p_on = lambda: (1 - torch.distributions.Normal(policy(inp).mean[:, N:], policy(inp).stddev[:, N:]).cdf(torch.zeros(1))).mean()
    before = float(p_on().detach())
    accs = []
    for _ in range(150):
        loss, m = mapping.policy_loss(policy, inp, bits, q_fn, gen, estimator)
        opt.zero_grad()
        loss.backward()
        opt.step()
        accs.append(m["map_acc"])
    assert float(p_on().detach()) > max(0.9, before + 0.3)     # eq. 31 moved mu towards Q's preferred actions
    assert sum(accs[-10:]) / 10 > 0.9                   # eq. 33 recovered phi(e)


# --------------------------------------------------------------------------- learning

@pytest.mark.parametrize("algo", ["maq-wp", "maq-pg"])
def test_tiny_budget_beats_random_decisions(tmp_path, algo: str) -> None:
    cls, cfg_cls = registry.algorithm(algo)
    extra = {"k": 10} if algo == "maq-wp" else {}
    cfg = dataclasses.replace(cfg_cls(), **FAST, **extra)
    scenario = registry.scenario_config("p1", SMALL)
    train = TrainConfig(scenario="p1", algo=algo, steps=100, num_envs=16, seed=0, log_every=50,
                        eval_every=10**6, eval_episodes=32, checkpoint_every=10**6)
    trainer = Trainer(tmp_path / algo, train, scenario, cfg)
    result = trainer.run()                              # 1600 transitions
    random_policy = p1_reference_policies(trainer.eval_env, seed=0, include_upper=False)["random"]
    random_reward = float(rollout(trainer.eval_env, random_policy, derive_seed(0, "eval"))["reward"].mean())
    assert result.final_eval["eval_reward"] > random_reward + 0.1
    # The exported bundle acts like the trainer's actors.
    bundle = load_bundle(result.bundle)
    obs = trainer.eval_env.reset(seed=3)
    actors = trainer.algo.actors()
    for agent in trainer.eval_env.agent_ids:
        o = obs[agent][:1]
        with torch.no_grad():
            want = actors[trainer.algo.role_of(agent)](o)
        got = bundle.decide(agent, o[0].numpy())
        for key, value in want.items():
            assert (got[key] == value[0].numpy()).all(), (agent, key)


def run_steps(algo_cls, cfg, seed: int, steps: int = 12):
    env = small_env(num_envs=8)
    algo = algo_cls(env, cfg, seed)
    obs = env.reset(seed=seed)
    state = env.state()
    action = None
    for _ in range(steps):
        action, result, next_state, _ = learn_step(algo, env, obs, state)
        obs, state = result.obs, next_state
    return algo, action


@pytest.mark.parametrize("algo_cls,cfg", [
    (MAQWP, MAQWPConfig(learning_starts=32, batch_size=16, k=5)),
    (MAQPG, MAQPGConfig(learning_starts=32, batch_size=16)),
])
def test_seeded_runs_reproduce(algo_cls, cfg) -> None:
    a1, act1 = run_steps(algo_cls, cfg, seed=5)
    a2, act2 = run_steps(algo_cls, cfg, seed=5)
    a3, _ = run_steps(algo_cls, cfg, seed=6)
    assert a1.updates > 0
    s1, s2, s3 = (a.online.state_dict() for a in (a1, a2, a3))
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert not all(torch.equal(s1[k], s3[k]) for k in s1)
    assert all(torch.equal(torch.as_tensor(act1[a][f]), torch.as_tensor(act2[a][f])) for a in act1 for f in act1[a])
    # A fresh algorithm loaded from the state_dict holds the same networks, targets and RNG.
    a4, _ = run_steps(algo_cls, cfg, seed=9, steps=0)
    a4.load_state_dict(a1.state_dict())
    s4 = a4.target.state_dict()
    assert all(torch.equal(v, s4[k]) for k, v in a1.target.state_dict().items())
    assert torch.equal(a1.gen.get_state(), a4.gen.get_state()) and len(a4.buffer) == len(a1.buffer)


def test_actions_are_valid_and_actor_state_starts_fresh() -> None:
    env = small_env(num_envs=5)
    algo = MAQWP(env, MAQWPConfig(k=3), seed=0)
    obs = env.reset(seed=0)
    for explore in (True, False):
        env.decode_actions(algo.act(obs, env.state(), explore))  # raises ActionError if invalid
    actors = algo.actors()
    first = actors["irs0"](obs["irs0"])
    again = algo.actors()["irs0"](obs["irs0"])  # actors() starts a new episode: same b(t-1)
    assert torch.equal(first["bits"], again["bits"])
    assert set(first) == {"bits", "phase_idx", "on"} and first["phase_idx"].shape == (5, 4)


def test_config_errors_name_the_field() -> None:
    env = small_env()
    with pytest.raises(ConfigError, match="k:"):
        MAQWP(env, MAQWPConfig(k=51), seed=0)
    with pytest.raises(ConfigError, match="eps_start"):
        MAQPG(env, MAQPGConfig(eps_start=0.01, eps_end=0.2), seed=0)
