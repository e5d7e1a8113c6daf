"""MDLBI on P2: observation privacy, collision rule, seeded reproduction, bundles, learning."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from agents.bundle import export_bundle, load_bundle
from agents.evaluation import actors_policy, rollout
from agents.mdlbi import MDLBI, MDLBIConfig
from agents.p2_reference import decide, p2_reference_policies, to_action, user_irs_for
from agents.registry import ALGORITHMS
from agents.training import learn_step
from twin import multicell as mc
from twin.envs.p2 import P2Env
from twin.scenarios import get_scenario

SMALL = dict(n_users=4, n_irs=2, n_bs_antennas=2, n_elements=4, episode_steps=20)
FAST = MDLBIConfig(hidden=(32, 32), learning_starts=32, batch_size=32)


def small_env(num_envs: int = 4, seed: int = 0, **over) -> P2Env:
    return P2Env(num_envs=num_envs, cfg=get_scenario("p2", **{**SMALL, **over}), seed=seed)


def train(algo: MDLBI, env: P2Env, steps: int, seed: int = 0) -> list[float]:
    obs = env.reset(seed=seed)
    state = env.state()
    rewards = []
    for i in range(steps):
        _, res, nxt, _ = learn_step(algo, env, obs, state)
        rewards.append(float(res.info["sum_rate"].mean()))
        obs, state = res.obs, nxt
        if bool(res.truncated.all()):
            obs = env.reset(seed=seed + i + 1)
            state = env.state()
    return rewards


def test_registered_with_paper_defaults():
    assert ALGORITHMS["mdlbi"] == (MDLBI, MDLBIConfig)
    c = MDLBIConfig()
    assert (c.gamma, c.lr_actor, c.lr_critic, c.tau, c.buffer_size, c.batch_size) == (0.99, 1e-4, 1e-3, 1e-3, 10_000, 64)
    assert len(c.hidden) == 2 and not c.centralized
    assert ALGORITHMS["ddpg-central"][1]().centralized


def test_observation_holds_no_other_bs_private_csi():
    """Perturb BS 0's private channels (its direct links, its BS-IRS links, the IRS-user links
    of its users): BS 1's observation is unchanged; BS 0's changes. Then change BS 0's claims:
    only the overheard-claims block of BS 1 changes, one slot later."""
    env = small_env(num_envs=2)
    env.reset(seed=3)
    s = env.scene
    obs1 = env.local_observation("bs1").clone()
    obs0 = env.local_observation("bs0").clone()
    mine0 = (s.user_cell == 0)  # (B, K)
    g = torch.Generator().manual_seed(0)
    noise = lambda t: torch.randn(t.shape, generator=g, dtype=t.dtype)
    h_BU = s.h_BU.clone()
    h_BU[:, 0] += noise(h_BU[:, 0])
    H_BI = s.H_BI.clone()
    H_BI[:, 0] += noise(H_BI[:, 0])
    h_IU = torch.where(mine0[:, None, :, None], s.h_IU + noise(s.h_IU), s.h_IU)
    env.set_scene(h_BU=h_BU, H_BI=H_BI, h_IU=h_IU)
    env._observe()
    assert torch.equal(env.local_observation("bs1"), obs1)
    assert not torch.equal(env.local_observation("bs0"), obs0)

    # Overheard claims: the last L entries of BS 1's observation are BS 0's previous claims.
    L = env.L
    act = env.sample_actions(g)
    for a in env.agent_ids:
        act[a]["assoc"] = -torch.ones_like(act[a]["assoc"])
    act["bs0"]["assoc"][:, :, 1] = 1.0          # every user of BS 0 on IRS 1
    res = env.step(act)
    claims0 = res.info["claims"][:, 0].float()   # (B, L)
    assert torch.equal(res.obs["bs1"][:, -L:], claims0)
    assert torch.equal(res.obs["bs0"][:, -L:], res.info["claims"][:, 1].float())


def test_collisions_follow_the_documented_rule():
    """Two BSs claiming one IRS: it serves nobody and every claimant's reflected path is zero."""
    env = small_env(num_envs=1)
    env.reset(seed=1)
    s = env.scene
    K = env.K
    user_cell = torch.tensor([[0, 0, 1, 1]])
    env.set_scene(user_cell=user_cell)
    s = env.scene
    claims = torch.tensor([[[True, False], [True, True]]])
    owner = mc.resolve_claims(claims)
    assert owner.tolist() == [[-1, 1]]                      # IRS 0 collided, IRS 1 BS 1 alone
    user_irs = torch.tensor([[0, -1, 0, 1]])
    phi = torch.ones(1, env.L, env.Nl, dtype=s.h_IU.dtype)
    g = mc.effective_channel(s.H_BI, s.h_IU, s.h_BU, phi, owner, s.user_cell, user_irs)
    direct = s.h_BU[0, user_cell[0], torch.arange(K)].conj()
    assert torch.allclose(g[0, 0], direct[0])              # user 0 of BS 0: IRS 0 collided -> direct only
    assert torch.allclose(g[0, 2], direct[2])              # user 2 of BS 1: same IRS, also direct only
    assert not torch.allclose(g[0, 3], direct[3])          # user 3 of BS 1: IRS 1 owned by BS 1 -> reflected
    # Through the env: both BSs put a user on IRS 0 -> one collision reported.
    act = {a: {"W": torch.ones(1, 2, env.Nb, K) * 0.5, "theta": torch.zeros(1, env.L, env.Nl),
               "assoc": -torch.ones(1, K, env.L)} for a in env.agent_ids}
    act["bs0"]["assoc"][0, 0, 0] = 1.0
    act["bs1"]["assoc"][0, 2, 0] = 1.0
    res = env.step(act)
    assert int(res.info["collisions"][0]) == 1 and int(res.info["owner"][0, 0]) == -1


def test_seeded_runs_reproduce():
    def run() -> tuple[list[float], torch.Tensor]:
        env = small_env(seed=0)
        torch.manual_seed(123)
        algo = MDLBI(env, FAST, seed=7)
        r = train(algo, env, 30)
        return r, torch.cat([p.flatten() for p in algo.actor_nets.parameters()])

    r1, w1 = run()
    r2, w2 = run()
    assert r1 == r2 and torch.equal(w1, w2)


@pytest.mark.parametrize("cfg", [FAST, dataclasses.replace(FAST, centralized=True)], ids=["mdlbi", "central"])
def test_bundle_round_trip(tmp_path, cfg):
    env = small_env(num_envs=3)
    algo = MDLBI(env, cfg, seed=1)
    train(algo, env, 40)
    path = export_bundle(tmp_path / "b", "mdlbi", "p2", env.cfg, algo.actors(), {a: algo.role_of(a) for a in env.agent_ids},
                         env.observation_spaces, env.action_spaces)
    bundle = load_bundle(path, env=env, scenario_name="p2")
    obs = env.reset(seed=5)
    for a in env.agent_ids:
        with torch.no_grad():
            want = algo.actors()[a](obs[a])
        got = bundle.actor_for(a)(obs[a])
        for k in ("W", "theta", "assoc"):
            assert torch.equal(got[k], want[k])
    assert set(bundle.decide("bs0", obs["bs0"][0].numpy())) == {"W", "theta", "assoc"}
    if cfg.centralized:  # evaluation runs the central controller on all observations
        joint = algo.actor_nets["central"].joint(torch.cat([obs[a] for a in env.agent_ids], -1))
        pol = actors_policy(algo.actors(), algo.role_of)(env, obs)
        assert torch.allclose(pol["bs1"]["W"], algo.actor_nets["central"].split(joint[:, 1])["W"])


def test_reference_decisions_are_valid_and_collision_free():
    env = small_env(num_envs=2)
    env.reset(seed=2)
    assign = torch.tensor([[0, 1], [1, 1]])
    d = decide(env.scene, assign, env.cfg.noise_w, env.cfg.p_max_w)
    ui = user_irs_for(env.scene, assign)
    ok = (ui < 0) | (assign.gather(1, ui.clamp(min=0)) == env.scene.user_cell)
    assert bool(ok.all())                                  # users only use their own BS's IRSs
    res = env.step(to_action(env, d["W"], d["phi"], d["user_irs"]))
    assert int(res.info["collisions"].sum()) == 0
    assert torch.allclose(res.info["sum_rate"].double(), d["sum_rate"].double(), rtol=1e-3)


def test_tiny_run_beats_random_association():
    """A short run with the default MDLBI configuration (paper hyper-parameters, default heads)
    beats random decisions on the same seeded episodes by a clear margin. (With the paper-literal
    heads, precoder_head="direct" and assoc_head="per-user", the same run stays at 0.97-1.10x
    random: docs/RESULTS.md P2, diagnosis.)"""
    env = small_env(num_envs=32)
    ev = small_env(num_envs=8, seed=1)
    algo = MDLBI(env, MDLBIConfig(), seed=0)
    train(algo, env, 100)
    learned = rollout(ev, actors_policy(algo.actors(), algo.role_of), 99)["sum_rate"].mean()
    rand = rollout(ev, p2_reference_policies(ev, 0, include_upper=False)["random"], 99)["sum_rate"].mean()
    assert learned > rand * 1.25


def test_heads_map_raw_actions_to_env_actions():
    """claims head: one entry per IRS; the BS claims argmax_l c_l iff it is > 0 and puts all its
    users there. power-direction head: a user's column is scaled by exp(power_range (q - 1))."""
    env = small_env(num_envs=1)
    env.reset(seed=4)
    env.set_scene(user_cell=torch.tensor([[0, 0, 1, 1]]))
    actor = MDLBI(env, MDLBIConfig(hidden=(8, 8)), seed=0).actor_nets["bs0"]
    Nb, K, L, Nl = env.Nb, env.K, env.L, env.Nl
    assert actor.act_dim == 2 * Nb * K + K + L * Nl + L

    def raw(q: list[float], c: list[float]) -> torch.Tensor:
        return torch.cat([torch.full((2 * Nb * K,), 0.5), torch.tensor(q), torch.zeros(L * Nl), torch.tensor(c)]).unsqueeze(0)

    a = actor.split(raw([1.0, -1.0, 1.0, 0.0], [-0.2, 0.3]))
    col = a["W"].square().sum((1, 2))[0]                       # column powers
    assert torch.allclose(col / col[0], torch.tensor([1.0, math.exp(-20.0), 1.0, math.exp(-10.0)]), rtol=1e-4)
    quiet = actor.split(raw([1.0] * K, [-0.2, -0.1]))
    act = {"bs0": a, "bs1": quiet}
    d = env.decode_actions(act)
    assert d["claims"][0].tolist() == [[False, True], [False, False]]
    assert d["user_irs"][0].tolist() == [1, 1, -1, -1]


def test_raw_actions_stored_for_the_critic():
    """The buffer holds the actor's raw (exploration-perturbed) outputs, not the env actions."""
    env = small_env(num_envs=2)
    algo = MDLBI(env, FAST, seed=0)
    obs = env.reset(seed=0)
    act = algo.act(obs, env.state(), explore=True)
    res = env.step(act)
    algo.observe(obs, env.state(), act, res, env.state())
    stored = algo.buffer.sample(4, torch.Generator().manual_seed(0))["action"]["bs0"]
    assert stored.shape[-1] == algo.actor_nets["bs0"].act_dim
    assert float(stored.abs().max()) <= 1.0
    with pytest.raises(Exception, match="act"):
        algo.observe(res.obs, env.state(), act, env.step(act), env.state())
