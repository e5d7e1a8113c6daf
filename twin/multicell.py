"""Multi-BS downlink with BSs competing for IRSs (P2, seed 002, section III).

n_bs BSs (the paper's M) with N_b antennas each serve the users in their own sub-region;
L IRSs with N_l continuous unit-modulus elements; each IRS serves at most one BS per slot,
each user is helped by (at most) one IRS. Layout (docs: contracts):

  H_BI      (B, n_bs, L, N_l, N_b)  BS m -> IRS l          (paper G_{m,l})
  h_IU      (B, L, K, N_l)          IRS l -> user k, as h^H (paper h_{l,k}^H)
  h_BU      (B, n_bs, K, N_b)       BS m -> user k, as h^H  (paper H_{m,k})
  phi       (B, L, N_l)             IRS coefficients e^{j theta} (0 for an OFF element)
  user_cell (B, K) long             the BS whose sub-region holds user k this slot (C_m)
  user_irs  (B, K) long in [-1, L)  the IRS allocated to user k (row k of A_m), -1 none
  claims    (B, n_bs, L) bool       BS m asks to control IRS l this slot
  W         (B, n_bs, N_b, K)       W[:, m, :, k] = w_{m,k}; only columns of m's own users count

Collision rule (project reading; P2 leaves it open). ``resolve_claims``:
  * an IRS claimed by exactly one BS is owned by that BS this slot;
  * an IRS claimed by no BS is unowned;
  * an IRS claimed by two or more BSs in the same slot is a *collision*: it serves NO BS
    in that slot, its phases are ignored and every claimant's reflected paths through it
    are zero.
  owner (B, L) long in [-1, n_bs): -1 = unowned or collided.
The IRS daemon runs exactly this rule on the claims it receives when deployed.

Signal (project reading of P2 eq. 4, which prints "log", an interference term over the
reflected path only and the wrong index set): for user k in cell m helped by IRS l with
owner[l] == m,

    g_k^H = H_{m,k} + h_{l,k}^H Phi_l G_{m,l}             (P2 eq. 1; IRS term dropped
                                                            if owner[l] != m or l = -1)
    SINR_k = |g_k^H w_{m,k}|^2 / (sum_{j in C_m, j != k} |g_k^H w_{m,j}|^2 + sigma^2)
    r_k = log2(1 + SINR_k)  (bit/s/Hz),   R_m = sum_{k in C_m} r_k,   R = sum_m R_m (eq. 5)

No inter-cell interference (P2 assumes cancellation between BSs). Per-BS power
P_m = sum_{k in C_m} ||w_{m,k}||^2 <= P_max (eq. 2).
"""

from __future__ import annotations

import torch

from twin.errors import ActionError, require


def resolve_claims(claims: torch.Tensor) -> torch.Tensor:
    """Owner of each IRS from the BSs' claims (B, n_bs, L) bool -> (B, L) long in [-1, n_bs).

    Exactly one claimant -> that BS; none or two-or-more (collision) -> -1.
    """
    claims = claims.bool()
    n_claims = claims.sum(dim=1)  # (B, L)
    first = claims.to(torch.int8).argmax(dim=1)  # the only claimant when n_claims == 1
    return torch.where(n_claims == 1, first, torch.full_like(first, -1))


def collisions(claims: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: IRS l was claimed by two or more BSs this slot."""
    return claims.bool().sum(dim=1) >= 2


def claims_from_user_irs(user_irs: torch.Tensor, user_cell: torch.Tensor, n_bs: int, n_irs: int) -> torch.Tensor:
    """claims[m, l] = some user of BS m is allocated IRS l (a BS claims what its association uses)."""
    B, K = user_irs.shape
    claims = torch.zeros(B, n_bs, n_irs + 1, dtype=torch.bool, device=user_irs.device)
    # Index n_irs collects the "no IRS" (-1) entries and is dropped.
    col = torch.where(user_irs < 0, torch.full_like(user_irs, n_irs), user_irs)
    claims[torch.arange(B).unsqueeze(-1).expand(B, K), user_cell, col] = True
    return claims[..., :n_irs]


def helping_irs(owner: torch.Tensor, user_irs: torch.Tensor, user_cell: torch.Tensor) -> torch.Tensor:
    """(B, K) bool: user k's IRS exists and is owned by k's own BS this slot."""
    safe = user_irs.clamp(min=0)
    owner_of_users_irs = torch.gather(owner, 1, safe)
    return (user_irs >= 0) & (owner_of_users_irs == user_cell)


def effective_channel(
    H_BI: torch.Tensor,
    h_IU: torch.Tensor,
    h_BU: torch.Tensor,
    phi: torch.Tensor,
    owner: torch.Tensor,
    user_cell: torch.Tensor,
    user_irs: torch.Tensor,
) -> torch.Tensor:
    """g_k^H from user k's own BS: direct path plus its IRS's reflected path if that IRS serves k's BS.

    Returns (B, K, N_b); row k multiplies the beamformers of BS user_cell[k] (P2 eq. 1).
    """
    B, n_bs, L, N_l, N_b = H_BI.shape
    K = h_IU.shape[2]
    require(
        bool(((user_cell >= 0) & (user_cell < n_bs)).all()),
        ActionError,
        f"user_cell: every user's cell must lie in [0, {n_bs})",
    )
    require(
        bool(((user_irs >= -1) & (user_irs < L)).all()),
        ActionError,
        f"user_irs: every entry must lie in [-1, {L}) (-1 = no IRS)",
    )
    bidx = torch.arange(B, device=H_BI.device).unsqueeze(-1).expand(B, K)
    kidx = torch.arange(K, device=H_BI.device).unsqueeze(0).expand(B, K)
    direct = h_BU[bidx, user_cell, kidx].conj()  # (B, K, N_b)
    l = user_irs.clamp(min=0)
    G = H_BI[bidx, user_cell, l]  # (B, K, N_l, N_b): G_{m_k, l_k}
    h = h_IU[bidx, l, kidx]  # (B, K, N_l)
    p = phi[bidx, l]  # (B, K, N_l)
    reflected = torch.einsum("bkn,bknq->bkq", h.conj() * p, G)
    use = helping_irs(owner, user_irs, user_cell).unsqueeze(-1)
    return direct + torch.where(use, reflected, torch.zeros_like(reflected))


def own_beamformers(W: torch.Tensor, user_cell: torch.Tensor) -> torch.Tensor:
    """(B, N_b, K): column k = w_{m_k, k}, the beamformer of user k's own BS."""
    B, n_bs, N_b, K = W.shape
    idx = user_cell.view(B, 1, 1, K).expand(B, 1, N_b, K)
    return torch.gather(W, 1, idx).squeeze(1)


def sinr(g: torch.Tensor, W: torch.Tensor, user_cell: torch.Tensor, noise_w: float | torch.Tensor) -> torch.Tensor:
    """Intra-cell SINR (B, K): interference only from the other users of the same BS (project reading of P2 eq. 4)."""
    V = own_beamformers(W, user_cell)  # (B, N_b, K)
    gain = (g @ V).abs().square()  # (B, K, K): user k, stream j (j's beamformer from j's BS)
    same_cell = user_cell.unsqueeze(-1) == user_cell.unsqueeze(-2)  # (B, K, K)
    signal = torch.diagonal(gain, dim1=-2, dim2=-1)
    interference = (gain * same_cell).sum(-1) - signal
    noise = torch.as_tensor(noise_w, dtype=signal.dtype, device=signal.device)
    if noise.ndim == 1:
        noise = noise.unsqueeze(-1)
    return signal / (interference + noise)


def per_bs_sum(values: torch.Tensor, user_cell: torch.Tensor, n_bs: int) -> torch.Tensor:
    """(B, n_bs): sum of per-user values over each BS's users C_m."""
    out = torch.zeros(values.shape[0], n_bs, dtype=values.dtype, device=values.device)
    return out.scatter_add(1, user_cell, values)


def per_bs_power_w(W: torch.Tensor, user_cell: torch.Tensor) -> torch.Tensor:
    """P_m = sum_{k in C_m} ||w_{m,k}||^2 (P2 eq. 2), shape (B, n_bs). Columns of other cells' users do not count."""
    n_bs = W.shape[1]
    col_power = W.abs().square().sum(-2)  # (B, n_bs, K)
    mine = user_cell.unsqueeze(1) == torch.arange(n_bs, device=W.device).view(1, n_bs, 1)
    return (col_power * mine).sum(-1)


def evaluate(
    H_BI: torch.Tensor,
    h_IU: torch.Tensor,
    h_BU: torch.Tensor,
    phi: torch.Tensor,
    claims: torch.Tensor,
    user_cell: torch.Tensor,
    user_irs: torch.Tensor,
    W: torch.Tensor,
    noise_w: float | torch.Tensor,
) -> dict[str, torch.Tensor]:
    """One slot of P2: owner, per-user SINR and rate, per-BS sum rate (each agent's reward) and power."""
    n_bs = H_BI.shape[1]
    owner = resolve_claims(claims)
    g = effective_channel(H_BI, h_IU, h_BU, phi, owner, user_cell, user_irs)
    s = sinr(g, W, user_cell, noise_w)
    r = torch.log2(1.0 + s)
    per_bs = per_bs_sum(r, user_cell, n_bs)
    return {
        "owner": owner,
        "collided": collisions(claims),
        "sinr": s,
        "rate_bps_hz": r,
        "bs_sum_rate_bps_hz": per_bs,
        "sum_rate_bps_hz": per_bs.sum(-1),
        "bs_power_w": per_bs_power_w(W, user_cell),
    }
