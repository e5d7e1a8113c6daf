"""The contracts between algorithms, the training loop, actor bundles and the daemons.

An *Algorithm* trains on a ``twin.envs.base.BatchedEnv`` with centralized information and
exposes one deterministic *actor* per role. A *role* is a group of agents that share one
actor network (P4's RIS agents share parameters); ``role_of(agent_id)`` maps agent ids to
roles. Actors are what actor bundles export and daemons run: they see only their agent's
local observation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from twin.envs.base import Action, BatchedEnv, Obs, StepResult
from twin.errors import ConfigError


def own_role(agent_id: str, agent_ids) -> str:
    """``role_of`` for algorithms whose every agent is its own role: the id itself, or a
    ConfigError naming the run's agents."""
    if agent_id not in agent_ids:
        raise ConfigError(f"agent_id: {agent_id!r} is not an agent of this run ({list(agent_ids)})")
    return agent_id


class Actor(nn.Module):
    """A deterministic decentralized policy: local observation -> action, batched.

    ``forward(obs)`` takes (B, obs_dim) float32 and returns the agent's action in the
    environment's format for that agent (a tensor, or a dict of tensors for hybrid actions),
    with the same leading B. Subclasses must be constructible from ``arch_kwargs()`` alone,
    so a bundle can rebuild them with torch and ristwin only.
    """

    def arch_kwargs(self) -> dict[str, Any]:
        raise NotImplementedError


class Algorithm(ABC):
    """One multi-agent learning algorithm (one file per algorithm in agents/)."""

    name: str

    @abstractmethod
    def __init__(self, env: BatchedEnv, config: Any, seed: int) -> None: ...

    @abstractmethod
    def act(self, obs: Obs, state: torch.Tensor, explore: bool) -> Action:
        """Actions for every agent of every environment (exploration when ``explore``)."""

    @abstractmethod
    def observe(self, obs: Obs, state: torch.Tensor, action: Action, result: StepResult, next_state: torch.Tensor) -> None:
        """Store one batched transition (replay buffer or rollout)."""

    @abstractmethod
    def update(self) -> dict[str, float]:
        """Run the algorithm's learning step(s); return scalar metrics (losses, eps, ...)."""

    @abstractmethod
    def actors(self) -> dict[str, Actor]:
        """Role -> deterministic actor used at execution (what the bundle exports)."""

    @abstractmethod
    def role_of(self, agent_id: str) -> str:
        """Which role (actor) serves this agent id."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume training exactly (networks, optimizers, buffers, RNG)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
