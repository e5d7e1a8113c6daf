"""MAGAR and the P3 DQN baselines (agents/magar.py, agents/dqn.py, agents/p3_reference.py)."""

from __future__ import annotations

import math

import pytest
import torch

from agents.bundle import export_bundle, load_bundle
from agents.dqn import MADQN, MADQNConfig, MADQNLR, MADQNLRConfig, QLearning, QLearningConfig
from agents.evaluation import actors_policy, rollout
from agents.magar import GLOBAL_ID, MAGAR, MAGARConfig
from agents import p3_reference as pr
from twin import star
from twin.envs.p3 import P3Env
from twin.errors import ConfigError
from twin.scenarios import get_scenario
from twin.scene import sample_p3

SMALL = dict(n_elements=4, n_users=3, n_bs_antennas=2, n_surfaces=2, episode_steps=12)
FAST = dict(learning_starts=16, batch_size=16, hidden=(32,), buffer_size=512)


def small_env(num_envs: int = 4, **over) -> P3Env:
    return P3Env(num_envs=num_envs, cfg=get_scenario("p3", **{**SMALL, **over}), seed=0)


def run(alg, env, steps: int, seed: int = 0, explore: bool = True, hook=None, fixed_scene: bool = False) -> None:
    obs = env.reset(seed=seed)
    episode = 0
    for _ in range(steps):
        state = env.state()
        t = env.t
        action = alg.act(obs, state, explore)
        if hook is not None:
            hook(t, action)
        result = env.step(action)
        alg.observe(obs, state, action, result, env.state())
        alg.update()
        obs = result.obs
        if bool(result.truncated.all()):
            episode += 1
            obs = env.reset(seed=seed if fixed_scene else seed + 1000 * episode)


def check_feasible(env: P3Env) -> None:
    """beta_R in [0, 1], theta_R in [0, 2 pi), theta_T = theta_R +- pi/2, energy split conserved."""
    beta, theta, sign, on = env._config_tensors(env.beta_idx, env.theta_idx, env.t_sign, env.on)
    assert bool(((beta >= 0) & (beta <= 1 + 1e-6)).all())
    assert bool(((theta >= 0) & (theta < 2 * math.pi)).all())
    assert bool(((sign == 1) | (sign == -1)).all())
    R, T = star.es_coefficients(beta.double(), theta.double(), sign, torch.ones_like(on))
    both = (R.abs() > 1e-9) & (T.abs() > 1e-9)
    diff = torch.remainder(T.angle() - R.angle(), 2 * math.pi)[both]
    assert bool(((diff - math.pi / 2).abs() < 1e-6).logical_or((diff - 3 * math.pi / 2).abs() < 1e-6).all())
    assert torch.allclose(R.abs() ** 2 + T.abs() ** 2, torch.ones_like(beta.double()), atol=1e-6)


# --------------------------------------------------------------------------- global agent

def test_global_agent_acts_exactly_every_Tq_slots_and_replaces_every_action():
    env = small_env(num_envs=2, episode_steps=9)
    alg = MAGAR(env, MAGARConfig(global_period=4, **FAST), seed=3)
    turns, agree = [], []

    def hook(t, action):
        turns.append((t, alg.last_global_turn))
        if alg.last_global_turn:
            joint = alg.global_q(alg.global_q.state_of(env._observe()))
            agree.append(all(torch.equal(action[a], joint[:, i]) for i, a in enumerate(alg.agent_ids)))

    run(alg, env, 27, explore=False, hook=hook)              # three episodes of 9 slots
    assert [g for _, g in turns] == [t % 4 == 0 for t, _ in turns]
    assert [t for t, _ in turns] == list(range(9)) * 3       # t restarts at every reset
    assert alg.global_decisions == 3 * 3 and agree and all(agree)


def test_global_period_larger_than_episode_acts_only_at_t0_and_wrapped_policy_matches():
    env = small_env(episode_steps=6)
    alg = MAGAR(env, MAGARConfig(global_period=5, **FAST), seed=4)
    policy = actors_policy(alg.actors(), alg.role_of)       # decentralized + wrap by the global role
    obs = env.reset(seed=11)
    for t in range(6):
        acts = policy(env, obs)
        local = {a: alg.q[a](obs[a]) for a in alg.agent_ids}
        joint = alg.global_q(alg.global_q.state_of(obs))
        expect = {a: joint[:, i] for i, a in enumerate(alg.agent_ids)} if t % 5 == 0 else local
        assert all(torch.equal(acts[a], expect[a]) for a in alg.agent_ids)
        obs = env.step(acts).obs


def test_global_target_sums_local_target_maxima():
    env = small_env()
    alg = MAGAR(env, MAGARConfig(global_weight=1.0, **FAST), seed=0)
    run(alg, env, 8)
    batch = alg.buffer.sample(8, torch.Generator().manual_seed(0))
    loss, _ = alg.extra_loss(batch)
    s = alg.global_q.state_of(batch["obs"])
    joint = torch.stack([batch["action"][a] for a in alg.agent_ids], 1)
    q = alg.global_q.q_value(s, joint)
    psi = batch["global_reward"] / alg.ref.b - 1 + alg.cfg.gamma * sum(
        alg.q_target[a].values(batch["next_obs"][a]).max(-1).values for a in alg.agent_ids)
    assert torch.allclose(loss, ((psi.detach() - q) ** 2).mean(), rtol=1e-5)


# --------------------------------------------------------------------------- feasibility

@pytest.mark.parametrize("algo", ["magar", "q-learning"])
def test_star_actions_never_leave_the_feasible_set(algo):
    env = small_env(num_envs=6)
    alg = MAGAR(env, MAGARConfig(epsilon=1.0, **FAST), seed=1) if algo == "magar" else QLearning(env, QLearningConfig(epsilon=1.0), seed=1)
    seen = []

    def hook(t, action):
        for a in alg.agent_ids:
            x = action[a]
            assert x.dtype == torch.long and bool(((x >= 0) & (x < env.action_spaces[a].n)).all())
        seen.append(action["star0"])

    obs = env.reset(seed=2)
    for _ in range(40):   # uniform random increments hit the bounds of beta and theta
        state = env.state()
        action = alg.act(obs, state, True)
        hook(env.t, action)
        result = env.step(action)
        check_feasible(env)
        obs = result.obs
        if bool(result.truncated.all()):
            obs = env.reset(seed=3)
    assert torch.cat(seen).unique().numel() > 10


# --------------------------------------------------------------------------- learning

def test_tiny_magar_run_beats_all_on_with_random_phases():
    # The agents see no CSI (the paper's local states), so MAGAR learns per deployment: train
    # and evaluate on the same scenes (episodes restart from the same seed).
    cfg = get_scenario("p3", n_elements=4, n_bs_antennas=2, n_users=3, episode_steps=40)
    env = P3Env(num_envs=8, cfg=cfg, seed=0)
    alg = MAGAR(env, MAGARConfig(learning_starts=128, batch_size=64, hidden=(64, 64)), seed=1)
    run(alg, env, 200, seed=5, fixed_scene=True)
    ev = P3Env(num_envs=8, cfg=cfg, seed=0)
    learned = rollout(ev, actors_policy(alg.actors(), alg.role_of), seed=5)["ee_bit_per_j"].mean()
    ev.reset(seed=5)
    g = torch.Generator().manual_seed(0)
    theta = torch.randint(0, ev.theta_levels, ev.theta_idx.shape, generator=g)
    all_on = ev.evaluate_config(ev.beta_idx, theta, ev.t_sign, torch.ones_like(ev.on), ev.W)["ee_bit_per_j"].mean()
    assert learned > 1.03 * float(all_on)


def test_seeded_runs_reproduce_and_differ_across_seeds():
    def train(seed):
        env = small_env()
        alg = MAGAR(env, MAGARConfig(**FAST), seed=seed)
        run(alg, env, 30, seed=7)
        return alg

    a, b, c = train(5), train(5), train(6)
    for k, v in a.state_dict()["q"].items():
        assert torch.equal(v, b.state_dict()["q"][k])
    assert all(torch.equal(v, b.global_q.state_dict()[k]) for k, v in a.global_q.state_dict().items())
    assert any(not torch.equal(v, c.state_dict()["q"][k]) for k, v in a.state_dict()["q"].items())


def test_madqn_reward_streams_global_vs_local():
    env = small_env()
    glob, loc = MADQN(env, MADQNConfig(**FAST), seed=0), MADQNLR(env, MADQNLRConfig(**FAST), seed=0)
    obs = env.reset(seed=1)
    state = env.state()
    action = glob.act(obs, state, True)
    result = env.step(action)
    glob.observe(obs, state, action, result, env.state())
    loc.observe(obs, state, action, result, env.state())
    gb, lb = glob.buffer.sample(4, torch.Generator()), loc.buffer.sample(4, torch.Generator())
    for a in env.agent_ids:
        assert torch.allclose(gb["reward"][a], gb["global_reward"])
    # local rewards differ between agents (each sees only its own change, eq. 16)
    assert not torch.allclose(lb["reward"]["star0"], lb["reward"]["bs0"])
    with pytest.raises(ConfigError):
        MAGAR(env, MAGARConfig(reward="global"), seed=0)


def test_q_learning_update_is_eq17():
    env = small_env(num_envs=1)
    alg = QLearning(env, QLearningConfig(q_lambda=0.1, gamma=0.9), seed=0)
    tab = alg.tables["star0"]
    tab.table.data.uniform_(0, 1)
    before = tab.table.detach().clone()
    obs = env.reset(seed=0)
    state = env.state()
    action = alg.act(obs, state, True)
    result = env.step(action)
    alg.observe(obs, state, action, result, env.state())
    s, s2, a = tab.key(obs["star0"])[0], tab.key(result.obs["star0"])[0], action["star0"][0]
    r = result.rewards["star0"][0] / alg.ref.b - 1
    alg.update()
    expect = 0.9 * before[s, a] + 0.1 * (r + 0.9 * before[s2].max())
    if s != s2:
        assert torch.allclose(tab.table[s, a], expect, atol=1e-6)
    changed = (tab.table != before).sum()
    assert changed <= 1


# --------------------------------------------------------------------------- bundle

def test_bundle_carries_the_global_role_and_decides_like_the_algorithm(tmp_path):
    env = small_env(num_envs=3, episode_steps=5)
    alg = MAGAR(env, MAGARConfig(global_period=2, **FAST), seed=2)
    run(alg, env, 20)
    role_of = {a: alg.role_of(a) for a in env.agent_ids}
    obs_specs, act_specs = dict(env.observation_spaces), dict(env.action_spaces)
    for aid, (role, o, s) in alg.extra_agents().items():
        role_of[aid], obs_specs[aid], act_specs[aid] = role, o, s
    path = export_bundle(tmp_path / "b", "magar", "p3", env.cfg, alg.actors(), role_of, obs_specs, act_specs)
    bundle = load_bundle(path)
    assert GLOBAL_ID in bundle.agent_ids and "global" in bundle.roles
    from agents.evaluation import bundle_policy
    a = rollout(small_env(num_envs=3, episode_steps=5), bundle_policy(bundle), seed=4)
    b = rollout(small_env(num_envs=3, episode_steps=5), actors_policy(alg.actors(), alg.role_of), seed=4)
    assert all((a[k] == b[k]).all() for k in a)


# --------------------------------------------------------------------------- CSI references

def test_reference_optimizer_orderings_on_small_scenes():
    scn = get_scenario("p3", **SMALL)
    scene = sample_p3(scn, 3, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    ee = {}
    for onoff in pr.ONOFF_POLICIES:
        cfg, ev = pr.optimize(scene, scn, "es", onoff, gen, sweeps=1)
        ee[onoff] = ev["ee_bit_per_j"]
        assert bool(((cfg.beta_R >= 0) & (cfg.beta_R <= 1)).all())
    # greedy elimination starts from all-on and only accepts EE increases, then re-sweeps
    assert bool((ee["optimized"] >= ee["all-on"] * (1 - 1e-6)).all())
    # the element sweep never lowers the EE of its starting point
    start = pr.initial_config(3, scn.n_surfaces, scn.n_elements, "all-on", gen)
    base = pr.evaluate(scene, scn, "es", start)["ee_bit_per_j"]
    swept = pr.evaluate(scene, scn, "es", pr.element_sweep(scene, scn, "es", start, 8))["ee_bit_per_j"]
    assert bool((swept >= base * (1 - 1e-6)).all())
