"""The batched multi-agent environment interface every paper's MDP implements.

One object holds B independent environments (``num_envs``) and steps them together; all
tensors carry that leading axis. Spaces describe ONE environment (Gymnasium spaces), so
the PettingZoo adapter and the daemons (which serve B = 1) reuse them unchanged.

Agent ids are stable strings: ``bs0``, ``irs0``, ``irs1``, ``star0``, ``sched``, ...
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch

from twin.errors import ConfigError
from twin.scenarios import get_scenario

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

    name: str
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

    # ---- shared by the paper environments --------------------------------------------------

    def _init_batch(self, num_envs: int, cfg: Any, seed: int | None, device: str | torch.device,
                    dtype: torch.dtype) -> None:
        """Batch size, preset (``cfg`` or the scenario ``self.name``), device, precisions and the
        seeded generator; the episode starts only at ``reset``."""
        if int(num_envs) < 1:
            raise ConfigError(f"num_envs: need at least 1 environment, got {num_envs}")
        self.cfg = get_scenario(self.name) if cfg is None else cfg
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.cdtype = dtype
        self.rdtype = torch.float64 if dtype == torch.complex128 else torch.float32
        self._gen = torch.Generator(device=self.device)
        self._gen.manual_seed(0 if seed is None else int(seed))
        self._has_state = False
        self.t = 0

    def _scene_on_device(self, scene: Any, probe: str) -> Any:
        """``scene`` (a scene dataclass) with every tensor, also inside tuple fields, on this
        environment's device; ``probe`` names the field whose device decides."""
        if getattr(scene, probe).device == self.device:
            return scene
        move = lambda x: tuple(y.to(self.device) for y in x) if isinstance(x, tuple) else x.to(self.device)
        return type(scene)(*(move(getattr(scene, f.name)) for f in dataclasses.fields(scene)))

    def _replaced_scene(self, scene: Any, fields: dict[str, Any]) -> Any:
        """The scene ``set_scene`` installs: ``scene`` (or the current one) with the named
        ``fields`` replaced, checked against the scene type and the batch size."""
        if not self._has_state:
            raise ConfigError("set_scene: call reset() first")
        new = self.scene if scene is None else scene
        names = {f.name for f in dataclasses.fields(type(self.scene))}
        for key in fields:
            if key not in names:
                raise ConfigError(f"{key}: not a field of {type(self.scene).__name__} ({sorted(names)})")
        new = dataclasses.replace(new, **fields) if fields else new
        if new.num_envs != self.num_envs:
            raise ConfigError(f"scene: has {new.num_envs} environments, this batch has {self.num_envs}")
        return new
