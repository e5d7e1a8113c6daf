"""numpy twin of MDLBI's "gain" claim head (``agents.mdlbi.claim_value`` / ``gain_claims``), float64.

The claim value v_l of IRS l for a BS is read from its OWN observation: for the own user the
"local" precoder head would co-phase (strongest IRS-user link), v_l = 2 log2(1 + A / ||d||) with
A = refl_scale sum_n |h_IU,l,n| ||H_BI,l,n,:|| the co-phased reflected amplitude bound and d
the user's direct channel (0 without own users). The claim score is tanh(v_l - tau_l), the
learned threshold tau_l = claim_range (u_l + 1) / 2 from the actor's raw entry u_l in [-1, 1].
"""

from __future__ import annotations

import numpy as np

from agents.runtime.p2_local import unpack_observation


def claim_value(obs: np.ndarray, *, n_users: int, n_irs: int, n_antennas: int, n_elements: int,
                refl_scale: float) -> np.ndarray:
    """(B, obs_dim) -> v (B, L) float64 (see the module docstring)."""
    d, G, h, own = unpack_observation(obs, n_users=n_users, n_irs=n_irs, n_antennas=n_antennas,
                                      n_elements=n_elements)
    amp = refl_scale * (np.abs(h) * np.linalg.norm(G, axis=-1)[:, :, None, :]).sum(-1)       # (B, L, K)
    dn = np.linalg.norm(d, axis=-1)                                                          # (B, K)
    link = np.where(own[:, None, :], np.square(np.abs(h)).sum(-1), -1.0)                     # (B, L, K)
    k = link.argmax(-1)                                                                      # (B, L)
    a_k = np.take_along_axis(amp, k[..., None], -1)[..., 0]
    d_k = np.take_along_axis(dn, k, -1)
    v = 2.0 * np.log2(1.0 + a_k / np.maximum(d_k, 1e-6))
    return np.where(own.any(-1, keepdims=True), v, 0.0)


def claim_features(x: np.ndarray, groups: int, obs_dim: int, n_users: int, n_irs: int, n_antennas: int,
                   n_elements: int, refl_scale: float) -> np.ndarray:
    """x (B, groups * obs_dim) -> v of every block (B, groups * L) float32."""
    B = x.shape[0]
    o = x.reshape(B * groups, obs_dim)
    v = claim_value(o, n_users=n_users, n_irs=n_irs, n_antennas=n_antennas, n_elements=n_elements,
                    refl_scale=refl_scale)
    return v.reshape(B, groups * n_irs).astype(np.float32)


def gain_claims(obs: np.ndarray, u: np.ndarray, *, n_users: int, n_irs: int, n_antennas: int, n_elements: int,
                refl_scale: float, claim_range: float) -> np.ndarray:
    """Claim scores c (B, L) = tanh(v - claim_range (u + 1) / 2), float32."""
    v = claim_value(obs, n_users=n_users, n_irs=n_irs, n_antennas=n_antennas, n_elements=n_elements,
                    refl_scale=refl_scale)
    tau = claim_range * (u.astype(np.float64).reshape(v.shape) + 1.0) / 2.0
    return np.tanh(v - tau).astype(np.float32)
