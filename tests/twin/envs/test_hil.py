"""Hardware in the loop per scenario: action -> SurfaceConfig (twin.hil) -> env action round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from twin import hil
from twin.envs import make_env
from twin.errors import ActionError, ConfigError
from twin.surface_config import SurfaceConfig


def _snapshot(env):
    return (env.beta_idx.clone(), env.theta_idx.clone(), env.t_sign.clone(), env.on.clone(), env.W.clone(),
            env._gen.get_state(), env.scene, env.t)


def _restore(env, snap):
    env.beta_idx, env.theta_idx, env.t_sign, env.on, env.W = snap[:5]
    env._gen.set_state(snap[5])
    env.scene, env.t = snap[6], snap[7]


def test_p3_board_round_trip_steps_like_the_plain_increment():
    """Increment -> board config (from the agent's own observation) -> env action gives the same
    rewards and the same next configuration as the plain increment, slot by slot; including
    increments that would leave theta_R's range (unchanged) and ON/OFF toggles."""
    env = make_env("p3", 2, seed=3)
    obs = env.reset(seed=3)
    N, g = env.N, torch.Generator().manual_seed(5)
    # Walk element 0 of star0 below theta_R = 0 (illegal: unchanged) and toggle it.
    forced = [hil.P3_STAR_OPS * 0 + 3, hil.P3_STAR_OPS * 0 + 5, hil.P3_STAR_OPS * 0 + 2]
    for t in range(12):
        acts = env.sample_actions(g)
        if t < len(forced):
            acts["star0"][0] = forced[t]
        board = {}
        for a in env.star_ids:
            cfgs = [hil.star_config_from_action(int(acts[a][b]), obs[a][b].numpy(), env.cfg.delta_theta_rad)
                    for b in range(env.num_envs)]
            assert all(c.bits == 5 and c.n_elements == N for c in cfgs)      # pi/16 grid: 5-bit board
            board[a] = env.star_action_from_configs(a, cfgs, acts[a])
        board["bs0"] = acts["bs0"]
        snap = _snapshot(env)
        plain = env.step(acts)
        after = (env.beta_idx.clone(), env.theta_idx.clone(), env.t_sign.clone(), env.on.clone())
        _restore(env, snap)
        hw = env.step(board)
        for k in plain.rewards:
            assert torch.equal(plain.rewards[k], hw.rewards[k]), (t, k)
        assert torch.equal(plain.info["global_reward"], hw.info["global_reward"])
        for x, y in zip(after, (env.beta_idx, env.theta_idx, env.t_sign, env.on)):
            assert torch.equal(x, y)
        obs = hw.obs


def test_p3_applied_config_overrides_phase_and_on_but_not_beta_or_sign():
    env = make_env("p3", 1, seed=0)
    obs = env.reset(seed=0)
    N = env.N
    inc = torch.tensor([hil.P3_STAR_OPS * 2 + 0])           # beta_R += Delta on element 2
    stuck = SurfaceConfig(bits=5, phase_idx=np.full(N, 7), on=np.zeros(N, bool))
    acts = {"star0": env.star_action_from_configs("star0", [stuck], inc),
            "star1": torch.tensor([env.n_star_actions - 1]), "bs0": torch.tensor([env.n_bs_actions - 1])}
    beta0, sign0 = env.beta_idx.clone(), env.t_sign.clone()
    env.step(acts)
    assert env.theta_idx[0, 0].tolist() == [7] * N and not env.on[0, 0].any()
    assert env.beta_idx[0, 0, 2] == beta0[0, 0, 2] + 1 and torch.equal(env.t_sign, sign0)
    with pytest.raises(ActionError, match="bits"):
        env.star_action_from_configs("star0", [SurfaceConfig.safe(N, bits=6)], inc)
    # A coarser board (1 bit: 0, pi) lands on the 5-bit theta_R grid exactly (pi = index 16).
    coarse = SurfaceConfig(bits=1, phase_idx=np.arange(N) % 2, on=np.ones(N, bool))
    idx = env.star_action_from_configs("star0", [coarse], inc)["theta_idx"][0]
    assert idx.tolist() == [16 * (n % 2) for n in range(N)]
    assert torch.allclose(idx.double() * env.cfg.delta_theta_rad, torch.from_numpy(coarse.phases_rad()))
    with pytest.raises(ActionError, match="theta_idx"):
        bad = dict(acts["star0"], theta_idx=torch.full((1, N), 32))
        env.decode_actions({**acts, "star0": bad})


def test_p3_board_bits_need_a_power_of_two_grid():
    assert hil.p3_board_bits(math.pi / 16) == 5 and hil.p3_board_bits(math.pi / 2) == 2
    with pytest.raises(ConfigError, match="delta_theta_rad"):
        hil.p3_board_bits(math.pi / 10)
    obs = np.zeros(4 * 4, np.float32)
    with pytest.raises(ConfigError, match="5 bits"):
        hil.p3_config_from_action({"action": np.array(0)}, obs, {"delta_theta_rad": math.pi / 16}, (1, 2, 3))


@pytest.mark.parametrize("bits", range(1, 9))
def test_p4_phases_on_the_grid_round_trip_exactly(bits):
    env = make_env("p4", 1, seed=0)
    levels = 1 << bits
    idx = np.arange(env.N) % levels
    theta = (idx * (2 * math.pi / levels)).astype(np.float32)
    cfg = hil.ris_config_from_action(theta, bits)
    assert np.array_equal(cfg.phase_idx, idx) and cfg.on.all()
    assert torch.equal(env.ris_action_from_configs([cfg])[0], torch.from_numpy(theta))


def test_p4_off_grid_phases_go_to_the_nearest_grid_point():
    rng = np.random.default_rng(0)
    theta = rng.uniform(-3 * math.pi, 3 * math.pi, 500)
    for bits in (1, 2, 3, 5):
        levels = 1 << bits
        cfg = hil.ris_config_from_action(theta, bits)
        grid = np.arange(levels) * 2 * math.pi / levels
        dist = np.abs(np.angle(np.exp(1j * (theta[:, None] - grid[None, :]))))   # circular distance
        best = dist.min(1)
        chosen = dist[np.arange(theta.size), cfg.phase_idx]
        np.testing.assert_allclose(chosen, best, atol=1e-9)
        assert best.max() <= math.pi / levels + 1e-9
    with pytest.raises(ActionError, match="finite"):
        hil.ris_config_from_action(np.array([0.0, np.nan]), 2)
