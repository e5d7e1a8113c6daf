"""numpy twin of ``agents.mdlbi.local_precoders`` (the P2 "local" precoder head), float64.

A BS's precoders W (B, 2, N_b, K) in [-1, 1] and IRS phases theta (B, L, N_l) from its own
observation and its raw outputs (power entries q (B, K), regularisation r (B, 1), claims
c (B, L)); see the torch function for the math. Same operations in the same order, so the
two agree to float64 rounding (ties of the argmax over users or claims aside).
"""

from __future__ import annotations

import math

import numpy as np


def unpack_observation(obs: np.ndarray, *, n_users: int, n_irs: int, n_antennas: int,
                       n_elements: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A BS's P2 observation (B, obs_dim) -> its direct CSI d (B, K, N_b), BS-IRS CSI G
    (B, L, N_l, N_b), IRS-user CSI h (B, L, K, N_l), all complex128, and its own-user mask (B, K)
    (the layout of ``twin.envs.p2``: real parts, then imaginary parts, per block)."""
    B, K, L, Nb, Nl = obs.shape[0], n_users, n_irs, n_antennas, n_elements
    x = obs.astype(np.float64)
    sizes = [K * Nb, K * Nb, L * Nl * Nb, L * Nl * Nb, L * K * Nl, L * K * Nl, K]
    parts, i = [], 0
    for n in sizes:
        parts.append(x[:, i:i + n])
        i += n
    d = (parts[0] + 1j * parts[1]).reshape(B, K, Nb)
    G = (parts[2] + 1j * parts[3]).reshape(B, L, Nl, Nb)
    h = (parts[4] + 1j * parts[5]).reshape(B, L, K, Nl)
    return d, G, h, parts[6] > 0.5


def _unit_phase(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    return np.where(a > 0, x / np.maximum(a, 1e-300), 1.0 + 0j)


def local_precoders(obs: np.ndarray, q: np.ndarray, r: np.ndarray, c: np.ndarray, *, n_users: int, n_irs: int,
                    n_antennas: int, n_elements: int, refl_scale: float, snr_ref: float, power_range: float,
                    reg_range: float, align_iters: int) -> tuple[np.ndarray, np.ndarray]:
    B, K, L, Nb, Nl = obs.shape[0], n_users, n_irs, n_antennas, n_elements
    d, G, h, own = unpack_observation(obs, n_users=K, n_irs=L, n_antennas=Nb, n_elements=Nl)
    cd = c.astype(np.float64)
    l = cd.argmax(-1)
    rows = np.arange(B)
    claimed = cd[rows, l] > 0
    Gl = G[rows, l] * refl_scale
    hl = h[rows, l]
    gain = np.where(own, np.square(np.abs(hl)).sum(-1), -1.0)
    k = gain.argmax(-1)
    dk = d[rows, k].conj()
    hk = hl[rows, k].conj()
    e1 = np.zeros((B, Nb), dtype=np.complex128)
    e1[:, 0] = 1.0
    nd = np.linalg.norm(dk, axis=-1, keepdims=True)
    v = np.where(nd > 0, dk.conj() / np.maximum(nd, 1e-300), e1)
    phi = np.ones((B, Nl), dtype=np.complex128)
    for _ in range(max(1, align_iters)):
        per_el = hk * (Gl @ v[:, :, None])[:, :, 0]
        direct = (dk * v).sum(-1, keepdims=True)
        phi = _unit_phase(direct) * _unit_phase(per_el).conj()
        g_row = dk + ((hk * phi)[:, :, None] * Gl).sum(1)
        ng = np.linalg.norm(g_row, axis=-1, keepdims=True)
        v = np.where(ng > 0, g_row.conj() / np.maximum(ng, 1e-300), v)
    phi = np.where(claimed[:, None], phi, 1.0 + 0j)
    refl = np.einsum("bkn,bnq->bkq", hl.conj() * phi[:, None, :], Gl)
    g = d.conj() + refl * claimed[:, None, None]
    g = g * own[:, :, None]
    half = np.exp(0.5 * power_range * (q.astype(np.float64) - 1.0)) * own
    sqrtD = half / np.sqrt(np.maximum(np.square(half).sum(-1, keepdims=True), 1e-300))
    D = np.square(sqrtD)
    M = np.einsum("bk,bki,bkj->bij", D, g.conj(), g)
    alpha = np.power(10.0, reg_range * r.astype(np.float64).reshape(B)) / snr_ref
    M = M + alpha[:, None, None] * np.eye(Nb)
    X = np.linalg.solve(M, g.conj().transpose(0, 2, 1))
    nx = np.linalg.norm(X, axis=-2, keepdims=True)
    W = np.where(nx > 0, X / np.maximum(nx, 1e-300), 0.0) * sqrtD[:, None, :]
    W2 = np.stack([W.real, W.imag], 1)
    peak = np.maximum(np.abs(W2).reshape(B, -1).max(-1), 1e-300)
    W2 = np.clip(W2 / peak[:, None, None, None], -1.0, 1.0)
    theta = np.zeros((B, L, Nl))
    theta[rows, l] = np.where(claimed[:, None], np.angle(phi) / math.pi, 0.0)
    return W2.astype(np.float32), theta.astype(np.float32)


def gain_features(x: np.ndarray, groups: int, obs_dim: int, n_users: int, n_irs: int, n_antennas: int,
                  n_elements: int) -> np.ndarray:
    """numpy twin of ``agents.mdlbi.gain_features`` (float32): x ++ own users' log10 link gains per block."""
    B, K, L, Nb, Nl = x.shape[0], n_users, n_irs, n_antennas, n_elements
    o = x.reshape(B, groups, obs_dim)
    d2 = np.square(o[..., :K * Nb]) + np.square(o[..., K * Nb:2 * K * Nb])
    i = 2 * K * Nb + 2 * L * Nl * Nb
    h2 = np.square(o[..., i:i + L * K * Nl]) + np.square(o[..., i + L * K * Nl:i + 2 * L * K * Nl])
    own = o[..., i + 2 * L * K * Nl:i + 2 * L * K * Nl + K]
    fd = np.log10(d2.reshape(B, groups, K, Nb).sum(-1) + np.float32(1e-6)) * own
    fh = np.log10(h2.reshape(B, groups, L, K, Nl).sum(-1) + np.float32(1e-6)) * own[:, :, None, :]
    feats = np.concatenate([fd, fh.reshape(B, groups, L * K)], -1).reshape(B, -1)
    return np.concatenate([x, feats.astype(np.float32)], -1)
