"""P4: joint user scheduling, BS precoding and distributed-RIS phases with statistical CSI.

Agents (MAPPO, P4 section IV-C): ``sched`` picks one codeword of the C(K, S) schedule
codebook (Discrete), ``bs0`` outputs the real and imaginary parts of W (Box (2, M, K)),
``ris0``..``ris{L-1}`` output N real phases each (Box (N,)). The environment is static for
given statistics (user positions, LoS parts, path loss, Rician factors): every step refines
the configuration; ``reset`` draws new statistics.

Action use (paper IV-C2/3): the *unscaled* W and the raw phases feed the next observation;
the reward uses W masked by the schedule and scaled to the power budget
(``W_s = sqrt(P_max) S(W) / ||S(W)||_F``, project reading: full power, the optimum of a
sum-rate objective) and the unit-modulus Phi = diag(e^{j theta}). Any finite action is valid
(the scaling and e^{j theta} make every finite value meaningful, as the paper's linear
outputs imply); NaN / inf, wrong shapes and out-of-range codeword indices are rejected.

Observations (the paper's formulas were lost; project design in its stated spirit: products
of statistical CSI with the current local actions, real and imaginary parts fed separately,
sizes independent of N and L). With the LoS effective channel of RIS l
``C_l = diag(a_l c_l) h_bar_l^H Phi_l G_bar_l`` (K x M) and ``H = sum_l C_l``, both
normalised by sqrt(P_max / sigma^2) (SNR amplitudes), and the elementwise compression
``f(z) = z / |z| * log(1 + |z|)`` (keeps the phase, puts every entry on one order of
magnitude):
  sched   f(H H^H / M) (K x K complex) ++ previous schedule mask (K)     -> 2K^2 + K
  bs0     f(H W)       (K x K complex) ++ previous schedule mask (K)     -> 2K^2 + K
  ris l   f(C_l W) ++ f(H W) (two K x K complex)                         -> 4K^2
State (paper: only the scheduling and BS observations): concatenation -> 4K^2 + 2K.

Reward (shared): ergodic sum-rate approximation (P4 eq. 11 via ``twin.statistical``),
optionally mixed with Jain's index of the users' average throughput so far in the episode:
``r = (1 - omega) R_sum + omega J`` (eq. 46 was lost; project form, omega = the preset's
``fairness_weight``; omega = 0 is the pure sum rate, omega = 1 only fairness, as stated).

Hardware in the loop (project extension): a PIN-diode board holds b-bit phases, so the RIS
daemon quantizes its continuous phases to the nearest point of the board's finest grid
(``twin.hil.ris_config_from_action``) and the twin steps with the latched phases
(:meth:`ris_action_from_configs`, theta_n = 2 pi idx_n / 2^b). P4's model is unit-modulus:
a board's OFF state has no counterpart, so the twin evaluates the latched phase of every
element whatever its ON/OFF bit (the safe pattern, all OFF at phase 0, reads as phase 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from twin import statistical as st
from twin.envs import validation as val
from twin.envs.base import Action, BatchedEnv, Obs, StepResult
from twin.errors import ActionError, ConfigError
from twin.scene import P4Scene, sample_p4
from twin.surface_config import SurfaceConfig


def compress(z: torch.Tensor) -> torch.Tensor:
    """f(z) = z / |z| * log(1 + |z|), elementwise; f(0) = 0."""
    mag = z.abs()
    return z * (torch.log1p(mag) / mag.clamp_min(1e-30))


def split(z: torch.Tensor) -> torch.Tensor:
    """(B, ...) complex -> (B, 2 * prod(...)) float32: all real parts, then all imaginary parts."""
    return torch.cat([z.real.flatten(1), z.imag.flatten(1)], dim=1).float()


class P4Env(BatchedEnv):
    """B environments of the P4 scenario stepped together (see module docstring)."""

    name = "p4"

    def __init__(self, num_envs: int = 1, cfg: Any = None, seed: int | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.complex64) -> None:
        self._init_batch(num_envs, cfg, seed, device, dtype)
        c = self.cfg
        self.M, self.K, self.L, self.N, self.S = c.n_bs_antennas, c.n_users, c.n_ris, c.n_elements, c.n_scheduled
        self.codebook = st.schedule_codebook(self.K, self.S).to(self.device)   # (C, K) bool
        self.ris_ids = tuple(f"ris{l}" for l in range(self.L))
        self.surface_ids = self.ris_ids           # agents with a board (hardware in the loop)
        self.surface_bits = 1                     # safe pattern's resolution before any board report
        self.agent_ids = ("sched", "bs0") + self.ris_ids
        K = self.K
        inf = np.float32(np.inf)
        self.observation_spaces = {
            "sched": gym.spaces.Box(-inf, inf, shape=(2 * K * K + K,), dtype=np.float32),
            "bs0": gym.spaces.Box(-inf, inf, shape=(2 * K * K + K,), dtype=np.float32),
            **{a: gym.spaces.Box(-inf, inf, shape=(4 * K * K,), dtype=np.float32) for a in self.ris_ids},
        }
        self.state_dim = 4 * K * K + 2 * K
        self.state_space = gym.spaces.Box(-inf, inf, shape=(self.state_dim,), dtype=np.float32)
        self.action_spaces = {
            "sched": gym.spaces.Discrete(self.codebook.shape[0]),
            "bs0": gym.spaces.Box(-inf, inf, shape=(2, self.M, K), dtype=np.float32),
            **{a: gym.spaces.Box(-inf, inf, shape=(self.N,), dtype=np.float32) for a in self.ris_ids},
        }

    # ---- episode control -------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Obs:
        if seed is not None:
            self._gen.manual_seed(int(seed))
        self._load_scene(sample_p4(self.cfg, self.num_envs, self._gen, self.cdtype))
        self._init_actions()
        self.t = 0
        self._has_state = True
        return self._observe()

    def _load_scene(self, scene: P4Scene) -> None:
        scene = self._scene_on_device(scene, "G_bar")
        self.scene = scene
        c_los, _ = st.rician_amplitudes(scene.beta_G.to(self.rdtype), scene.kappa_G.to(self.rdtype))   # (B, L)
        a_los, _ = st.rician_amplitudes(scene.beta_h.to(self.rdtype), scene.kappa_h.to(self.rdtype))   # (B, L, K)
        # Observation scale: SNR amplitude per unit-norm precoder at full power.
        self._los_amp = (a_los * c_los.unsqueeze(-1) * math.sqrt(self.cfg.p_max_w / self.cfg.noise_w)).to(self.cdtype)

    def set_scene(self, scene: P4Scene | None = None, **fields: torch.Tensor) -> Obs:
        """Replace the statistics (a whole ``P4Scene`` and/or named fields), keep the actions."""
        self._load_scene(self._replaced_scene(scene, fields))
        return self._observe()

    def _init_actions(self) -> None:
        """Actions of slot -1 (the first observation): theta = 0, W = MRT on the LoS effective
        channel (unit Frobenius norm), first codeword. The paper starts from the first BFS-AO
        iterate; callers with one can install it with :meth:`set_actions`."""
        B = self.num_envs
        self.theta = torch.zeros(B, self.L, self.N, dtype=self.rdtype, device=self.device)
        self.sched_idx = torch.zeros(B, dtype=torch.long, device=self.device)
        H = self._los_channels().sum(1)                                        # (B, K, M)
        W = H.conj().transpose(-1, -2)
        self.W_raw = W / torch.linalg.matrix_norm(W).clamp_min(1e-30)[:, None, None]
        self.rate_sum_so_far = torch.zeros(B, self.K, dtype=self.rdtype, device=self.device)

    def set_actions(self, W: torch.Tensor | None = None, theta: torch.Tensor | None = None,
                    schedule_idx: torch.Tensor | None = None) -> Obs:
        """Install the current configuration (e.g. a BFS-AO iterate) without a reward; returns obs."""
        if not self._has_state:
            raise ConfigError("set_actions: call reset() first")
        if W is not None:
            self.W_raw = W.to(self.device, self.cdtype).reshape(self.num_envs, self.M, self.K)
        if theta is not None:
            self.theta = theta.to(self.device, self.rdtype).reshape(self.num_envs, self.L, self.N)
        if schedule_idx is not None:
            self.sched_idx = schedule_idx.to(self.device).long().reshape(self.num_envs)
        return self._observe()

    # ---- observations ----------------------------------------------------------------------

    def _los_channels(self) -> torch.Tensor:
        """C_l (B, L, K, M) = diag(a c) h_bar^H Phi G_bar, in SNR-amplitude units."""
        s = self.scene
        phi = torch.polar(torch.ones_like(self.theta), self.theta).to(self.cdtype)
        C = torch.einsum("blkn,blnm->blkm", s.h_bar.conj() * phi.unsqueeze(-2), s.G_bar)
        return C * self._los_amp.unsqueeze(-1)

    def _all_obs(self) -> dict[str, torch.Tensor]:
        C = self._los_channels()                       # (B, L, K, M)
        H = C.sum(1)                                   # (B, K, M)
        HW = compress(H @ self.W_raw)                  # (B, K, K)
        mask = self.codebook[self.sched_idx].to(torch.float32)
        obs = {
            "sched": torch.cat([split(compress(H @ H.conj().transpose(-1, -2) / self.M)), mask], 1),
            "bs0": torch.cat([split(HW), mask], 1),
        }
        own = compress(C @ self.W_raw.unsqueeze(1))     # (B, L, K, K)
        hw = split(HW)
        for l, a in enumerate(self.ris_ids):
            obs[a] = torch.cat([split(own[:, l]), hw], 1)
        return obs

    def _observe(self) -> Obs:
        self._obs = self._all_obs()
        return dict(self._obs)

    def local_observation(self, agent_id: str) -> torch.Tensor:
        if not self._has_state:
            raise ConfigError("local_observation: call reset() first")
        if agent_id not in self.agent_ids:
            raise ConfigError(f"agent_id: unknown agent {agent_id!r}; expected one of {list(self.agent_ids)}")
        return self._obs[agent_id]

    def state(self) -> torch.Tensor:
        """Global observation (paper): the scheduling and BS observations, (B, 4K^2 + 2K)."""
        return torch.cat([self._obs["sched"], self._obs["bs0"]], 1)

    # ---- actions and step ------------------------------------------------------------------

    def sample_actions(self, generator: torch.Generator | None = None) -> Action:
        """Random valid batched actions: a uniform codeword, Gaussian W, uniform phases in [-pi, pi)."""
        B, dev, g = self.num_envs, self.device, generator
        return {"sched": torch.randint(0, self.codebook.shape[0], (B,), generator=g, device=dev),
                "bs0": torch.randn(B, 2, self.M, self.K, generator=g, device=dev),
                **{a: (2.0 * torch.rand(B, self.N, generator=g, device=dev) - 1.0) * math.pi for a in self.ris_ids}}

    def decode_actions(self, actions: Action) -> dict[str, torch.Tensor]:
        B, dev = self.num_envs, self.device
        val.check_agents(actions, self.agent_ids)
        idx = val.int_field("sched", "codeword", actions["sched"], (B,), 0, self.codebook.shape[0], dev)
        w = val.float_field("bs0", "W", actions["bs0"], (B, 2, self.M, self.K), dev).to(self.rdtype)
        theta = torch.stack([val.float_field(a, "theta", actions[a], (B, self.N), dev).to(self.rdtype)
                             for a in self.ris_ids], 1)
        return {"sched_idx": idx, "W_raw": torch.complex(w[:, 0], w[:, 1]).to(self.cdtype), "theta": theta.to(self.rdtype)}

    def ris_action_from_configs(self, configs: Sequence[SurfaceConfig]) -> torch.Tensor:
        """One RIS agent's batched action (B, N) float32: the phases the B boards report as latched."""
        if len(configs) != self.num_envs:
            raise ActionError(f"configs: expected {self.num_envs} SurfaceConfigs (one per environment), got {len(configs)}")
        for c in configs:
            if c.n_elements != self.N:
                raise ActionError(f"configs: a surface has {c.n_elements} elements, the scenario has N = {self.N}")
        theta = np.stack([c.phases_rad() for c in configs]).astype(np.float32)
        return torch.from_numpy(theta).to(self.device)

    def surface_action_from_configs(self, agent: str, configs: Sequence[SurfaceConfig], requested: Any = None):
        """Generic hardware-in-the-loop entry point (controller.twin_server); the phases are all
        a RIS agent decides, so the request adds nothing once the board has answered."""
        if agent not in self.ris_ids:
            raise ActionError(f"{agent}: not a RIS agent of P4 ({list(self.ris_ids)})")
        return self.ris_action_from_configs(configs)

    def scaled_precoder(self, W_raw: torch.Tensor, schedule: torch.Tensor) -> torch.Tensor:
        """W_s = sqrt(P_max) S(W) / ||S(W)||_F (zero if the scheduled columns are all zero)."""
        Ws = st.apply_schedule(W_raw, schedule)
        norm = torch.linalg.matrix_norm(Ws)
        scale = torch.where(norm > 0, math.sqrt(self.cfg.p_max_w) / norm.clamp_min(1e-30), torch.zeros_like(norm))
        return Ws * scale[:, None, None].to(Ws.dtype)

    def evaluate(self, W_raw: torch.Tensor, theta: torch.Tensor, sched_idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-user ergodic-rate approximation (B, K) for a configuration (no state change)."""
        s, c = self.scene, self.cfg
        schedule = self.codebook[sched_idx]
        W = self.scaled_precoder(W_raw, schedule)
        phi = torch.polar(torch.ones_like(theta), theta).to(self.cdtype)
        rate = st.ergodic_rate_approx(s.G_bar, s.beta_G, s.kappa_G, s.h_bar, s.beta_h, s.kappa_h, phi, W, c.noise_w)
        return {"rate": rate.to(self.rdtype), "schedule": schedule, "W": W}

    def step(self, actions: Action) -> StepResult:
        if not self._has_state:
            raise ConfigError("step: call reset() before the first step")
        a = self.decode_actions(actions)
        ev = self.evaluate(a["W_raw"], a["theta"], a["sched_idx"])
        rate = ev["rate"]
        sum_rate = rate.sum(-1)
        self.rate_sum_so_far = self.rate_sum_so_far + rate
        jain = st.jain_index(self.rate_sum_so_far)
        w = self.cfg.fairness_weight
        reward = ((1.0 - w) * sum_rate + w * jain).float()
        self.W_raw, self.theta, self.sched_idx = a["W_raw"], a["theta"], a["sched_idx"]
        self.t += 1
        obs = self._observe()
        B = self.num_envs
        truncated = torch.full((B,), self.t >= self.cfg.episode_steps, dtype=torch.bool, device=self.device)
        info = {"sum_rate": sum_rate, "rate": rate, "jain": jain, "schedule": ev["schedule"],
                "tx_power_w": ev["W"].abs().square().sum((-2, -1)).to(self.rdtype)}
        return StepResult(obs, {a_id: reward for a_id in self.agent_ids},
                          torch.zeros(B, dtype=torch.bool, device=self.device), truncated, info)
