"""Per-paper scene sampling: positions and channels for a batch of environments.

``sample_pX(scn, num_envs, generator, dtype)`` draws a batch of scenes from preset ``scn``;
``evolve_pX(scene, scn, generator)`` advances one slot (Gauss-Markov fading, user mobility
where the paper's time evolution needs it). Layouts follow /work/prompts/contracts.md and
twin/signal.py. Every random draw comes from the explicit generator, in a fixed order, so a
seed fixes the whole trajectory.

A channel is kept as its unit-power parts (LoS, NLoS) and its amplitude gain, so time
evolution only redraws what changes; the public tensors (``H_BR`` etc.) are the products.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from twin import geometry as geo
from twin.channels import (db_to_linear, gauss_markov, log_distance_gain, rayleigh, rician,
                           ula_steering, umi_los_gain, upa_steering)


def _amp(gain: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(gain)


# ============================================================================================
# P1
# ============================================================================================
@dataclass(frozen=True)
class P1Scene:
    """A batch of P1 scenes. Shapes: H_BR (B,L,N,M), h_RU (B,L,K,N), h_BU (B,K,M);
    bs_pos (B,2), irs_pos (B,L,2), user_pos (B,K,2); d_BR (B,L), d_RU (B,L,K), d_BU (B,K) in m."""

    H_BR: torch.Tensor
    h_RU: torch.Tensor
    h_BU: torch.Tensor
    bs_pos: torch.Tensor
    irs_pos: torch.Tensor
    user_pos: torch.Tensor
    d_BR: torch.Tensor
    d_RU: torch.Tensor
    d_BU: torch.Tensor
    # unit-power parts and amplitude gains, kept for time evolution
    H_BR_los: torch.Tensor
    h_RU_los: torch.Tensor
    H_BR_nlos: torch.Tensor
    h_RU_nlos: torch.Tensor
    h_BU_nlos: torch.Tensor
    amp_BR: torch.Tensor  # (B, L)
    amp_RU: torch.Tensor  # (B, L, K)
    amp_BU: torch.Tensor  # (B, K)
    # the deterministic (LoS) part of each Rician channel, sqrt(g K/(K+1)) LoS: fixed within an
    # episode, so a slot only redraws and adds the scattered part
    H_BR_mean: torch.Tensor | None = None
    h_RU_mean: torch.Tensor | None = None

    @property
    def num_envs(self) -> int:
        return self.H_BR.shape[0]

    @property
    def distances(self) -> dict[str, torch.Tensor]:
        return {"BR": self.d_BR, "RU": self.d_RU, "BU": self.d_BU}

    def index(self, i) -> "P1Scene":
        """The sub-batch ``i`` (an int keeps a batch axis of 1)."""
        sl = slice(i, i + 1) if isinstance(i, int) else i
        return dataclasses.replace(self, **{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[sl]
                                            for f in dataclasses.fields(self)})


def _p1_means(scn, H_BR_los, h_RU_los, amp_BR, amp_RU):
    k = scn.rician_factor
    a = math.sqrt(k / (k + 1.0))
    return (amp_BR * a)[..., None, None] * H_BR_los, (amp_RU * a)[..., None] * h_RU_los


def _p1_channels(scn, H_BR_mean, h_RU_mean, H_BR_nlos, h_RU_nlos, h_BU_nlos, amp_BR, amp_RU, amp_BU):
    """H = sqrt(g) (sqrt(K/(K+1)) LoS + sqrt(1/(K+1)) NLoS) (P1 eq. 34); h_BU Rayleigh."""
    b = math.sqrt(1.0 / (scn.rician_factor + 1.0))
    cd = H_BR_nlos.dtype
    H_BR = torch.addcmul(H_BR_mean, (amp_BR * b)[..., None, None].to(cd), H_BR_nlos)
    h_RU = torch.addcmul(h_RU_mean, (amp_RU * b)[..., None].to(cd), h_RU_nlos)
    h_BU = amp_BU[..., None].to(cd) * h_BU_nlos
    return H_BR, h_RU, h_BU


def sample_p1(scn, num_envs: int, generator: torch.Generator, dtype: torch.dtype = torch.complex64) -> P1Scene:
    """Draw ``num_envs`` P1 scenes: BS at the origin with a ULA along x; users uniform in the
    ring [user_ring_inner_m, user_ring_outer_m]; IRSs uniform on the circle of irs_radius_m,
    each a ULA tangent to the circle (facing the BS)."""
    rdt = geo.real_dtype(dtype)
    B, M, K, L, N = num_envs, scn.n_bs_antennas, scn.n_users, scn.n_irs, scn.n_elements
    irs_pos = geo.uniform_circle(B, L, scn.irs_radius_m, generator, rdt)
    user_pos = geo.uniform_ring(B, K, scn.user_ring_inner_m, scn.user_ring_outer_m, generator, rdt)
    bs_pos = torch.zeros(B, 2, dtype=rdt)

    d_BR = geo.pairwise_distance(bs_pos[:, None], irs_pos)[:, 0]  # (B, L)
    d_RU = geo.pairwise_distance(irs_pos, user_pos)  # (B, L, K)
    d_BU = geo.pairwise_distance(bs_pos[:, None], user_pos)[:, 0]  # (B, K)

    # Array axes: BS ULA along x; IRS l tangent to the circle at its position.
    bs_axis = torch.tensor([1.0, 0.0], dtype=rdt).expand(B, 1, 2)
    radial = irs_pos / torch.linalg.vector_norm(irs_pos, dim=-1, keepdim=True).clamp_min(1e-12)
    irs_axis = torch.stack((-radial[..., 1], radial[..., 0]), dim=-1)  # (B, L, 2)
    sin_bs_to_irs = geo.direction_cosine(bs_pos[:, None], irs_pos, bs_axis)[:, 0]  # (B, L)
    sin_irs_to_bs = geo.direction_cosine(irs_pos, bs_pos[:, None], irs_axis)[..., 0]  # (B, L)
    sin_irs_to_user = geo.direction_cosine(irs_pos, user_pos, irs_axis)  # (B, L, K)

    s = scn.antenna_spacing_wl
    a_irs_in = ula_steering(sin_irs_to_bs, N, s, dtype)  # (B, L, N)
    a_bs_out = ula_steering(sin_bs_to_irs, M, s, dtype)  # (B, L, M)
    H_BR_los = a_irs_in.unsqueeze(-1) * a_bs_out.conj().unsqueeze(-2)  # a_N a_M^H: (B, L, N, M)
    h_RU_los = ula_steering(sin_irs_to_user, N, s, dtype)  # (B, L, K, N), used as h^H

    H_BR_nlos = rayleigh((B, L, N, M), generator, dtype)
    h_RU_nlos = rayleigh((B, L, K, N), generator, dtype)
    h_BU_nlos = rayleigh((B, K, M), generator, dtype)

    amp_BR = _amp(log_distance_gain(d_BR, scn.pl_ref_db, scn.pl_exp_bs_irs, scn.pl_ref_distance_m))
    amp_RU = _amp(log_distance_gain(d_RU, scn.pl_ref_db, scn.pl_exp_irs_user, scn.pl_ref_distance_m))
    amp_BU = _amp(log_distance_gain(d_BU, scn.pl_ref_db + scn.direct_blockage_db, scn.pl_exp_bs_user,
                                    scn.pl_ref_distance_m))

    H_BR_mean, h_RU_mean = _p1_means(scn, H_BR_los, h_RU_los, amp_BR, amp_RU)
    H_BR, h_RU, h_BU = _p1_channels(scn, H_BR_mean, h_RU_mean, H_BR_nlos, h_RU_nlos, h_BU_nlos, amp_BR, amp_RU, amp_BU)
    return P1Scene(H_BR, h_RU, h_BU, bs_pos, irs_pos, user_pos, d_BR, d_RU, d_BU,
                   H_BR_los, h_RU_los, H_BR_nlos, h_RU_nlos, h_BU_nlos, amp_BR, amp_RU, amp_BU,
                   H_BR_mean, h_RU_mean)


def evolve_p1(scene: P1Scene, scn, generator: torch.Generator) -> P1Scene:
    """One slot: positions (hence LoS and path loss) fixed within an episode, NLoS and
    Rayleigh parts Gauss-Markov with rho = scn.fading_correlation (open in P1; see preset)."""
    rho = scn.fading_correlation
    if scene.H_BR_mean is None or scene.h_RU_mean is None:  # a scene built by hand
        scene = dataclasses.replace(scene, **dict(zip(("H_BR_mean", "h_RU_mean"), _p1_means(
            scn, scene.H_BR_los, scene.h_RU_los, scene.amp_BR, scene.amp_RU))))
    olds = (scene.H_BR_nlos, scene.h_RU_nlos, scene.h_BU_nlos)
    if rho >= 1.0:  # static fading: only re-assemble (a hand-set H_BR is overwritten, as before)
        H_BR, h_RU, h_BU = _p1_channels(scn, scene.H_BR_mean, scene.h_RU_mean, *olds,
                                        scene.amp_BR, scene.amp_RU, scene.amp_BU)
        return dataclasses.replace(scene, H_BR=H_BR, h_RU=h_RU, h_BU=h_BU)
    # Fused Gauss-Markov slot on real views (complex elementwise ops are slow on CPU): ONE
    # normal draw for all three channels, x <- rho x + sqrt(1 - rho^2) w per channel, then
    # H = mean + sqrt(g/(K+1)) x (eq. 34). The draw equals the three CN(0, 1) draws of
    # channels.gauss_markov in the same order (torch fills complex normals as real normals
    # of std 1/sqrt(2)); results agree with the unfused formula to float rounding.
    real = [torch.view_as_real(x) for x in olds]
    sizes = [r.numel() for r in real]
    w = torch.randn(sum(sizes), generator=generator, dtype=real[0].dtype, device=real[0].device)
    w.mul_(math.sqrt((1.0 - rho * rho) / 2.0))
    nlos = [seg.view(r.shape).add_(r, alpha=rho) for seg, r in zip(w.split(sizes), real)]
    b = math.sqrt(1.0 / (scn.rician_factor + 1.0))
    H_BR = torch.addcmul(torch.view_as_real(scene.H_BR_mean), (scene.amp_BR * b)[..., None, None, None], nlos[0])
    h_RU = torch.addcmul(torch.view_as_real(scene.h_RU_mean), (scene.amp_RU * b)[..., None, None], nlos[1])
    h_BU = nlos[2] * scene.amp_BU[..., None, None]
    c = torch.view_as_complex
    return dataclasses.replace(scene, H_BR=c(H_BR), h_RU=c(h_RU), h_BU=c(h_BU),
                               H_BR_nlos=c(nlos[0]), h_RU_nlos=c(nlos[1]), h_BU_nlos=c(nlos[2]))


# ============================================================================================
# P2
# ============================================================================================
@dataclass(frozen=True)
class P2Scene:
    """A batch of P2 scenes (contracts.md). n_bs BSs (paper M) with N_b antennas, L IRSs with
    N_l elements, K users. H_BI (B,n_bs,L,N_l,N_b), h_IU (B,L,K,N_l), h_BU (B,n_bs,K,N_b),
    user_cell (B,K) long; positions bs_pos (B,n_bs,2), irs_pos (B,L,2), user_pos (B,K,2)."""

    H_BI: torch.Tensor
    h_IU: torch.Tensor
    h_BU: torch.Tensor
    user_cell: torch.Tensor
    bs_pos: torch.Tensor
    irs_pos: torch.Tensor
    user_pos: torch.Tensor
    waypoint: torch.Tensor  # (B, K, 2) random-waypoint targets
    d_BI: torch.Tensor  # (B, n_bs, L)
    d_IU: torch.Tensor  # (B, L, K)
    d_BU: torch.Tensor  # (B, n_bs, K)
    H_BI_small: torch.Tensor  # unit-power Rayleigh parts
    h_IU_small: torch.Tensor
    h_BU_small: torch.Tensor

    @property
    def num_envs(self) -> int:
        return self.H_BI.shape[0]


def p2_area(scn) -> tuple[tuple[float, float], tuple[float, float]]:
    """(lo, hi) corners of the whole service area: n_bs squares side by side along x."""
    w = scn.region_side_m
    return (0.0, 0.0), (scn.n_bs * w, w)


def p2_fixed_positions(scn, batch: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """BS m at the centre of sub-region m; IRS l on the area's top edge (y = side) at
    x = n_bs side (l + 1) / (L + 1), so with one IRS and two BSs it sits on the border the
    BSs compete across (open in the paper: project layout)."""
    w = scn.region_side_m
    bs_x = (torch.arange(scn.n_bs, dtype=dtype) + 0.5) * w
    bs = torch.stack((bs_x, torch.full_like(bs_x, w / 2)), -1)
    irs_x = scn.n_bs * w * (torch.arange(scn.n_irs, dtype=dtype) + 1) / (scn.n_irs + 1)
    irs = torch.stack((irs_x, torch.full_like(irs_x, w)), -1)
    return bs.expand(batch, -1, -1).clone(), irs.expand(batch, -1, -1).clone()


def p2_user_cell(scn, user_pos: torch.Tensor) -> torch.Tensor:
    """The sub-region (= serving BS) that holds each user: floor(x / side), clamped."""
    return torch.clamp((user_pos[..., 0] / scn.region_side_m).floor().long(), 0, scn.n_bs - 1)


def _p2_gains(scn, bs_pos, irs_pos, user_pos):
    d_BI = geo.pairwise_distance(bs_pos, irs_pos)
    d_IU = geo.pairwise_distance(irs_pos, user_pos)
    d_BU = geo.pairwise_distance(bs_pos, user_pos)
    a_BI = _amp(log_distance_gain(d_BI, scn.pl_ref_db, scn.pl_exp_bs_irs, scn.pl_ref_distance_m))
    a_IU = _amp(log_distance_gain(d_IU, scn.pl_ref_db, scn.pl_exp_irs_user, scn.pl_ref_distance_m))
    a_BU = _amp(log_distance_gain(d_BU, scn.pl_ref_db, scn.pl_exp_bs_user, scn.pl_ref_distance_m))
    return d_BI, d_IU, d_BU, a_BI, a_IU, a_BU


def _p2_build(scn, bs_pos, irs_pos, user_pos, waypoint, H_BI_small, h_IU_small, h_BU_small) -> P2Scene:
    d_BI, d_IU, d_BU, a_BI, a_IU, a_BU = _p2_gains(scn, bs_pos, irs_pos, user_pos)
    # All links Rayleigh with path loss (P2 section V).
    H_BI = a_BI[..., None, None] * H_BI_small
    h_IU = a_IU[..., None] * h_IU_small
    h_BU = a_BU[..., None] * h_BU_small
    return P2Scene(H_BI, h_IU, h_BU, p2_user_cell(scn, user_pos), bs_pos, irs_pos, user_pos, waypoint,
                   d_BI, d_IU, d_BU, H_BI_small, h_IU_small, h_BU_small)


def sample_p2(scn, num_envs: int, generator: torch.Generator, dtype: torch.dtype = torch.complex64) -> P2Scene:
    """Draw P2 scenes: users and their first waypoints uniform over the whole area."""
    rdt = geo.real_dtype(dtype)
    B, nb, Nb, L, Nl, K = num_envs, scn.n_bs, scn.n_bs_antennas, scn.n_irs, scn.n_elements, scn.n_users
    lo, hi = p2_area(scn)
    bs_pos, irs_pos = p2_fixed_positions(scn, B, rdt)
    user_pos = geo.uniform_box(B, K, lo, hi, generator, rdt)
    waypoint = geo.uniform_box(B, K, lo, hi, generator, rdt)
    H_BI_small = rayleigh((B, nb, L, Nl, Nb), generator, dtype)
    h_IU_small = rayleigh((B, L, K, Nl), generator, dtype)
    h_BU_small = rayleigh((B, nb, K, Nb), generator, dtype)
    return _p2_build(scn, bs_pos, irs_pos, user_pos, waypoint, H_BI_small, h_IU_small, h_BU_small)


def evolve_p2(scene: P2Scene, scn, generator: torch.Generator) -> P2Scene:
    """One slot: users move (random waypoint, user_speed_mps * slot_s meters), path losses and
    serving cells follow; small-scale fading Gauss-Markov with rho = scn.fading_correlation."""
    lo, hi = p2_area(scn)
    user_pos, waypoint = geo.random_waypoint_step(scene.user_pos, scene.waypoint,
                                                  scn.user_speed_mps * scn.slot_s, lo, hi, generator)
    rho = scn.fading_correlation
    H_BI_small = gauss_markov(scene.H_BI_small, rho, generator)
    h_IU_small = gauss_markov(scene.h_IU_small, rho, generator)
    h_BU_small = gauss_markov(scene.h_BU_small, rho, generator)
    return _p2_build(scn, scene.bs_pos, scene.irs_pos, user_pos, waypoint, H_BI_small, h_IU_small, h_BU_small)


# ============================================================================================
# P3
# ============================================================================================
@dataclass(frozen=True)
class P3Scene:
    """A batch of P3 scenes (contracts.md). G_BS (B,V,N,M), G_SS (B,V,V,N,N) with [v,w] mapping
    v's elements to w's (zero on the diagonal), h_SU (B,V,K,N), h_BU (B,K,M), user_region (B,K)
    long in [0, V]; bs_pos (B,2), surface_pos (B,V,2), user_pos (B,K,2)."""

    G_BS: torch.Tensor
    G_SS: torch.Tensor
    h_SU: torch.Tensor
    h_BU: torch.Tensor
    user_region: torch.Tensor
    bs_pos: torch.Tensor
    surface_pos: torch.Tensor
    user_pos: torch.Tensor
    d_BS: torch.Tensor  # (B, V)
    d_SS: torch.Tensor  # (B, V, V)
    d_SU: torch.Tensor  # (B, V, K)
    d_BU: torch.Tensor  # (B, K)
    los: tuple  # unit-power LoS parts (G_BS, G_SS, h_SU, h_BU)
    nlos: tuple  # unit-power NLoS parts, same order
    amps: tuple  # amplitude gains (B,V), (B,V,V), (B,V,K), (B,K)

    @property
    def num_envs(self) -> int:
        return self.G_BS.shape[0]


def p3_fixed_positions(scn, batch: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """BS at (0, varsigma/2); surface v a wall at x = (v+1) varsigma, centred at y = varsigma/2
    (project reading of the paper's inconsistent layout; docs/SCENARIOS.md)."""
    s = scn.spacing_m
    bs = torch.tensor([0.0, s / 2], dtype=dtype).expand(batch, 2).clone()
    xs = (torch.arange(scn.n_surfaces, dtype=dtype) + 1) * s
    surf = torch.stack((xs, torch.full_like(xs, s / 2)), -1).expand(batch, -1, -1).clone()
    return bs, surf


def p3_user_region(scn, user_pos: torch.Tensor) -> torch.Tensor:
    """Region i = number of walls left of the user (region 0 is in front of the first wall)."""
    walls = (torch.arange(scn.n_surfaces, dtype=user_pos.dtype) + 1) * scn.spacing_m
    return (user_pos[..., 0:1] > walls).sum(-1).long()


def _p3_combine(scn, los, nlos, amps):
    k = scn.rician_factor
    a_BS, a_SS, a_SU, a_BU = amps
    G_BS = a_BS[..., None, None] * rician(los[0], nlos[0], k)  # P3 eq. 3
    G_SS = a_SS[..., None, None] * rician(los[1], nlos[1], k)
    h_SU = a_SU[..., None] * rician(los[2], nlos[2], k)
    h_BU = a_BU[..., None] * rician(los[3], nlos[3], k)
    return G_BS, G_SS, h_SU, h_BU


def sample_p3(scn, num_envs: int, generator: torch.Generator, dtype: torch.dtype = torch.complex64) -> P3Scene:
    """Draw P3 scenes: users uniform in x in [0, user_area_len varsigma], y in [0, varsigma];
    BS ULA and surface ULAs along y; Rician links with UMi LOS path loss at carrier_ghz."""
    rdt = geo.real_dtype(dtype)
    B, M, N, K, V = num_envs, scn.n_bs_antennas, scn.n_elements, scn.n_users, scn.n_surfaces
    s, sp = scn.spacing_m, scn.antenna_spacing_wl
    bs_pos, surf_pos = p3_fixed_positions(scn, B, rdt)
    user_pos = geo.uniform_box(B, K, (0.0, 0.0), (scn.user_area_len * s, s), generator, rdt)
    y_axis = torch.tensor([0.0, 1.0], dtype=rdt)

    d_BS = geo.pairwise_distance(bs_pos[:, None], surf_pos)[:, 0]
    d_SS = geo.pairwise_distance(surf_pos, surf_pos)
    d_SU = geo.pairwise_distance(surf_pos, user_pos)
    d_BU = geo.pairwise_distance(bs_pos[:, None], user_pos)[:, 0]

    bs1 = bs_pos[:, None]
    sin_bs_surf = geo.direction_cosine(bs1, surf_pos, y_axis)[:, 0]  # (B, V)
    sin_surf_bs = geo.direction_cosine(surf_pos, bs1, y_axis)[..., 0]  # (B, V)
    sin_ss = geo.direction_cosine(surf_pos, surf_pos, y_axis)  # (B, V from, V to)
    sin_su = geo.direction_cosine(surf_pos, user_pos, y_axis)  # (B, V, K)
    sin_bu = geo.direction_cosine(bs1, user_pos, y_axis)[:, 0]  # (B, K)

    G_BS_los = ula_steering(sin_surf_bs, N, sp, dtype).unsqueeze(-1) * ula_steering(sin_bs_surf, M, sp, dtype).conj().unsqueeze(-2)
    a_out = ula_steering(sin_ss, N, sp, dtype)  # (B, v, w, N): departure from v toward w
    a_in = a_out.transpose(1, 2)  # [v, w] -> response at w toward v
    G_SS_los = a_in.unsqueeze(-1) * a_out.conj().unsqueeze(-2)  # (B, v, w, N_w, N_v)
    h_SU_los = ula_steering(sin_su, N, sp, dtype)
    h_BU_los = ula_steering(sin_bu, M, sp, dtype)
    los = (G_BS_los, G_SS_los, h_SU_los, h_BU_los)
    nlos = (rayleigh((B, V, N, M), generator, dtype), rayleigh((B, V, V, N, N), generator, dtype),
            rayleigh((B, V, K, N), generator, dtype), rayleigh((B, K, M), generator, dtype))
    off_diag = 1.0 - torch.eye(V, dtype=rdt)  # no surface -> itself link
    amps = (_amp(umi_los_gain(d_BS, scn.carrier_ghz)),
            _amp(umi_los_gain(d_SS, scn.carrier_ghz)) * off_diag,
            _amp(umi_los_gain(d_SU, scn.carrier_ghz)),
            _amp(umi_los_gain(d_BU, scn.carrier_ghz)))
    user_region = p3_user_region(scn, user_pos)
    if scn.wall_loss_db > 0:  # direct link through the walls in between (open; preset note)
        amps = amps[:3] + (amps[3] * 10.0 ** (-scn.wall_loss_db * user_region.to(rdt) / 20.0),)
    G_BS, G_SS, h_SU, h_BU = _p3_combine(scn, los, nlos, amps)
    return P3Scene(G_BS, G_SS, h_SU, h_BU, user_region, bs_pos, surf_pos, user_pos,
                   d_BS, d_SS, d_SU, d_BU, los, nlos, amps)


def evolve_p3(scene: P3Scene, scn, generator: torch.Generator) -> P3Scene:
    """One slot: NLoS parts Gauss-Markov with rho = scn.fading_correlation (1 = static, the
    preset's default: the MDP refines the configuration on a fixed channel)."""
    rho = scn.fading_correlation
    if rho >= 1.0:
        return scene
    nlos = tuple(gauss_markov(x, rho, generator) for x in scene.nlos)
    G_BS, G_SS, h_SU, h_BU = _p3_combine(scn, scene.los, nlos, scene.amps)
    return dataclasses.replace(scene, G_BS=G_BS, G_SS=G_SS, h_SU=h_SU, h_BU=h_BU, nlos=nlos)


# ============================================================================================
# P4
# ============================================================================================
@dataclass(frozen=True)
class P4Scene:
    """A batch of P4 statistical-CSI scenes (contracts.md). G_bar (B,L,N,M) and h_bar (B,L,K,N)
    unit-power LoS, beta_G (B,L), beta_h (B,L,K) path-loss power gains, kappa_G (B,L),
    kappa_h (B,L,K) linear Rician factors; positions 3-D: bs_pos (B,3), ris_pos (B,L,3),
    user_pos (B,K,3). Direct links are blocked (the paper's assumption)."""

    G_bar: torch.Tensor
    h_bar: torch.Tensor
    beta_G: torch.Tensor
    beta_h: torch.Tensor
    kappa_G: torch.Tensor
    kappa_h: torch.Tensor
    bs_pos: torch.Tensor
    ris_pos: torch.Tensor
    user_pos: torch.Tensor

    @property
    def num_envs(self) -> int:
        return self.G_bar.shape[0]


def p4_fixed_positions(scn, batch: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """BS at (0, 0, bs_height_m); RIS l on the arc of radius ris_distance_m at azimuths spread
    evenly over [-ris_spread_deg, +ris_spread_deg] (0 for one RIS), height ris_height_m."""
    L = scn.n_ris
    frac = torch.zeros(1, dtype=dtype) if L == 1 else torch.linspace(-1.0, 1.0, L, dtype=dtype)
    az = frac * math.radians(scn.ris_spread_deg)
    ris = torch.stack((scn.ris_distance_m * torch.cos(az), scn.ris_distance_m * torch.sin(az),
                       torch.full_like(az, scn.ris_height_m)), -1)
    bs = torch.tensor([0.0, 0.0, scn.bs_height_m], dtype=dtype)
    return bs.expand(batch, 3).clone(), ris.expand(batch, -1, -1).clone()


def sample_p4(scn, num_envs: int, generator: torch.Generator, dtype: torch.dtype = torch.complex64) -> P4Scene:
    """Draw P4 statistical CSI: users uniform in the preset's rectangle; BS ULA along y; each
    RIS a UPA in the y-z plane (rows along z, columns along y), so its LoS responses depend on
    the elevation and azimuth of the link, as in the paper."""
    rdt = geo.real_dtype(dtype)
    B, M, K, L = num_envs, scn.n_bs_antennas, scn.n_users, scn.n_ris
    sp = scn.antenna_spacing_wl
    bs_pos, ris_pos = p4_fixed_positions(scn, B, rdt)
    user_pos = geo.uniform_box(B, K, (scn.user_x_min_m, -scn.user_half_width_m, scn.user_height_m),
                               (scn.user_x_max_m, scn.user_half_width_m, scn.user_height_m), generator, rdt)
    y_axis = torch.tensor([0.0, 1.0, 0.0], dtype=rdt)
    z_axis = torch.tensor([0.0, 0.0, 1.0], dtype=rdt)
    bs1 = bs_pos[:, None]

    d_G = geo.pairwise_distance(bs1, ris_pos)[:, 0]  # (B, L)
    d_h = geo.pairwise_distance(ris_pos, user_pos)  # (B, L, K)
    a_bs = ula_steering(geo.direction_cosine(bs1, ris_pos, y_axis)[:, 0], M, sp, dtype)  # (B, L, M)
    a_ris_bs = upa_steering(geo.direction_cosine(ris_pos, bs1, z_axis)[..., 0],
                            geo.direction_cosine(ris_pos, bs1, y_axis)[..., 0],
                            scn.n_rows, scn.n_cols, sp, dtype)  # (B, L, N)
    G_bar = a_ris_bs.unsqueeze(-1) * a_bs.conj().unsqueeze(-2)  # (B, L, N, M)
    h_bar = upa_steering(geo.direction_cosine(ris_pos, user_pos, z_axis),
                         geo.direction_cosine(ris_pos, user_pos, y_axis),
                         scn.n_rows, scn.n_cols, sp, dtype)  # (B, L, K, N)
    c0 = db_to_linear(scn.c0_db)
    beta_G = c0 * d_G ** (-scn.pl_exp_bs_ris)  # C0 (d / 1 m)^-alpha
    beta_h = c0 * d_h ** (-scn.pl_exp_ris_user)
    kappa_G = torch.full_like(beta_G, db_to_linear(scn.rician_bs_ris_db))
    kappa_h = torch.full_like(beta_h, db_to_linear(scn.rician_ris_user_db))
    return P4Scene(G_bar, h_bar, beta_G, beta_h, kappa_G, kappa_h, bs_pos, ris_pos, user_pos)


def realize_p4(scene: P4Scene, num_draws: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte-Carlo channel draws from the statistical CSI (contracts.md):
    G_l = sqrt(beta_G) (sqrt(kappa/(1+kappa)) G_bar + sqrt(1/(1+kappa)) G_tilde), h likewise.
    Returns G (D, B, L, N, M) and h (D, B, L, K, N) for D = num_draws."""
    D = num_draws
    G_t = rayleigh((D,) + tuple(scene.G_bar.shape), generator, scene.G_bar.dtype)
    h_t = rayleigh((D,) + tuple(scene.h_bar.shape), generator, scene.h_bar.dtype)
    G = torch.sqrt(scene.beta_G)[..., None, None] * rician(scene.G_bar, G_t, scene.kappa_G[..., None, None])
    h = torch.sqrt(scene.beta_h)[..., None] * rician(scene.h_bar, h_t, scene.kappa_h[..., None])
    return G, h


SAMPLERS = {"p1": sample_p1, "p2": sample_p2, "p3": sample_p3, "p4": sample_p4}
EVOLVERS = {"p1": evolve_p1, "p2": evolve_p2, "p3": evolve_p3}
