"""Channel models: path loss, steering vectors, Rayleigh / Rician fading, Gauss-Markov evolution.

Pure functions over batched torch tensors. Randomness only from explicit generators.
Complex64 by default; pass ``dtype=torch.complex128`` for verification.
"""

from __future__ import annotations

import math

import torch


def db_to_linear(db):
    return 10.0 ** (torch.as_tensor(db) / 10.0) if isinstance(db, torch.Tensor) else 10.0 ** (db / 10.0)


def log_distance_gain(d_m: torch.Tensor, pl_ref_db: float, exponent: float, d0_m: float = 1.0) -> torch.Tensor:
    """Power gain of the log-distance model: gain_dB = -PL0 - 10 kappa log10(d / d0)
    (P1 eq. 35, project reading; P2 likewise with its exponents)."""
    gain_db = -pl_ref_db - 10.0 * exponent * torch.log10(d_m / d0_m)
    return 10.0 ** (gain_db / 10.0)


def umi_los_gain(d_m: torch.Tensor, carrier_ghz: float) -> torch.Tensor:
    """Power gain 1/rho with 10 log10 rho = 32.4 + 20 log10(f_GHz) + 21 log10(d_m)
    (3GPP TR 38.901 UMi LOS, P3 eq. 3)."""
    loss_db = 32.4 + 20.0 * math.log10(carrier_ghz) + 21.0 * torch.log10(d_m)
    return 10.0 ** (-loss_db / 10.0)


def ula_steering(sin_angle: torch.Tensor, n: int, spacing_wl: float = 0.5,
                 dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """a_N(x) = [1, e^{-j 2 pi (d/lambda) sin x}, ..., e^{-j 2 pi (N-1) (d/lambda) sin x}] (P1 eq. 34).

    ``sin_angle`` (...) is the direction cosine along the array axis; returns (..., n).
    """
    idx = torch.arange(n, dtype=sin_angle.dtype, device=sin_angle.device)
    phase = -2.0 * math.pi * spacing_wl * sin_angle.unsqueeze(-1) * idx
    return torch.polar(torch.ones_like(phase), phase).to(dtype)


def upa_steering(cos_rows: torch.Tensor, cos_cols: torch.Tensor, n_rows: int, n_cols: int,
                 spacing_wl: float = 0.5, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """UPA response: element (r, c) has phase -2 pi (d/lambda) (r cos_rows + c cos_cols).

    cos_rows / cos_cols (...) are the direction cosines along the row and column axes (for a
    UPA in the y-z plane: sin(el) ... products of the elevation / azimuth angles). Returns
    (..., n_rows * n_cols), row-major (index r * n_cols + c) = kron(a_rows, a_cols).
    """
    a_r = ula_steering(cos_rows, n_rows, spacing_wl, dtype)
    a_c = ula_steering(cos_cols, n_cols, spacing_wl, dtype)
    return (a_r.unsqueeze(-1) * a_c.unsqueeze(-2)).flatten(-2)


def rayleigh(shape, generator: torch.Generator, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """i.i.d. CN(0, 1) entries (unit power, real and imaginary parts of variance 1/2)."""
    return torch.randn(shape, generator=generator, dtype=dtype)


def rician(los: torch.Tensor, nlos: torch.Tensor, k_factor) -> torch.Tensor:
    """sqrt(K/(K+1)) LoS + sqrt(1/(K+1)) NLoS with linear Rician factor K (P1 eq. 34, P3 eq. 3).

    ``k_factor`` is a float or a tensor broadcastable to the channel.
    """
    k = torch.as_tensor(k_factor, dtype=los.real.dtype, device=los.device)
    return torch.sqrt(k / (k + 1.0)) * los + torch.sqrt(1.0 / (k + 1.0)) * nlos


def gauss_markov(x: torch.Tensor, rho: float, generator: torch.Generator) -> torch.Tensor:
    """x(t+1) = rho x(t) + sqrt(1 - rho^2) w(t), w ~ CN(0, 1) i.i.d.: keeps unit variance,
    lag-1 correlation rho (first-order Gauss-Markov fading)."""
    if rho >= 1.0:
        return x
    w = rayleigh(x.shape, generator, x.dtype)
    return w.mul_(math.sqrt(1.0 - rho * rho)).add_(x, alpha=rho)  # in place on the fresh draw
