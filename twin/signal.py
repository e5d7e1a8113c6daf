"""Signal metrics of the single-cell downlink with passive surfaces (P1 section II).

Pure functions over batched torch tensors: every argument carries a leading batch axis B
(environments), and complex64 / complex128 both work (the dtype follows the inputs).

Conventions (shared with the snapshot format of docs/SNAPSHOT.md):
  H_BR  (B, L, N, M)  BS -> surface l
  h_RU  (B, L, K, N)  surface l -> user k, used as h_RU[l,k]^H Phi_l H_BR[l]
  h_BU  (B, K, M)     BS -> user k, used as h_BU[k]^H
  phi   (B, L, N)     reflection coefficients rho e^{j theta} (OFF element: 0)
  V     (B, M, K)     column k is the beamformer v_k
"""

from __future__ import annotations

import torch

from twin import kernels, surfaces


def effective_channel(H_BR: torch.Tensor, h_RU: torch.Tensor, h_BU: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Rows g_k^H = sum_l h_RU[l,k]^H diag(phi_l) H_BR[l] + h_BU[k]^H (P1 eq. 1).

    Returns G with shape (B, K, M) such that the received amplitude of stream j at user k
    is (G @ V)[k, j].
    """
    # Complex batched matmuls of tiny matrices are slow on CPU, so the cascade runs as ONE
    # real bmm per environment on interleaved re/im views, the surfaces folded into the
    # contraction (sum over l and n in one product):
    # conj(h) (Pr + j Pi) = [hr, hi] . [Pr, Pi] + j [hr, hi] . [Pi, -Pr], with P = diag(phi) H
    # and [Pi, -Pr] = re/im of -j P. Results equal the textbook sum (tests/twin/test_batching.py,
    # test_snapshot.py); ~1.3-2x faster than the einsum, and folding l saves ~12 % more than one
    # bmm per (environment, surface) (bench/twin_throughput.py, docs/BENCHMARKS.md).
    if torch.is_grad_enabled() and (H_BR.requires_grad or h_RU.requires_grad or phi.requires_grad):
        # differentiable path (the out= writes below do not support autograd)
        cascaded = torch.einsum("...lkn,...lnm->...km", h_RU.conj() * phi.unsqueeze(-2), H_BR)
        return cascaded + h_BU.conj()
    fused = kernels.p1_cascade(H_BR, h_RU, h_BU, phi)  # one C pass per environment when applicable (twin/kernels)
    if fused is not None:
        return fused
    L, N, M = H_BR.shape[-3:]
    K = h_RU.shape[-2]
    lead = H_BR.shape[:-3]
    if not lead == h_RU.shape[:-3] == phi.shape[:-2]:  # torch.broadcast_shapes costs ~45 us: only when needed
        lead = torch.broadcast_shapes(lead, h_RU.shape[:-3], phi.shape[:-2])
    H = H_BR.expand(*lead, L, N, M).reshape(-1, L, N, M)
    ph = phi.expand(*lead, L, N).reshape(-1, L, N, 1)
    B = H.shape[0]
    S = torch.empty(B, L, N, 2, M, dtype=torch.promote_types(H.dtype, ph.dtype), device=H.device)
    torch.mul(ph, H, out=S[:, :, :, 0])  # P
    torch.mul(ph * -1j, H, out=S[:, :, :, 1])  # -j P
    right = torch.view_as_real(S).reshape(B, 2 * L * N, 2 * M)  # rows (l, n, P | -jP)
    hR = h_RU.expand(*lead, L, K, N).reshape(-1, L, K, N)
    if hR.is_conj() or torch.get_num_threads() > 1:
        h = torch.empty(B, K, L, N, dtype=h_RU.dtype, device=h_RU.device)
        h.permute(0, 2, 1, 3).copy_(hR)  # (l, k) -> (k, l); resolves conj; runs on all intra-op threads
    else:
        h = torch.stack(hR.unbind(1), dim=2)  # same values; ~20 % cheaper on one thread (stack is serial)
    left = torch.view_as_real(h).reshape(B, K, 2 * L * N)  # columns (l, n, re | im)
    if left.dtype != right.dtype:
        left = left.to(right.dtype)
    cascaded = torch.view_as_complex(torch.bmm(left, right).reshape(*lead, K, M, 2))
    return cascaded + h_BU.conj()


def _abs2(z: torch.Tensor) -> torch.Tensor:
    """|z|^2 as re^2 + im^2: no square root, several times faster than abs().square() on CPU."""
    return z.real.square() + z.imag.square() if z.is_complex() else z.square()


def sinr(G: torch.Tensor, V: torch.Tensor, noise_w: torch.Tensor | float) -> torch.Tensor:
    """gamma_k = |g_k^H v_k|^2 / (sum_{j != k} |g_k^H v_j|^2 + sigma^2) (P1 eq. 4). Shape (B, K)."""
    gain = _abs2(G @ V)  # (B, K, K): user k, stream j
    signal = torch.diagonal(gain, dim1=-2, dim2=-1)
    interference = gain.sum(-1) - signal
    if isinstance(noise_w, (int, float)):  # a scalar needs no tensor (same float rounding either way)
        return signal / interference.add_(noise_w)
    noise = torch.as_tensor(noise_w, dtype=signal.dtype, device=signal.device)
    if noise.ndim == 1:
        noise = noise.unsqueeze(-1)
    return signal / (interference + noise)


def rate_bps_hz(sinr_values: torch.Tensor) -> torch.Tensor:
    """R_k = log2(1 + gamma_k) (P1 eq. 5)."""
    return torch.log2(1.0 + sinr_values)


def tx_power_w(V: torch.Tensor) -> torch.Tensor:
    """Per-stream transmit power ||v_k||^2, shape (B, K) (project reading of P1 eq. 10a)."""
    return _abs2(V).sum(-2)


def energy_efficiency(sum_rate: torch.Tensor, tx_power_w: torch.Tensor, surface_power_w: torch.Tensor | float = 0.0) -> torch.Tensor:
    """EE = R / (P_tx + P_surfaces), shape (B,): bit/J for R in bit/s, (bit/s/Hz)/W for R in bit/s/Hz
    (P3 eq. 11; P1's P_IRS of eq. 8 plugs in as ``surface_power_w``)."""
    total = tx_power_w + surface_power_w
    return sum_rate / total


def p1_metrics(
    H_BR: torch.Tensor, h_RU: torch.Tensor, h_BU: torch.Tensor, bits: torch.Tensor, phase_idx: torch.Tensor,
    on: torch.Tensor, V: torch.Tensor, noise_w: float, power_table: torch.Tensor | None = None,
    threads: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The P1 evaluation of one slot: per-user rate (B, K) (eqs. 2, 1, 4, 5), per-stream transmit
    power (B, K) and per-surface IRS power (B, L) (eq. 7; None without ``power_table``).

    bits (B, L), phase_idx (B, L, N), on (B, L, N) as in twin/surfaces.py. ``threads`` caps the
    threads of the fused path (default: torch.get_num_threads()). On CPU this is one
    fused C pass per environment (twin/kernels, ~3x faster than the torch ops at B = 1024); otherwise, or
    with ``RISTWIN_FUSED=0``, the torch composition below (equal within float rounding).
    """
    fused = kernels.p1_eval(H_BR, h_RU, h_BU, bits, phase_idx, on, V, noise_w,
                            surfaces._unit_circle(H_BR.dtype, "cpu"), surfaces.MAX_PHASE_BITS, power_table, threads) \
        if H_BR.dtype in (torch.complex64, torch.complex128) else None
    if fused is not None:
        return fused
    phi = surfaces.coefficients(bits, phase_idx, on, dtype=H_BR.dtype)
    rate = rate_bps_hz(sinr(effective_channel(H_BR, h_RU, h_BU, phi), V, noise_w))
    irs = None if power_table is None else surfaces.irs_power_w(bits, on, power_table)
    return rate, tx_power_w(V), irs
