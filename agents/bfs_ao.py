r"""BFS-AO, the centralized benchmark of P4 (seed 004, Algorithm 1), and P4's simple baselines.

Objective: the ergodic sum-rate approximation of P4 eq. (11), sum_k log2(1 + E[X_k]/E[Y_k]),
from statistical CSI only (closed form in ``twin.statistical``). Written per scheduled user k
and stream j it is a quadratic form,

  E|s_kj|^2 = |m_k(phi)^H w_j|^2 + w_j^H Q_k w_j,
  m_k(phi)^H = sum_l a_lk c_l h_bar_lk^H Phi_l G_bar_l            (LoS mean, linear in phi)
  Q_k = sum_l [(a_lk^2 d_l^2 ||h_bar_lk||^2 + b_lk^2 d_l^2 N) I + b_lk^2 c_l^2 G_bar_l^H G_bar_l]

where Q_k (the NLoS power) does not depend on unit-modulus phases. Everything is divided by
sigma^2 inside (noise 1) so float32 stays well scaled at P4's path losses.

BFS: every schedule of the codebook C(K,S) is solved (all schedules stacked on the batch
axis), and the best one is kept per environment. AO for one schedule alternates

* active precoding (P4 III-B1), fractional programming: Lagrangian dual transform
  gamma_k = E[X_k]/E[Y_k] (eq. 20), then the quadratic transform of the ratios
  (1 + gamma_k) E[X_k] / E[T_k] with auxiliaries y_k = R_k^{1/2} w_k / T_k, giving the closed
  form W = (D + mu I)^{-1} [(1 + gamma_j) R_j w_j / T_j]_j with mu >= 0 found by bisection so
  that tr(W W^H) = P_max when the constraint is active (eqs. 23-27); W is then scaled to the
  full budget, which can only raise every E[X]/E[Y], so tr(W W^H) = P_max always;
* passive precoding (P4 III-B2): the same two transforms in phi give the surrogate
  g(phi) = 2 Re(v^H phi) - phi^H U phi (eqs. 28-34), maximized on the unit-modulus manifold by
  Riemannian conjugate-gradient ascent (tangent projection, normalization retraction,
  Polak-Ribiere+ directions, Armijo backtracking so each step raises g).

Each block maximizes a surrogate that is tight at the current point, so the objective never
decreases over AO iterations (P4 III-C). The reconstructed equations are project readings: the
paper's symbols were lost from the text (PAPERS.md).

Baselines (P4 VI): random precoding (random W at full power replaces the active step),
random RIS (random phases replace the passive step), round-robin scheduling (codebook entry
t mod C(K,S), with AO precoding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from agents.reference import per_env, power_constrained_solve, scale_to_power
from twin.statistical import ergodic_rate_approx, rician_amplitudes, schedule_codebook


class P4Statistics(Protocol):
    """What BFS-AO reads: the statistical CSI of ``twin.scene.P4Scene`` (contracts.md layouts)."""

    G_bar: torch.Tensor  # (B,L,N,M)
    h_bar: torch.Tensor  # (B,L,K,N)
    beta_G: torch.Tensor  # (B,L)
    kappa_G: torch.Tensor  # (B,L)
    beta_h: torch.Tensor  # (B,L,K)
    kappa_h: torch.Tensor  # (B,L,K)


@dataclass
class AoConfig:
    """Iteration budgets (the paper gives none: project choices, enough to converge on p4)."""

    ao_iters: int = 50  # outer AO iterations
    tol: float = 1e-4  # stop an environment when its relative gain per AO iteration is below this
    mo_iters: int = 10  # Riemannian gradient steps per passive step
    armijo_halvings: int = 20  # backtracking steps per manifold step
    bisection_steps: int = 60  # dual variable mu of the active step
    optimize_W: bool = True  # False: W stays at its start (random precoding baseline)
    optimize_phi: bool = True  # False: phi stays at its start (random RIS baseline)


@dataclass
class AoResult:
    W: torch.Tensor  # (B,M,S) for the scheduled users, tr(W W^H) = P_max
    phi: torch.Tensor  # (B,L,N) unit modulus
    sum_rate: torch.Tensor  # (B,) objective (bit/s/Hz)
    history: torch.Tensor  # (iters+1, B) objective at the start and after every AO iteration
    first_W: torch.Tensor  # after the first AO iteration (MAPPO's initial observation, P4 IV-C)
    first_phi: torch.Tensor


@dataclass
class BfsAoResult:
    schedule: torch.Tensor  # (B,K) bool, exactly S True
    schedule_index: torch.Tensor  # (B,) index into schedule_codebook(K, S)
    W: torch.Tensor  # (B,M,K), zero columns for unscheduled users
    phi: torch.Tensor  # (B,L,N)
    sum_rate: torch.Tensor  # (B,)
    rate_per_schedule: torch.Tensor  # (C,B) AO objective of every schedule
    history: torch.Tensor  # (iters+1, B) AO history of the chosen schedule
    first_W: torch.Tensor  # (B,M,K) first AO iterate of the chosen schedule
    first_phi: torch.Tensor


# --------------------------------------------------------------------------- moments


@dataclass
class _Moments:
    los: torch.Tensor  # (B,S,L*N,M): m_k^H = sum_p phi_p los[k,p,:]
    nlos: torch.Tensor  # (B,S,M,M): Q_k / sigma^2


def _moments(stats: P4Statistics, users: torch.Tensor, noise_w: torch.Tensor) -> _Moments:
    """Noise-normalized LoS cascade and NLoS power of the users ``users`` (B,S) long."""
    G_bar, h_bar = stats.G_bar, stats.h_bar
    B, L, N, M = G_bar.shape
    real = G_bar.real.dtype
    c, d = rician_amplitudes(stats.beta_G.to(real), stats.kappa_G.to(real))  # (B,L)
    a, b = rician_amplitudes(stats.beta_h.to(real), stats.kappa_h.to(real))  # (B,L,K)
    idx = users[:, None, :].expand(B, L, -1)
    a, b = a.gather(2, idx), b.gather(2, idx)  # (B,L,S)
    h = h_bar.gather(2, idx[..., None].expand(-1, -1, -1, N))  # (B,L,S,N)
    scale = noise_w.rsqrt()[:, None, None]  # amplitudes / sigma
    amp = (a * c[..., None] * scale).to(G_bar.dtype)
    los = torch.einsum("bls,blsn,blnm->bslnm", amp, h.conj(), G_bar).reshape(B, -1, L * N, M)
    eye = torch.eye(M, dtype=real)
    white = (a.square() * d[..., None].square() * h.abs().square().sum(-1) + b.square() * d[..., None].square() * N) / noise_w[:, None, None]
    gram = G_bar.mH @ G_bar  # (B,L,M,M)
    colored = torch.einsum("bls,blmn->bsmn", (b.square() * c[..., None].square() / noise_w[:, None, None]).to(G_bar.dtype), gram)
    nlos = white.sum(1)[..., None, None].to(G_bar.dtype) * eye + colored
    return _Moments(los=los, nlos=nlos)


def _mean_rows(mom: _Moments, phi: torch.Tensor) -> torch.Tensor:
    """m_k^H for every scheduled user, (B,S,M)."""
    return torch.einsum("bp,bspm->bsm", phi.reshape(phi.shape[0], -1), mom.los)


def _gains(mom: _Moments, W: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """E|s_kj|^2 / sigma^2, (B,S,S): user k, stream j."""
    los = (_mean_rows(mom, phi) @ W).abs().square()
    nlos = torch.einsum("bmj,bkmn,bnj->bkj", W.conj(), mom.nlos, W).real
    return los + nlos


def _objective(mom: _Moments, W: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    gains = _gains(mom, W, phi)
    ex = torch.diagonal(gains, dim1=-2, dim2=-1)
    return torch.log2(1.0 + ex / (gains.sum(-1) - ex + 1.0)).sum(-1)


# --------------------------------------------------------------------------- AO blocks


def _active_step(mom: _Moments, W: torch.Tensor, phi: torch.Tensor, p: torch.Tensor, cfg: AoConfig) -> torch.Tensor:
    """FP update of W for fixed phi (P4 eqs. 19-27), then the full-power scaling."""
    m = _mean_rows(mom, phi)  # (B,S,M)
    R = mom.nlos + m.conj()[..., :, None] * m[..., None, :]  # R_k = m_k m_k^H + Q_k
    RW = torch.einsum("bkmn,bnj->bkmj", R, W)  # R_k w_j
    quad = torch.einsum("bmj,bkmj->bkj", W.conj(), RW).real  # w_j^H R_k w_j
    ex = torch.diagonal(quad, dim1=-2, dim2=-1)
    total = quad.sum(-1) + 1.0  # E[T_k] = E[X_k] + E[Y_k]
    gamma = ex / (total - ex)  # Lagrangian dual transform, eq. (20)
    # Quadratic transform: y_k = R_k^{1/2} w_k / T_k, so ||y_k||^2 = E[X_k] / T_k^2.
    D = torch.einsum("bk,bkmn->bmn", ((1.0 + gamma) * ex / total.square()).to(W.dtype), R)
    S = W.shape[-1]
    own = RW[:, torch.arange(S), :, torch.arange(S)].permute(1, 2, 0)  # (B,M,S): R_j w_j
    rhs = own * ((1.0 + gamma) / total)[:, None, :].to(W.dtype)
    W_new = power_constrained_solve(D, rhs, p, cfg.bisection_steps)  # mu by bisection, eq. (27)
    return scale_to_power(W_new, p)


def _passive_step(mom: _Moments, W: torch.Tensor, phi: torch.Tensor, cfg: AoConfig) -> torch.Tensor:
    """FP surrogate in phi for fixed W (P4 eqs. 28-34), maximized on the unit-modulus manifold."""
    B, L, N = phi.shape
    x = phi.reshape(B, L * N)
    e = torch.einsum("bkpm,bmj->bkjp", mom.los, W)  # s_kj = e_kj^T phi
    q = torch.einsum("bmj,bkmn,bnj->bkj", W.conj(), mom.nlos, W).real
    s = torch.einsum("bkjp,bp->bkj", e, x)
    gains = s.abs().square() + q
    ex = torch.diagonal(gains, dim1=-2, dim2=-1)
    total = gains.sum(-1) + 1.0
    gamma = ex / (total - ex)
    weight = 1.0 + gamma
    y_los = torch.diagonal(s, dim1=-2, dim2=-1) / total  # LoS entry of y_k; ||y_k||^2 = E[X_k]/T_k^2
    S = e.shape[1]
    e_own = e[:, torch.arange(S), torch.arange(S)]  # (B,S,LN): e_kk
    v = torch.einsum("bk,bkp->bp", (weight.to(x.dtype) * y_los), e_own.conj())
    U = torch.einsum("bk,bkjp,bkjq->bpq", (weight * ex / total.square()).to(x.dtype), e.conj(), e)

    def surrogate(z: torch.Tensor) -> torch.Tensor:  # g(phi) = 2 Re(v^H phi) - phi^H U phi
        return 2.0 * (v.conj() * z).sum(-1).real - (z.conj() * (U @ z[..., None]).squeeze(-1)).sum(-1).real

    g = surrogate(x)
    tiny = torch.finfo(g.dtype).tiny
    eps = torch.finfo(g.dtype).eps

    def tangent(z: torch.Tensor, at: torch.Tensor) -> torch.Tensor:  # projection on T_at (|phi_n| = 1)
        return z - (z * at.conj()).real.to(z.dtype) * at

    # Riemannian conjugate gradient (Polak-Ribiere+, projection as vector transport), the
    # manifold method of P4's reference [30]. Step: the exact maximizer of the quadratic g along
    # the tangent direction, capped at about one radian per element, then Armijo backtracking
    # after the retraction, so g never decreases.
    riem = tangent(v - (U @ x[..., None]).squeeze(-1), x)  # d g / d phi^* projected (factor 2 dropped)
    d = riem
    for _ in range(cfg.mo_iters):
        slope = (d.conj() * riem).sum(-1).real  # first-order gain per unit step (halved)
        curv = (d.conj() * (U @ d[..., None]).squeeze(-1)).sum(-1).real
        step = torch.where(curv > 0, slope / curv.clamp_min(tiny), torch.full_like(slope, torch.inf))
        step = torch.minimum(step, 1.0 / d.abs().amax(-1).clamp_min(tiny))
        # Stationary to working precision (the possible gain is below the rounding of g): stay.
        moved = step * slope <= 64 * eps * g.abs().clamp_min(tiny)
        if bool(moved.all()):
            break
        x_next, g_next = x, g
        for _ in range(cfg.armijo_halvings):
            trial = x + step[:, None].to(x.dtype) * d
            trial = trial / trial.abs().clamp_min(tiny).to(x.dtype)  # retraction onto |phi_n| = 1
            g_trial = surrogate(trial)
            ok = ~moved & (g_trial >= g + 1e-4 * step * slope)
            x_next = torch.where(ok[:, None], trial, x_next)
            g_next = torch.where(ok, g_trial, g_next)
            moved = moved | ok
            if bool(moved.all()):
                break
            step = step * 0.5
        x, g = x_next, g_next
        riem_new = tangent(v - (U @ x[..., None]).squeeze(-1), x)
        moved_d = tangent(d, x)
        beta = ((riem_new.conj() * (riem_new - tangent(riem, x))).sum(-1).real / riem.abs().square().sum(-1).clamp_min(tiny)).clamp_min(0.0)
        d = riem_new + beta[:, None].to(x.dtype) * moved_d
        ascent = (d.conj() * riem_new).sum(-1).real > 0
        d = torch.where(ascent[:, None], d, riem_new)  # restart with the gradient if not an ascent direction
        riem = riem_new
    return x.reshape(B, L, N)


def ao_precoding(
    stats: P4Statistics,
    users: torch.Tensor,
    noise_w: torch.Tensor | float,
    p_max: torch.Tensor | float,
    *,
    W0: torch.Tensor | None = None,
    phi0: torch.Tensor | None = None,
    cfg: AoConfig = AoConfig(),
) -> AoResult:
    """AO of active and passive precoding for the scheduled users ``users`` (B,S) long.

    Start: ``phi0`` (default all ones, phase 0) and ``W0`` (default MRT on the LoS mean
    channels, equal power per stream); both are projected on the constraints first.
    """
    B, L, N, M = stats.G_bar.shape
    dtype = stats.G_bar.dtype
    real = stats.G_bar.real.dtype
    sigma2 = per_env(noise_w, B, stats.G_bar)
    p = per_env(p_max, B, stats.G_bar)
    mom = _moments(stats, users, sigma2)
    phi = torch.ones(B, L, N, dtype=dtype) if phi0 is None else phi0.to(dtype) / phi0.abs().clamp_min(torch.finfo(real).tiny).to(dtype)
    if W0 is None:
        m = _mean_rows(mom, phi)
        W0 = m.mH + 1e-12 * torch.ones(B, M, users.shape[1], dtype=dtype)  # avoid zero columns
        W0 = W0 / W0.abs().square().sum(-2, keepdim=True).sqrt().to(dtype)
    W = scale_to_power(W0.to(dtype), p)
    rate = _objective(mom, W, phi)
    history = [rate]
    active = torch.ones(B, dtype=torch.bool)
    first_W, first_phi = W, phi
    for it in range(cfg.ao_iters):
        W_new = _active_step(mom, W, phi, p, cfg) if cfg.optimize_W else W
        phi_new = _passive_step(mom, W_new, phi, cfg) if cfg.optimize_phi else phi
        rate_new = _objective(mom, W_new, phi_new)
        gain = rate_new - rate
        W = torch.where(active[:, None, None], W_new, W)
        phi = torch.where(active[:, None, None], phi_new, phi)
        rate = torch.where(active, rate_new, rate)
        history.append(rate)
        if it == 0:
            first_W, first_phi = W, phi
        active = active & (gain > cfg.tol * rate.abs().clamp_min(1.0))
        if not bool(active.any()):
            break
    return AoResult(W=W, phi=phi, sum_rate=rate, history=torch.stack(history), first_W=first_W, first_phi=first_phi)


# --------------------------------------------------------------------------- BFS and baselines


def _stack(stats: P4Statistics, copies: int) -> P4Statistics:
    """The same statistics repeated ``copies`` times along the batch axis (schedule-major)."""

    class _S:
        pass

    out = _S()
    for name in ("G_bar", "h_bar", "beta_G", "kappa_G", "beta_h", "kappa_h"):
        t = getattr(stats, name)
        setattr(out, name, t.repeat((copies,) + (1,) * (t.ndim - 1)))
    return out  # type: ignore[return-value]


def _full_W(W_s: torch.Tensor, users: torch.Tensor, K: int) -> torch.Tensor:
    """Scatter (B,M,S) beams into (B,M,K) with zero columns for unscheduled users."""
    B, M, _ = W_s.shape
    full = torch.zeros(B, M, K, dtype=W_s.dtype)
    return full.scatter(2, users[:, None, :].expand(-1, M, -1), W_s)


def bfs_ao(
    stats: P4Statistics,
    n_scheduled: int,
    noise_w: torch.Tensor | float,
    p_max: torch.Tensor | float,
    *,
    cfg: AoConfig = AoConfig(),
    W0: torch.Tensor | None = None,
    phi0: torch.Tensor | None = None,
) -> BfsAoResult:
    """BFS over the C(K,S) schedules with AO precoding for each (P4 Algorithm 1).

    ``W0`` (B,M,S) and ``phi0`` (B,L,N) are optional starting points shared by all schedules
    (the baselines pass their random draws here, with the matching block switched off).
    """
    B, L, N, M = stats.G_bar.shape
    K = stats.h_bar.shape[2]
    book = schedule_codebook(K, n_scheduled)  # (C,K)
    C = book.shape[0]
    users = torch.stack([row.nonzero().squeeze(-1) for row in book])  # (C,S)
    users_b = users.repeat_interleave(B, 0)  # schedule-major, matches _stack
    tile = lambda t: None if t is None else t.repeat((C,) + (1,) * (t.ndim - 1))  # noqa: E731
    res = ao_precoding(
        _stack(stats, C), users_b, per_env(noise_w, B, stats.G_bar).repeat(C), per_env(p_max, B, stats.G_bar).repeat(C),
        W0=tile(W0), phi0=tile(phi0), cfg=cfg,
    )
    per_sched = res.sum_rate.reshape(C, B)
    best = per_sched.argmax(0)  # (B,)
    pick = best * B + torch.arange(B)  # row in the stacked batch
    chosen_users = users[best]
    return BfsAoResult(
        schedule=book[best],
        schedule_index=best,
        W=_full_W(res.W[pick], chosen_users, K),
        phi=res.phi[pick],
        sum_rate=per_sched[best, torch.arange(B)],
        rate_per_schedule=per_sched,
        history=res.history[:, pick],
        first_W=_full_W(res.first_W[pick], chosen_users, K),
        first_phi=res.first_phi[pick],
    )


def random_precoding(stats: P4Statistics, n_scheduled: int, noise_w, p_max, generator: torch.Generator, cfg: AoConfig = AoConfig()) -> BfsAoResult:
    """P4 baseline "Random precoding": BFS-AO with a random full-power W instead of the active step."""
    B, _, _, M = stats.G_bar.shape
    W0 = torch.randn(B, M, n_scheduled, dtype=stats.G_bar.dtype, generator=generator)
    return bfs_ao(stats, n_scheduled, noise_w, p_max, cfg=_replace(cfg, optimize_W=False), W0=W0)


def random_ris(stats: P4Statistics, n_scheduled: int, noise_w, p_max, generator: torch.Generator, cfg: AoConfig = AoConfig()) -> BfsAoResult:
    """P4 baseline "Random RIS": BFS-AO with uniform random phases instead of the passive step."""
    B, L, N, _ = stats.G_bar.shape
    real = stats.G_bar.real.dtype
    theta = 2.0 * math.pi * torch.rand(B, L, N, generator=generator, dtype=real)
    phi0 = torch.polar(torch.ones_like(theta), theta).to(stats.G_bar.dtype)
    return bfs_ao(stats, n_scheduled, noise_w, p_max, cfg=_replace(cfg, optimize_phi=False), phi0=phi0)


def round_robin_schedule(step: int | torch.Tensor, n_users: int, n_scheduled: int) -> torch.Tensor:
    """Codebook entry ``step mod C(K,S)``: every user is served in turn (fairness baseline).
    ``step`` int -> (K,) bool; (B,) long -> (B,K) bool."""
    book = schedule_codebook(n_users, n_scheduled)
    return book[torch.as_tensor(step) % book.shape[0]]


def ao_for_schedule(stats: P4Statistics, n_scheduled: int, noise_w, p_max, schedule_index: int | torch.Tensor,
                    cfg: AoConfig = AoConfig()) -> BfsAoResult:
    """AO precoding for a given codebook entry per environment (int or (B,) long): the
    precoding half of PPO-AO (a learned scheduler picks the entry) and of round-robin."""
    B = stats.G_bar.shape[0]
    K = stats.h_bar.shape[2]
    book = schedule_codebook(K, n_scheduled)
    index = torch.as_tensor(schedule_index, dtype=torch.long) % book.shape[0]
    index = index.expand(B) if index.ndim == 0 else index
    users = torch.stack([book[i].nonzero().squeeze(-1) for i in index.tolist()])
    res = ao_precoding(stats, users, noise_w, p_max, cfg=cfg)
    return BfsAoResult(
        schedule=book[index], schedule_index=index, W=_full_W(res.W, users, K), phi=res.phi, sum_rate=res.sum_rate,
        rate_per_schedule=res.sum_rate[None], history=res.history, first_W=_full_W(res.first_W, users, K), first_phi=res.first_phi,
    )


def round_robin(stats: P4Statistics, n_scheduled: int, noise_w, p_max, step: int | torch.Tensor, cfg: AoConfig = AoConfig()) -> BfsAoResult:
    """P4 baseline "Round-Robin": the round-robin schedule of ``step`` with AO precoding."""
    return ao_for_schedule(stats, n_scheduled, noise_w, p_max, step, cfg)


def env_actions(result: BfsAoResult, first_iterate: bool = False) -> dict[str, torch.Tensor]:
    """A decision as P4Env actions (twin/envs/p4.py): "sched" codeword index, "bs0" (B,2,M,K)
    real/imaginary W, "ris{l}" (B,N) phases in radians. ``first_iterate`` gives BFS-AO's first
    AO iterate instead (the paper's MAPPO initialization, P4 IV-C)."""
    W = result.first_W if first_iterate else result.W
    phi = result.first_phi if first_iterate else result.phi
    actions = {"sched": result.schedule_index.clone(), "bs0": torch.stack([W.real, W.imag], 1).float()}
    for l in range(phi.shape[1]):
        actions[f"ris{l}"] = phi[:, l].angle().float()
    return actions


def sum_rate_approx(stats: P4Statistics, W: torch.Tensor, phi: torch.Tensor, noise_w) -> torch.Tensor:
    """The P4 objective of a full decision (W (B,M,K) with zero unscheduled columns), via the twin."""
    return ergodic_rate_approx(stats.G_bar, stats.beta_G, stats.kappa_G, stats.h_bar, stats.beta_h, stats.kappa_h, phi, W, noise_w).sum(-1)


def _replace(cfg: AoConfig, **changes) -> AoConfig:
    from dataclasses import replace

    return replace(cfg, **changes)
