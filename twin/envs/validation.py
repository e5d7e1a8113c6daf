"""Action checks shared by the paper environments.

Every check raises :class:`twin.errors.ActionError` whose message names the agent, the
field and the fix. The checks are written to cost one fused reduction on the happy path
(the batched step at B = 1024 must stay in the low milliseconds); the detailed diagnosis
only runs once something is already wrong.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from twin.errors import ActionError


def check_agents(actions: Mapping[str, Any], agent_ids: Iterable[str]) -> None:
    """Every agent id present, no unknown ids."""
    if not isinstance(actions, Mapping):
        raise ActionError(f"actions: expected a dict agent id -> action, got {type(actions).__name__}")
    expected = tuple(agent_ids)
    missing = [a for a in expected if a not in actions]
    unknown = [a for a in actions if a not in expected]
    if missing:
        raise ActionError(f"{missing[0]}: no action given for this agent (expected agents {list(expected)})")
    if unknown:
        raise ActionError(f"{unknown[0]}: unknown agent id (expected agents {list(expected)})")


def check_fields(agent: str, action: Any, fields: Iterable[str]) -> Mapping[str, Any]:
    """A dict action with exactly ``fields``."""
    fields = tuple(fields)
    if not isinstance(action, Mapping):
        raise ActionError(f"{agent}: expected a dict with fields {list(fields)}, got {type(action).__name__}")
    for f in fields:
        if f not in action:
            raise ActionError(f"{agent}.{f}: missing field (expected fields {list(fields)})")
    for f in action:
        if f not in fields:
            raise ActionError(f"{agent}.{f}: unknown field (expected fields {list(fields)})")
    return action


def to_tensor(agent: str, field: str, x: Any, device: torch.device) -> torch.Tensor:
    """Accept torch tensors and numpy arrays (the PettingZoo / daemon path)."""
    if isinstance(x, torch.Tensor):
        return x if x.device == device else x.to(device)
    if isinstance(x, (np.ndarray, np.generic, int, float, bool)):
        return torch.as_tensor(np.asarray(x), device=device)
    raise ActionError(f"{agent}.{field}: expected a torch tensor or numpy array, got {type(x).__name__}")


def check_shape(agent: str, field: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(t.shape) != tuple(shape):
        raise ActionError(f"{agent}.{field}: expected shape {tuple(shape)}, got {tuple(t.shape)}")


def structural(agent: str, field: str, x: Any, shape: tuple[int, ...], kind: str, device: torch.device) -> torch.Tensor:
    """Shape and dtype only (kind "int", "mask" or "float"); values are checked by the caller
    in one fused reduction, which falls back to the field checks below to name the culprit.
    The field checks start with this one."""
    t = to_tensor(agent, field, x, device)
    check_shape(agent, field, t, shape)
    if kind == "int" and (t.dtype == torch.bool or t.is_floating_point() or t.is_complex()):
        raise ActionError(f"{agent}.{field}: expected integer indices, got dtype {t.dtype}; "
                          f"round and cast to torch.long")
    if kind == "mask" and (t.is_floating_point() or t.is_complex()):
        raise ActionError(f"{agent}.{field}: expected a bool (or 0/1 integer) mask, got dtype {t.dtype}")
    if kind == "float" and (t.is_complex() or t.dtype == torch.bool):
        raise ActionError(f"{agent}.{field}: expected real floats, got dtype {t.dtype}")
    return t


def int_field(agent: str, field: str, x: Any, shape: tuple[int, ...], low: int | torch.Tensor,
              high: int | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Integer indices with ``low <= x < high`` (``high`` may be a tensor broadcast to x)."""
    t = structural(agent, field, x, shape, "int", device)
    bad = (t < low) | (t >= high)
    if bool(bad.any()):
        hi = high if isinstance(high, int) else "the per-entry bound"
        first = t[bad].flatten()[0].item()
        raise ActionError(f"{agent}.{field}: index {first} out of range [{low}, {hi}) "
                          f"({int(bad.sum())} bad entries)")
    return t.long()


def bool_field(agent: str, field: str, x: Any, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """A mask: bool, or integers that are all 0 / 1."""
    t = structural(agent, field, x, shape, "mask", device)
    if t.dtype == torch.bool:
        return t
    if bool(((t != 0) & (t != 1)).any()):
        raise ActionError(f"{agent}.{field}: mask entries must be 0 or 1")
    return t.bool()


def float_field(agent: str, field: str, x: Any, shape: tuple[int, ...], device: torch.device,
                low: float | None = None, high: float | None = None) -> torch.Tensor:
    """Finite real values, optionally within [low, high] (integers are promoted to float32)."""
    t = structural(agent, field, x, shape, "float", device)
    if not t.is_floating_point():
        t = t.float()
    bad = ~torch.isfinite(t)
    if low is not None:
        bad |= t < low
    if high is not None:
        bad |= t > high
    if bool(bad.any()):
        if bool((~torch.isfinite(t)).any()):
            raise ActionError(f"{agent}.{field}: contains NaN or inf ({int((~torch.isfinite(t)).sum())} entries)")
        v = t[bad].flatten()[0].item()
        raise ActionError(f"{agent}.{field}: value {v:.6g} outside the action space [{low}, {high}]; "
                          f"clip or rescale the actor output to the bounds")
    return t  # float16/32/64 kept: the environment casts to its own precision
