"""PettingZoo ``ParallelEnv`` adapter over one environment of a batched core (B = 1).

The batched core stays the fast path; this adapter lets the MARL tools researchers already
use (PettingZoo wrappers, SuperSuit, RLlib, ...) drive the same MDPs. Observations come out
as float32 numpy arrays, rewards as floats, actions go in as the spaces' numpy samples.
pettingzoo is an optional dependency (``pip install ristwin[pettingzoo]``).

    from twin.envs.pettingzoo import parallel_env
    env = parallel_env("p1", seed=0)
    obs, infos = env.reset(seed=0)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from twin.envs.base import BatchedEnv
from twin.errors import ConfigError

try:
    from pettingzoo import ParallelEnv
except ImportError:  # pragma: no cover - exercised only without the extra installed
    ParallelEnv = object  # type: ignore[assignment,misc]
    _HAVE_PZ = False
else:
    _HAVE_PZ = True


def _batch1(x: Any) -> Any:
    """One environment's action (numpy / python scalars / dicts) -> batched torch (leading 1)."""
    if isinstance(x, Mapping):
        return {k: _batch1(v) for k, v in x.items()}
    if isinstance(x, torch.Tensor):
        return x.unsqueeze(0)
    return torch.as_tensor(np.asarray(x)).unsqueeze(0)


def _unbatch(x: torch.Tensor) -> np.ndarray:
    return x[0].detach().cpu().numpy()


class ParallelAdapter(ParallelEnv):
    """``ParallelEnv`` view of a ``BatchedEnv`` built with ``num_envs == 1``."""

    def __init__(self, core: BatchedEnv) -> None:
        if not _HAVE_PZ:
            raise ConfigError("pettingzoo: not installed; run `pip install ristwin[pettingzoo]` to use the adapter")
        if core.num_envs != 1:
            raise ConfigError(f"num_envs: the PettingZoo adapter wraps exactly one environment, got {core.num_envs}")
        self.core = core
        self.possible_agents = list(core.agent_ids)
        self.agents: list[str] = []
        self.metadata = {"name": f"ristwin_{getattr(core, 'name', 'env')}_v0", "render_modes": [], "is_parallelizable": True}
        self.render_mode = None
        self.observation_spaces = dict(core.observation_spaces)
        self.action_spaces = dict(core.action_spaces)
        self.state_space = getattr(core, "state_space", None)

    def observation_space(self, agent: str):
        return self.observation_spaces[agent]

    def action_space(self, agent: str):
        return self.action_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            for i, a in enumerate(self.possible_agents):
                self.action_spaces[a].seed(seed + i)
        obs = self.core.reset(seed=seed)
        self.agents = list(self.possible_agents)
        return {a: _unbatch(obs[a]) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        if not self.agents:
            raise ConfigError("step: the episode is over; call reset()")
        res = self.core.step({a: _batch1(x) for a, x in actions.items()})  # the core names bad agents / fields
        obs = {a: _unbatch(res.obs[a]) for a in self.agents}
        rewards = {a: float(res.rewards[a][0]) for a in self.agents}
        term = bool(res.terminated[0])
        trunc = bool(res.truncated[0])
        metrics = {k: _unbatch(v) for k, v in res.info.items()}
        infos = {a: dict(metrics) for a in self.agents}
        terminations = {a: term for a in self.agents}
        truncations = {a: trunc for a in self.agents}
        if term or trunc:
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    def state(self) -> np.ndarray:
        return _unbatch(self.core.state())

    def render(self) -> None:
        return None

    def close(self) -> None:
        return None


def parallel_env(name: str, seed: int | None = None, overrides: Mapping[str, Any] | None = None,
                 device: str = "cpu") -> ParallelAdapter:
    """A PettingZoo ParallelEnv of scenario ``name`` (p1..p4) with preset ``overrides``."""
    from twin.envs import make_env

    return ParallelAdapter(make_env(name, num_envs=1, overrides=overrides, seed=seed, device=device))
