"""P2: BSs competing for IRSs with mobile users (MDLBI), one agent per BS.

Agents ``bs0``..``bs{n_bs-1}``; each runs its own DDPG without information exchange, so
each gets only its own sum rate as reward and sees only what a BS can measure or overhear.

Observation of BS m (fixed size, although the paper's D_s varies with the number of users
|C_m| in the cell and IRSs |N_m|: we pad to all K users and all L IRSs and zero what the BS
cannot estimate; project layout), real parts then imaginary parts of each block:
  direct CSI   h_BU[m, k] for its own users (zero for users of other cells)   2 K N_b
  BS-IRS CSI   H_BI[m, l] for every IRS                                      2 L N_l N_b
  IRS-user CSI h_IU[l, k] for its own users (zero otherwise)                 2 L K N_l
  own-user mask (1 if user k is in cell m this slot)                         K
  overheard claims rho_-m: the other BSs' IRS claims of the previous slot    (n_bs - 1) L
Each CSI block is divided by its link's path-loss amplitude at the reference distance
``region_side_m`` / 2 (a constant of the preset), so entries are O(1).

Action of BS m: a dict of Boxes in [-1, 1] (the paper's tanh outputs; values outside are
rejected, not clipped):
  "W"     (2, N_b, K)  real / imaginary beamformers; only columns of its own users count;
                       scaled to the per-BS budget: W_m = sqrt(P_max) W_own / ||W_own||_F
                       (full power, project reading of eq. 2)
  "theta" (L, N_l)     phases pi * theta of every IRS (used only for IRSs it owns this slot)
  "assoc" (K, L)       association scores; own user k is helped by IRS argmax_l assoc[k, l]
                       if that score is > 0, else by none (the K x L matrix A_m, one IRS per
                       user); BS m claims exactly the IRSs its users are associated with
                       (the L-entry association vector of the paper = these claims)
Collision rule (``twin.multicell.resolve_claims``): an IRS claimed by two or more BSs in a
slot serves nobody in that slot (its reflected paths are zero for every claimant); an
IRS claimed by one BS serves that BS. Users move (random waypoint) and change cells.
Reward of BS m: its own sum rate R_m = sum_{k in C_m} log2(1 + SINR_k) (bit/s/Hz).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from twin import multicell as mc
from twin.channels import log_distance_gain
from twin.envs import validation as val
from twin.envs.base import Action, BatchedEnv, Obs, StepResult
from twin.errors import ConfigError
from twin.scene import P2Scene, evolve_p2, sample_p2


class P2Env(BatchedEnv):
    """B environments of the P2 scenario stepped together (see module docstring)."""

    name = "p2"

    def __init__(self, num_envs: int = 1, cfg: Any = None, seed: int | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.complex64) -> None:
        self._init_batch(num_envs, cfg, seed, device, dtype)
        c = self.cfg
        self.n_bs, self.Nb, self.L, self.Nl, self.K = c.n_bs, c.n_bs_antennas, c.n_irs, c.n_elements, c.n_users
        self.agent_ids = tuple(f"bs{m}" for m in range(self.n_bs))
        nb, Nb, L, Nl, K = self.n_bs, self.Nb, self.L, self.Nl, self.K
        self.obs_dim = 2 * K * Nb + 2 * L * Nl * Nb + 2 * L * K * Nl + K + (nb - 1) * L
        inf = np.float32(np.inf)
        obs_space = gym.spaces.Box(-inf, inf, shape=(self.obs_dim,), dtype=np.float32)
        self.observation_spaces = {a: obs_space for a in self.agent_ids}
        self.state_dim = nb * self.obs_dim
        self.state_space = gym.spaces.Box(-inf, inf, shape=(self.state_dim,), dtype=np.float32)
        act_space = gym.spaces.Dict({
            "W": gym.spaces.Box(-1.0, 1.0, shape=(2, Nb, K), dtype=np.float32),
            "theta": gym.spaces.Box(-1.0, 1.0, shape=(L, Nl), dtype=np.float32),
            "assoc": gym.spaces.Box(-1.0, 1.0, shape=(K, L), dtype=np.float32),
        })
        self.action_spaces = {a: act_space for a in self.agent_ids}
        d_ref = c.region_side_m / 2
        amp = lambda e: math.sqrt(float(log_distance_gain(torch.tensor(d_ref, dtype=torch.float64), c.pl_ref_db, e,
                                                          c.pl_ref_distance_m)))
        self._norm = {"BU": amp(c.pl_exp_bs_user), "BI": amp(c.pl_exp_bs_irs), "IU": amp(c.pl_exp_irs_user)}

    # ---- episode control -------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Obs:
        if seed is not None:
            self._gen.manual_seed(int(seed))
        self._load_scene(sample_p2(self.cfg, self.num_envs, self._gen, self.cdtype))
        self.prev_claims = torch.zeros(self.num_envs, self.n_bs, self.L, dtype=torch.bool, device=self.device)
        self.t = 0
        self._has_state = True
        return self._observe()

    def _load_scene(self, scene: P2Scene) -> None:
        self.scene = self._scene_on_device(scene, "H_BI")

    def set_scene(self, scene: P2Scene | None = None, **fields: Any) -> None:
        """Replace the scene (a whole ``P2Scene`` and/or named fields; ``user_cell`` included)."""
        self._load_scene(self._replaced_scene(scene, fields))

    # ---- observations ----------------------------------------------------------------------

    def _all_obs(self) -> torch.Tensor:
        """(B, n_bs, obs_dim) for every BS at once."""
        s, B, nb = self.scene, self.num_envs, self.n_bs
        own = (s.user_cell.unsqueeze(1) == torch.arange(nb, device=self.device).view(1, nb, 1))   # (B, nb, K)
        ownc = own.to(self.cdtype)
        direct = s.h_BU * ownc.unsqueeze(-1) / self._norm["BU"]                                  # (B, nb, K, Nb)
        bs_irs = s.H_BI / self._norm["BI"]                                                       # (B, nb, L, Nl, Nb)
        irs_user = s.h_IU.unsqueeze(1) * ownc[:, :, None, :, None] / self._norm["IU"]            # (B, nb, L, K, Nl)
        parts = []
        for z in (direct, bs_irs, irs_user):
            z = z.reshape(B, nb, -1)
            parts += [z.real, z.imag]
        # rho_-m: claims of the other BSs (in BS order, skipping m) from the previous slot.
        idx = torch.tensor([[j for j in range(nb) if j != m] for m in range(nb)], dtype=torch.long, device=self.device)
        others = self.prev_claims[:, idx].reshape(B, nb, -1) if nb > 1 else self.prev_claims[:, :0].reshape(B, nb, 0)
        parts += [own.to(self.rdtype), others.to(self.rdtype)]
        return torch.cat([p.to(torch.float32) for p in parts], dim=-1)

    def _observe(self) -> Obs:
        o = self._all_obs()
        self._obs = o
        return {a: o[:, m] for m, a in enumerate(self.agent_ids)}

    def local_observation(self, agent_id: str) -> torch.Tensor:
        if not self._has_state:
            raise ConfigError("local_observation: call reset() first")
        if agent_id not in self.agent_ids:
            raise ConfigError(f"agent_id: unknown agent {agent_id!r}; expected one of {list(self.agent_ids)}")
        return self._obs[:, self.agent_ids.index(agent_id)]

    def state(self) -> torch.Tensor:
        return self._obs.reshape(self.num_envs, -1)

    # ---- actions ---------------------------------------------------------------------------

    def sample_actions(self, generator: torch.Generator | None = None) -> Action:
        """Uniformly random valid batched actions (every entry inside the action spaces)."""
        B, dev, g = self.num_envs, self.device, generator
        u = lambda *s: 2.0 * torch.rand(B, *s, generator=g, device=dev) - 1.0
        return {a: {"W": u(2, self.Nb, self.K), "theta": u(self.L, self.Nl), "assoc": u(self.K, self.L)}
                for a in self.agent_ids}

    def decode_actions(self, actions: Action) -> dict[str, torch.Tensor]:
        """Validate and combine: W (B, n_bs, Nb, K) scaled, phi (B, L, Nl), user_irs (B, K), claims (B, n_bs, L)."""
        B, dev, s = self.num_envs, self.device, self.scene
        nb, Nb, L, Nl, K = self.n_bs, self.Nb, self.L, self.Nl, self.K
        val.check_agents(actions, self.agent_ids)
        Ws, thetas, assocs = [], [], []
        for a in self.agent_ids:
            act = val.check_fields(a, actions[a], ("W", "theta", "assoc"))
            w = val.float_field(a, "W", act["W"], (B, 2, Nb, K), dev, -1.0, 1.0).to(self.rdtype)
            Ws.append(torch.complex(w[:, 0], w[:, 1]))
            thetas.append(val.float_field(a, "theta", act["theta"], (B, L, Nl), dev, -1.0, 1.0).to(self.rdtype))
            assocs.append(val.float_field(a, "assoc", act["assoc"], (B, K, L), dev, -1.0, 1.0).to(self.rdtype))
        W = torch.stack(Ws, 1).to(self.cdtype)                                  # (B, nb, Nb, K)
        theta = torch.stack(thetas, 1).to(self.rdtype) * math.pi              # (B, nb, L, Nl)
        assoc = torch.stack(assocs, 1)                                         # (B, nb, K, L)
        own = (s.user_cell.unsqueeze(1) == torch.arange(nb, device=dev).view(1, nb, 1))   # (B, nb, K)
        # Per-BS budget: only own users' columns, scaled to P_max (eq. 2 with equality).
        W = W * own.unsqueeze(2).to(W.dtype)
        norm = torch.linalg.vector_norm(W.flatten(2), dim=-1)                 # (B, nb)
        scale = torch.where(norm > 0, math.sqrt(self.cfg.p_max_w) / norm.clamp_min(1e-30), torch.zeros_like(norm))
        W = W * scale[:, :, None, None].to(W.dtype)
        # Association of each user from its own BS's scores.
        bidx = torch.arange(B, device=dev).unsqueeze(-1).expand(B, K)
        kidx = torch.arange(K, device=dev).unsqueeze(0).expand(B, K)
        score = assoc[bidx, s.user_cell, kidx]                                  # (B, K, L)
        best, arg = score.max(-1)
        user_irs = torch.where(best > 0, arg, torch.full_like(arg, -1))
        claims = mc.claims_from_user_irs(user_irs, s.user_cell, nb, L)          # (B, nb, L)
        owner = mc.resolve_claims(claims)                                        # (B, L)
        # Phases of IRS l come from its owner this slot (irrelevant when unowned or collided).
        own_theta = theta.gather(1, owner.clamp(min=0)[:, None, :, None].expand(B, 1, L, Nl)).squeeze(1)
        phi = torch.polar(torch.ones_like(own_theta), own_theta).to(self.cdtype)
        return {"W": W, "phi": phi, "user_irs": user_irs, "claims": claims}

    # ---- step ------------------------------------------------------------------------------

    def step(self, actions: Action) -> StepResult:
        if not self._has_state:
            raise ConfigError("step: call reset() before the first step")
        a = self.decode_actions(actions)
        s, c = self.scene, self.cfg
        ev = mc.evaluate(s.H_BI, s.h_IU, s.h_BU, a["phi"], a["claims"], s.user_cell, a["user_irs"], a["W"], c.noise_w)
        cell_before = s.user_cell
        self.prev_claims = a["claims"]
        self._load_scene(evolve_p2(s, c, self._gen))
        self.t += 1
        obs = self._observe()
        B = self.num_envs
        per_bs = ev["bs_sum_rate_bps_hz"].to(torch.float32)
        rewards = {aid: per_bs[:, m] for m, aid in enumerate(self.agent_ids)}
        truncated = torch.full((B,), self.t >= c.episode_steps, dtype=torch.bool, device=self.device)
        info = {
            "sum_rate": ev["sum_rate_bps_hz"],
            "bs_sum_rate": ev["bs_sum_rate_bps_hz"],
            "rate": ev["rate_bps_hz"],
            "owner": ev["owner"],
            "collisions": ev["collided"].sum(-1),
            "claims": a["claims"],
            "user_irs": a["user_irs"],
            "user_cell": cell_before,
            "handovers": (self.scene.user_cell != cell_before).sum(-1),
            "bs_power_w": ev["bs_power_w"],
        }
        return StepResult(obs, rewards, torch.zeros(B, dtype=torch.bool, device=self.device), truncated, info)
