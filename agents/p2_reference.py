"""P2 baselines with full CSI of the slot: association rules + aligned phases + WMMSE precoders.

Given a BS-IRS assignment ``irs_bs`` (B, L) long in [-1, n_bs) (-1 = IRS unused), the
"optimized precoding and phases" part is the same for every baseline:
- user k of cell m is helped by the IRS assigned to m with the strongest cascaded link
  ||h_lk||^2 ||G_ml||_F^2 (none if m holds no IRS);
- IRS l co-phases its reflected path with the direct one for the strongest user it helps
  (``agents.reference.align_phases`` on that single IRS);
- each BS runs WMMSE (``agents.reference.wmmse_solve``) on the effective channels of its own
  users (intra-cell interference only, as the P2 model).
A BS claims exactly the IRSs its users use, so an assignment never collides.

Association rules (``p2_reference_policies``):
  random                   every decision uniformly random (the env's action sampler)
  random-assoc             each IRS to a uniformly random BS every slot, optimized W / phases
  fixed-assoc              the assignment that maximizes the sum rate of the episode's first
                           slot (enumerating all n_bs^L), then held while users move (P2 Fig. 5)
  adaptive-assoc (ref)     the best of all n_bs^L assignments re-chosen every slot (full CSI)
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable

import torch

from agents import reference as ref
from twin import multicell as mc

Policy = Callable[[Any, Any], Any]


def user_irs_for(scene: Any, irs_bs: torch.Tensor) -> torch.Tensor:
    """(B, K): each user's strongest IRS among those assigned to its cell, -1 if none."""
    B, n_bs, L, Nl, Nb = scene.H_BI.shape
    K = scene.h_IU.shape[2]
    g_bi = scene.H_BI.abs().square().sum((-2, -1))                             # (B, n_bs, L)
    g_iu = scene.h_IU.abs().square().sum(-1)                                   # (B, L, K)
    g_bi_user = torch.gather(g_bi, 1, scene.user_cell.unsqueeze(-1).expand(B, K, L))  # (B, K, L): G of k's BS
    gain = g_bi_user * g_iu.transpose(1, 2)
    allowed = irs_bs.unsqueeze(1) == scene.user_cell.unsqueeze(-1)             # (B, K, L)
    gain = torch.where(allowed, gain, torch.full_like(gain, -1.0))
    best, arg = gain.max(-1)
    return torch.where(best >= 0, arg, torch.full_like(arg, -1))


def aligned_phases(scene: Any, irs_bs: torch.Tensor, user_irs: torch.Tensor) -> torch.Tensor:
    """phi (B, L, N_l): IRS l co-phased for the strongest of the users it helps (its owner's)."""
    B, n_bs, L, Nl, Nb = scene.H_BI.shape
    rows = torch.arange(B)
    phis = []
    for l in range(L):
        m = irs_bs[:, l].clamp(min=0)
        G = scene.H_BI[rows, m, l].unsqueeze(1)                                # (B, 1, Nl, Nb)
        h = scene.h_IU[:, l:l + 1]                                             # (B, 1, K, Nl)
        d = scene.h_BU[rows, m]                                                # (B, K, Nb)
        gain = torch.where(user_irs == l, h[:, 0].abs().square().sum(-1), torch.full_like(user_irs, -1.0, dtype=h.real.dtype))
        phi, _ = ref.align_phases(G, h, d, user=gain.argmax(-1))
        phis.append(phi[:, 0])
    return torch.stack(phis, 1)


def cell_precoders(scene: Any, phi: torch.Tensor, irs_bs: torch.Tensor, user_irs: torch.Tensor,
                   noise_w: float, p_max_w: float, iters: int = 30) -> torch.Tensor:
    """W (B, n_bs, N_b, K): WMMSE per BS on its own users' effective channels (P2 eq. 1)."""
    n_bs = scene.H_BI.shape[1]
    g = mc.effective_channel(scene.H_BI, scene.h_IU, scene.h_BU, phi, irs_bs, scene.user_cell, user_irs)  # (B, K, Nb)
    Ws = []
    for m in range(n_bs):
        mine = scene.user_cell == m
        Gm = g * mine.unsqueeze(-1).to(g.dtype)
        V = ref.wmmse_solve(Gm, noise_w, p_max_w, iters=iters, weights=mine.to(g.real.dtype)).V
        Ws.append(V * mine.unsqueeze(1).to(V.dtype))
    return torch.stack(Ws, 1)


def decide(scene: Any, irs_bs: torch.Tensor, noise_w: float, p_max_w: float) -> dict[str, torch.Tensor]:
    """The optimized W, phases and association for a BS-IRS assignment, and the slot's sum rate."""
    user_irs = user_irs_for(scene, irs_bs)
    phi = aligned_phases(scene, irs_bs, user_irs)
    W = cell_precoders(scene, phi, irs_bs, user_irs, noise_w, p_max_w)
    claims = mc.claims_from_user_irs(user_irs, scene.user_cell, scene.H_BI.shape[1], scene.H_BI.shape[2])
    ev = mc.evaluate(scene.H_BI, scene.h_IU, scene.h_BU, phi, claims, scene.user_cell, user_irs, W, noise_w)
    return {"W": W, "phi": phi, "user_irs": user_irs, "sum_rate": ev["sum_rate_bps_hz"]}


def decide_from_user_irs(scene: Any, user_irs: torch.Tensor, noise_w: float, p_max_w: float) -> dict[str, torch.Tensor]:
    """Aligned phases and WMMSE for a given user-IRS association (claims may collide: a collided
    IRS helps nobody, ``twin.multicell.resolve_claims``)."""
    n_bs, L = scene.H_BI.shape[1:3]
    claims = mc.claims_from_user_irs(user_irs, scene.user_cell, n_bs, L)
    owner = mc.resolve_claims(claims)
    served = torch.where(mc.helping_irs(owner, user_irs, scene.user_cell), user_irs, torch.full_like(user_irs, -1))
    phi = aligned_phases(scene, owner, served)
    W = cell_precoders(scene, phi, owner, user_irs, noise_w, p_max_w)
    ev = mc.evaluate(scene.H_BI, scene.h_IU, scene.h_BU, phi, claims, scene.user_cell, user_irs, W, noise_w)
    return {"W": W, "phi": phi, "user_irs": user_irs, "sum_rate": ev["sum_rate_bps_hz"]}


def best_assignment(scene: Any, noise_w: float, p_max_w: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per environment, the best of all n_bs^L BS-IRS assignments for this slot (exhaustive)."""
    B, n_bs, L = scene.H_BI.shape[:3]
    best_rate = torch.full((B,), -math.inf, dtype=torch.float64)
    best_assign = torch.zeros(B, L, dtype=torch.long)
    best: dict[str, torch.Tensor] = {}
    for combo in itertools.product(range(n_bs), repeat=L):
        assign = torch.tensor(combo, dtype=torch.long).expand(B, L)
        d = decide(scene, assign, noise_w, p_max_w)
        better = d["sum_rate"].double() > best_rate
        best_rate = torch.where(better, d["sum_rate"].double(), best_rate)
        best_assign = torch.where(better.unsqueeze(-1), assign, best_assign)
        if not best:
            best = {k: v.clone() for k, v in d.items()}
        else:
            for k, v in d.items():
                best[k] = torch.where(better.view(-1, *([1] * (v.ndim - 1))), v, best[k])
    return best_assign, best


def to_action(env: Any, W: torch.Tensor, phi: torch.Tensor, user_irs: torch.Tensor) -> dict[str, Any]:
    """The P2 env's action dict reproducing (W, phi, user_irs): W rescaled into [-1, 1] (the env
    renormalizes to P_max, so the direction and the power split are kept), theta = arg(phi)/pi,
    assoc +1 on the chosen IRS and -1 elsewhere."""
    B, n_bs, Nb, K = W.shape
    L = phi.shape[1]
    w = torch.stack([W.real, W.imag], 2).float()                            # (B, n_bs, 2, Nb, K)
    peak = w.abs().flatten(2).amax(-1).clamp_min(1e-30)
    w = (w / peak[:, :, None, None, None]).clamp(-1.0, 1.0)
    theta = (torch.angle(phi) / math.pi).float().clamp(-1.0, 1.0)
    assoc = -torch.ones(B, K, L)
    hit = user_irs >= 0
    assoc[hit.nonzero(as_tuple=True) + (user_irs[hit],)] = 1.0
    return {a: {"W": w[:, m], "theta": theta, "assoc": assoc} for m, a in enumerate(env.agent_ids)}


def p2_reference_policies(env: Any, seed: int, include_upper: bool = True) -> dict[str, Policy]:
    """name -> policy(env, obs) on P2 (see module docstring); ``include_upper`` adds the adaptive reference."""
    gen = torch.Generator().manual_seed(int(seed))
    cfg = env.cfg
    held: dict[str, torch.Tensor] = {}

    def random_policy(env: Any, obs: Any) -> Any:
        return env.sample_actions(gen)

    def random_assoc(env: Any, obs: Any) -> Any:
        s = env.scene
        assign = torch.randint(0, env.n_bs, (env.num_envs, env.L), generator=gen)
        d = decide(s, assign, cfg.noise_w, cfg.p_max_w)
        return to_action(env, d["W"], d["phi"], d["user_irs"])

    def fixed_assoc(env: Any, obs: Any) -> Any:
        s = env.scene
        if env.t == 0 or "assign" not in held or held["assign"].shape[0] != env.num_envs:
            held["assign"], d = best_assignment(s, cfg.noise_w, cfg.p_max_w)
        else:
            d = decide(s, held["assign"], cfg.noise_w, cfg.p_max_w)
        return to_action(env, d["W"], d["phi"], d["user_irs"])

    def adaptive_assoc(env: Any, obs: Any) -> Any:
        _, d = best_assignment(env.scene, cfg.noise_w, cfg.p_max_w)
        return to_action(env, d["W"], d["phi"], d["user_irs"])

    policies: dict[str, Policy] = {"random": random_policy, "random-assoc": random_assoc, "fixed-assoc": fixed_assoc}
    if include_upper:
        policies["adaptive-assoc (ref)"] = adaptive_assoc
    return policies
