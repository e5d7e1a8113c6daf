"""Multi-hop STAR-RIS downlink and its energy efficiency (P3, seed 003, section II).

Surfaces v = 0..V-1 (the paper's 1..V), regions i = 0..V (the paper's 1..I with I = V + 1).

Element model (P3 eqs. 1a-1c, 2a-2b). Element n of surface v has an ON/OFF switch alpha,
a reflection coefficient and a transmission coefficient

    Theta^R_{v,n} = alpha beta_R e^{j theta_R}
    Theta^T_{v,n} = alpha beta_T e^{j theta_T},  beta_T = sqrt(1 - beta_R^2)       (2a)
                                                  theta_T = theta_R + s pi/2,  s = +-1 (2b)

so |Theta^R|^2 + |Theta^T|^2 = alpha: an ON element conserves energy, OFF passes nothing.
Other surface modes used by P3's baselines, all mapped onto the same (Theta^R, Theta^T) pair:
  - mode switching (MS): each element is either full reflect (beta_R = 1) or full transmit
    (beta_R = 0);
  - plain RIS: reflect only (Theta^T = 0): the surface serves users on its BS side and
    blocks multi-hop forwarding (project reading: one reflecting RIS in place of each
    STAR-RIS, no second transmitting RIS added);
  - no surface: both zero, only the direct link remains.

Multi-hop cascade (P3 eqs. 4a-4b). A signal may traverse any ascending chain of surfaces
C = (c_1 < c_2 < ... < c_j), 1 <= j <= V. Every intermediate surface transmits (forwards);
the last surface c_j transmits to a user in region i if c_j < i, else reflects:

    Omega_k = d_k^H + sum_C ( 1{c_j < i_k} g_{c_j,k}^H Theta^T_{c_j}
                             + 1{c_j >= i_k} f_{c_j,k}^H Theta^R_{c_j} ) f(C)           (4a)
    f(C)    = Phi_{c_{j-1},c_j} Theta^T_{c_{j-1}} ... Phi_{c_1,c_2} Theta^T_{c_1} Phi_{c_1}   (4b)

(the paper prints the product of 4b as prod_{l=1}^{j-1}; its factors are applied in the
physical order written above). The contract (docs/contracts) gives one surface->user
channel h_SU per (v, k) used for both g (transmitted side) and f (reflected side): the
region decides which side the user is on. The sum over all 2^V - 1 chains is computed with
the recursion of the field incident on surface w,

    A_w = Phi_w + sum_{v < w} Phi_{v,w} Theta^T_v A_v        (A_w: (N, M), BS -> surface w)

which is exactly the sum of f(C) over the chains ending at w; then
Omega_k = d_k^H + sum_w h_{w,k}^H Theta^{u(w,k)}_w A_w. Cost O(V^2) matrix products instead
of O(2^V) chains; :func:`chains` enumerates the chains for tests and docs.

Signal metrics. SINR (6) counts intra-region and inter-region interference: every other
stream of the BS, i.e. the plain multi-user SINR of twin.signal. Rate (7)
R = sum_k B log2(1 + SINR_k) in bit/s; power (9-10): P_total = p * #ON elements + tr(W W^H);
EE (11) = R / P_total in bit/J.
"""

from __future__ import annotations

import itertools
import math

import torch

from twin.errors import ConfigError, require
from twin.signal import sinr as _sinr

HALF_PI = 0.5 * math.pi


def _complex_of(real_dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if real_dtype == torch.float64 else torch.complex64


# ---- element coefficients ---------------------------------------------------------------------


def es_coefficients(
    beta_R: torch.Tensor, theta_R: torch.Tensor, t_sign: torch.Tensor, on: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy-splitting STAR-RIS (P3 eqs. 1c, 2a, 2b): (Theta_R, Theta_T), each (B, V, N) complex.

    beta_R in [0, 1]; theta_R radians; t_sign in {-1, +1} picks theta_T = theta_R +- pi/2;
    on (bool) zeroes both coefficients. Precision follows theta_R (float64 -> complex128).
    """
    beta_R = beta_R.to(theta_R.dtype)
    beta_T = torch.sqrt(torch.clamp(1.0 - beta_R.square(), min=0.0))  # (2a)
    theta_T = theta_R + t_sign.to(theta_R.dtype) * HALF_PI  # (2b)
    alpha = on.to(theta_R.dtype)  # (1a): Lambda_v
    return torch.polar(alpha * beta_R, theta_R), torch.polar(alpha * beta_T, theta_T)


def ms_coefficients(theta: torch.Tensor, reflect: torch.Tensor, on: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mode-switching STAR-RIS: each ON element either fully reflects (reflect=True) or fully transmits."""
    alpha = on.to(theta.dtype)
    r = reflect.to(theta.dtype)
    return torch.polar(alpha * r, theta), torch.polar(alpha * (1.0 - r), theta)


def ris_coefficients(theta: torch.Tensor, on: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain reflect-only RIS in the STAR layout: Theta_T = 0."""
    theta_R = torch.polar(on.to(theta.dtype), theta)
    return theta_R, torch.zeros_like(theta_R)


def no_surface_coefficients(shape: tuple[int, ...], dtype: torch.dtype = torch.complex64) -> tuple[torch.Tensor, torch.Tensor]:
    """No surface at all: both coefficients zero, only the direct link is left."""
    z = torch.zeros(shape, dtype=dtype)
    return z, z.clone()


# ---- multi-hop cascade ------------------------------------------------------------------------


def chains(V: int) -> list[tuple[int, ...]]:
    """All ascending chains of surfaces of length 1..V (the paper's set C), lexicographic per length."""
    return [c for j in range(1, V + 1) for c in itertools.combinations(range(V), j)]


def incident_fields(G_BS: torch.Tensor, G_SS: torch.Tensor, coef_T: torch.Tensor) -> torch.Tensor:
    """A_w = G_BS[w] + sum_{v<w} G_SS[v,w] diag(Theta^T_v) A_v: the BS field arriving at each surface.

    G_BS (B, V, N, M), G_SS (B, V, V, N, N), coef_T (B, V, N). Returns (B, V, N, M); equals the
    sum of f(C) (P3 eq. 4b) over every ascending chain C ending at w.
    """
    V = G_BS.shape[1]
    fields: list[torch.Tensor] = []
    for w in range(V):
        A = G_BS[:, w]
        for v in range(w):
            A = A + G_SS[:, v, w] @ (coef_T[:, v].unsqueeze(-1) * fields[v])
        fields.append(A)
    return torch.stack(fields, dim=1)


def transmit_mask(user_region: torch.Tensor, V: int) -> torch.Tensor:
    """(B, V, K) bool: user k sees surface v's transmitted side iff v < region_k (P3 eq. 4a indicator)."""
    v = torch.arange(V, device=user_region.device).view(1, V, 1)
    return v < user_region.unsqueeze(1)


def effective_channel(
    G_BS: torch.Tensor,
    G_SS: torch.Tensor,
    h_SU: torch.Tensor,
    h_BU: torch.Tensor,
    coef_R: torch.Tensor,
    coef_T: torch.Tensor,
    user_region: torch.Tensor,
) -> torch.Tensor:
    """Omega (B, K, M): row k is the effective channel of user k over the direct link and every chain (P3 eq. 4a).

    h_SU (B, V, K, N) and h_BU (B, K, M) are used as h^H; user_region (B, K) long in [0, V].
    """
    V = G_BS.shape[1]
    require(
        bool(((user_region >= 0) & (user_region <= V)).all()),
        ConfigError,
        f"user_region: regions must lie in [0, {V}] for V = {V} surfaces",
    )
    A = incident_fields(G_BS, G_SS, coef_T)  # (B, V, N, M)
    tx = transmit_mask(user_region, V)  # (B, V, K)
    coef = torch.where(tx.unsqueeze(-1), coef_T.unsqueeze(2), coef_R.unsqueeze(2))  # (B, V, K, N)
    cascaded = torch.einsum("bvkn,bvnm->bkm", h_SU.conj() * coef, A)
    return cascaded + h_BU.conj()


# ---- metrics ----------------------------------------------------------------------------------


def noise_power_w(bandwidth_hz: float, noise_figure_db: float = 0.0) -> float:
    """sigma^2 = -174 dBm/Hz + 10 log10(B) (+ noise figure; P3 uses none), in W."""
    require(bandwidth_hz > 0, ConfigError, f"bandwidth_hz: must be > 0, got {bandwidth_hz}")
    return 10.0 ** ((-174.0 + 10.0 * math.log10(bandwidth_hz) + noise_figure_db - 30.0) / 10.0)


def normalize_precoder(W: torch.Tensor, p_max_w: float | torch.Tensor) -> torch.Tensor:
    """Scale W (B, M, K) so that tr(W W^H) = P_max (P3 normalises its BS action this way, eq. 8 with equality)."""
    norm2 = W.abs().square().sum(dim=(-2, -1), keepdim=True)
    p = torch.as_tensor(p_max_w, dtype=norm2.dtype, device=W.device)
    if p.ndim == 1:
        p = p.view(-1, 1, 1)
    return W * torch.sqrt(p / torch.clamp(norm2, min=torch.finfo(norm2.dtype).tiny))


def rate_bps(sinr_values: torch.Tensor, bandwidth_hz: float) -> torch.Tensor:
    """B log2(1 + SINR_k) per user in bit/s (P3 eq. 7 before the sum). Shape (B, K)."""
    return bandwidth_hz * torch.log2(1.0 + sinr_values)


def total_power_w(on: torch.Tensor, W: torch.Tensor, element_power_w: float) -> torch.Tensor:
    """P_total = p * sum_{v,n} alpha_{v,n} + tr(W W^H) (P3 eqs. 9-10). Shape (B,)."""
    n_on = on.reshape(on.shape[0], -1).to(torch.float64).sum(-1)
    tx = W.abs().square().sum(dim=(-2, -1)).to(torch.float64)
    return element_power_w * n_on + tx


def evaluate(
    G_BS: torch.Tensor,
    G_SS: torch.Tensor,
    h_SU: torch.Tensor,
    h_BU: torch.Tensor,
    coef_R: torch.Tensor,
    coef_T: torch.Tensor,
    on: torch.Tensor,
    W: torch.Tensor,
    user_region: torch.Tensor,
    noise_w: float | torch.Tensor,
    bandwidth_hz: float,
    element_power_w: float,
) -> dict[str, torch.Tensor]:
    """Rate, power and EE of one full system state (P3 eqs. 4-11).

    The env's local reward r_mu = R_mu / P_mu (P3 eq. 16) calls this twice: once on the state
    with only agent mu's change applied. Returns sinr (B, K), rate_bps (B, K), sum_rate_bps (B,),
    power_w (B,), ee_bit_per_j (B,).
    """
    omega = effective_channel(G_BS, G_SS, h_SU, h_BU, coef_R, coef_T, user_region)
    s = _sinr(omega, W, noise_w)  # (6): all other streams interfere, in and across regions
    r = rate_bps(s, bandwidth_hz)
    total_rate = r.sum(-1)  # (7)
    p = total_power_w(on, W, element_power_w)  # (10)
    return {
        "sinr": s,
        "rate_bps": r,
        "sum_rate_bps": total_rate,
        "power_w": p,
        "ee_bit_per_j": total_rate.to(torch.float64) / p,  # (11)
    }
