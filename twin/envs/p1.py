"""P1: cooperative energy-harvesting IRSs and one BS as a batched multi-agent MDP.

Agents: ``bs0`` (transmit beamformers) and ``irs0``..``irs{L-1}`` (hybrid action: phase
resolution b_l, phase indices on the b_l-bit grid, ON/OFF mask). One slot per step:

1. validate every action (``ActionError`` naming agent and field; nothing is clipped: the
   paper handles power and energy violations through reward penalties, eq. 19);
2. received signal with the chosen configuration: effective channel (eq. 1), SINR (eq. 4),
   rates (eq. 5), transmit power P_k = ||v_k||^2 (10a, project reading), IRS power (eqs. 7-8);
3. reward (eq. 19), the same for every agent (cooperative MDP):
       r = sum_k R_k + xi1 sum_k min(R_k - R_req_k, 0) + xi2 min(P_max - sum_k P_k, 0)
           + xi3 sum_l min(E_l - c_l - E_min, 0)
   with the power term divided by P_max (the preset's reading of xi2: the excess in units of
   P_max, so one weight fits every P_max from 5 to 30 dBm).
   The energy term is evaluated on the *requested* post-spend level E_l(t) - c_l(t): the
   clamped level of eq. 9 never drops below E_min, so the printed term could never fire
   (project reading, see docs/ENVIRONMENTS.md);
4. energy buffer (eq. 9) with Poisson arrivals, then the channels evolve one slot
   (``twin.scene.evolve_p1``: Gauss-Markov fading, positions fixed within an episode);
5. observations of slot t+1: IRS l (eq. 11) [exp(-d_lk/d_l0) f_k(R_k,t)]_k ++ [E_l,t+1],
   f_k = 1 iff R_k > R_req_k (strict, eq. 12); BS (eq. 13) [P_k,t]_k; global state (eq. 14)
   = all IRS observations then the BS observation.
   With ``cfg.observation == "csi"`` (project extension, default "paper") every observation
   also carries the agent's local channel features of slot t+1 (``_irs_csi`` / ``_bs_csi``).

Episodes last ``cfg.episode_steps`` slots for every environment of the batch (truncation, no
termination); ``reset`` draws new geometry and fading.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from twin import energy, surfaces
from twin.envs.base import Action, BatchedEnv, Obs, StepResult
from twin.envs.spaces import IRSActionSpace
from twin.envs import validation as val
from twin.errors import ActionError, ConfigError
from twin.signal import p1_metrics
from twin.scenarios import get_scenario
from twin.scene import P1Scene, evolve_p1, sample_p1
from twin.surface_config import SurfaceConfig


# One worker thread per process for the slot draws and channel evolution of every P1
# environment (a job at a time; see P1Env.step). Made on first use and again in a forked child,
# where the parent's thread does not exist. Envs stepped from several Python threads at once
# share it (their jobs queue); they should not use this path with different thread counts.
_WORKER: tuple[int, ThreadPoolExecutor] | None = None


def _worker() -> ThreadPoolExecutor:
    global _WORKER
    if _WORKER is None or _WORKER[0] != os.getpid():
        _WORKER = (os.getpid(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="ristwin-p1-evolve"))
    return _WORKER[1]


class P1Env(BatchedEnv):
    """B environments of the P1 scenario stepped together (see module docstring)."""

    name = "p1"

    def __init__(self, num_envs: int = 1, cfg: Any = None, seed: int | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.complex64) -> None:
        if int(num_envs) < 1:
            raise ConfigError(f"num_envs: need at least 1 environment, got {num_envs}")
        self.cfg = get_scenario("p1") if cfg is None else cfg
        c = self.cfg
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.cdtype = dtype
        self.rdtype = torch.float64 if dtype == torch.complex128 else torch.float32
        self.M, self.K, self.L, self.N = c.n_bs_antennas, c.n_users, c.n_irs, c.n_elements
        self.bit_choices = tuple(sorted(int(b) for b in c.resolutions))
        if self.bit_choices != tuple(range(self.bit_choices[0], self.bit_choices[-1] + 1)):
            raise ConfigError(f"resolutions: the resolution set must be contiguous (e.g. 1,2,3), got {c.resolutions}")
        self.power_table = surfaces.power_table({b: c.element_power_w(b) for b in self.bit_choices})
        self._mu = self.power_table.to(device=self.device, dtype=self.rdtype)
        self.irs_ids = tuple(f"irs{l}" for l in range(self.L))
        self.agent_ids = ("bs0",) + self.irs_ids
        self._build_spaces()
        self._gen = torch.Generator(device=self.device)
        self._gen.manual_seed(0 if seed is None else int(seed))
        self.t = 0
        self._has_state = False

    # ---- spaces ----------------------------------------------------------------------------

    def _build_spaces(self) -> None:
        c, K, L, N, M = self.cfg, self.K, self.L, self.N, self.M
        self.v_bound = float(np.sqrt(c.p_max_w))  # |Re v|, |Im v| <= sqrt(P_max) per entry
        # The check allows float rounding slack so an actor that saturates at the float32 Box
        # bound (or at sqrt(P_max) in float64) is never rejected for the last ulp.
        self._v_check = self.v_bound * (1.0 + 1e-6)
        irs_low = np.zeros(K + 1, np.float32)
        irs_high = np.ones(K + 1, np.float32)
        irs_low[K], irs_high[K] = c.energy_min_units, c.energy_max_units
        # Largest ||v_k||^2 inside the box: 2 M entries of sqrt(P_max)^2 each.
        p_high = np.float32(2 * M * c.p_max_w * (1 + 1e-5))
        bs_low, bs_high = np.zeros(K, np.float32), np.full(K, p_high, np.float32)
        self.csi = c.observation == "csi"
        if self.csi:  # appended features: phasors in [-1, 1], ratios in [0, 1], log10 SNR in [-5, 5]
            irs_low = np.concatenate([irs_low, -np.ones(2 * K * N, np.float32), np.zeros(K, np.float32)])
            irs_high = np.concatenate([irs_high, np.ones(2 * K * N + K, np.float32)])
            bs_low = np.concatenate([bs_low, -np.ones(2 * K * M, np.float32), np.full(K, -5.0, np.float32)])
            bs_high = np.concatenate([bs_high, np.ones(2 * K * M, np.float32), np.full(K, 5.0, np.float32)])
        irs_obs = gym.spaces.Box(irs_low, irs_high, dtype=np.float32)
        bs_obs = gym.spaces.Box(bs_low, bs_high, dtype=np.float32)
        self.observation_spaces = {"bs0": bs_obs, **{a: irs_obs for a in self.irs_ids}}
        self.state_space = gym.spaces.Box(
            np.concatenate([irs_low] * L + [bs_low]), np.concatenate([irs_high] * L + [bs_high]), dtype=np.float32)
        self.state_dim = L * irs_low.size + bs_low.size
        bs_act = gym.spaces.Dict({"V": gym.spaces.Box(-self.v_bound, self.v_bound, shape=(2, M, K), dtype=np.float32)})
        irs_act = IRSActionSpace(N, self.bit_choices)
        self.action_spaces = {"bs0": bs_act, **{a: irs_act for a in self.irs_ids}}

    # ---- episode control -------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Obs:
        if seed is not None:
            self._gen.manual_seed(int(seed))
        c, B = self.cfg, self.num_envs
        self._load_scene(sample_p1(c, B, self._gen, self.cdtype))
        self.r_req = self._draw_rate_requirements()
        # E_l(0) is open in the paper: the preset names it (energy_init_units).
        self.energy = torch.full((B, self.L), float(c.energy_init_units), dtype=self.rdtype, device=self.device)
        self.prev_rate = torch.zeros(B, self.K, dtype=self.rdtype, device=self.device)   # R_k,t-1 (none yet)
        self.prev_power = torch.zeros(B, self.K, dtype=self.rdtype, device=self.device)  # P_k,t-1 (BS silent)
        self.t = 0
        self._has_state = True
        return self._observe()

    def _load_scene(self, scene: P1Scene) -> None:
        if scene.H_BR.device != self.device:
            scene = P1Scene(*(getattr(scene, f.name).to(self.device) for f in dataclasses.fields(scene)))
        self.scene = scene
        if getattr(self, "_obs_weight_of", None) is not scene.d_RU:  # positions fixed within an episode
            self._obs_weight_of = scene.d_RU
            self.irs_user_dist = scene.d_RU.to(self.rdtype)  # (B, L, K), for eq. 11
            self._obs_weight = torch.exp(-self.irs_user_dist / self.cfg.d_l0_m)  # exp(-d_lk/d_l0)

    def _draw_rate_requirements(self) -> torch.Tensor:
        """R_req_k(t) (B, K): fixed, or U[(1-s) R, (1+s) R] per slot (the preset's reading)."""
        c, B = self.cfg, self.num_envs
        if c.rate_req_spread == 0.0:
            return torch.full((B, self.K), c.rate_req_bps_hz, dtype=self.rdtype, device=self.device)
        u = torch.rand(B, self.K, generator=self._gen, dtype=self.rdtype, device=self.device)
        return c.rate_req_bps_hz * (1.0 + c.rate_req_spread * (2.0 * u - 1.0))

    def set_scene(self, scene: P1Scene | None = None, **fields: torch.Tensor) -> None:
        """Replace the scene (imported or shared channels, tests): a whole ``P1Scene`` and/or
        named fields of it (``H_BR=...``), plus ``r_req`` (B, K). Distances are recomputed
        from positions when positions are given."""
        if not self._has_state:
            raise ConfigError("set_scene: call reset() first")
        new = self.scene if scene is None else scene
        r_req = fields.pop("r_req", None)
        names = {f.name for f in dataclasses.fields(P1Scene)}
        for key in fields:
            if key not in names:
                raise ConfigError(f"{key}: not a field of P1Scene ({sorted(names)})")
        if fields:
            new = dataclasses.replace(new, **fields)
        if "irs_pos" in fields or "user_pos" in fields:
            dist = lambda a, b: torch.linalg.vector_norm(a.unsqueeze(-2) - b.unsqueeze(-3), dim=-1)
            new = dataclasses.replace(new, d_RU=dist(new.irs_pos, new.user_pos),
                                      d_BR=dist(new.bs_pos.unsqueeze(1), new.irs_pos)[:, 0],
                                      d_BU=dist(new.bs_pos.unsqueeze(1), new.user_pos)[:, 0])
        if new.H_BR.shape[0] != self.num_envs:
            raise ConfigError(f"scene: has {new.H_BR.shape[0]} environments, this batch has {self.num_envs}")
        self._load_scene(new)
        if r_req is not None:
            self.r_req = torch.as_tensor(r_req, dtype=self.rdtype, device=self.device).expand(self.num_envs, self.K).clone()

    # ---- observations ----------------------------------------------------------------------

    def _irs_obs_all(self) -> torch.Tensor:
        """(B, L, K+1): eq. 11 for every IRS (then the CSI features when ``csi``)."""
        satisfied = (self.prev_rate > self.r_req).to(self.rdtype)               # f_k (eq. 12)
        weight = self._obs_weight                                                   # exp(-d_lk/d_l0), cached
        parts = [weight * satisfied.unsqueeze(1), self.energy.unsqueeze(-1)]
        if self.csi:
            parts.append(self._csi()[0])
        return torch.cat(parts, dim=-1).float()

    def _bs_obs(self) -> torch.Tensor:
        """(B, K): eq. 13 (then the CSI features when ``csi``)."""
        if not self.csi:
            return self.prev_power.float()
        return torch.cat([self.prev_power, self._csi()[1]], dim=-1).float()

    def _csi(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Local channel features of the current scene (project extension, cached per scene).

        IRS l, (B, L, 2KN + K): with the BS beaming at user k along its direct channel
        (MRT, v_k = h_BU,k / ||h_BU,k||), element n adds q_lkn phi_ln / ||h_BU,k|| to the
        direct amplitude ||h_BU,k||, q_lkn = conj(h_RU,lkn) (H_BR,ln . h_BU,k) (eq. 1).
        Features: the phasors q/|q| (real parts then imaginary parts, k-major), so phi_ln =
        conj(q/|q|) aligns element n for user k; and per user rho/(1+rho), rho =
        sum_n |q_lkn| / ||h_BU,k||^2, the amplitude the aligned IRS adds relative to the
        direct path. What an IRS learns from a cascaded-channel estimate of its own elements.
        BS, (B, 2KM + K): the direct channels' directions h_BU,k/||h_BU,k|| (real, imag)
        and log10 of the direct SNR P_max ||h_BU,k||^2 / sigma^2, clamped to [-5, 5].
        """
        s = self.scene
        if getattr(self, "_csi_of", None) is s:
            return self._csi_val
        B, L, K = self.num_envs, self.L, self.K
        hb = s.h_BU                                                                  # (B, K, M)
        q = s.h_RU.conj() * torch.einsum("blnm,bkm->blkn", s.H_BR, hb)              # (B, L, K, N)
        mag = q.abs()
        ph = q / mag.clamp_min(torch.finfo(mag.dtype).tiny)
        g2 = hb.abs().square().sum(-1)                                               # (B, K)
        rho = mag.sum(-1) / g2.unsqueeze(1).clamp_min(torch.finfo(mag.dtype).tiny)  # (B, L, K)
        irs = torch.cat([ph.real.reshape(B, L, -1), ph.imag.reshape(B, L, -1), rho / (1.0 + rho)], -1)
        d = hb / g2.sqrt().unsqueeze(-1).clamp_min(torch.finfo(mag.dtype).tiny)
        snr = torch.log10((self.cfg.p_max_w * g2 / self.cfg.noise_w).clamp_min(1e-30)).clamp(-5.0, 5.0)
        bs = torch.cat([d.real.reshape(B, -1), d.imag.reshape(B, -1), snr], -1)
        self._csi_of, self._csi_val = s, (irs.to(self.rdtype), bs.to(self.rdtype))
        return self._csi_val

    def _observe(self) -> Obs:
        irs = self._irs_obs_all()
        obs = {"bs0": self._bs_obs()}
        for l, a in enumerate(self.irs_ids):
            obs[a] = irs[:, l]
        return obs

    def local_observation(self, agent_id: str) -> torch.Tensor:
        """(B, obs_dim) of one agent, identical to its entry of the last returned obs."""
        if not self._has_state:
            raise ConfigError("local_observation: call reset() first")
        if agent_id == "bs0":
            return self._bs_obs()
        if agent_id in self.irs_ids:
            return self._irs_obs_all()[:, self.irs_ids.index(agent_id)]
        raise ConfigError(f"agent_id: unknown agent {agent_id!r}; expected one of {list(self.agent_ids)}")

    def state(self) -> torch.Tensor:
        """Global state eq. 14: IRS observations irs0..irs{L-1} then the BS's, (B, state_dim)."""
        irs = self._irs_obs_all().reshape(self.num_envs, -1)
        return torch.cat([irs, self._bs_obs()], dim=-1)

    # ---- actions ---------------------------------------------------------------------------

    def decode_actions(self, actions: Action) -> dict[str, torch.Tensor]:
        """Validate and stack: V (B,M,K) complex, bits (B,L), phase_idx (B,L,N), on (B,L,N).

        Fast path: per-agent shape / dtype checks, then ONE fused range check over all agents;
        only when it fails do the per-field checks run, to name the agent and field.
        """
        B, M, K, N, dev = self.num_envs, self.M, self.K, self.N, self.device
        val.check_agents(actions, self.agent_ids)
        bs = val.check_fields("bs0", actions["bs0"], ("V",))
        v = val.structural("bs0", "V", bs["V"], (B, 2, M, K), "float", dev)
        bits, idx, on = [], [], []
        for a in self.irs_ids:
            act = val.check_fields(a, actions[a], ("bits", "phase_idx", "on"))
            bits.append(val.structural(a, "bits", act["bits"], (B,), "int", dev))
            idx.append(val.structural(a, "phase_idx", act["phase_idx"], (B, N), "int", dev))
            on.append(val.structural(a, "on", act["on"], (B, N), "mask", dev))
        bits_t, idx_t, on_t = torch.stack(bits, 1).long(), torch.stack(idx, 1).long(), torch.stack(on, 1)
        lo, hi = self.bit_choices[0], self.bit_choices[-1]
        bad = ~(v.abs() <= self._v_check).all()                  # NaN compares False: caught too
        bad |= ((bits_t < lo) | (bits_t > hi)).any()
        # 0 <= idx < 2^b  <=>  idx >> b == 0 (a negative idx stays negative): one op for both bounds.
        bad |= (idx_t >> bits_t.clamp(lo, hi).unsqueeze(-1)).any()
        if on_t.dtype != torch.bool:
            bad |= ((on_t != 0) & (on_t != 1)).any()
        if bool(bad):
            self._diagnose(actions)
        V = torch.complex(v[:, 0].to(self.rdtype), v[:, 1].to(self.rdtype))
        return {"V": V, "bits": bits_t, "phase_idx": idx_t, "on": on_t.bool()}

    def _diagnose(self, actions: Action) -> None:
        """Field-by-field checks that raise ActionError naming the first bad agent and field."""
        B, M, K, N, dev = self.num_envs, self.M, self.K, self.N, self.device
        val.float_field("bs0", "V", actions["bs0"]["V"], (B, 2, M, K), dev, -self._v_check, self._v_check)
        lo, hi = self.bit_choices[0], self.bit_choices[-1] + 1
        for a in self.irs_ids:
            act = actions[a]
            b = val.int_field(a, "bits", act["bits"], (B,), lo, hi, dev)
            val.int_field(a, "phase_idx", act["phase_idx"], (B, N), 0, (1 << b).unsqueeze(-1), dev)
            val.bool_field(a, "on", act["on"], (B, N), dev)
        raise AssertionError("fused action check failed but no field check did")  # a bug, not user input

    def sample_actions(self, generator: torch.Generator | None = None) -> Action:
        """Uniformly random valid batched actions (every entry inside the action spaces)."""
        B, dev, g = self.num_envs, self.device, generator
        V = (2.0 * torch.rand(B, 2, self.M, self.K, generator=g, device=dev) - 1.0) * self.v_bound
        acts: dict = {"bs0": {"V": V.float()}}
        lo, hi = self.bit_choices[0], self.bit_choices[-1]
        for a in self.irs_ids:
            bits = torch.randint(lo, hi + 1, (B,), generator=g, device=dev)
            idx = torch.randint(0, 1 << hi, (B, self.N), generator=g, device=dev) % (1 << bits).unsqueeze(-1)
            on = torch.rand(B, self.N, generator=g, device=dev) < 0.5
            acts[a] = {"bits": bits, "phase_idx": idx, "on": on}
        return acts

    def irs_action_from_configs(self, configs: Sequence[SurfaceConfig]) -> dict[str, torch.Tensor]:
        """One IRS agent's batched action from B SurfaceConfigs (what the boards report as applied)."""
        if len(configs) != self.num_envs:
            raise ActionError(f"configs: expected {self.num_envs} SurfaceConfigs (one per environment), got {len(configs)}")
        for c in configs:
            if c.n_elements != self.N:
                raise ActionError(f"configs: a surface has {c.n_elements} elements, the scenario has N = {self.N}")
            if c.bits not in self.bit_choices:
                raise ActionError(f"configs.bits: resolution {c.bits} not in the scenario's set {list(self.bit_choices)}")
        act = surfaces.configs_to_action(configs)
        return {k: v.to(self.device) for k, v in act.items()}

    # ---- step ------------------------------------------------------------------------------

    def step(self, actions: Action) -> StepResult:
        if not self._has_state:
            raise ConfigError("step: call reset() before the first step")
        c = self.cfg
        a = self.decode_actions(actions)
        # The slot's random draws and the channel evolution (arrivals, then the Gauss-Markov
        # slot) do not depend on this slot's physics, and evolve_p1 leaves the current scene
        # untouched. With two or more torch threads and a large batch they run on a second
        # thread WHILE the physics runs, and the step waits for both: the same generator draws
        # the same numbers in the same order, so trajectories are identical to the serial path.
        # Both sides keep to one intra-op thread meanwhile (one core each).
        parallel = self._evolve_in_parallel()
        if parallel:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            pending = _worker().submit(self._draw_and_evolve)
        try:
            out = self._physics(a)
        finally:
            if parallel:
                try:
                    arrivals, scene = pending.result()
                finally:
                    torch.set_num_threads(threads)
        if not parallel:
            arrivals = self._draw_arrivals()
        self.energy = energy.step_buffer(self.energy, out["consumed"], arrivals, c.energy_min_units, c.energy_max_units)  # eq. 9
        self.prev_rate = out["rate"]
        self.prev_power = out["tx_power_k"]
        self._load_scene(scene if parallel else evolve_p1(self.scene, c, self._gen))
        if c.rate_req_spread > 0.0:
            self.r_req = self._draw_rate_requirements()
        self.t += 1
        obs = self._observe()
        r = out["reward"].float()
        rewards = {a_id: r for a_id in self.agent_ids}
        B = self.num_envs
        truncated = torch.full((B,), self.t >= c.episode_steps, dtype=torch.bool, device=self.device)
        terminated = torch.zeros(B, dtype=torch.bool, device=self.device)
        info = {
            "sum_rate": out["sum_rate"],
            "rate": out["rate"],
            "satisfied": out["satisfied"].sum(-1),
            "tx_power_w": out["tx_power"],
            "irs_power_w": out["irs_power_l"].sum(-1),
            "irs_power_l_w": out["irs_power_l"],
            "energy": self.energy,
            "pen_rate": out["pen_rate"],
            "pen_power": out["pen_power"],
            "pen_energy": out["pen_energy"],
        }
        return StepResult(obs, rewards, terminated, truncated, info)

    # A slot's fading draw is ~360k normals at B = 1024 (~1.3 ms on torch's serial CPU
    # generator) plus ~0.5 ms of channel updates; below this many normals the hand-off to the
    # worker thread costs more than it saves (B = 1 for the controller stays serial).
    parallel_min_normals = 65536

    def _evolve_in_parallel(self) -> bool:
        s = self.scene
        normals = 2 * (s.H_BR_nlos.numel() + s.h_RU_nlos.numel() + s.h_BU_nlos.numel())
        return (self.device.type == "cpu" and self.cfg.fading_correlation < 1.0
                and torch.get_num_threads() >= 2 and normals >= self.parallel_min_normals)

    def _draw_arrivals(self) -> torch.Tensor:
        """Poisson arrivals a_l(t) of the slot, from ``self._gen``."""
        c = self.cfg
        return energy.harvest(c.energy_arrival_mean_units, (self.num_envs, self.L), self._gen, self.rdtype, self.device)

    def _draw_and_evolve(self) -> tuple[torch.Tensor, P1Scene]:
        """Worker job of :meth:`step`: the arrivals, then the next slot's scene, in the serial order."""
        torch.set_num_threads(1)  # this worker thread's own ops: one thread (the step restores the count)
        return self._draw_arrivals(), evolve_p1(self.scene, self.cfg, self._gen)

    def _physics(self, a: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rates, powers and the eq. 19 reward for the current slot (no state change)."""
        c, s = self.cfg, self.scene
        # eqs. 2, 1, 4-5, (10a), 7 in one call: one fused C pass per environment on CPU (twin/kernels)
        rate, p_k, p_irs = p1_metrics(s.H_BR, s.h_RU, s.h_BU, a["bits"], a["phase_idx"], a["on"], a["V"],
                                      c.noise_w, self._mu)
        rate, p_k, p_irs = rate.to(self.rdtype), p_k.to(self.rdtype), p_irs.to(self.rdtype)
        consumed = energy.consumption_units(p_irs, c.slot_s, c.energy_unit_j)
        pen_rate = torch.clamp(rate - self.r_req, max=0.0).sum(-1)                              # eq. 19 part 2
        p_tot = p_k.sum(-1)
        pen_power = torch.clamp(c.p_max_w - p_tot, max=0.0) / c.p_max_w                        # part 3, in units of P_max
        pen_energy = energy.energy_deficit(self.energy, consumed, c.energy_min_units).sum(-1)              # part 4
        sum_rate = rate.sum(-1)
        reward = sum_rate + c.xi_rate * pen_rate + c.xi_power * pen_power + c.xi_energy * pen_energy
        return {"rate": rate, "sum_rate": sum_rate, "tx_power_k": p_k, "tx_power": p_tot,
                "irs_power_l": p_irs, "consumed": consumed,
                "satisfied": rate > self.r_req, "pen_rate": pen_rate, "pen_power": pen_power,
                "pen_energy": pen_energy, "reward": reward}
