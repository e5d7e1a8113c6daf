"""The papers' MDPs as batched multi-agent environments (one module per paper).

``ENVS`` maps a scenario name to its environment class; :func:`make_env` builds one from
the scenario preset (``twin.scenarios``) with validated field overrides, and resets it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from twin.envs.base import BatchedEnv
from twin.envs.p1 import P1Env
from twin.envs.p2 import P2Env
from twin.envs.p3 import P3Env
from twin.envs.p4 import P4Env
from twin.errors import ConfigError
from twin.scenarios import get_scenario

ENVS: dict[str, type[BatchedEnv]] = {"p1": P1Env, "p2": P2Env, "p3": P3Env, "p4": P4Env}


def make_env(name: str, num_envs: int = 1, overrides: Mapping[str, Any] | None = None,
             seed: int | None = None, device: str | torch.device = "cpu") -> BatchedEnv:
    """A reset environment of scenario ``name`` with ``num_envs`` copies in one batch."""
    if name not in ENVS:
        raise ConfigError(f"scenario: no environment for {name!r}; choose one of {', '.join(ENVS)}")
    cfg = get_scenario(name, **dict(overrides or {}))
    env = ENVS[name](num_envs=num_envs, cfg=cfg, seed=seed, device=device)
    env.reset(seed=seed)
    return env


__all__ = ["ENVS", "BatchedEnv", "make_env"]
