"""The PettingZoo adapter passes PettingZoo's own parallel API test for every paper."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pettingzoo")
from pettingzoo.test import parallel_api_test, parallel_seed_test  # noqa: E402

from twin.envs.pettingzoo import parallel_env  # noqa: E402

SMALL = {
    "p1": {"episode_steps": 12},
    "p2": {"episode_steps": 12, "n_users": 4},
    "p3": {"episode_steps": 12, "n_elements": 4, "n_users": 3},
    "p4": {"episode_steps": 12},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_parallel_api(name):
    parallel_api_test(parallel_env(name, seed=0, overrides=SMALL[name]), num_cycles=30)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_parallel_seed(name):
    parallel_seed_test(lambda: parallel_env(name, overrides=SMALL[name]), num_cycles=10)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_episode_ends_by_truncation_and_matches_core(name):
    env = parallel_env(name, seed=4, overrides=SMALL[name])
    obs, _ = env.reset(seed=4)
    steps = 0
    while env.agents:
        acts = {a: env.action_space(a).sample() for a in env.agents}
        obs, rew, term, trunc, info = env.step(acts)
        steps += 1
        assert all(isinstance(r, float) and np.isfinite(r) for r in rew.values())
    assert steps == SMALL[name]["episode_steps"] and all(trunc.values()) and not any(term.values())
    assert env.state().shape == (env.core.state_dim,)
