"""Plain-dict registries: learning algorithms and the environment class of each scenario.

``ALGORITHMS[name] = (AlgorithmClass, ConfigDataclass)``; algorithm modules add their own
entry here with a one-line edit. Environment classes are named by import path and imported
on first use, so a scenario whose environment is not built yet costs nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from typing import Any, Iterable, Mapping

from agents.base import Algorithm
from agents.dqn import MADQN, MADQNLR, MADQNConfig, MADQNLRConfig, QLearning, QLearningConfig
from agents.il import ILConfig, IndependentLearners
from agents.maddpg import MADDPG, MADDPGConfig
from agents.magar import MAGAR, MAGARConfig
from agents.mappo import MAPPO, PPOAO, MAPPOConfig, PPOAOConfig
from agents.maq import MAQPG, MAQWP, MAQPGConfig, MAQWPConfig
from agents.mdlbi import MDLBI, CentralDDPGConfig, MDLBIConfig
from twin.envs.base import BatchedEnv
from twin.errors import ConfigError

# name -> (Algorithm subclass, its config dataclass). One line per algorithm, e.g.
#   "maq-wp": (MAQWP, MAQConfig),   with `from agents.maq import MAQWP, MAQConfig` above.
ALGORITHMS: dict[str, tuple[type[Algorithm], type]] = {
    "maq-wp": (MAQWP, MAQWPConfig),
    "maq-pg": (MAQPG, MAQPGConfig),
    "maddpg": (MADDPG, MADDPGConfig),
    "il": (IndependentLearners, ILConfig),
    "magar": (MAGAR, MAGARConfig),             # P3
    "madqn": (MADQN, MADQNConfig),             # P3 benchmark, global reward
    "madqn-lr": (MADQNLR, MADQNLRConfig),      # P3 benchmark, local rewards
    "q-learning": (QLearning, QLearningConfig),  # P3 benchmark, tabular
    "mappo": (MAPPO, MAPPOConfig),             # P4
    "ppo-ao": (PPOAO, PPOAOConfig),            # P4 benchmark: learned scheduler + AO precoding
    "mdlbi": (MDLBI, MDLBIConfig),             # P2: one DDPG per BS
    "ddpg-central": (MDLBI, CentralDDPGConfig),  # P2 benchmark: one DDPG over all BSs
}

# scenario -> "module:EnvClass" (imported on first use), or (EnvClass, ConfigDataclass) for a
# scenario that is not a twin.scenarios preset (small test scenarios).
ENVIRONMENTS: dict[str, Any] = {
    "p1": "twin.envs.p1:P1Env",
    "p2": "twin.envs.p2:P2Env",
    "p3": "twin.envs.p3:P3Env",
    "p4": "twin.envs.p4:P4Env",
}


def algorithm(name: str) -> tuple[type[Algorithm], type]:
    if name not in ALGORITHMS:
        known = ", ".join(sorted(ALGORITHMS)) or "none registered yet"
        raise ConfigError(f"--algo: unknown algorithm {name!r}; choose one of: {known}")
    return ALGORITHMS[name]


def env_class(scenario: str) -> type[BatchedEnv]:
    if scenario not in ENVIRONMENTS:
        raise ConfigError(f"--scenario: unknown scenario {scenario!r}; choose one of {', '.join(ENVIRONMENTS)}")
    entry = ENVIRONMENTS[scenario]
    if isinstance(entry, tuple):
        return entry[0]
    module_name, _, cls_name = entry.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:  # the module exists but one of its imports is broken: a bug, keep the traceback
            raise
        raise ConfigError(f"--scenario: the {scenario} environment ({entry}) is not available in this build") from None
    return getattr(module, cls_name)


def scenario_config(scenario: str, assignments: Iterable[str] = ()) -> Any:
    """The validated scenario preset with ``field=value`` overrides (twin.scenarios presets)."""
    env_class(scenario)
    entry = ENVIRONMENTS[scenario]
    if isinstance(entry, tuple):
        return algo_config(entry[1], assignments, prefix="scenario")
    from twin import scenarios

    return scenarios.get_scenario(scenario, **scenarios.parse_overrides(scenario, list(assignments)))


def rebuild_scenario(scenario: str, saved: Mapping[str, Any]) -> Any:
    """The scenario config a run saved in config.json (validated again)."""
    entry = ENVIRONMENTS.get(scenario)
    if isinstance(entry, tuple):
        return rebuild_dataclass(entry[1], saved, "scenario")
    from twin import scenarios

    return scenarios.get_scenario(scenario, **{k: v for k, v in saved.items() if k != "name"})


def rebuild_dataclass(cls: type, saved: Mapping[str, Any], where: str) -> Any:
    fields = {f.name for f in dataclasses.fields(cls)}
    defaults = cls()
    kwargs = {}
    for k, v in saved.items():
        if k not in fields:
            raise ConfigError(f"config.json: {where}.{k} is not a field of {cls.__name__} in this ristwin")
        kwargs[k] = tuple(v) if isinstance(getattr(defaults, k), tuple) and isinstance(v, list) else v
    return cls(**kwargs)


def make_env(scenario: str, cfg: Any, num_envs: int) -> BatchedEnv:
    if int(num_envs) < 1:
        raise ConfigError(f"--num-envs: need at least 1 environment, got {num_envs}")
    return env_class(scenario)(num_envs=int(num_envs), cfg=cfg)


def algo_config(cls: type, assignments: Iterable[str] = (), prefix: str = "algo") -> Any:
    """An algorithm config dataclass with ``field=value`` overrides, coerced to each field's type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    cfg = cls()
    changes: dict[str, Any] = {}
    for text in assignments:
        if "=" not in text:
            raise ConfigError(f"--set {prefix}.{text}: expected field=value")
        key, raw = (s.strip() for s in text.split("=", 1))
        if key not in fields:
            raise ConfigError(f"{prefix}.{key}: not a field of {cls.__name__}; known: {', '.join(sorted(fields))}")
        changes[key] = _coerce(f"{prefix}.{key}", raw, getattr(cfg, key))
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _coerce(key: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return raw.lower() in ("true", "1")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, (tuple, list)):
            items = [x.strip() for x in raw.strip("()[]").split(",") if x.strip()]
            kind = type(default[0]) if default else float
            return type(default)(kind(x) for x in items)
        if isinstance(default, str) or default is None:
            return raw
        return type(default)(json.loads(raw))
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ConfigError(f"{key}: cannot read {raw!r} as {type(default).__name__}") from None
