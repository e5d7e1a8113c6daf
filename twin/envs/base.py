"""The batched multi-agent environment interface every paper's MDP implements.

One object holds B independent environments (``num_envs``) and steps them together; all
tensors carry that leading axis. Spaces describe ONE environment (Gymnasium spaces), so
the PettingZoo adapter and the daemons (which serve B = 1) reuse them unchanged.

Agent ids are stable strings: ``bs0``, ``irs0``, ``irs1``, ``star0``, ``sched``, ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch

Obs = dict[str, torch.Tensor]               # agent id -> (B, obs_dim) float32
Action = dict[str, Any]                      # agent id -> tensor or dict of tensors, leading B


@dataclass
class StepResult:
    obs: Obs
    rewards: dict[str, torch.Tensor]          # agent id -> (B,) float32
    terminated: torch.Tensor                  # (B,) bool
    truncated: torch.Tensor                   # (B,) bool
    info: dict[str, torch.Tensor] = field(default_factory=dict)  # metrics, each (B, ...)


class BatchedEnv(ABC):
    """B environments of one scenario, stepped in lockstep on torch tensors."""

    agent_ids: tuple[str, ...]
    observation_spaces: dict[str, gym.Space]
    action_spaces: dict[str, gym.Space]
    num_envs: int

    @abstractmethod
    def reset(self, seed: int | None = None) -> Obs:
        """Draw new geometry / fading per the paper; the same seed gives the same trajectory."""

    @abstractmethod
    def step(self, actions: Action) -> StepResult:
        """Validate every agent's action (ActionError naming agent and field), step physics."""

    @abstractmethod
    def state(self) -> torch.Tensor:
        """Global state (B, state_dim) for centralized training."""
