"""Reference decisions every learned policy is compared against (P1 layouts, perfect CSI).

Pure functions over batched torch tensors in the layouts of ``twin/signal.py``:
H_BR (B,L,N,M), h_RU (B,L,K,N), h_BU (B,K,M), phi (B,L,N), V (B,M,K) and the effective
channel G (B,K,M) whose row k is g_k^H. ``noise_w`` and ``p_max`` are a float or a (B,)
tensor (watts). Randomness only through explicit ``torch.Generator`` arguments.

Precoders (all meet sum_k ||v_k||^2 = P_max exactly):
  mrt, zf, rzf       linear beams, equal power per stream;
  wmmse              iterative weighted-MMSE sum-rate maximization (Shi et al., 2011).
Passive beamforming:
  align_phases       continuous co-phasing of every element to one user (strongest or chosen);
  align_phases_multiuser  heuristic: each IRS co-phases to the user it helps most;
  quantize_phases    nearest point of the b-bit grid F_b (P1 eq. 6);
  coordinate_ascent_phases  discrete search over elements x 2^b phases (x ON/OFF);
  wmmse_phase_search WMMSE alternated with coordinate ascent: the full-CSI upper reference.
Random and fixed configurations: random_precoder, random_phase_idx, random_phases, all_on,
half_on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from twin.errors import ConfigError
from twin.signal import effective_channel

Precoder = Callable[[torch.Tensor, "torch.Tensor | float", "torch.Tensor | float"], torch.Tensor]


# --------------------------------------------------------------------------- helpers


def per_env(value: torch.Tensor | float, batch: int, like: torch.Tensor) -> torch.Tensor:
    """A float or (B,) tensor as a (B,) real tensor of ``like``'s real dtype."""
    real = like.real.dtype if like.is_complex() else like.dtype
    t = torch.as_tensor(value, dtype=real, device=like.device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ConfigError(f"noise_w/p_max: expected a float or a ({batch},) tensor, got shape {tuple(t.shape)}")
    return t


def scale_to_power(V: torch.Tensor, p_max: torch.Tensor | float) -> torch.Tensor:
    """Scale V (B,M,K) so that sum_k ||v_k||^2 = P_max exactly (P1 eq. 10a, met with equality).

    Rate only grows with a common scaling (SINR = c^2 S / (c^2 I + sigma^2)), so every
    reference precoder spends the whole budget. An all-zero V stays zero.
    """
    p = per_env(p_max, V.shape[0], V)
    norm2 = V.abs().square().sum((-2, -1))
    scale = torch.where(norm2 > 0, torch.sqrt(p / norm2.clamp_min(torch.finfo(norm2.dtype).tiny)), torch.zeros_like(norm2))
    return V * scale[:, None, None].to(V.dtype)


def _equal_stream_power(V: torch.Tensor, p_max: torch.Tensor | float) -> torch.Tensor:
    """Unit-norm nonzero columns, then the total scaled to P_max (equal power per served stream)."""
    norms = V.abs().square().sum(-2, keepdim=True).sqrt()
    unit = torch.where(norms > 0, V / norms.clamp_min(torch.finfo(norms.dtype).tiny), torch.zeros_like(V))
    return scale_to_power(unit, p_max)


def sum_rate(G: torch.Tensor, V: torch.Tensor, noise_w: torch.Tensor | float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """sum_k w_k log2(1 + gamma_k) (P1 eqs. 4-5). G (B,...,K,M), V broadcastable; returns (B,...)."""
    Y = G @ V
    gain = Y.abs().square()
    signal = torch.diagonal(gain, dim1=-2, dim2=-1)
    interference = gain.sum(-1) - signal
    noise = per_env(noise_w, G.shape[0], G).reshape((G.shape[0],) + (1,) * (signal.ndim - 1))
    rates = torch.log2(1.0 + signal / (interference + noise))
    if weights is not None:
        rates = rates * weights
    return rates.sum(-1)


# --------------------------------------------------------------------------- precoders


def mrt(G: torch.Tensor, noise_w: torch.Tensor | float, p_max: torch.Tensor | float) -> torch.Tensor:
    """Maximum-ratio transmission v_k ∝ g_k, equal power per stream. ``noise_w`` unused."""
    del noise_w
    return _equal_stream_power(G.mH, p_max)


def zf(G: torch.Tensor, noise_w: torch.Tensor | float, p_max: torch.Tensor | float) -> torch.Tensor:
    """Zero forcing V ∝ G^H (G G^H)^{-1} (needs M >= K), equal power per stream."""
    del noise_w
    K, M = G.shape[-2:]
    if M < K:
        raise ConfigError(f"precoder: zero forcing needs at least as many BS antennas as users (M={M} < K={K}); use rzf or wmmse")
    V = torch.linalg.solve(G @ G.mH, G).mH  # (G G^H)^{-1} G, conjugate-transposed: G^H (G G^H)^{-1}
    return _equal_stream_power(V, p_max)


def rzf(G: torch.Tensor, noise_w: torch.Tensor | float, p_max: torch.Tensor | float) -> torch.Tensor:
    """Regularized ZF V ∝ G^H (G G^H + (K sigma^2 / P) I)^{-1} (MMSE-style), equal power per stream."""
    B, K, _ = G.shape
    alpha = K * per_env(noise_w, B, G) / per_env(p_max, B, G)
    eye = torch.eye(K, dtype=G.dtype, device=G.device)
    V = torch.linalg.solve(G @ G.mH + alpha[:, None, None].to(G.dtype) * eye, G).mH
    return _equal_stream_power(V, p_max)


def power_constrained_solve(A: torch.Tensor, Bm: torch.Tensor, p: torch.Tensor, bisection_steps: int = 80) -> torch.Tensor:
    """argmin over V of tr(V^H A V) - 2 Re tr(Bm^H V) s.t. ||V||_F^2 <= p: V = (A + mu I)^{-1} Bm.

    A is Hermitian PSD (B,M,M). With A = U diag(lam) U^H, ||V||^2 = sum_i c_i / (lam_i + mu)^2 is
    decreasing in mu; mu = 0 when that already fits, else the bisection root.
    """
    lam, U = torch.linalg.eigh(A)
    lam = lam.clamp_min(0.0)
    C = U.mH @ Bm
    c2 = C.abs().square().sum(-1)  # (B,M)
    tiny = torch.finfo(lam.dtype).tiny

    def power(mu: torch.Tensor) -> torch.Tensor:
        return (c2 / (lam + mu[:, None]).clamp_min(tiny).square()).sum(-1)

    zero = torch.zeros_like(p)
    eps = 1e-12 if lam.dtype == torch.float64 else 1e-6
    invertible = lam.min(-1).values > eps * lam.max(-1).values.clamp_min(tiny)
    fits = invertible & (power(zero) <= p)
    lo, hi = zero.clone(), torch.sqrt(c2.sum(-1) / p).clamp_min(tiny)  # power(hi) <= p
    for _ in range(bisection_steps):
        mid = 0.5 * (lo + hi)
        too_much = power(mid) > p
        lo = torch.where(too_much, mid, lo)
        hi = torch.where(too_much, hi, mid)
    mu = torch.where(fits, zero, hi)
    return U @ (C / (lam + mu[:, None]).clamp_min(tiny)[..., None].to(C.dtype))


@dataclass
class WmmseResult:
    V: torch.Tensor  # (B,M,K), sum_k ||v_k||^2 = P_max
    sum_rate: torch.Tensor  # (B,)
    history: torch.Tensor  # (iterations+1, B): sum rate after each iteration (frozen envs repeat)


def wmmse_solve(
    G: torch.Tensor,
    noise_w: torch.Tensor | float,
    p_max: torch.Tensor | float,
    *,
    iters: int = 100,
    tol: float = 1e-5,
    V0: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> WmmseResult:
    """Weighted-MMSE sum-rate maximization under sum_k ||v_k||^2 <= P_max (Shi et al., 2011).

    Each iteration: MMSE receivers u_k = g_k^H v_k / T_k, MSE weights w_k = 1 / e_k = 1 + SINR_k,
    then V = (G^H diag(a w |u|^2) G + mu I)^{-1} G^H diag(a w u) with mu by bisection, and
    finally the full-power scaling (which only adds rate). The weighted sum rate is
    non-decreasing over iterations. An environment stops updating once its gain in an
    iteration falls below ``tol`` (relative); the loop ends when all have stopped.
    Initial point: ``V0`` if given, else regularized ZF.
    """
    B, K, _ = G.shape
    sigma2 = per_env(noise_w, B, G)
    p = per_env(p_max, B, G)
    alpha = torch.ones(B, K, dtype=sigma2.dtype, device=G.device) if weights is None else weights.to(sigma2.dtype)
    V = scale_to_power(rzf(G, noise_w, p_max) if V0 is None else V0, p)
    rate = sum_rate(G, V, sigma2, alpha)
    history = [rate]
    active = torch.ones(B, dtype=torch.bool, device=G.device)
    for _ in range(iters):
        Y = G @ V  # [k, j] = g_k^H v_j
        total = Y.abs().square().sum(-1) + sigma2[:, None]  # T_k
        desired = torch.diagonal(Y, dim1=-2, dim2=-1)
        u = desired / total
        mse = (1.0 - desired.abs().square() / total).clamp_min(torch.finfo(total.dtype).eps)
        aw = alpha / mse
        A = (G.mH * (aw * u.abs().square())[:, None, :].to(G.dtype)) @ G
        Bm = G.mH * (aw.to(G.dtype) * u)[:, None, :]
        V_new = scale_to_power(power_constrained_solve(A, Bm, p), p)
        rate_new = sum_rate(G, V_new, sigma2, alpha)
        gain = rate_new - rate
        V = torch.where(active[:, None, None], V_new, V)
        rate = torch.where(active, rate_new, rate)
        history.append(rate)
        active = active & (gain > tol * rate.abs().clamp_min(1.0))
        if not bool(active.any()):
            break
    return WmmseResult(V=V, sum_rate=rate, history=torch.stack(history))


def wmmse(G: torch.Tensor, noise_w: torch.Tensor | float, p_max: torch.Tensor | float) -> torch.Tensor:
    """WMMSE precoder with the default budget (100 iterations, tol 1e-5), same signature as zf."""
    return wmmse_solve(G, noise_w, p_max).V


PRECODERS: dict[str, Precoder] = {"mrt": mrt, "zf": zf, "rzf": rzf, "wmmse": wmmse}


def _precoder(rule: str | Precoder) -> Precoder:
    if callable(rule):
        return rule
    if rule not in PRECODERS:
        raise ConfigError(f"precoder: unknown rule {rule!r}; choose one of {sorted(PRECODERS)} or pass a callable")
    return PRECODERS[rule]


# --------------------------------------------------------------------------- phases


def _user_channels(h_RU: torch.Tensor, h_BU: torch.Tensor, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """h_RU[:, :, user_b, :] (B,L,N) and h_BU[b, user_b] (B,M) for a (B,) user index."""
    B = h_RU.shape[0]
    rows = torch.arange(B, device=h_RU.device)
    return h_RU[rows, :, user, :], h_BU[rows, user, :]


def strongest_user(H_BR: torch.Tensor, h_RU: torch.Tensor, h_BU: torch.Tensor) -> torch.Tensor:
    """(B,) index of the user with the largest mean channel gain under random phases:
    sum_l ||h_RU[l,k]||^2 ||H_BR[l]||_F^2 / N + ||h_BU[k]||^2."""
    N = H_BR.shape[-2]
    cascaded = (h_RU.abs().square().sum(-1) * H_BR.abs().square().sum((-2, -1))[:, :, None] / N).sum(1)
    return (cascaded + h_BU.abs().square().sum(-1)).argmax(-1)


def _phase_of(x: torch.Tensor) -> torch.Tensor:
    """Unit-modulus e^{j arg x}; 1 where x = 0."""
    mag = x.abs()
    return torch.where(mag > 0, x / mag.clamp_min(torch.finfo(mag.dtype).tiny).to(x.dtype), torch.ones_like(x))


def align_phases(
    H_BR: torch.Tensor,
    h_RU: torch.Tensor,
    h_BU: torch.Tensor,
    user: int | torch.Tensor | None = None,
    iters: int = 5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous phase alignment to one user: every reflected path co-phased with the direct one.

    Alternates (i) phi_{l,n} = e^{j(arg(h_d^H v) - arg(h_RU[l,k,n]^* (H_BR[l] v)_n))} and
    (ii) MRT v = g_k / ||g_k||; each step can only raise |g_k^H v|, the single-user SNR.
    Starts from v = principal eigenvector of the mean-gain matrix. ``user`` None = the
    strongest user. Returns (phi (B,L,N) unit modulus, v (B,M) unit norm).
    """
    B = H_BR.shape[0]
    if user is None:
        user = strongest_user(H_BR, h_RU, h_BU)
    user = torch.as_tensor(user, dtype=torch.long, device=H_BR.device)
    if user.ndim == 0:
        user = user.expand(B)
    h_k, d_k = _user_channels(h_RU, h_BU, user)  # (B,L,N), (B,M)
    # Mean-gain matrix: sum_l H_BR[l]^H diag(|h_lk|^2) H_BR[l] + d d^H.
    R = torch.einsum("blnm,bln,blnp->bmp", H_BR.conj(), h_k.abs().square().to(H_BR.dtype), H_BR)
    R = R + d_k[:, :, None] * d_k.conj()[:, None, :]
    v = torch.linalg.eigh(R)[1][..., -1]
    phi = torch.ones_like(h_k)
    for _ in range(max(1, iters)):
        reflected = h_k.conj() * torch.einsum("blnm,bm->bln", H_BR, v)  # per-element path gains
        direct = (d_k.conj() * v).sum(-1)
        phi = _phase_of(direct)[:, None, None] * _phase_of(reflected).conj()
        g_row = torch.einsum("bln,blnm->bm", h_k.conj() * phi, H_BR) + d_k.conj()  # g_k^H
        norm = g_row.abs().square().sum(-1, keepdim=True).sqrt()
        v = torch.where(norm > 0, g_row.conj() / norm.clamp_min(torch.finfo(norm.dtype).tiny), v)
    return phi, v


def align_phases_multiuser(H_BR: torch.Tensor, h_RU: torch.Tensor, h_BU: torch.Tensor, iters: int = 5) -> torch.Tensor:
    """Multi-user heuristic (project choice): IRS l co-phases to the user whose cascaded link
    through it is strongest (||h_RU[l,k]||^2 ||H_BR[l]||_F^2), as in ``align_phases`` for that
    user. Returns phi (B,L,N) unit modulus."""
    K = h_RU.shape[2]
    per_user = torch.stack([align_phases(H_BR, h_RU, h_BU, user=k, iters=iters)[0] for k in range(K)], 2)  # (B,L,K,N)
    served = h_RU.abs().square().sum(-1).argmax(-1)  # (B,L); ||H_BR[l]|| is common to all k
    return torch.gather(per_user, 2, served[:, :, None, None].expand(-1, -1, 1, per_user.shape[-1])).squeeze(2)


def _levels(bits: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """2^b as a tensor broadcastable against (B,L,N): int -> scalar, (B,L) -> (B,L,1)."""
    b = torch.as_tensor(bits, dtype=torch.long, device=like.device)
    if b.ndim == 2:
        b = b[..., None]
    if bool((b < 1).any()):
        raise ConfigError(f"bits: phase resolution must be >= 1, got {bits!r}")
    return torch.pow(2, b)


def quantize_phases(phi: torch.Tensor, bits: int | torch.Tensor) -> torch.Tensor:
    """Nearest point of F_b (P1 eq. 6): phase_idx = round(arg(phi) / (2 pi / 2^b)) mod 2^b.

    ``phi`` complex (B,L,N) (its argument is used) or real phases in radians; bits int or (B,L).
    Returns phase_idx (B,L,N) long."""
    theta = phi.angle() if phi.is_complex() else phi
    levels = _levels(bits, theta)
    step = 2.0 * math.pi / levels.to(theta.dtype)
    return torch.remainder(torch.round(theta / step).long(), levels)


def phases_from_idx(phase_idx: torch.Tensor, bits: int | torch.Tensor, on: torch.Tensor | None = None, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """phi = rho e^{j 2 pi idx / 2^b} (P1 eq. 2 with the ON/OFF amplitude rho)."""
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    theta = 2.0 * math.pi * phase_idx.to(real) / _levels(bits, phase_idx).to(real)
    phi = torch.polar(torch.ones_like(theta), theta).to(dtype)
    return phi if on is None else phi * on.to(dtype)


# --------------------------------------------------------------------------- random / fixed


def random_precoder(B: int, M: int, K: int, p_max: torch.Tensor | float, generator: torch.Generator, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """i.i.d. CN(0,1) beams scaled to the full budget (the random-precoding baseline)."""
    V = torch.randn((B, M, K), dtype=dtype, generator=generator)
    return scale_to_power(V, p_max)


def random_phase_idx(B: int, L: int, N: int, bits: int | torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform phase indices on the b-bit grid, (B,L,N) long (bits int or (B,L))."""
    u = torch.rand((B, L, N), generator=generator, dtype=torch.float64)
    levels = _levels(bits, u)
    return torch.minimum((u * levels).long(), levels - 1)


def random_phases(B: int, L: int, N: int, generator: torch.Generator, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """Continuous uniform unit-modulus phases, (B,L,N)."""
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    theta = 2.0 * math.pi * torch.rand((B, L, N), generator=generator, dtype=real)
    return torch.polar(torch.ones_like(theta), theta).to(dtype)


def all_on(B: int, L: int, N: int) -> torch.Tensor:
    """Every element ON, (B,L,N) bool."""
    return torch.ones((B, L, N), dtype=torch.bool)


def half_on(B: int, L: int, N: int, generator: torch.Generator) -> torch.Tensor:
    """A random half (floor(N/2)) of each surface's elements ON (P3's half-on baseline)."""
    order = torch.rand((B, L, N), generator=generator).argsort(-1)
    mask = torch.zeros((B, L, N), dtype=torch.bool)
    return mask.scatter(-1, order[..., : N // 2], True)


# --------------------------------------------------------------------------- discrete search


@dataclass
class PhaseSearchResult:
    phase_idx: torch.Tensor  # (B,L,N) long
    on: torch.Tensor  # (B,L,N) bool
    V: torch.Tensor  # (B,M,K) at full power
    sum_rate: torch.Tensor  # (B,)
    history: torch.Tensor  # (sweeps+1, B): objective at the start and after each sweep


def coordinate_ascent_phases(
    H_BR: torch.Tensor,
    h_RU: torch.Tensor,
    h_BU: torch.Tensor,
    noise_w: torch.Tensor | float,
    p_max: torch.Tensor | float,
    bits: int | torch.Tensor,
    *,
    precoder: str | Precoder = "zf",
    reprecode: str = "candidate",
    sweeps: int = 3,
    phase_idx: torch.Tensor | None = None,
    on: torch.Tensor | None = None,
    optimize_on: bool = False,
    V: torch.Tensor | None = None,
) -> PhaseSearchResult:
    """Discrete coordinate ascent on the sum rate: for every IRS l and element n in turn, try
    all 2^b_l phases (and OFF when ``optimize_on``) and keep the best; ties keep the current one.

    ``reprecode`` says when the precoder rule runs:
      "candidate": for every tried candidate (objective = rate(phi, rule(phi)); cheap rules only);
      "sweep":     V held during a sweep, rule re-run after each sweep, kept only if it helps;
      "end":       V held for all sweeps, rule re-run once at the end, kept only if it helps;
      "never":     V (given, else rule at the start) held throughout.
    The objective is non-decreasing in every step. Start: ``phase_idx`` (default all 0) and
    ``on`` (default all ON). bits int or (B,L).
    """
    if reprecode not in ("candidate", "sweep", "end", "never"):
        raise ConfigError(f"reprecode: unknown mode {reprecode!r}; use candidate, sweep, end or never")
    rule = _precoder(precoder)
    B, L, N, M = H_BR.shape
    K = h_RU.shape[2]
    dtype = H_BR.dtype
    levels = _levels(bits, H_BR)  # scalar or (B,L,1)
    n_levels = int(levels.max())
    idx = torch.zeros((B, L, N), dtype=torch.long) if phase_idx is None else phase_idx.clone().long()
    on_mask = torch.ones((B, L, N), dtype=torch.bool) if on is None else on.clone().bool()
    sigma2 = per_env(noise_w, B, H_BR)
    p = per_env(p_max, B, H_BR)

    cand = torch.arange(n_levels)
    levels_bl = levels.expand(B, L, 1)
    cand_valid = cand[None, None, :] < levels_bl  # (B,L,C)
    real = H_BR.real.dtype
    cand_phase = torch.polar(torch.ones(B, L, n_levels, dtype=real), 2.0 * math.pi * cand.to(real) / levels_bl.to(real)).to(dtype)

    def channel() -> torch.Tensor:
        return effective_channel(H_BR, h_RU, h_BU, phases_from_idx(idx, bits, on_mask, dtype))

    G = channel()
    if V is None or reprecode == "candidate":
        V = rule(G, sigma2, p)
    V = scale_to_power(V, p)
    objective = sum_rate(G, V, sigma2)
    history = [objective]
    rows = torch.arange(B)
    for sweep in range(sweeps):
        for l in range(L):
            for n in range(N):
                current = phases_from_idx(idx[:, l, n], bits if isinstance(bits, int) else bits[:, l], on_mask[:, l, n], dtype)
                # A fixed-OFF element reflects nothing whatever its phase: all its candidates tie.
                phis = cand_phase[:, l] if optimize_on else torch.where(on_mask[:, l, n, None], cand_phase[:, l], current[:, None])
                valid = cand_valid[:, l]
                if optimize_on:
                    phis = torch.cat([phis, torch.zeros(B, 1, dtype=dtype)], 1)
                    valid = torch.cat([valid, torch.ones(B, 1, dtype=torch.bool)], 1)
                # Rank-one update of G for a change of element (l, n): (B,C,K,M).
                direction = h_RU[:, l, :, n].conj()[:, :, None] * H_BR[:, l, n, :][:, None, :]
                G_c = G[:, None] + (phis - current[:, None])[:, :, None, None] * direction[:, None]
                C = phis.shape[1]
                if reprecode == "candidate":
                    flat = G_c.reshape(B * C, K, M)
                    V_c = rule(flat, sigma2.repeat_interleave(C), p.repeat_interleave(C)).reshape(B, C, M, K)
                else:
                    V_c = V[:, None]
                rates = sum_rate(G_c, V_c, sigma2).masked_fill(~valid, -torch.inf)
                cur_col = torch.where(on_mask[:, l, n], idx[:, l, n], torch.full_like(idx[:, l, n], n_levels)) if optimize_on else idx[:, l, n]
                best = rates.argmax(-1)
                take = rates[rows, best] > rates[rows, cur_col]
                choice = torch.where(take, best, cur_col)
                G = G_c[rows, choice]
                if reprecode == "candidate":
                    V = V_c[rows, choice]
                objective = rates[rows, choice]
                turned_off = choice == n_levels
                idx[:, l, n] = torch.where(turned_off, idx[:, l, n], choice.clamp_max(n_levels - 1))
                if optimize_on:
                    on_mask[:, l, n] = ~turned_off
        G = channel()  # drop the rounding of the incremental updates
        objective = sum_rate(G, V, sigma2)
        if reprecode == "sweep" or (reprecode == "end" and sweep == sweeps - 1):
            V_new = scale_to_power(rule(G, sigma2, p), p)
            rate_new = sum_rate(G, V_new, sigma2)
            better = rate_new > objective
            V = torch.where(better[:, None, None], V_new, V)
            objective = torch.maximum(rate_new, objective)
        history.append(objective)
    return PhaseSearchResult(phase_idx=idx, on=on_mask, V=V, sum_rate=objective, history=torch.stack(history))


def wmmse_phase_search(
    H_BR: torch.Tensor,
    h_RU: torch.Tensor,
    h_BU: torch.Tensor,
    noise_w: torch.Tensor | float,
    p_max: torch.Tensor | float,
    bits: int | torch.Tensor,
    *,
    rounds: int = 2,
    optimize_on: bool = False,
    wmmse_iters: int = 50,
    proxy: str | Precoder = "rzf",
) -> PhaseSearchResult:
    """Full-CSI upper reference: WMMSE alternated with coordinate-ascent phase search.

    Start from the multi-user alignment quantized to the grid and its WMMSE precoder. Each
    round tries two moves from the current point (phases, V) and keeps, per environment, the
    better one:
      A. coordinate ascent with V fixed (one sweep), then WMMSE warm-started at V: block
         coordinate ascent, never below the current objective;
      B. coordinate ascent where every candidate is scored with the ``proxy`` precoder re-run
         (RZF by default: phases that condition the channel well), then WMMSE warm-started at
         the proxy's V. Move B finds far better phases than A (fixed WMMSE beams punish any
         change of the channel), move A makes the sequence monotone.
    The history holds the start and one entry per round.
    """
    B, L, N, _ = H_BR.shape
    dtype = H_BR.dtype

    def polish(res: PhaseSearchResult) -> WmmseResult:
        G = effective_channel(H_BR, h_RU, h_BU, phases_from_idx(res.phase_idx, bits, res.on, dtype))
        return wmmse_solve(G, noise_w, p_max, iters=wmmse_iters, V0=res.V)

    idx = quantize_phases(align_phases_multiuser(H_BR, h_RU, h_BU), bits)
    on_mask = torch.ones((B, L, N), dtype=torch.bool)
    G = effective_channel(H_BR, h_RU, h_BU, phases_from_idx(idx, bits, on_mask, dtype))
    sol = wmmse_solve(G, noise_w, p_max, iters=wmmse_iters)
    V, objective = sol.V, sol.sum_rate
    history = [objective]
    for _ in range(rounds):
        common = dict(phase_idx=idx, on=on_mask, optimize_on=optimize_on, sweeps=1)
        res_a = coordinate_ascent_phases(H_BR, h_RU, h_BU, noise_w, p_max, bits, reprecode="never", V=V, **common)
        res_b = coordinate_ascent_phases(H_BR, h_RU, h_BU, noise_w, p_max, bits, precoder=proxy, reprecode="candidate", **common)
        sol_a, sol_b = polish(res_a), polish(res_b)
        take_b = sol_b.sum_rate > sol_a.sum_rate
        idx = torch.where(take_b[:, None, None], res_b.phase_idx, res_a.phase_idx)
        on_mask = torch.where(take_b[:, None, None], res_b.on, res_a.on)
        V = torch.where(take_b[:, None, None], sol_b.V, sol_a.V)
        objective = torch.where(take_b, sol_b.sum_rate, sol_a.sum_rate)
        history.append(objective)
    return PhaseSearchResult(phase_idx=idx, on=on_mask, V=V, sum_rate=objective, history=torch.stack(history))
