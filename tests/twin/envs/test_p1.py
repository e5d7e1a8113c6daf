"""P1 environment: spaces, eq. 19 reward on hand-computed cases, penalties, batching, seeding, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from twin.envs import make_env
from twin.envs.p1 import P1Env
from twin.errors import ActionError
from twin.scenarios import get_scenario
from twin.surface_config import SurfaceConfig

C64 = torch.complex64


def batch_action(env: P1Env, samples: list[dict]) -> dict:
    """Stack B per-env numpy samples (from action_spaces) into the batched action format."""
    out = {}
    for a in env.agent_ids:
        fields = samples[0][a].keys()
        out[a] = {f: torch.as_tensor(np.stack([np.asarray(s[a][f]) for s in samples])) for f in fields}
    return out


def sampled_action(env: P1Env, seed: int = 0) -> dict:
    for i, a in enumerate(env.agent_ids):
        env.action_spaces[a].seed(seed + i)
    return batch_action(env, [{a: env.action_spaces[a].sample() for a in env.agent_ids} for _ in range(env.num_envs)])


def fixed_action(env: P1Env, V: torch.Tensor, bits: int = 1, on: bool = True) -> dict:
    B, L, N = env.num_envs, env.L, env.N
    act = {"bs0": {"V": torch.stack([V.real, V.imag], 1).float()}}
    for a in env.irs_ids:
        act[a] = {"bits": torch.full((B,), bits), "phase_idx": torch.zeros(B, N, dtype=torch.long),
                  "on": torch.full((B, N), on)}
    return act


def tiny_env(**kw) -> P1Env:
    """L = 1 IRS, N = 1 element, M = 1 antenna, K = 1 user: everything by hand."""
    cfg = get_scenario("p1", n_irs=1, n_elements=1, n_bs_antennas=1, n_users=1, **kw)
    env = P1Env(1, cfg, seed=0, dtype=torch.complex128)
    env.reset()
    return env


def set_tiny_scene(env: P1Env, g_irs: complex, g_direct: complex, r_req: float) -> None:
    one = lambda x, *s: torch.tensor(x, dtype=torch.complex128).reshape(*s)
    env.set_scene(
        H_BR=one(1.0, 1, 1, 1, 1), h_RU=one(np.conj(g_irs), 1, 1, 1, 1), h_BU=one(np.conj(g_direct), 1, 1, 1),
        irs_pos=torch.tensor([[[100.0, 0.0]]], dtype=torch.float64),
        user_pos=torch.tensor([[[110.0, 0.0]]], dtype=torch.float64),
        r_req=torch.tensor([[r_req]], dtype=torch.float64),
    )


def test_spaces_contain_obs_and_sampled_actions_are_accepted():
    env = make_env("p1", num_envs=3, seed=1)
    obs = env.reset(seed=1)
    for _ in range(3):
        for a in env.agent_ids:
            assert obs[a].shape == (3, env.observation_spaces[a].shape[0]) and obs[a].dtype == torch.float32
            for i in range(3):
                assert env.observation_spaces[a].contains(obs[a][i].numpy()), a
        assert env.state().shape == (3, env.state_dim)
        assert all(env.state_space.contains(s) for s in env.state().numpy())
        res = env.step(sampled_action(env, seed=env.t))
        obs = res.obs
        for r in res.rewards.values():
            assert r.shape == (3,) and torch.isfinite(r).all()


def test_sampled_irs_actions_respect_resolution():
    env = make_env("p1", num_envs=1)
    sp = env.action_spaces["irs0"]
    sp.seed(3)
    for _ in range(200):
        s = sp.sample()
        assert s["bits"] in env.bit_choices and s["phase_idx"].max() < (1 << s["bits"]) and sp.contains(s)
    s["bits"], s["phase_idx"][0] = 1, 3
    assert not sp.contains(s)


@pytest.mark.parametrize("r_req,p_tx,energy0", [(0.5, 1e-3, 10.0), (50.0, 1e-3, 10.0), (0.5, 5e-3, 10.0), (0.5, 1e-3, 1.0)])
def test_reward_matches_eq19_by_hand(r_req, p_tx, energy0):
    env = tiny_env(xi_rate=2.0, xi_power=3.0, xi_energy=5.0, energy_arrival_mean_units=0.0)
    c = env.cfg
    g_irs, g_dir = 0.3e-4 + 0.4e-4j, 1e-5
    set_tiny_scene(env, g_irs, g_dir, r_req)
    env.energy[:] = energy0
    V = torch.tensor([[[math.sqrt(p_tx / 2) * (1 + 1j)]]], dtype=torch.complex128)
    res = env.step(fixed_action(env, V, bits=3, on=True))
    # Hand computation: g = g_irs * phi * 1 + g_dir with phi = e^{j0} = 1.
    snr = abs(g_irs + g_dir) ** 2 * p_tx / c.noise_w
    rate = math.log2(1 + snr)
    consumed = 1 * c.element_power_w(3) * c.slot_s / c.energy_unit_j
    expected = (rate + 2.0 * min(rate - r_req, 0.0) + 3.0 * min(c.p_max_w - p_tx, 0.0) / c.p_max_w
                + 5.0 * min(energy0 - consumed - c.energy_min_units, 0.0))
    assert res.rewards["bs0"].item() == pytest.approx(expected, rel=1e-5)
    assert res.rewards["irs0"].item() == res.rewards["bs0"].item()
    assert res.info["rate"].item() == pytest.approx(rate, rel=1e-6)
    # Penalties fire exactly when their constraint is violated.
    assert (res.info["pen_rate"].item() < 0) == (rate < r_req)
    assert (res.info["pen_power"].item() < 0) == (p_tx > c.p_max_w)
    assert (res.info["pen_energy"].item() < 0) == (energy0 - consumed < c.energy_min_units)
    # Buffer eq. 9 with zero arrivals: floored at E_min.
    assert res.info["energy"].item() == pytest.approx(max(energy0 - consumed, c.energy_min_units))


def test_off_element_reflects_nothing_and_costs_nothing():
    env = tiny_env(energy_arrival_mean_units=0.0)
    set_tiny_scene(env, 1e-4, 1e-5, 0.0)
    V = torch.tensor([[[0.01]]], dtype=torch.complex128)
    res = env.step(fixed_action(env, V, bits=2, on=False))
    assert res.info["rate"].item() == pytest.approx(math.log2(1 + 1e-10 * 1e-4 / env.cfg.noise_w))
    assert res.info["irs_power_w"].item() == 0.0 and res.info["pen_energy"].item() == 0.0


def test_multiuser_rates_match_numpy_sinr():
    env = make_env("p1", num_envs=2, seed=5)
    env.reset(seed=5)
    act = sampled_action(env, seed=9)
    act["bs0"]["V"] = act["bs0"]["V"] * 0.1
    s = {k: getattr(env.scene, k).clone() for k in ("H_BR", "h_RU", "h_BU")}
    res = env.step(act)
    for b in range(2):
        G = np.conj(s["h_BU"][b].numpy())
        for l, a in enumerate(env.irs_ids):
            bits = int(act[a]["bits"][b])
            phi = act[a]["on"][b].numpy() * np.exp(2j * np.pi * act[a]["phase_idx"][b].numpy() / 2 ** bits)
            G = G + np.conj(s["h_RU"][b, l].numpy()) @ np.diag(phi) @ s["H_BR"][b, l].numpy()
        V = act["bs0"]["V"][b, 0].numpy() + 1j * act["bs0"]["V"][b, 1].numpy()
        P = np.abs(G @ V) ** 2
        sinr = np.diag(P) / (P.sum(1) - np.diag(P) + env.cfg.noise_w)
        np.testing.assert_allclose(res.info["rate"][b].numpy(), np.log2(1 + sinr), rtol=2e-4, atol=1e-6)
        np.testing.assert_allclose(res.info["tx_power_w"][b].item(), (np.abs(V) ** 2).sum(), rtol=1e-5)


def test_observations_follow_eq11_and_eq13():
    env = tiny_env(energy_arrival_mean_units=0.0)
    c = env.cfg
    V = torch.tensor([[[0.01]]], dtype=torch.complex128)
    set_tiny_scene(env, 1e-4, 0.0, 0.0)
    rate = math.log2(1 + 1e-8 * 1e-4 / c.noise_w)
    for r_req, f in [(rate * 0.5, 1.0), (rate, 0.0), (rate * 2, 0.0)]:   # f_k strict (eq. 12)
        set_tiny_scene(env, 1e-4, 0.0, r_req)
        res = env.step(fixed_action(env, V, bits=1))
        set_tiny_scene(env, 1e-4, 0.0, r_req)  # the step evolved the channels; put the geometry back
        obs = env.local_observation("irs0")
        assert obs[0, 0].item() == pytest.approx(math.exp(-10.0 / c.d_l0_m) * f, rel=1e-6)
        assert obs[0, 1].item() == pytest.approx(res.info["energy"].item())
        assert env.local_observation("bs0")[0, 0].item() == pytest.approx(1e-4, rel=1e-6)
    assert torch.equal(env.state(), torch.cat([env.local_observation("irs0"), env.local_observation("bs0")], 1))


def test_local_observation_equals_step_obs():
    env = make_env("p1", num_envs=4, seed=2)
    env.reset(seed=2)
    res = env.step(sampled_action(env))
    for a in env.agent_ids:
        assert torch.equal(res.obs[a], env.local_observation(a))


def test_batched_env_equals_single_envs():
    B = 5
    cfg = get_scenario("p1", energy_arrival_mean_units=0.0)
    big = P1Env(B, cfg, seed=11)
    big.reset()
    act = sampled_action(big, seed=4)
    act["bs0"]["V"] *= 0.2
    scene = big.scene
    big.energy = torch.linspace(1.0, 5.0, B).unsqueeze(-1).repeat(1, big.L)
    e0 = big.energy.clone()
    res = big.step(act)
    for i in range(B):
        one = P1Env(1, cfg, seed=99)
        one.reset()
        one.set_scene(scene.index(i), r_req=big.r_req[i:i + 1])
        one.energy = e0[i:i + 1].clone()
        r1 = one.step({a: {f: x[i:i + 1] for f, x in d.items()} for a, d in act.items()})
        assert torch.allclose(r1.rewards["bs0"], res.rewards["bs0"][i:i + 1], rtol=1e-5, atol=1e-6)
        for key in ("rate", "tx_power_w", "irs_power_w", "energy", "pen_energy"):
            assert torch.allclose(r1.info[key], res.info[key][i:i + 1], rtol=1e-5, atol=1e-7), key


def test_seeded_determinism():
    def run(seed):
        env = make_env("p1", num_envs=3, seed=seed)
        out = [env.state()]
        for t in range(4):
            res = env.step(sampled_action(env, seed=t))
            out += [env.state(), res.rewards["bs0"], res.info["energy"]]
        return out
    a, b, c = run(7), run(7), run(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_reset_draws_new_geometry_and_episode_truncates():
    env = make_env("p1", num_envs=2, overrides={"episode_steps": 3}, seed=0)
    pos0 = env.scene.user_pos.clone()
    act = sampled_action(env)
    flags = [env.step(act).truncated.tolist() for _ in range(3)]
    assert flags == [[False, False], [False, False], [True, True]]
    env.reset()
    assert not torch.equal(pos0, env.scene.user_pos) and env.t == 0


@pytest.mark.parametrize("mutate,needle", [
    (lambda a: a.pop("irs1"), "irs1"),
    (lambda a: a.__setitem__("irs9", a["irs0"]), "irs9"),
    (lambda a: a["bs0"].__setitem__("V", a["bs0"]["V"][..., :2]), "bs0.V"),
    (lambda a: a["bs0"]["V"].__setitem__((0, 0, 0, 0), float("nan")), "bs0.V"),
    (lambda a: a["bs0"]["V"].__setitem__((0, 0, 0, 0), 1e3), "bs0.V"),
    (lambda a: a["irs0"].__setitem__("bits", torch.full((2,), 7)), "irs0.bits"),
    (lambda a: a["irs1"].__setitem__("bits", torch.ones(2, dtype=torch.long)) or
        a["irs1"].__setitem__("phase_idx", torch.full((2, 10), 2)), "irs1.phase_idx"),
    (lambda a: a["irs0"].__setitem__("phase_idx", a["irs0"]["phase_idx"].float()), "irs0.phase_idx"),
    (lambda a: a["irs0"].__setitem__("phase_idx", -torch.ones(2, 10, dtype=torch.long)), "irs0.phase_idx"),
    (lambda a: a["irs0"].__setitem__("on", torch.full((2, 10), 2)), "irs0.on"),
    (lambda a: a["irs0"].pop("on"), "irs0.on"),
])
def test_invalid_actions_are_rejected_naming_agent_and_field(mutate, needle):
    env = make_env("p1", num_envs=2, seed=0)
    act = sampled_action(env)
    mutate(act)
    with pytest.raises(ActionError, match=needle.replace(".", r"\.")):
        env.step(act)


def test_beamformers_at_the_box_bound_are_accepted():
    env = make_env("p1", num_envs=2, seed=0)
    act = env.sample_actions()
    high = torch.as_tensor(env.action_spaces["bs0"]["V"].high)           # float32 bound
    act["bs0"]["V"] = torch.stack([high, -high])
    env.step(act)
    act["bs0"]["V"] = torch.full((2, 2, env.M, env.K), math.sqrt(env.cfg.p_max_w), dtype=torch.float64)
    env.step(act)
    act["bs0"]["V"][0, 0, 0, 0] = math.sqrt(env.cfg.p_max_w) * 1.001
    with pytest.raises(ActionError, match="bs0.V"):
        env.step(act)


def test_action_from_surface_configs_round_trip():
    env = make_env("p1", num_envs=2, seed=0)
    cfgs = [SurfaceConfig(bits=2, phase_idx=np.array([0, 1, 2, 3] * 2 + [0, 1]), on=np.arange(10) % 2 == 0),
            SurfaceConfig.safe(10, bits=1)]
    a = env.irs_action_from_configs(cfgs)
    assert a["bits"].tolist() == [2, 1] and a["phase_idx"].shape == (2, 10) and a["on"][0, 0] and not a["on"][1].any()
    act = sampled_action(env)
    act["irs0"] = a
    env.step(act)  # accepted
    with pytest.raises(ActionError, match="bits"):
        env.irs_action_from_configs([SurfaceConfig.safe(10, bits=5)] * 2)


def test_fused_validation_agrees_with_the_reference_predicate():
    """Fuzz: random single-entry corruptions are rejected iff they break the action spaces."""
    env = make_env("p1", num_envs=4, seed=0)
    gen = torch.Generator().manual_seed(123)
    lo, hi = env.bit_choices[0], env.bit_choices[-1]
    for trial in range(150):
        act = env.sample_actions(gen)
        agent = env.irs_ids[trial % env.L]
        field = ["bits", "phase_idx", "on", "V"][int(torch.randint(0, 4, (1,), generator=gen))]
        b = int(torch.randint(0, 4, (1,), generator=gen))
        value = int(torch.randint(-2, 10, (1,), generator=gen))
        if field == "bits":
            act[agent]["bits"][b] = value
            ok = lo <= value <= hi and bool((act[agent]["phase_idx"][b] < (1 << value if value >= 0 else 0)).all())
        elif field == "phase_idx":
            act[agent]["phase_idx"][b, value % env.N] = value
            ok = 0 <= value < (1 << int(act[agent]["bits"][b]))
        elif field == "on":
            on = act[agent]["on"].long()
            on[b, 0] = value
            act[agent]["on"] = on
            ok = value in (0, 1)
        else:
            x = value * env.v_bound / 4
            act["bs0"]["V"][b, 0, 0, 0] = x
            ok = abs(value) <= 4
        if ok:
            env.step(act)
        else:
            with pytest.raises(ActionError):
                env.step(act)
