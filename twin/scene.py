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

    @property
    def num_envs(self) -> int:
        return self.H_BR.shape[0]

    @property
    def distances(self) -> dict[str, torch.Tensor]:
        return {"BR": self.d_BR, "RU": self.d_RU, "BU": self.d_BU}

    def index(self, i) -> "P1Scene":
        """The sub-batch ``i`` (an int keeps a batch axis of 1)."""
        sl = slice(i, i + 1) if isinstance(i, int) else i
        return dataclasses.replace(self, **{f.name: getattr(self, f.name)[sl] for f in dataclasses.fields(self)})


def _p1_channels(scn, H_BR_los, h_RU_los, H_BR_nlos, h_RU_nlos, h_BU_nlos, amp_BR, amp_RU, amp_BU):
    k = scn.rician_factor
    H_BR = amp_BR[..., None, None] * rician(H_BR_los, H_BR_nlos, k)  # P1 eq. 34
    h_RU = amp_RU[..., None] * rician(h_RU_los, h_RU_nlos, k)
    h_BU = amp_BU[..., None] * h_BU_nlos  # Rayleigh direct link
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
    amp_BU = _amp(log_distance_gain(d_BU, scn.pl_ref_db, scn.pl_exp_bs_user, scn.pl_ref_distance_m))

    H_BR, h_RU, h_BU = _p1_channels(scn, H_BR_los, h_RU_los, H_BR_nlos, h_RU_nlos, h_BU_nlos, amp_BR, amp_RU, amp_BU)
    return P1Scene(H_BR, h_RU, h_BU, bs_pos, irs_pos, user_pos, d_BR, d_RU, d_BU,
                   H_BR_los, h_RU_los, H_BR_nlos, h_RU_nlos, h_BU_nlos, amp_BR, amp_RU, amp_BU)


def evolve_p1(scene: P1Scene, scn, generator: torch.Generator) -> P1Scene:
    """One slot: positions (hence LoS and path loss) fixed within an episode, NLoS and
    Rayleigh parts Gauss-Markov with rho = scn.fading_correlation (open in P1; see preset)."""
    rho = scn.fading_correlation
    H_BR_nlos = gauss_markov(scene.H_BR_nlos, rho, generator)
    h_RU_nlos = gauss_markov(scene.h_RU_nlos, rho, generator)
    h_BU_nlos = gauss_markov(scene.h_BU_nlos, rho, generator)
    H_BR, h_RU, h_BU = _p1_channels(scn, scene.H_BR_los, scene.h_RU_los, H_BR_nlos, h_RU_nlos, h_BU_nlos,
                                    scene.amp_BR, scene.amp_RU, scene.amp_BU)
    return dataclasses.replace(scene, H_BR=H_BR, h_RU=h_RU, h_BU=h_BU,
                               H_BR_nlos=H_BR_nlos, h_RU_nlos=h_RU_nlos, h_BU_nlos=h_BU_nlos)
