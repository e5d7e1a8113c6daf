r"""Ergodic rate from statistical CSI over distributed RISs, and its Monte-Carlo check (P4, seed 004).

System (P4 section II; direct links blocked, no multi-bounce). L RISs with N elements, a BS
with M antennas, K single-antenna users of which S are scheduled. Layout (docs: contracts):

  G_bar (B, L, N, M)  unit-power LoS BS -> RIS l     beta_G (B, L), kappa_G (B, L) (linear)
  h_bar (B, L, K, N)  unit-power LoS RIS l -> user k beta_h (B, L, K), kappa_h (B, L, K)
  phi   (B, L, N)     RIS coefficients (unit modulus in P4; |phi_n| <= 1 is also handled)
  W     (B, M, K)     column k = w_k; zero columns for unscheduled users

Realization (P4 eqs. 2-3, tildes i.i.d. CN(0, 1) entries, independent across RISs and links):

  G_l  = c_l G_bar_l + d_l G_tilde_l,        c_l^2 = beta_G kappa_G / (1 + kappa_G),  d_l^2 = beta_G / (1 + kappa_G)
  h_lk = a_lk h_bar_lk + b_lk h_tilde_lk,    a_lk^2 = beta_h kappa_h / (1 + kappa_h), b_lk^2 = beta_h / (1 + kappa_h)

Received amplitude of stream j at user k: s_kj = sum_l h_lk^H Phi_l G_l w_j (P4 eq. 8), and
SINR_k = X_k / Y_k with X_k = |s_kk|^2, Y_k = sum_{j != k} |s_kj|^2 + sigma^2 (eq. 9).
Ergodic rate (10) E[log2(1 + X/Y)] is approximated (eq. 11, the paper's cited lemma) by

  R_k ~ log2(1 + E[X_k] / E[Y_k]),    E[Y_k] = sum_{j != k} E|s_kj|^2 + sigma^2.

Derivation of E|s|^2 for one stream w (project derivation; checked by Monte Carlo in
tests/twin/test_statistical.py). Write t_l = h_lk^H Phi_l G_l w and expand:

  t_l = a c  h_bar^H Phi G_bar w          (deterministic: mu_l)
      + a d  h_bar^H Phi G_tilde w         (zero mean, linear in G_tilde)
      + b c  h_tilde^H Phi G_bar w         (zero mean, linear in h_tilde)
      + b d  h_tilde^H Phi G_tilde w       (zero mean, bilinear)

Cross-terms. Every product of two different terms contains an odd power of G_tilde or of
h_tilde (or one of each, which are independent and zero-mean), so its expectation vanishes
("odd moments of NLoS terms vanish", P4 after eq. 11). Only the four squared magnitudes remain:

  E|h_bar^H Phi G_tilde w|^2   = ||Phi^H h_bar||^2 ||w||^2 = sum_n |phi_n|^2 |h_bar_n|^2 ||w||^2
                                 (G_tilde w ~ CN(0, ||w||^2 I_N))
  E|h_tilde^H Phi G_bar w|^2   = ||Phi G_bar w||^2 = sum_n |phi_n|^2 |(G_bar w)_n|^2
  E|h_tilde^H Phi G_tilde w|^2 = E ||Phi G_tilde w||^2 = sum_n |phi_n|^2 ||w||^2

(with unit modulus these become ||h_bar||^2 ||w||^2, ||G_bar w||^2 and N ||w||^2, as in
PAPERS.md). Multi-RIS sums. s = sum_l t_l; the zero-mean parts of different RISs are
independent (independent G_tilde_l, h_tilde_lk), so their cross-terms vanish too: the LoS parts
add coherently and the NLoS parts add in power,

  E|s_kj|^2 = | sum_l mu_l |^2
            + sum_l [ a_lk^2 d_l^2 ||Phi_l^H h_bar_lk||^2 ||w_j||^2
                    + b_lk^2 c_l^2 ||Phi_l G_bar_l w_j||^2
                    + b_lk^2 d_l^2 ||phi_l||^2 ||w_j||^2 ].

This is exact in expectation. The only approximation is the ratio of expectations (11),
which the tests bound against the Monte-Carlo ergodic rate on P4-like statistics.

Also here: Jain's fairness index (P4 eq. 45) and the scheduling codebook C(K, S).
"""

from __future__ import annotations

import itertools

import torch

from twin.errors import ConfigError, require


def rician_amplitudes(beta: torch.Tensor, kappa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(LoS amplitude, NLoS amplitude) = (sqrt(beta kappa/(1+kappa)), sqrt(beta/(1+kappa)))."""
    beta = torch.as_tensor(beta)
    kappa = torch.as_tensor(kappa, dtype=beta.dtype)
    return torch.sqrt(beta * kappa / (1.0 + kappa)), torch.sqrt(beta / (1.0 + kappa))


def _real(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.complex128 else torch.float32


def expected_gains(
    G_bar: torch.Tensor,
    beta_G: torch.Tensor,
    kappa_G: torch.Tensor,
    h_bar: torch.Tensor,
    beta_h: torch.Tensor,
    kappa_h: torch.Tensor,
    phi: torch.Tensor,
    W: torch.Tensor,
) -> torch.Tensor:
    """E|s_kj|^2 for every user k and stream j, shape (B, K, K), real (module docstring)."""
    real = _real(G_bar)
    c, d = rician_amplitudes(beta_G.to(real), kappa_G.to(real))  # (B, L)
    a, b = rician_amplitudes(beta_h.to(real), kappa_h.to(real))  # (B, L, K)
    phi2 = phi.abs().square().to(real)  # (B, L, N)
    w2 = W.abs().square().sum(-2)  # (B, K): ||w_j||^2
    # LoS, coherent over RISs: sum_l a c h_bar^H Phi G_bar, then times W.
    los_channel = torch.einsum("blk,blkn,blnm->bkm", (a * c.unsqueeze(-1)).to(G_bar.dtype), h_bar.conj() * phi.unsqueeze(-2), G_bar)
    los = (los_channel @ W).abs().square()  # (B, K, K)
    # NLoS parts, in power over RISs.
    hbar_phi = torch.einsum("bln,blkn->blk", phi2, h_bar.abs().square())  # ||Phi^H h_bar||^2
    term_ad = torch.einsum("blk,blk->bk", a.square() * d.square().unsqueeze(-1), hbar_phi)
    gbar_w = torch.einsum("blnm,bmj->blnj", G_bar, W).abs().square()  # |(G_bar w_j)_n|^2
    term_bc = torch.einsum("blk,bln,blnj->bkj", b.square() * c.square().unsqueeze(-1), phi2, gbar_w)
    term_bd = torch.einsum("blk,bl->bk", b.square() * d.square().unsqueeze(-1), phi2.sum(-1))
    return los + (term_ad + term_bd).unsqueeze(-1) * w2.unsqueeze(-2) + term_bc


def expected_signal_interference(
    G_bar, beta_G, kappa_G, h_bar, beta_h, kappa_h, phi, W, noise_w
) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[X_k], E[Y_k]) each (B, K): desired power and interference-plus-noise power in expectation."""
    gains = expected_gains(G_bar, beta_G, kappa_G, h_bar, beta_h, kappa_h, phi, W)
    ex = torch.diagonal(gains, dim1=-2, dim2=-1)
    noise = torch.as_tensor(noise_w, dtype=ex.dtype)
    if noise.ndim == 1:
        noise = noise.unsqueeze(-1)
    return ex, gains.sum(-1) - ex + noise


def ergodic_rate_approx(G_bar, beta_G, kappa_G, h_bar, beta_h, kappa_h, phi, W, noise_w) -> torch.Tensor:
    """R_k ~ log2(1 + E[X_k] / E[Y_k]) (P4 eq. 11) in bit/s/Hz, shape (B, K); sum over k for the sum rate."""
    ex, ey = expected_signal_interference(G_bar, beta_G, kappa_G, h_bar, beta_h, kappa_h, phi, W, noise_w)
    return torch.log2(1.0 + ex / ey)


def sample_channels(
    G_bar: torch.Tensor,
    beta_G: torch.Tensor,
    kappa_G: torch.Tensor,
    h_bar: torch.Tensor,
    beta_h: torch.Tensor,
    kappa_h: torch.Tensor,
    n_samples: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rician realizations (P4 eqs. 2-3): G (B, R, L, N, M) and h (B, R, L, K, N), R = n_samples."""
    real = _real(G_bar)
    c, d = rician_amplitudes(beta_G.to(real), kappa_G.to(real))
    a, b = rician_amplitudes(beta_h.to(real), kappa_h.to(real))
    B, L, N, M = G_bar.shape
    K = h_bar.shape[2]
    # torch.randn draws CN(0, 1) for complex dtypes (real and imaginary parts of variance 1/2).
    G_t = torch.randn(B, n_samples, L, N, M, generator=generator, dtype=G_bar.dtype)
    h_t = torch.randn(B, n_samples, L, K, N, generator=generator, dtype=h_bar.dtype)
    G = (c[..., None, None] * G_bar).unsqueeze(1) + d[:, None, :, None, None] * G_t
    h = (a[..., None] * h_bar).unsqueeze(1) + b[:, None, :, :, None] * h_t
    return G, h


def instantaneous_sinr(G: torch.Tensor, h: torch.Tensor, phi: torch.Tensor, W: torch.Tensor, noise_w) -> torch.Tensor:
    """SINR (B, R, K) of realizations G (B, R, L, N, M), h (B, R, L, K, N) (P4 eq. 9)."""
    H = torch.einsum("brlkn,brlnm->brkm", h.conj() * phi[:, None, :, None, :], G)  # sum_l h^H Phi G
    gain = (H @ W.unsqueeze(1)).abs().square()  # (B, R, K, K)
    sig = torch.diagonal(gain, dim1=-2, dim2=-1)
    noise = torch.as_tensor(noise_w, dtype=sig.dtype)
    if noise.ndim == 1:
        noise = noise.view(-1, 1, 1)
    return sig / (gain.sum(-1) - sig + noise)


def monte_carlo_rate(
    G_bar, beta_G, kappa_G, h_bar, beta_h, kappa_h, phi, W, noise_w,
    n_samples: int, generator: torch.Generator, chunk: int = 1024,
) -> torch.Tensor:
    """Monte-Carlo ergodic rate E[log2(1 + SINR_k)] (P4 eq. 10), shape (B, K), from ``n_samples`` draws."""
    require(n_samples > 0, ConfigError, f"n_samples: need at least one Monte-Carlo draw, got {n_samples}")
    total = None
    done = 0
    while done < n_samples:
        r = min(chunk, n_samples - done)
        G, h = sample_channels(G_bar, beta_G, kappa_G, h_bar, beta_h, kappa_h, r, generator)
        part = torch.log2(1.0 + instantaneous_sinr(G, h, phi, W, noise_w)).sum(1)
        total = part if total is None else total + part
        done += r
    return total / n_samples


def jain_index(x: torch.Tensor) -> torch.Tensor:
    """Jain's fairness index (sum_k x_k)^2 / (K sum_k x_k^2) over the last axis (P4 eq. 45).

    1 when all users get the same, 1/K when one user gets everything. All-zero rows are
    defined as 1 (everyone equal), so the reward stays finite.
    """
    K = x.shape[-1]
    s = x.sum(-1)
    s2 = x.square().sum(-1)
    return torch.where(s2 > 0, s.square() / (K * torch.where(s2 > 0, s2, torch.ones_like(s2))), torch.ones_like(s))


def schedule_codebook(n_users: int, n_scheduled: int) -> torch.Tensor:
    """All C(K, S) schedules as a (C, K) bool tensor, lexicographic (itertools.combinations order)."""
    require(
        0 < n_scheduled <= n_users,
        ConfigError,
        f"n_scheduled: S must satisfy 0 < S <= K, got S = {n_scheduled}, K = {n_users}",
    )
    combos = list(itertools.combinations(range(n_users), n_scheduled))
    book = torch.zeros(len(combos), n_users, dtype=torch.bool)
    for i, c in enumerate(combos):
        book[i, list(c)] = True
    return book


def apply_schedule(W: torch.Tensor, schedule: torch.Tensor) -> torch.Tensor:
    """Zero the beamformers of unscheduled users: W (B, M, K), schedule (B, K) bool."""
    return W * schedule.unsqueeze(-2).to(W.real.dtype)
