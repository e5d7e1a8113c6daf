"""What every paper's environment shares: registry, sampled actions, agent ids, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from twin.envs import ENVS, make_env
from twin.errors import ConfigError

SMALL = {"p1": {}, "p2": {"n_users": 4}, "p3": {"n_elements": 4, "n_users": 3}, "p4": {}}


def one_env_action(action, i):
    if isinstance(action, dict):
        return {k: one_env_action(v, i) for k, v in action.items()}
    x = action[i].numpy()
    return x if x.ndim else x.item()


@pytest.mark.parametrize("name", sorted(ENVS))
def test_sample_actions_lie_in_the_spaces_and_are_accepted(name):
    env = make_env(name, num_envs=3, overrides=SMALL[name], seed=0)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        act = env.sample_actions(gen)
        for a in env.agent_ids:
            for i in range(3):
                x = one_env_action(act[a], i)
                if isinstance(x, dict):
                    x = {k: (np.asarray(v, dtype=env.action_spaces[a][k].dtype)) for k, v in x.items()}
                else:
                    x = np.asarray(x, dtype=env.action_spaces[a].dtype)
                assert env.action_spaces[a].contains(x), (a, x)
        res = env.step(act)
        assert set(res.rewards) == set(env.agent_ids) == set(res.obs)
        assert res.terminated.shape == res.truncated.shape == (3,)


@pytest.mark.parametrize("name", sorted(ENVS))
def test_agent_ids_are_stable_strings_and_unknown_ids_fail(name):
    env = make_env(name, num_envs=1, overrides=SMALL[name], seed=0)
    assert all(isinstance(a, str) for a in env.agent_ids) and "bs0" in env.agent_ids
    with pytest.raises(ConfigError, match="agent_id"):
        env.local_observation("nobody")
    fresh = ENVS[name](num_envs=1, cfg=env.cfg)
    with pytest.raises(ConfigError, match="reset"):
        fresh.step(env.sample_actions())


def test_make_env_rejects_unknown_names_and_bad_overrides():
    with pytest.raises(ConfigError, match="p9"):
        make_env("p9")
    with pytest.raises(ConfigError, match="n_irs"):
        make_env("p1", overrides={"n_irs": 0})
    with pytest.raises(ConfigError, match="num_envs"):
        ENVS["p1"](num_envs=0)
