"""Hardware in the loop, the daemon's side: a surface agent's action -> the SurfaceConfig its board latches.

Torch-free on purpose (a surface daemon decides with the numpy runtime and starts in well under
a second). The other direction, applied SurfaceConfigs -> the env's action, needs the twin's
state and lives on the environments (``irs_action_from_configs`` in P1,
``surface_action_from_configs`` in P3 / P4).

What a PIN-diode board holds per element is a b-bit phase index and an ON/OFF switch
(``twin.surface_config``). Per scenario:

- P1: the IRS action *is* a SurfaceConfig (resolution, phase indices, ON/OFF).
- P3 (STAR-RIS, energy splitting): the action is one increment of the surface's own
  configuration, which the agent observes (P3 "State": [beta_R, theta_R, theta_T, alpha] per
  element). The board carries the reflection phase theta_R (a multiple of Delta_theta: with
  the preset's pi/16 that is a 5-bit index) and ON/OFF alpha. The energy split beta_R and the
  transmission sign s (theta_T = theta_R + s pi/2) are NOT held by a phase + ON/OFF board: the
  twin keeps them from the agent's increment. A board whose resolutions do not include
  log2(2 pi / Delta_theta) cannot serve P3 (ConfigError).
- P4 (continuous phases): the phases are quantized to the NEAREST point of the board's finest
  b-bit grid (``SurfaceConfig.from_phases``: round theta / (2 pi / 2^b), ties to the even
  index, wrapped mod 2^b); every element ON (P4's model has no OFF state).
- P2: no surface agents (the BSs choose the phases), hence no entry: actions pass through.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from twin.errors import ActionError, ConfigError
from twin.surface_config import SurfaceConfig

P3_STAR_OPS = 6   # per element: beta +-, theta_R +-, flip s, toggle ON/OFF (twin.envs.p3)


def p1_config_from_action(action: Mapping[str, Any], obs: np.ndarray, scenario: Mapping[str, Any],
                          resolutions: Sequence[int]) -> SurfaceConfig | None:
    """P1: the IRS action's own fields; None when the action is not an IRS action."""
    if not {"bits", "phase_idx", "on"} <= set(action):
        return None
    # SurfaceConfig validates the integer indices' range itself; no int64 round trip needed
    return SurfaceConfig(bits=int(np.asarray(action["bits"]).reshape(())),
                         phase_idx=np.asarray(action["phase_idx"]),
                         on=np.asarray(action["on"]).astype(bool, copy=False))


def p3_theta_levels(delta_theta_rad: float) -> int:
    """Number of theta_R grid points, 2 pi / Delta_theta (as twin.envs.p3 counts them)."""
    return int(math.ceil(2.0 * math.pi / float(delta_theta_rad) - 1e-9))


def p3_board_bits(delta_theta_rad: float) -> int:
    """The board resolution b with 2^b = 2 pi / Delta_theta; ConfigError if there is none."""
    levels = p3_theta_levels(delta_theta_rad)
    bits = levels.bit_length() - 1
    if levels != 1 << bits or abs(levels * float(delta_theta_rad) - 2.0 * math.pi) > 1e-6:
        raise ConfigError(
            f"delta_theta_rad: {delta_theta_rad} does not divide 2 pi into a power of two, so no "
            f"b-bit board holds theta_R exactly; use 2 pi / 2^b (e.g. pi/16 for 5 bits)")
    return bits


def star_config_from_action(increment: int, obs: np.ndarray, delta_theta_rad: float) -> SurfaceConfig:
    """P3: the STAR-RIS configuration after ``increment`` (what its board latches).

    ``obs`` is the agent's own observation [beta_R (N), theta_R (N), theta_T (N), alpha (N)];
    only theta_R and alpha reach the board (see the module docstring). The increment follows
    the env exactly: theta_R +- Delta within [0, 2 pi) else unchanged, toggle ON/OFF; the
    beta_R / sign increments do not change what the board holds."""
    obs = np.asarray(obs, dtype=np.float64).reshape(-1)
    if obs.size % 4:
        raise ActionError(f"obs: a STAR-RIS observation has 4N entries, got {obs.size}")
    n = obs.size // 4
    levels = p3_theta_levels(delta_theta_rad)
    bits = p3_board_bits(delta_theta_rad)
    theta_idx = np.mod(np.rint(obs[n:2 * n] / float(delta_theta_rad)), levels).astype(np.int64)
    on = obs[3 * n:] > 0.5
    a = int(np.asarray(increment).reshape(()))
    if not 0 <= a <= P3_STAR_OPS * n:
        raise ActionError(f"increment: {a} outside [0, {P3_STAR_OPS * n}] for N = {n} elements")
    if a < P3_STAR_OPS * n:
        elem, op = divmod(a, P3_STAR_OPS)
        if op in (2, 3):
            new = theta_idx[elem] + (1 if op == 2 else -1)
            if 0 <= new < levels:                      # illegal state: unchanged (paper)
                theta_idx[elem] = new
        elif op == 5:
            on[elem] = ~on[elem]
    return SurfaceConfig(bits=bits, phase_idx=theta_idx, on=on)


def ris_config_from_action(theta: np.ndarray, bits: int) -> SurfaceConfig:
    """P4: continuous phases (radians) -> the nearest point of the b-bit grid, every element ON."""
    theta = np.asarray(theta, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(theta)):
        raise ActionError("theta: phases must be finite to be latched on a board")
    return SurfaceConfig.from_phases(theta, bits=int(bits))


def p3_config_from_action(action: Mapping[str, Any], obs: np.ndarray, scenario: Mapping[str, Any],
                          resolutions: Sequence[int]) -> SurfaceConfig | None:
    if "action" not in action:
        return None
    delta = float(scenario.get("delta_theta_rad", math.pi / 16))   # the P3 preset's default
    if p3_board_bits(delta) not in tuple(resolutions):
        raise ConfigError(f"driver: the board offers resolutions {list(resolutions)} but P3's theta_R grid "
                          f"needs {p3_board_bits(delta)} bits; use a board with that resolution")
    return star_config_from_action(action["action"], obs, delta)


def p4_config_from_action(action: Mapping[str, Any], obs: np.ndarray, scenario: Mapping[str, Any],
                          resolutions: Sequence[int]) -> SurfaceConfig | None:
    if "action" not in action:
        return None
    return ris_config_from_action(action["action"], max(resolutions))   # the board's finest grid


# scenario -> f(action, own observation, scenario config dict, board resolutions) -> SurfaceConfig | None
CONFIG_FROM_ACTION: dict[str, Callable[..., SurfaceConfig | None]] = {
    "p1": p1_config_from_action,
    "p3": p3_config_from_action,
    "p4": p4_config_from_action,
}
