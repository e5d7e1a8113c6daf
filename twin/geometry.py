"""Positions, distances, direction cosines and user mobility, batched over environments.

Every function takes and returns torch tensors with a leading batch axis B; randomness comes
only from the explicit ``torch.Generator`` argument. Positions are in meters, 2-D (x, y) for
P1-P3 and 3-D (x, y, z) for P4.
"""

from __future__ import annotations

import math

import torch

MIN_DISTANCE_M = 1.0  # path-loss models are not meant for d < d0 = 1 m; clamp there


def real_dtype(complex_dtype: torch.dtype) -> torch.dtype:
    """float32 for complex64, float64 for complex128."""
    if complex_dtype == torch.complex128:
        return torch.float64
    if complex_dtype == torch.complex64:
        return torch.float32
    raise ValueError(f"dtype: expected torch.complex64 or torch.complex128, got {complex_dtype}")


def uniform(shape, lo, hi, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """i.i.d. U[lo, hi) samples of the given shape."""
    return lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=dtype)


def uniform_ring(batch: int, count: int, r_inner: float, r_outer: float, generator: torch.Generator,
                 dtype=torch.float32) -> torch.Tensor:
    """Points uniform in AREA of the ring r_inner <= r <= r_outer around the origin: (B, count, 2)."""
    u = torch.rand((batch, count), generator=generator, dtype=dtype)
    radius = torch.sqrt(r_inner**2 + u * (r_outer**2 - r_inner**2))
    angle = uniform((batch, count), 0.0, 2.0 * math.pi, generator, dtype)
    return torch.stack((radius * torch.cos(angle), radius * torch.sin(angle)), dim=-1)


def uniform_circle(batch: int, count: int, radius: float, generator: torch.Generator,
                   dtype=torch.float32) -> torch.Tensor:
    """Points uniform on the circle of the given radius around the origin: (B, count, 2)."""
    angle = uniform((batch, count), 0.0, 2.0 * math.pi, generator, dtype)
    return torch.stack((radius * torch.cos(angle), radius * torch.sin(angle)), dim=-1)


def uniform_box(batch: int, count: int, lo, hi, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """Points uniform in the axis-aligned box [lo, hi] (one entry per coordinate): (B, count, D)."""
    lo_t = torch.as_tensor(lo, dtype=dtype)
    hi_t = torch.as_tensor(hi, dtype=dtype)
    u = torch.rand((batch, count, lo_t.numel()), generator=generator, dtype=dtype)
    return lo_t + u * (hi_t - lo_t)


def pairwise_distance(a: torch.Tensor, b: torch.Tensor, min_m: float = MIN_DISTANCE_M) -> torch.Tensor:
    """||a_i - b_j|| for a (B, n, D) and b (B, m, D): (B, n, m), clamped below at ``min_m``."""
    return torch.linalg.vector_norm(a.unsqueeze(-2) - b.unsqueeze(-3), dim=-1).clamp_min(min_m)


def direction_cosine(src: torch.Tensor, dst: torch.Tensor, axis: torch.Tensor) -> torch.Tensor:
    """cos of the angle between (dst_j - src_i) and the array axis at src: (B, n, m).

    src (B, n, D), dst (B, m, D), axis (B, n, D) or broadcastable unit vectors. For a ULA this
    is sin(x) of the paper's steering vector, x measured from broadside (P1 eq. 34).
    """
    diff = dst.unsqueeze(-3) - src.unsqueeze(-2)  # (B, n, m, D)
    norm = torch.linalg.vector_norm(diff, dim=-1).clamp_min(1e-12)
    return (diff * axis.unsqueeze(-2)).sum(-1) / norm


def random_waypoint_step(pos: torch.Tensor, waypoint: torch.Tensor, step_m: float, lo, hi,
                         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One slot of the random-waypoint model: move ``step_m`` toward the waypoint; on arrival
    draw a new waypoint uniform in the box [lo, hi]. pos, waypoint (B, K, D)."""
    diff = waypoint - pos
    dist = torch.linalg.vector_norm(diff, dim=-1, keepdim=True)
    arrived = dist <= step_m
    moved = torch.where(arrived, waypoint, pos + diff * (step_m / dist.clamp_min(1e-12)))
    fresh = uniform_box(pos.shape[0], pos.shape[1], lo, hi, generator, pos.dtype)
    new_waypoint = torch.where(arrived, fresh, waypoint)
    return moved, new_waypoint


def random_walk_step(pos: torch.Tensor, step_std_m: float, lo, hi, generator: torch.Generator) -> torch.Tensor:
    """One slot of a Gaussian random walk, reflected at the box [lo, hi]. pos (B, K, D)."""
    lo_t = torch.as_tensor(lo, dtype=pos.dtype)
    hi_t = torch.as_tensor(hi, dtype=pos.dtype)
    nxt = pos + step_std_m * torch.randn(pos.shape, generator=generator, dtype=pos.dtype)
    nxt = torch.where(nxt < lo_t, 2 * lo_t - nxt, nxt)
    nxt = torch.where(nxt > hi_t, 2 * hi_t - nxt, nxt)
    return torch.minimum(torch.maximum(nxt, lo_t), hi_t)
