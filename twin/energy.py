"""Energy-harvesting buffer of each IRS (P1 eq. 9).

Each IRS l runs from a solar-charged store E_l. Per slot it spends c_l(t) = P_IRS_l(t) * dt
and harvests a_l(t) ~ Poisson(rate) energy quanta:

    E_l(t+1) = min( max(E_l(t) - c_l(t), E_min) + a_l(t), E_max )          (P1 eq. 9)

The paper counts energy in the unit of its Poisson draw (a_l ~ Poisson(2.2) "per slot")
without naming that unit; the project reading: buffer, E_min, E_max and arrivals are in
*energy units* of ``unit_j`` joules each (the preset names the value), and consumption is
converted with :func:`consumption_units`. Pure batched functions over (B, L); randomness
only from an explicit ``torch.Generator``.
"""

from __future__ import annotations

import torch

from twin.errors import ConfigError, require


def consumption_units(p_irs_w: torch.Tensor, slot_s: float, unit_j: float) -> torch.Tensor:
    """c_l(t) = P_IRS_l(t) * dt, expressed in energy units of ``unit_j`` joules. Shape of p_irs_w."""
    require(slot_s > 0, ConfigError, f"slot_s: slot length must be > 0 s, got {slot_s}")
    require(unit_j > 0, ConfigError, f"unit_j: energy unit must be > 0 J, got {unit_j}")
    return p_irs_w * (slot_s / unit_j)


def harvest(
    rate: float | torch.Tensor,
    shape: tuple[int, ...],
    generator: torch.Generator | None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Arrivals a_l(t) ~ Poisson(rate) per IRS per slot (P1 section II, "Poisson(2.2)").

    ``rate`` is a scalar or a tensor broadcastable to ``shape`` (e.g. (B, L)); the draw is in
    energy units. Pass an explicit generator so trajectories are reproducible.
    """
    if isinstance(rate, (int, float)):  # the common case: checked in Python, no tensor round trip
        require(rate >= 0, ConfigError, f"rate: Poisson arrival rate must be >= 0, got {rate}")
        return torch.poisson(torch.full(shape, float(rate), dtype=dtype, device=device), generator=generator)
    rate_t = torch.as_tensor(rate, dtype=dtype, device=device)
    require(bool((rate_t >= 0).all()), ConfigError, f"rate: Poisson arrival rate must be >= 0, got {rate}")
    return torch.poisson(rate_t.expand(shape).contiguous(), generator=generator)


def step_buffer(
    energy: torch.Tensor,
    consumed: torch.Tensor,
    arrived: torch.Tensor,
    e_min: float | torch.Tensor,
    e_max: float | torch.Tensor,
) -> torch.Tensor:
    """E(t+1) = min(max(E(t) - c(t), E_min) + a(t), E_max) (P1 eq. 9), elementwise over (B, L).

    All arguments in the same energy unit. Spending is floored at E_min *before* arrivals are
    added, exactly as printed: a surface that asks for more than it holds does not go below
    E_min (constraint 10c is then enforced through the reward's xi3 term on the *request*).
    """
    if isinstance(e_min, (int, float)) and isinstance(e_max, (int, float)):  # scalars: no tensor round trip
        require(e_min <= e_max, ConfigError, f"e_min/e_max: need E_min <= E_max, got {e_min} > {e_max}")
        return (energy - consumed).clamp_(min=e_min).add(arrived).clamp_(max=e_max)
    e_min_t = torch.as_tensor(e_min, dtype=energy.dtype, device=energy.device)
    e_max_t = torch.as_tensor(e_max, dtype=energy.dtype, device=energy.device)
    require(bool((e_min_t <= e_max_t).all()), ConfigError, f"e_min/e_max: need E_min <= E_max, got {e_min} > {e_max}")
    spent = torch.maximum(energy - consumed, e_min_t)
    return torch.minimum(spent + arrived, e_max_t)


def energy_deficit(energy: torch.Tensor, consumed: torch.Tensor, e_min: float | torch.Tensor) -> torch.Tensor:
    """min(E(t) - c(t) - E_min, 0): how far a request would push the buffer below E_min.

    A helper for the reward term xi3 * sum_l min(E_l - E_min, 0) (P1 eq. 19) evaluated on the
    unclamped post-spend level (the clamped level of eq. 9 can never be below E_min, so the
    penalty needs the request; project reading). Shape of ``energy``; values <= 0.
    """
    return torch.clamp(energy - consumed - torch.as_tensor(e_min, dtype=energy.dtype, device=energy.device), max=0.0)


def affordable(energy: torch.Tensor, consumed: torch.Tensor, e_min: float | torch.Tensor) -> torch.Tensor:
    """Bool (B, L): the buffer can pay c(t) without dropping below E_min."""
    return energy - consumed >= torch.as_tensor(e_min, dtype=energy.dtype, device=energy.device)
