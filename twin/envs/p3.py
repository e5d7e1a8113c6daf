"""P3: multi-hop energy-splitting STAR-RISs and a BS maximizing energy efficiency (MAGAR).

Agents: ``star0``..``star{V-1}`` (one per STAR-RIS) and ``bs0``. The paper's actions are
increments: +-Delta on beta_R and theta_R of an element, the +-pi/2 choice, ON/OFF (STAR-RIS)
and +-Delta on the real / imaginary part of a beamformer entry (BS). Tractable discrete
action set (project choice): each agent picks ONE increment per slot, so

  star v: Discrete(6N + 1); a = 6n + op for element n with op
          0: beta_R += Delta_beta   1: beta_R -= Delta_beta
          2: theta_R += Delta_theta 3: theta_R -= Delta_theta
          4: flip the sign s of theta_T = theta_R + s pi/2   5: toggle ON/OFF
          and a = 6N is "no change";
  bs0:    Discrete(4MK + 1); a = ((m K + k) 2 + part) 2 + sign for entry (m, k) of W,
          part 0 = real, 1 = imaginary, sign 0 = +Delta_w, 1 = -Delta_w; a = 4MK is "no change".

Transition (paper): s' = s + a when s + a lies in the legitimate state space
(beta_R in [0, 1], theta_R in [0, 2 pi)), otherwise s' = s. beta_R and theta_R are kept as
integer multiples of their step sizes, so the bounds are reached exactly. After a BS step
W is normalised to tr(W W^H) = P_max (paper, after eq. 14); Delta_w = delta_w_rel *
sqrt(P_max / (M K)).

Observations (paper "State"): star v sees its own configuration [beta_R, theta_R,
theta_T mod 2 pi, alpha] per element (4N); bs0 sees [Re W, Im W] (2MK). Neither sees CSI:
the paper's local states hold only the agent's own configuration (the reward carries the
channel). Global state = all local observations concatenated (the global agent's S_q).

Rewards (eqs. 15-16): every agent mu gets the local reward r_mu = R_mu / P_mu, the EE of the
system in which ONLY mu's change is applied to the previous configuration; ``info`` holds
the global reward r_q = R / P_total with every change applied, and ``global_turn`` (t mod
T_q == 0, eq. 13) for algorithms with a global agent. Rates in bit/s (B = 100 MHz), powers
in W; rewards are reported in Mbit/J (bit/J x 1e-6: the same EE, on a scale a Q-network
can fit). Channels are static within an episode (preset fading_correlation = 1); reset
draws new user positions and fading.

Hardware in the loop (project extension): a STAR-RIS board latches theta_R as a b-bit phase
index (2^b = 2 pi / Delta_theta; pi/16 -> 5 bits) and ON/OFF alpha, nothing else. Besides the
plain increment, a star agent's action may be the dict {"increment", "theta_idx", "on"}
(:meth:`star_action_from_configs`): the twin applies the increment for beta_R and the
transmission sign (which the board does not hold) and takes theta_R and ON/OFF from what
the board reports as applied (a stuck element shows in the rewards). The daemon's side,
increment -> SurfaceConfig, is ``twin.hil.star_config_from_action``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from twin import hil, star
from twin.envs import validation as val
from twin.envs.base import Action, BatchedEnv, Obs, StepResult
from twin.errors import ActionError, ConfigError
from twin.scene import P3Scene, evolve_p3, sample_p3
from twin.surface_config import SurfaceConfig

TWO_PI = 2.0 * math.pi
N_STAR_OPS = 6
REWARD_SCALE = 1e-6  # bit/J -> Mbit/J


class P3Env(BatchedEnv):
    """B environments of the P3 scenario stepped together (see module docstring)."""

    name = "p3"

    def __init__(self, num_envs: int = 1, cfg: Any = None, seed: int | None = None,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.complex64) -> None:
        self._init_batch(num_envs, cfg, seed, device, dtype)
        c = self.cfg
        self.M, self.K, self.V, self.N = c.n_bs_antennas, c.n_users, c.n_surfaces, c.n_elements
        self.beta_levels = int(math.floor(1.0 / c.delta_beta + 1e-9))          # beta_R = i * Delta, i in [0, this]
        self.theta_levels = int(math.ceil(TWO_PI / c.delta_theta_rad - 1e-9))  # theta_R = i * Delta, i < this
        self.delta_w = c.delta_w_rel * math.sqrt(c.p_max_w / (self.M * self.K))
        self.star_ids = tuple(f"star{v}" for v in range(self.V))
        self.surface_ids = self.star_ids          # agents with a board (hardware in the loop)
        self.agent_ids = self.star_ids + ("bs0",)
        N, M, K = self.N, self.M, self.K
        star_low = np.zeros(4 * N, np.float32)
        star_high = np.concatenate([np.ones(N), np.full(2 * N, TWO_PI), np.ones(N)]).astype(np.float32)
        w_bound = np.float32(math.sqrt(c.p_max_w) * (1 + 1e-5))
        self.observation_spaces = {
            **{a: gym.spaces.Box(star_low, star_high, dtype=np.float32) for a in self.star_ids},
            "bs0": gym.spaces.Box(-w_bound, w_bound, shape=(2 * M * K,), dtype=np.float32),
        }
        self.state_dim = self.V * 4 * N + 2 * M * K
        self.state_space = gym.spaces.Box(
            np.concatenate([star_low] * self.V + [np.full(2 * M * K, -w_bound, np.float32)]),
            np.concatenate([star_high] * self.V + [np.full(2 * M * K, w_bound, np.float32)]), dtype=np.float32)
        self.n_star_actions = N_STAR_OPS * N + 1
        self.n_bs_actions = 4 * M * K + 1
        self.action_spaces = {**{a: gym.spaces.Discrete(self.n_star_actions) for a in self.star_ids},
                              "bs0": gym.spaces.Discrete(self.n_bs_actions)}

    # ---- episode control -------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> Obs:
        if seed is not None:
            self._gen.manual_seed(int(seed))
        self._load_scene(sample_p3(self.cfg, self.num_envs, self._gen, self.cdtype))
        B, V, N = self.num_envs, self.V, self.N
        dev = self.device
        # Initial configuration (open in the paper; project choice): every element ON with an
        # even energy split beta_R ~ 0.5 on the step grid, theta_R = 0, theta_T = +pi/2, and
        # W = MRT on the direct links at full power.
        self.beta_idx = torch.full((B, V, N), round(0.5 / self.cfg.delta_beta), dtype=torch.long, device=dev)
        self.theta_idx = torch.zeros(B, V, N, dtype=torch.long, device=dev)
        self.t_sign = torch.ones(B, V, N, dtype=torch.long, device=dev)
        self.on = torch.ones(B, V, N, dtype=torch.bool, device=dev)
        self.W = star.normalize_precoder(self.scene.h_BU.transpose(-1, -2).clone(), self.cfg.p_max_w)
        self.t = 0
        self._has_state = True
        return self._observe()

    def _load_scene(self, scene: P3Scene) -> None:
        self.scene = self._scene_on_device(scene, "G_BS")

    def set_scene(self, scene: P3Scene | None = None, **fields: Any) -> None:
        """Replace the channels (a whole ``P3Scene`` and/or named fields), keep the configuration."""
        self._load_scene(self._replaced_scene(scene, fields))

    # ---- configuration <-> physics ---------------------------------------------------------

    def _config_tensors(self, beta_idx, theta_idx, t_sign, on):
        beta_R = beta_idx.to(self.rdtype) * self.cfg.delta_beta
        theta_R = theta_idx.to(self.rdtype) * self.cfg.delta_theta_rad
        return beta_R, theta_R, t_sign, on

    def evaluate_config(self, beta_idx, theta_idx, t_sign, on, W) -> dict[str, torch.Tensor]:
        """Rate, power and EE (P3 eqs. 4-11) of one full configuration (no state change)."""
        c, s = self.cfg, self.scene
        beta_R, theta_R, t_sign, on = self._config_tensors(beta_idx, theta_idx, t_sign, on)
        coef_R, coef_T = star.es_coefficients(beta_R, theta_R, t_sign, on)
        return star.evaluate(s.G_BS, s.G_SS, s.h_SU, s.h_BU, coef_R.to(self.cdtype), coef_T.to(self.cdtype),
                             on, W, s.user_region, c.noise_w, c.bandwidth_hz, c.element_power_w)

    # ---- observations ----------------------------------------------------------------------

    def _star_obs(self) -> torch.Tensor:
        beta_R, theta_R, _, _ = self._config_tensors(self.beta_idx, self.theta_idx, self.t_sign, self.on)
        theta_T = torch.remainder(theta_R + self.t_sign.to(self.rdtype) * (0.5 * math.pi), TWO_PI)
        return torch.cat([beta_R, theta_R, theta_T, self.on.to(self.rdtype)], dim=-1).float()  # (B, V, 4N)

    def _bs_obs(self) -> torch.Tensor:
        return torch.cat([self.W.real.flatten(1), self.W.imag.flatten(1)], 1).float()

    def _observe(self) -> Obs:
        s = self._star_obs()
        return {**{a: s[:, v] for v, a in enumerate(self.star_ids)}, "bs0": self._bs_obs()}

    def local_observation(self, agent_id: str) -> torch.Tensor:
        if not self._has_state:
            raise ConfigError("local_observation: call reset() first")
        if agent_id == "bs0":
            return self._bs_obs()
        if agent_id in self.star_ids:
            return self._star_obs()[:, self.star_ids.index(agent_id)]
        raise ConfigError(f"agent_id: unknown agent {agent_id!r}; expected one of {list(self.agent_ids)}")

    def state(self) -> torch.Tensor:
        return torch.cat([self._star_obs().flatten(1), self._bs_obs()], 1)

    # ---- actions ---------------------------------------------------------------------------

    def sample_actions(self, generator: torch.Generator | None = None) -> Action:
        """Uniformly random valid batched actions (one increment index per agent)."""
        B, dev, g = self.num_envs, self.device, generator
        return {a: torch.randint(0, self.action_spaces[a].n, (B,), generator=g, device=dev) for a in self.agent_ids}

    def decode_actions(self, actions: Action) -> dict[str, torch.Tensor]:
        B, N, dev = self.num_envs, self.N, self.device
        val.check_agents(actions, self.agent_ids)
        inc, theta, on, applied = [], [], [], []
        for a in self.star_ids:
            act = actions[a]
            if isinstance(act, Mapping):    # hardware in the loop: the board's applied theta_R / ON
                f = val.check_fields(a, act, ("increment", "theta_idx", "on"))
                inc.append(val.int_field(a, "increment", f["increment"], (B,), 0, self.n_star_actions, dev))
                theta.append(val.int_field(a, "theta_idx", f["theta_idx"], (B, N), 0, self.theta_levels, dev))
                on.append(val.bool_field(a, "on", f["on"], (B, N), dev))
                applied.append(True)
            else:
                inc.append(val.int_field(a, "increment", act, (B,), 0, self.n_star_actions, dev))
                theta.append(torch.zeros(B, N, dtype=torch.long, device=dev))
                on.append(torch.zeros(B, N, dtype=torch.bool, device=dev))
                applied.append(False)
        bs_a = val.int_field("bs0", "increment", actions["bs0"], (B,), 0, self.n_bs_actions, dev)
        out = {"star": torch.stack(inc, 1), "bs": bs_a}                  # (B, V)
        if any(applied):
            out["applied"] = torch.tensor(applied, device=dev)            # (V,) which surfaces
            out["applied_theta"] = torch.stack(theta, 1)                  # (B, V, N)
            out["applied_on"] = torch.stack(on, 1)
        return out

    # ---- hardware in the loop --------------------------------------------------------------

    @property
    def surface_bits(self) -> int:
        """The board resolution that holds theta_R exactly (ConfigError if Delta_theta has none)."""
        return hil.p3_board_bits(self.cfg.delta_theta_rad)

    def star_action_from_configs(self, agent: str, configs: Sequence[SurfaceConfig],
                                 increment: Any = None) -> dict[str, torch.Tensor]:
        """Star ``agent``'s batched action from B applied SurfaceConfigs and its increment (B,)
        (None: no change, a surface holding its board's state)."""
        B, N, dev = self.num_envs, self.N, self.device
        if agent not in self.star_ids:
            raise ActionError(f"{agent}: not a STAR-RIS agent of P3 ({list(self.star_ids)})")
        if len(configs) != B:
            raise ActionError(f"configs: expected {B} SurfaceConfigs (one per environment), got {len(configs)}")
        bits = self.surface_bits
        for c in configs:
            if c.n_elements != N:
                raise ActionError(f"configs: a surface has {c.n_elements} elements, the scenario has N = {N}")
            if c.bits > bits:
                raise ActionError(f"configs.bits: resolution {c.bits} is finer than P3's theta_R grid ({bits} bits)")
        if increment is None:
            increment = torch.full((B,), self.n_star_actions - 1, dtype=torch.long)
        # A coarser board config (e.g. a daemon's safe pattern at its lowest resolution) lies on
        # the theta_R grid exactly: index i of 2^b' levels is index i 2^(b - b').
        idx = np.stack([c.phase_idx.astype(np.int64) << (bits - c.bits) for c in configs])
        return {"increment": torch.as_tensor(increment).to(dev).long().reshape(B),
                "theta_idx": torch.from_numpy(idx).to(dev),
                "on": torch.from_numpy(np.stack([c.on for c in configs])).to(dev)}

    def surface_action_from_configs(self, agent: str, configs: Sequence[SurfaceConfig], requested: Any = None):
        """Generic hardware-in-the-loop entry point (controller.twin_server)."""
        return self.star_action_from_configs(agent, configs, requested)

    def _apply_star(self, star_a: torch.Tensor, which: torch.Tensor, a: Mapping[str, torch.Tensor] | None = None):
        """Configuration after the increments of the surfaces selected by ``which`` (B, V) bool;
        a surface with an applied board configuration in ``a`` takes theta_R and ON/OFF from it."""
        N = self.N
        act = (star_a < N_STAR_OPS * N) & which                          # no-op or not selected: nothing
        elem = torch.where(act, star_a // N_STAR_OPS, torch.zeros_like(star_a))
        op = torch.where(act, star_a % N_STAR_OPS, torch.full_like(star_a, -1))
        hit = torch.nn.functional.one_hot(elem, N).bool() & act.unsqueeze(-1)   # (B, V, N)
        opn = op.unsqueeze(-1)
        sign_b = torch.where(opn == 0, 1, -1)
        beta = self.beta_idx + (hit & ((opn == 0) | (opn == 1))).long() * sign_b
        beta = torch.where((beta >= 0) & (beta <= self.beta_levels), beta, self.beta_idx)   # illegal: unchanged
        sign_t = torch.where(opn == 2, 1, -1)
        theta = self.theta_idx + (hit & ((opn == 2) | (opn == 3))).long() * sign_t
        theta = torch.where((theta >= 0) & (theta < self.theta_levels), theta, self.theta_idx)
        t_sign = torch.where(hit & (opn == 4), -self.t_sign, self.t_sign)
        on = torch.where(hit & (opn == 5), ~self.on, self.on)
        if a is not None and "applied" in a:
            board = (which & a["applied"]).unsqueeze(-1)                   # (B, V, 1)
            theta = torch.where(board, a["applied_theta"], theta)
            on = torch.where(board, a["applied_on"], on)
        return beta, theta, t_sign, on

    def _apply_bs(self, bs_a: torch.Tensor) -> torch.Tensor:
        """W after the BS increment, renormalised to tr(W W^H) = P_max."""
        M, K = self.M, self.K
        act = bs_a < 4 * M * K
        code = torch.where(act, bs_a, torch.zeros_like(bs_a))
        sign = 1.0 - 2.0 * (code % 2).to(self.rdtype)
        part = (code // 2) % 2
        entry = code // 4                                                # m K + k
        step = (sign * self.delta_w * act.to(self.rdtype)).to(self.cdtype)
        step = torch.where(part == 1, step * 1j, step)
        delta = torch.nn.functional.one_hot(entry, M * K).to(self.cdtype) * step.unsqueeze(-1)
        W = self.W + delta.view(-1, M, K)
        norm2 = W.abs().square().sum((-2, -1))
        W = torch.where((norm2 > 0)[:, None, None], W, self.W)         # all-zero W is illegal: unchanged
        return star.normalize_precoder(W, self.cfg.p_max_w)

    # ---- step ------------------------------------------------------------------------------

    def step(self, actions: Action) -> StepResult:
        if not self._has_state:
            raise ConfigError("step: call reset() before the first step")
        a = self.decode_actions(actions)
        B, V = self.num_envs, self.V
        rewards: dict[str, torch.Tensor] = {}
        # Local rewards (eq. 16): only agent mu's change applied to the previous configuration.
        for v, aid in enumerate(self.star_ids):
            only = torch.zeros(B, V, dtype=torch.bool, device=self.device)
            only[:, v] = True
            ev = self.evaluate_config(*self._apply_star(a["star"], only, a), self.W)
            rewards[aid] = (ev["ee_bit_per_j"] * REWARD_SCALE).float()
        W_new = self._apply_bs(a["bs"])
        ev = self.evaluate_config(self.beta_idx, self.theta_idx, self.t_sign, self.on, W_new)
        rewards["bs0"] = (ev["ee_bit_per_j"] * REWARD_SCALE).float()
        # Global reward (eq. 15): every change applied; this is the new state.
        all_v = torch.ones(B, V, dtype=torch.bool, device=self.device)
        self.beta_idx, self.theta_idx, self.t_sign, self.on = self._apply_star(a["star"], all_v, a)
        self.W = W_new
        ev = self.evaluate_config(self.beta_idx, self.theta_idx, self.t_sign, self.on, self.W)
        global_turn = torch.full((B,), self.t % self.cfg.global_period == 0, dtype=torch.bool, device=self.device)
        self.t += 1
        self._load_scene(evolve_p3(self.scene, self.cfg, self._gen))
        truncated = torch.full((B,), self.t >= self.cfg.episode_steps, dtype=torch.bool, device=self.device)
        info = {
            "global_reward": (ev["ee_bit_per_j"] * REWARD_SCALE).float(),
            "ee_bit_per_j": ev["ee_bit_per_j"],
            "sum_rate_bps": ev["sum_rate_bps"],
            "rate_bps": ev["rate_bps"],
            "power_w": ev["power_w"],
            "n_on": self.on.flatten(1).sum(-1),
            "global_turn": global_turn,
        }
        return StepResult(self._observe(), rewards, torch.zeros(B, dtype=torch.bool, device=self.device),
                          truncated, info)


def star_action(n: int, op: int, n_elements: int) -> int:
    """Index of the STAR-RIS action ``op`` (0..5, see module docstring) on element ``n``."""
    if not (0 <= n < n_elements and 0 <= op < N_STAR_OPS):
        raise ConfigError(f"star action: need 0 <= n < {n_elements} and 0 <= op < {N_STAR_OPS}, got n={n}, op={op}")
    return N_STAR_OPS * n + op


def bs_action(m: int, k: int, imag: bool, negative: bool, n_users: int) -> int:
    """Index of the BS action +-Delta on the real / imaginary part of W[m, k]."""
    return ((m * n_users + k) * 2 + int(imag)) * 2 + int(negative)
