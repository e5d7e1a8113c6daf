"""MAPPO / PPO-AO on P4 (agents/mappo.py): GAE, user-count handling, learning, seeding, bundles."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from agents import bfs_ao as ao
from agents import registry
from agents.bundle import export_bundle, load_bundle
from agents.training import learn_step
from agents.mappo import (MAPPO, PPOAO, MAPPOConfig, PPOAOConfig, best_real_codeword, gae, pad_virtual_users,
                          prescreen_users, select_users, update_priority)
from twin import statistical as st
from twin.envs.p4 import P4Env
from twin.scenarios import get_scenario

SCN = get_scenario("p4", episode_steps=10_000)  # static scenes for the whole test
SMALL = MAPPOConfig(buffer_size=64, batch_size=32, reuse=2, init_scenes=2, init_perturbations=4)


def _run(algo, env, steps, seed=3):
    obs = env.reset(seed=seed)
    state = env.state()
    for _ in range(steps):
        _, out, nxt, _ = learn_step(algo, env, obs, state)
        obs, state = out.obs, nxt
    return obs, state


def test_gae_against_a_hand_computed_case():
    # T = 3, B = 1; step 1 is truncated (bootstrap with its own next value, no carry-over).
    r = torch.tensor([[1.0], [2.0], [3.0]])
    v = torch.tensor([[0.5], [1.0], [1.5]])
    nv = torch.tensor([[1.0], [4.0], [2.0]])
    term = torch.zeros(3, 1)
    done = torch.tensor([[0.0], [1.0], [0.0]])
    g, lam = 0.5, 0.5
    d2 = 3 + g * 2.0 - 1.5          # 2.5
    d1 = 2 + g * 4.0 - 1.0          # 3.0
    d0 = 1 + g * 1.0 - 0.5          # 1.0
    a2, a1 = d2, d1                 # done at t = 1 stops the sum
    a0 = d0 + g * lam * a1          # 1.75
    adv, ret = gae(r, v, nv, term, done, g, lam)
    assert torch.allclose(adv.squeeze(-1), torch.tensor([a0, a1, a2]))
    assert torch.allclose(ret, adv + v)
    # Termination removes the bootstrap value as well.
    adv_t, _ = gae(r, v, nv, torch.tensor([[0.0], [1.0], [0.0]]), done, g, lam)
    assert adv_t[1, 0] == pytest.approx(2 - 1.0)


def test_priority_prescreening_keeps_the_longest_waiting_users():
    prio = torch.tensor([0, 3, 1, 3, 2])
    keep = prescreen_users(prio, 3, torch.Generator().manual_seed(0))
    assert keep.tolist() == [1, 3, 4]
    # Ties are broken at random: both tied users are chosen sometimes.
    picks = {int(prescreen_users(torch.tensor([5, 1, 1]), 2, torch.Generator().manual_seed(s))[-1]) for s in range(20)}
    assert picks == {1, 2}
    after = update_priority(prio, torch.tensor([False, True, False, True, False]))
    assert after.tolist() == [1, 0, 2, 0, 3]


def test_virtual_users_have_zero_rate_and_are_never_scheduled():
    env = P4Env(2, get_scenario("p4", n_users=3))
    env.reset(seed=1)
    padded = pad_virtual_users(env.scene, 4)
    assert padded.h_bar.shape[2] == 4 and bool((padded.beta_h[:, :, 3] == 0).all())
    assert select_users(padded, torch.tensor([0, 1, 2])).h_bar.equal(env.scene.h_bar)
    W = torch.randn(2, 4, 4, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    phi = torch.ones(2, env.L, env.N, dtype=torch.complex64)
    rate = st.ergodic_rate_approx(padded.G_bar, padded.beta_G, padded.kappa_G, padded.h_bar, padded.beta_h,
                                  padded.kappa_h, phi, W, SCN.noise_w)
    assert bool((rate[:, 3] == 0).all()) and bool((rate[:, :3] > 0).all())
    book = st.schedule_codebook(4, 2)
    logits = torch.zeros(2, book.shape[0])
    logits[:, 2] = 5.0  # codeword 2 = users (0, 3): contains the virtual user
    logits[:, 1] = 1.0  # codeword 1 = users (0, 2)
    assert best_real_codeword(logits, book, 3).tolist() == [1, 1]


def test_initial_policy_is_bfs_ao_first_iterate():
    env = P4Env(2, SCN)
    algo = MAPPO(env, dataclasses.replace(SMALL, init_from_bfs_ao=False), seed=0)
    env.reset(seed=4)
    info = algo.init_from_first_iterate(env)
    obs = env._observe()
    a = algo.act(obs, env.state(), explore=False)
    d = env.decode_actions(a)
    rate = env.evaluate(d["W_raw"], d["theta"], d["sched_idx"])["rate"].sum(-1).mean()
    assert float(rate) == pytest.approx(info["first_iterate_rate"], rel=0.02)
    assert info["first_iterate_rate"] < info["bfs_ao_rate"]


def test_ppo_ao_scheduler_learns_to_beat_random_scheduling():
    env = P4Env(8, SCN)
    algo = PPOAO(env, PPOAOConfig(buffer_size=256, batch_size=64, reuse=10, lr_actor=3e-3), seed=0)
    obs, state = _run(algo, env, 32 * 8)
    chosen = algo.act(obs, state, explore=False)["sched"]
    ao_all = algo.ao_cache
    per_code = torch.stack([env.evaluate(*_wt(env, ao_all.actions(env, torch.full((8,), c))), torch.full((8,), c))["rate"].sum(-1)
                            for c in range(env.codebook.shape[0])])   # (C, B)
    learned = per_code[chosen, torch.arange(8)].mean()
    random_sched = per_code.mean()
    assert float(learned) > float(random_sched) + 0.1 * float(per_code.max(0).values.mean() - random_sched)


def _wt(env, acts):
    d = env.decode_actions({"sched": torch.zeros(env.num_envs, dtype=torch.long), **acts})
    return d["W_raw"], d["theta"]


def test_tiny_mappo_run_is_seeded_and_beats_random_actions():
    runs = []
    for _ in range(2):
        env = P4Env(4, SCN)
        algo = MAPPO(env, SMALL, seed=7)
        obs, state = _run(algo, env, 40)
        runs.append((algo, env, obs, state))
    (a1, e1, o1, s1), (a2, e2, o2, s2) = runs
    assert a1.updates == 2
    for k, v in a1.state_dict()["nets"].items():
        assert torch.equal(v, a2.state_dict()["nets"][k]), k
    act = a1.act(o1, s1, explore=False)
    d = e1.decode_actions(act)
    mappo = e1.evaluate(d["W_raw"], d["theta"], act["sched"])["rate"].sum(-1).mean()
    g = torch.Generator().manual_seed(0)
    rand = torch.stack([e1.evaluate(*(lambda dd: (dd["W_raw"], dd["theta"], dd["sched_idx"]))(e1.decode_actions(e1.sample_actions(g))))["rate"].sum(-1)
                        for _ in range(8)]).mean()
    assert float(mappo) > float(rand)


def test_bundle_round_trip_gives_identical_actions(tmp_path):
    env = P4Env(3, SCN)
    algo = MAPPO(env, SMALL, seed=2)
    obs, state = _run(algo, env, 20)
    role_of = {a: algo.role_of(a) for a in env.agent_ids}
    path = export_bundle(tmp_path / "b", "mappo", "p4", SCN, algo.actors(), role_of,
                         dict(env.observation_spaces), dict(env.action_spaces))
    bundle = load_bundle(path, env=env, scenario_name="p4")
    direct = algo.act(obs, state, explore=False)
    loaded = bundle.act(obs)
    for a in env.agent_ids:
        assert torch.equal(direct[a], loaded[a]), a
    one = bundle.decide("ris1", obs["ris1"][0].numpy())
    # B = 1 vs a batch may differ in the last float bit (matmul blocking), not more.
    assert torch.allclose(torch.from_numpy(one["action"]), direct["ris1"][0], atol=1e-6)


def test_registry_and_config_errors():
    assert registry.algorithm("mappo")[0] is MAPPO and registry.algorithm("ppo-ao")[0] is PPOAO
    from twin.errors import ConfigError

    with pytest.raises(ConfigError, match="precoding"):
        MAPPO(P4Env(1, SCN), dataclasses.replace(SMALL, precoding="zf"), seed=0)


def test_p4_reference_policies_rank_bfs_ao_above_round_robin_and_random():
    from agents.evaluation import evaluate_policies, reference_policies

    env = P4Env(2, get_scenario("p4", episode_steps=3))
    res = evaluate_policies(env, reference_policies("p4", env, 0), seed=5)
    rate = {k: v["sum_rate"]["mean"] for k, v in res.items()}
    bfs = ao.bfs_ao(env.scene, env.S, SCN.noise_w, SCN.p_max_w).sum_rate.mean()
    assert rate["BFS-AO (upper)"] == pytest.approx(float(bfs), rel=1e-4)
    assert rate["BFS-AO (upper)"] >= rate["round-robin+AO"] > rate["random"]
