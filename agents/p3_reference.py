"""P3 reference configurations with full CSI: surface modes x ON/OFF policies (seed 003, section V).

The paper's baselines compare the multi-hop energy-splitting (ES) STAR-RIS with a
mode-switching (MS) STAR-RIS, a plain reflect-only RIS and no surface, and three ON/OFF
policies: all-on, half-on (a random half of each surface's elements ON) and optimized. To
measure those physics comparisons without a learning budget, every mode's configuration is
optimized here the same way, with the full CSI of the slot (an upper reference for what
an agent that only sees its own configuration can reach):

1. elements: coordinate ascent, one element at a time, over the mode's choices
   (ES: theta_R on a ``theta_levels`` grid, beta_R in ``beta_grid``, the +-pi/2 sign;
   MS: theta and reflect/transmit; RIS: theta), all candidates of one element evaluated as
   one batch, keeping the best EE (the ON set is fixed, so this is the best sum rate);
2. BS: regularized zero-forcing W = Omega^H (Omega Omega^H + (K sigma^2 / P_max) I)^-1 on
   the effective channel Omega (eq. 4a), scaled to tr(W W^H) = P_max (K > M, so plain ZF
   does not exist); recomputed for every candidate;
3. ON/OFF "optimized": greedy elimination from all-on (``greedy_off``: per pass, switch OFF
   the elements whose removal raises the EE, in bulk or the best one alone, whichever is
   better) until no removal raises it, then one more element sweep.

Batches of scenes run together; randomness (half-on masks) only from an explicit generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from twin import star
from twin.errors import ConfigError

MODES = ("es", "ms", "ris", "none")
ONOFF_POLICIES = ("all-on", "half-on", "optimized")


@dataclass
class P3Config:
    """One surface configuration per scene: (B, V, N) tensors."""

    beta_R: torch.Tensor
    theta_R: torch.Tensor
    t_sign: torch.Tensor
    on: torch.Tensor

    def repeat(self, c: int) -> "P3Config":
        return P3Config(*(x.repeat(c, *([1] * (x.dim() - 1))) for x in (self.beta_R, self.theta_R, self.t_sign, self.on)))


def coefficients(mode: str, cfg: P3Config, cdtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(Theta_R, Theta_T) of ``mode`` (twin.star's element models)."""
    if mode == "es":
        R, T = star.es_coefficients(cfg.beta_R, cfg.theta_R, cfg.t_sign, cfg.on)
    elif mode == "ms":
        R, T = star.ms_coefficients(cfg.theta_R, cfg.beta_R >= 0.5, cfg.on)
    elif mode == "ris":
        R, T = star.ris_coefficients(cfg.theta_R, cfg.on)
    elif mode == "none":
        R, T = star.no_surface_coefficients(tuple(cfg.on.shape), cdtype)
    else:
        raise ConfigError(f"mode: {mode!r} is unknown; use one of {MODES}")
    return R.to(cdtype), T.to(cdtype)


def rzf(omega: torch.Tensor, noise_w: float, p_max_w: float) -> torch.Tensor:
    """Regularized ZF beams (B, M, K) for the effective channel omega (B, K, M) at full power."""
    K = omega.shape[-2]
    gram = omega @ omega.mH + (K * noise_w / p_max_w) * torch.eye(K, dtype=omega.dtype)
    W = omega.mH @ torch.linalg.inv(gram)
    # no channel at all (no surface, direct link blocked): any full-power W, the rate is 0 anyway
    dead = W.abs().square().sum((-2, -1)) == 0
    W = torch.where(dead[:, None, None], torch.ones_like(W), W)
    return star.normalize_precoder(W, p_max_w)


def _repeat_scene(scene, c: int):
    rep = lambda x: x.repeat(c, *([1] * (x.dim() - 1)))
    return rep(scene.G_BS), rep(scene.G_SS), rep(scene.h_SU), rep(scene.h_BU), rep(scene.user_region)


def evaluate(scene, scn, mode: str, cfg: P3Config, reps: int = 1) -> dict[str, torch.Tensor]:
    """EE etc. of ``cfg`` (batch = reps x scenes, scene tensors repeated) with RZF beams."""
    G_BS, G_SS, h_SU, h_BU, region = _repeat_scene(scene, reps) if reps > 1 else (
        scene.G_BS, scene.G_SS, scene.h_SU, scene.h_BU, scene.user_region)
    R, T = coefficients(mode, cfg, G_BS.dtype)
    on = cfg.on if mode != "none" else torch.zeros_like(cfg.on)
    omega = star.effective_channel(G_BS, G_SS, h_SU, h_BU, R, T, region)
    W = rzf(omega, scn.noise_w, scn.p_max_w)
    return star.evaluate(G_BS, G_SS, h_SU, h_BU, R, T, on, W, region, scn.noise_w, scn.bandwidth_hz, scn.element_power_w)


def initial_config(B: int, V: int, N: int, onoff: str, gen: torch.Generator, rdtype=torch.float32) -> P3Config:
    """theta = 0, beta_R = 0.5 (ES), sign +1; ON set per policy (half-on: a random N//2 per surface)."""
    if onoff not in ONOFF_POLICIES:
        raise ConfigError(f"onoff: {onoff!r} is unknown; use one of {ONOFF_POLICIES}")
    on = torch.ones(B, V, N, dtype=torch.bool)
    if onoff == "half-on":
        order = torch.rand(B, V, N, generator=gen).argsort(-1)
        on = order < N // 2
    return P3Config(torch.full((B, V, N), 0.5, dtype=rdtype), torch.zeros(B, V, N, dtype=rdtype),
                    torch.ones(B, V, N, dtype=torch.long), on)


def _candidates(mode: str, cfg: P3Config, v: int, n: int, theta_grid: torch.Tensor,
                beta_grid: Sequence[float]) -> P3Config:
    """All single-element variants of element (v, n) for ``mode`` (the current one first)."""
    variants: list[tuple[str, float]] = [("keep", 0.0)]
    variants += [("theta", float(t)) for t in theta_grid]
    if mode == "es":
        variants += [("beta", float(b)) for b in beta_grid] + [("flip", 0.0)]
    elif mode == "ms":
        variants += [("beta", 0.0), ("beta", 1.0)]
    C = len(variants)
    out = cfg.repeat(C)
    B = cfg.on.shape[0]
    for i, (kind, val) in enumerate(variants):
        sl = slice(i * B, (i + 1) * B)
        if kind == "theta":
            out.theta_R[sl, v, n] = val
        elif kind == "beta":
            out.beta_R[sl, v, n] = val
        elif kind == "flip":
            out.t_sign[sl, v, n] = -out.t_sign[sl, v, n]
    return out


def _pick(cand: P3Config, score: torch.Tensor, B: int) -> P3Config:
    best = score.view(-1, B).argmax(0)                      # (B,) candidate index per scene
    idx = best * B + torch.arange(B)
    return P3Config(cand.beta_R[idx], cand.theta_R[idx], cand.t_sign[idx], cand.on[idx])


def element_sweep(scene, scn, mode: str, cfg: P3Config, theta_levels: int = 16,
                  beta_grid: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> P3Config:
    """One coordinate-ascent pass over every element (step 1 of the module docstring)."""
    if mode == "none":
        return cfg
    B, V, N = cfg.on.shape
    theta_grid = torch.arange(theta_levels, dtype=cfg.theta_R.dtype) * (2 * math.pi / theta_levels)
    for v in range(V):
        for n in range(N):
            cand = _candidates(mode, cfg, v, n, theta_grid, beta_grid)
            C = cand.on.shape[0] // B
            score = evaluate(scene, scn, mode, cand, reps=C)["ee_bit_per_j"]
            cfg = _pick(cand, score, B)
    return cfg


def greedy_off(scene, scn, mode: str, cfg: P3Config) -> P3Config:
    """Greedy elimination from the current ON set (step 3): each pass evaluates switching OFF
    every ON element alone; it removes all elements whose removal alone raises the EE if that
    beats removing only the best one, else the best one; it stops when no removal helps."""
    B, V, N = cfg.on.shape
    VN = V * N
    for _ in range(VN):
        base = evaluate(scene, scn, mode, cfg)["ee_bit_per_j"]
        cand = cfg.repeat(VN)
        for j in range(VN):
            cand.on[j * B:(j + 1) * B, j // N, j % N] = False
        score = evaluate(scene, scn, mode, cand, reps=VN)["ee_bit_per_j"].view(VN, B)
        helps = (score > base * (1 + 1e-9)) & cfg.on.view(B, VN).T            # (VN, B)
        if not bool(helps.any()):
            break
        best_arg = score.masked_fill(~helps, -torch.inf).argmax(0)            # (B,)
        single = cfg.on.clone().view(B, VN)
        rows = torch.nonzero(helps.any(0)).squeeze(-1)
        single[rows, best_arg[rows]] = False
        bulk = cfg.on.view(B, VN) & ~helps.T
        singles = P3Config(cfg.beta_R, cfg.theta_R, cfg.t_sign, single.view(B, V, N))
        bulks = P3Config(cfg.beta_R, cfg.theta_R, cfg.t_sign, bulk.view(B, V, N))
        use_bulk = evaluate(scene, scn, mode, bulks)["ee_bit_per_j"] > evaluate(scene, scn, mode, singles)["ee_bit_per_j"]
        on = torch.where(use_bulk[:, None], bulk, single).view(B, V, N)
        cfg = P3Config(cfg.beta_R, cfg.theta_R, cfg.t_sign, on)
    return cfg


def optimize(scene, scn, mode: str, onoff: str, gen: torch.Generator, sweeps: int = 2,
             theta_levels: int = 16) -> tuple[P3Config, dict[str, torch.Tensor]]:
    """The configuration of ``mode`` under the ON/OFF policy ``onoff`` and its metrics."""
    B, V, N, _ = scene.G_BS.shape
    cfg = initial_config(B, V, N, onoff, gen)
    for _ in range(sweeps):
        cfg = element_sweep(scene, scn, mode, cfg, theta_levels)
    if onoff == "optimized" and mode != "none":
        cfg = greedy_off(scene, scn, mode, cfg)
        cfg = element_sweep(scene, scn, mode, cfg, theta_levels)
    return cfg, evaluate(scene, scn, mode, cfg)
