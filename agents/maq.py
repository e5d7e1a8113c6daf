"""Multi-agent Q-mix (MAQ) with the Wolpertinger (MAQ-WP) and policy-gradient (MAQ-PG) mappings.

P1 section III-B, Algorithms 1-2, eqs. 23-33. Read top to bottom:

1. configs (Table III defaults; every value the paper leaves open says so);
2. the two *mappings* — the one step where MAQ-WP and MAQ-PG differ: how an IRS policy's
   continuous proto-action becomes a discrete low-level action x = (phase_idx, on), and how
   that policy is trained (eq. 26 vs Lemma 1 / eq. 31 + the estimator of eq. 33);
3. the actors a bundle exports (IRS: resolution by argmax Q_high, then the mapping; BS:
   power-scaled beamformers);
4. the algorithm: networks of both levels, acting (eps-greedy resolution, eq. 23), storing,
   and the update of Alg. 1 (high-level loss 24, policies 26/27/31, low-level loss 25,
   target copies).

Representation choices (the paper gives sizes, not encodings):
- A proto-action has 2N entries: N phases in *turns* (theta / 2 pi) and N ON scores
  (see ``agents.knn`` for the metric). The Q networks see an action as (cos 2 pi u,
  sin 2 pi u, w), 3N inputs instead of the paper's 2N, so phase 0 and 2^b - 1 are
  neighbours for the critic as they are for the nearest-neighbour metric.
- Resolutions enter networks as b / b_max; agent ids one-hot; observations are divided by
  the upper bounds of their observation space so every input is O(1).
- The high-level agent network is shared by the L IRSs (the one-hot id tells them apart,
  as the paper's input does) and outputs one Q value per resolution of the set (DQN form;
  the paper's complexity count has a single output neuron); policies and low-level agent
  networks are per agent (the paper indexes their parameters by agent).
- Target networks (Alg. 1 l. 21, period open): hard copies of every online network every
  ``target_period`` = 200 gradient updates (the DQN/QMIX habit; soft updates would be the
  alternative, MADDPG here uses those).
- Targets of both levels (eqs. 24-25) bootstrap with the next greedy resolution b' (argmax
  of the online high-level nets, values from the target nets: double Q) and the next
  low-level action x' of the target policies through the mapping; the BS's a_B' from its
  target policy. Truncation (end of an episode by time) bootstraps; termination does not.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from agents import knn
from agents.base import Actor, Algorithm, own_role
from agents.buffers import ReplayBuffer
from agents.mixers import MonotonicMixer
from agents.networks import MLP, BeamformerActor, GaussianHead, scale_to_power
from twin.envs.base import Action, BatchedEnv, Obs, StepResult
from twin.errors import ConfigError

TWO_PI = 2.0 * math.pi


# =========================================================================== 1. configs

@dataclass(frozen=True)
class MAQConfig:
    buffer_size: int = 100_000          # Table III (D)
    batch_size: int = 128               # Table III (N_D)
    gamma: float = 0.99                 # Table III
    lr_high: float = 1e-4               # Table III (alpha_h)
    lr_policy: float = 1e-4             # Table III (alpha_p)
    lr_low: float = 1e-4                # Table III (alpha_l)
    eps_start: float = 0.2              # Table III: eps in [0.02, 0.2]; the schedule is open:
    eps_end: float = 0.02               #   linear from eps_start to eps_end over eps_decay_steps
    eps_decay_steps: int = 200_000      # open: environment transitions (all B envs count)
    hidden: tuple[int, ...] = (64, 64)  # open: hidden widths of every agent / policy network
    mixer_embed: int = 32               # open: mixing-network width
    mixer_hyper: int = 64               # open: hypernetwork width
    target_period: int = 200            # open: gradient updates between hard target copies (Alg. 1 l. 21)
    learning_starts: int = 1_000        # open: transitions stored before the first update
    updates_per_step: int = 1           # open: gradient updates per batched env step
    proto_noise: float = 0.1            # open: Gaussian exploration std on MAQ-WP's proto-actions (MAQ-PG
                                        #   explores by sampling its own Gaussian whenever this is > 0)
    bs_noise: float = 0.1               # open: exploration std on the BS's raw beams, relative to their rms
    reward_scale: float = 1.0           # open: rewards are multiplied by this before learning
    grad_clip: float = 10.0             # open: global gradient-norm clip per optimizer
    bs_head: str = "direct"             # "direct": the paper's BS policy (beam entries); project options with MRT
                                        #   directions (need CSI observations): "power-mrt" (learned per-user
                                        #   shares), "snr-power-mrt" (learned exponent c: shares ~ SNR^c)


@dataclass(frozen=True)
class MAQWPConfig(MAQConfig):
    k: int = 50                         # Wolpertinger factor (paper default 50, studied 1..50)


@dataclass(frozen=True)
class MAQPGConfig(MAQConfig):
    init_log_std: float = -1.5          # open: initial log std of the Gaussian proto-action policy
    pg_samples: int = 4                 # open: proto-action samples per replayed state for eq. 31
    lr_estimator: float = 1e-3          # open: learning rate of the mapping estimator (eq. 33)


def _check(cfg: MAQConfig) -> None:
    if not 0.0 <= cfg.eps_end <= cfg.eps_start <= 1.0:
        raise ConfigError(f"eps_start/eps_end: need 0 <= eps_end <= eps_start <= 1, got {cfg.eps_start}, {cfg.eps_end}")
    if cfg.batch_size < 1 or cfg.target_period < 1 or cfg.updates_per_step < 0:
        raise ConfigError("batch_size/target_period must be >= 1 and updates_per_step >= 0")
    if isinstance(cfg, MAQWPConfig) and not 1 <= cfg.k <= 50:
        raise ConfigError(f"k: the Wolpertinger factor must be in 1..50 (paper range), got {cfg.k}")


# =========================================================================== helpers

def encode_action(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A low-level IRS action (discrete or proto) as critic input: (cos 2pi u, sin 2pi u, w), (..., 3N)."""
    return torch.cat([torch.cos(TWO_PI * u), torch.sin(TWO_PI * u), w], dim=-1)


def encode_discrete(phase_idx: torch.Tensor, on: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    return encode_action(*knn.embed(phase_idx, on, bits))


QFn = Callable[[torch.Tensor], torch.Tensor]   # encoded action(s) (B, ..., 3N) -> Q (B, ...)


# =========================================================================== 2. mappings

class WolpertingerMapping:
    """MAQ-WP (Alg. 2): proto-action -> k nearest discrete actions -> the one with the largest Q_low_i.

    Policy: deterministic, sigmoid outputs (u in [0,1] turns, w in [0,1]); trained through the
    critic at the proto-action (eq. 26).
    """

    name = "wp"

    def __init__(self, k: int) -> None:
        self.k = int(k)

    def make_policy(self, in_dim: int, n: int, hidden: Sequence[int]) -> nn.Module:
        return MLP(in_dim, 2 * n, hidden, out_gain=0.01)

    def proto(self, policy: nn.Module, inp: torch.Tensor, noise: float = 0.0,
              gen: torch.Generator | None = None) -> torch.Tensor:
        e = torch.sigmoid(policy(inp))
        if noise > 0.0:
            e = e + noise * torch.randn(e.shape, generator=gen)
        return e

    def to_discrete(self, e: torch.Tensor, bits: torch.Tensor, q_fn: QFn | None) -> tuple[torch.Tensor, torch.Tensor]:
        n = e.shape[-1] // 2
        nb = knn.k_nearest(e[:, :n], e[:, n:], bits, self.k, max_bits=int(bits.max()))
        if self.k == 1 or q_fn is None:
            return nb.phase_idx[:, 0], nb.on[:, 0]
        q = q_fn(encode_discrete(nb.phase_idx, nb.on, bits))            # (B, k)
        best = q.masked_fill(~nb.valid, -torch.inf).argmax(-1)
        pick = best.view(-1, 1, 1).expand(-1, 1, n)
        return nb.phase_idx.gather(1, pick).squeeze(1), nb.on.gather(1, pick).squeeze(1)

    def policy_loss(self, policy: nn.Module, inp: torch.Tensor, bits: torch.Tensor, q_fn: QFn,
                    gen: torch.Generator, extra: nn.Module | None) -> tuple[torch.Tensor, dict[str, float]]:
        e = self.proto(policy, inp)
        n = e.shape[-1] // 2
        return -q_fn(encode_action(e[:, :n], e[:, n:])).mean(), {}   # eq. 26

    def make_extra(self, n: int, max_bits: int, hidden: Sequence[int]) -> nn.Module | None:
        return None


class MappingEstimator(nn.Module):
    """phi(x | e, b): per element a categorical over the 2^b_max phase states and a Bernoulli ON (eq. 33)."""

    def __init__(self, n: int, max_bits: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.n, self.max_bits, self.levels = n, max_bits, 1 << max_bits
        self.net = MLP(3 * n + 1, n * (self.levels + 1), hidden, out_gain=1.0)

    def forward(self, e: torch.Tensor, bits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits: phases (B, N, 2^b_max) (states outside F_b masked), ON (B, N).
        The proto-action enters as (cos, sin, w) like the critics' actions (phases wrap)."""
        inp = torch.cat([encode_action(e[:, :self.n], e[:, self.n:]), bits.float().unsqueeze(-1) / self.max_bits], -1)
        out = self.net(inp).view(-1, self.n, self.levels + 1)
        grid = torch.arange(self.levels)
        phase_logits = out[..., :-1].masked_fill(grid >= (1 << bits).view(-1, 1, 1), -1e9)
        return phase_logits, out[..., -1]


class PolicyGradientMapping:
    """MAQ-PG: Gaussian proto-action mu_theta(e | s_i, b_i), deterministic mapping phi(e).

    The Gaussian lives on raw outputs z; the proto-action is e = (z_u, z_w + 1/2), so a fresh
    network (z near 0) starts with ON/OFF equally likely. phi(e) is the nearest discrete
    action (per-element rounding, ``knn.nearest``): every proto-action maps to exactly one
    action, as Lemma 1 assumes. The policy follows eq. 31, grad E_e[log mu(e|s) Q_low_i(s,
    phi(e))], estimated with ``pg_samples`` fresh proto-actions per replayed state and the
    baseline Q_low_i(s, phi(mean)) (a control variate: the expected gradient is unchanged).
    The estimator phi(x|e) of eq. 33 is trained with -log phi(x|e) on those (e, phi(e))
    pairs. The mapping is known exactly here, so execution uses phi itself; the estimator's
    accuracy (``map_acc``) is reported as the check that it recovers the mapping.
    """

    name = "pg"

    def __init__(self, init_log_std: float, samples: int) -> None:
        self.init_log_std, self.samples = float(init_log_std), int(samples)

    def make_policy(self, in_dim: int, n: int, hidden: Sequence[int]) -> nn.Module:
        return GaussianHead(in_dim, 2 * n, hidden, activation="relu", init_log_std=self.init_log_std)

    @staticmethod
    def _shift(z: torch.Tensor) -> torch.Tensor:
        n = z.shape[-1] // 2
        return torch.cat([z[..., :n], z[..., n:] + 0.5], -1)

    def proto(self, policy: nn.Module, inp: torch.Tensor, noise: float = 0.0,
              gen: torch.Generator | None = None) -> torch.Tensor:
        dist = policy(inp)
        z = dist.mean
        if noise > 0.0:  # exploring: sample from mu itself (its own std, not ``noise``)
            z = z + dist.stddev * torch.randn(z.shape, generator=gen)
        return self._shift(z)

    def to_discrete(self, e: torch.Tensor, bits: torch.Tensor, q_fn: QFn | None) -> tuple[torch.Tensor, torch.Tensor]:
        n = e.shape[-1] // 2
        return knn.nearest(e[:, :n], e[:, n:], bits)

    def policy_loss(self, policy: nn.Module, inp: torch.Tensor, bits: torch.Tensor, q_fn: QFn,
                    gen: torch.Generator, extra: nn.Module | None) -> tuple[torch.Tensor, dict[str, float]]:
        dist = policy(inp)
        B, two_n = dist.mean.shape
        n, S = two_n // 2, self.samples
        z = (dist.mean.unsqueeze(1) + dist.stddev.unsqueeze(1) * torch.randn(B, S, two_n, generator=gen)).detach()
        e = self._shift(z).reshape(B * S, two_n)
        bits_s = bits.repeat_interleave(S)
        idx, on = knn.nearest(e[:, :n], e[:, n:], bits_s)                                  # x = phi(e)
        with torch.no_grad():
            q = q_fn(encode_discrete(idx, on, bits_s).view(B, S, -1))                      # Q(s, phi(e))
            m = self._shift(dist.mean)
            base = q_fn(encode_discrete(*knn.nearest(m[:, :n], m[:, n:], bits), bits).unsqueeze(1))
        logp = dist.log_prob(z.transpose(0, 1)).sum(-1).transpose(0, 1)                    # (B, S)
        loss = -(logp * (q - base)).mean()                                                 # eq. 31
        # Mapping estimator, eq. 33: l(phi) = -E[log phi(x | e)].
        phase_logits, on_logit = extra(e, bits_s)
        nll = (nn.functional.cross_entropy(phase_logits.reshape(-1, extra.levels), idx.reshape(-1))
               + nn.functional.binary_cross_entropy_with_logits(on_logit, on.float()))
        with torch.no_grad():
            acc = ((phase_logits.argmax(-1) == idx) & ((on_logit > 0) == on)).float().mean().item()
        return loss + nll, {"map_nll": float(nll.detach()), "map_acc": acc}

    def make_extra(self, n: int, max_bits: int, hidden: Sequence[int]) -> nn.Module | None:
        return MappingEstimator(n, max_bits, hidden)


MAPPINGS = {"wp": WolpertingerMapping, "pg": PolicyGradientMapping}
MAPPINGS = {"wp": WolpertingerMapping, "pg": PolicyGradientMapping}


# =========================================================================== 3. actors

class MAQIRSActor(Actor):
    """An IRS agent at execution: obs (B, K+1) -> {"bits", "phase_idx", "on"}.

    The high-level choice is b_l = argmax_b Q_high_l(s_l, b_l(t-1), id) (eq. 23, greedy); then
    the policy's proto-action at (s_l, b_l) goes through the mapping (WP: k nearest ranked by
    Q_low_l, which the actor carries; PG: rounding). The previous resolution b_l(t-1) is the
    actor's own last decision, kept in ``prev_bits`` (``reset_state()`` starts a new episode at
    the lowest resolution, as the trainer does).
    """

    def __init__(self, obs_dim: int, n_elements: int, bit_choices: Sequence[int], agent_index: int, n_irs: int,
                 obs_scale: Sequence[float], hidden: Sequence[int] = (64, 64), mapping: str = "wp",
                 k: int = 50, init_log_std: float = -1.5, pg_samples: int = 4) -> None:
        super().__init__()
        self._kw = dict(obs_dim=int(obs_dim), n_elements=int(n_elements), bit_choices=[int(b) for b in bit_choices],
                        agent_index=int(agent_index), n_irs=int(n_irs), obs_scale=[float(x) for x in obs_scale],
                        hidden=[int(h) for h in hidden], mapping=str(mapping), k=int(k),
                        init_log_std=float(init_log_std), pg_samples=int(pg_samples))
        if mapping not in MAPPINGS:
            raise ConfigError(f"mapping: {mapping!r} is unknown; use one of {sorted(MAPPINGS)}")
        self.mapping = WolpertingerMapping(k) if mapping == "wp" else PolicyGradientMapping(init_log_std, pg_samples)
        nb, n = len(bit_choices), int(n_elements)
        self.max_bits = max(bit_choices)
        self.register_buffer("bit_values", torch.tensor(self._kw["bit_choices"], dtype=torch.long), persistent=False)
        self.register_buffer("obs_scale", torch.tensor(self._kw["obs_scale"]), persistent=False)
        self.register_buffer("one_hot", nn.functional.one_hot(torch.tensor(agent_index), n_irs).float(), persistent=False)
        self.high_q = MLP(obs_dim + 1 + n_irs, nb, hidden)               # Q_high(s_l, b_l(t-1), id) per b
        self.policy = self.mapping.make_policy(obs_dim + 1, n, hidden)   # mu_l(s_l, b_l) -> proto-action
        self.low_q = MLP(obs_dim + 1 + 3 * n, 1, hidden)                 # Q_low_l(s_l, b_l, x_l)
        self.prev_bits: torch.Tensor | None = None

    def arch_kwargs(self) -> dict[str, Any]:
        return dict(self._kw)

    # -- pieces the trainer calls with explicit inputs --
    def norm(self, obs: torch.Tensor) -> torch.Tensor:
        return obs / self.obs_scale

    def high_values(self, obs_n: torch.Tensor, prev_bits: torch.Tensor) -> torch.Tensor:
        """Q_high for every resolution of the set, (B, |B|)."""
        inp = torch.cat([obs_n, prev_bits.float().unsqueeze(-1) / self.max_bits,
                         self.one_hot.expand(obs_n.shape[0], -1)], -1)
        return self.high_q(inp)

    def policy_input(self, obs_n: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        return torch.cat([obs_n, bits.float().unsqueeze(-1) / self.max_bits], -1)

    def low_value(self, obs_n: torch.Tensor, bits: torch.Tensor, x_enc: torch.Tensor) -> torch.Tensor:
        """Q_low_l(s_l, b_l, x) for x_enc (B, ..., 3N) -> (B, ...)."""
        ctx = self.policy_input(obs_n, bits)
        ctx = ctx.view(ctx.shape[0], *([1] * (x_enc.dim() - 2)), ctx.shape[-1]).expand(*x_enc.shape[:-1], -1)
        return self.low_q(torch.cat([ctx, x_enc], -1)).squeeze(-1)

    def low_action(self, obs_n: torch.Tensor, bits: torch.Tensor, noise: float = 0.0,
                   gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.mapping.proto(self.policy, self.policy_input(obs_n, bits), noise, gen)
        return self.mapping.to_discrete(e, bits, lambda x: self.low_value(obs_n, bits, x))

    def decide(self, obs: torch.Tensor, prev_bits: torch.Tensor) -> dict[str, torch.Tensor]:
        obs_n = self.norm(obs)
        bits = self.bit_values[self.high_values(obs_n, prev_bits).argmax(-1)]
        phase_idx, on = self.low_action(obs_n, bits)
        return {"bits": bits, "phase_idx": phase_idx, "on": on}

    def reset_state(self) -> None:
        self.prev_bits = None

    @torch.no_grad()
    def forward(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Execution (evaluation, bundles, daemons): ``decide`` computed in numpy when the
        networks are plain ReLU MLPs (``_decide_np``; a decision is ~40 tiny ops, where torch's
        per-op dispatch cost dominates), else in torch."""
        if self.prev_bits is None or self.prev_bits.shape[0] != obs.shape[0]:
            self.prev_bits = torch.full((obs.shape[0],), int(self.bit_values[0]), dtype=torch.long)
        nets = self._np_nets()
        if nets is None or obs.device.type != "cpu":
            act = self.decide(obs, self.prev_bits)
        else:
            act = self._decide_np(obs.numpy(), self.prev_bits.numpy(), nets)
        self.prev_bits = act["bits"]
        return act

    # -- numpy execution path (same decision as ``decide`` up to float32 rounding) --
    def _np_nets(self) -> dict[str, list] | None:
        """numpy copies of the layers of high_q, policy and low_q, refreshed whenever a
        parameter changes (optimizer steps and load_state_dict bump ``_version``; inference
        tensors, e.g. weights a bundle loaded under inference_mode, have no version counter
        and cannot change outside inference_mode, so their identity and storage are the key)."""
        mods = (self.high_q, self.policy, self.low_q)
        if getattr(self, "_np_mods", None) != tuple(map(id, mods)):        # modules swapped (shared high_q)
            self._np_mods, self._np_params = tuple(map(id, mods)), [p for m in mods for p in m.parameters()]
        key = tuple((p.data_ptr(), -1 if p.is_inference() else p._version) for p in self._np_params)
        if getattr(self, "_np_key", None) != key:
            policy = self.policy.mean if isinstance(self.policy, GaussianHead) else self.policy
            nets = {"high_q": _np_layers(self.high_q), "policy": _np_layers(policy), "low_q": _np_layers(self.low_q)}
            self._np_cache = None if any(v is None for v in nets.values()) else nets
            self._np_key = key
            self._np_consts = (self.obs_scale.numpy().astype(np.float32), self.one_hot.numpy().astype(np.float32),
                               self.bit_values.numpy())
        return self._np_cache

    def _decide_np(self, obs: np.ndarray, prev_bits: np.ndarray, nets: dict[str, list]) -> dict[str, torch.Tensor]:
        obs_scale, one_hot, bit_values = self._np_consts
        B, n, mb = obs.shape[0], self._kw["n_elements"], np.float32(self.max_bits)
        x = obs.astype(np.float32) / obs_scale                                             # norm
        hi_in = np.concatenate([x, (prev_bits.astype(np.float32) / mb)[:, None], np.broadcast_to(one_hot, (B, one_hot.size))], 1)
        bits = bit_values[_np_mlp(nets["high_q"], hi_in).argmax(-1)]                       # eq. 23, greedy
        ctx = np.concatenate([x, (bits.astype(np.float32) / mb)[:, None]], 1)              # policy_input
        out = _np_mlp(nets["policy"], ctx)
        if self.mapping.name == "pg":                                                      # e = (z_u, z_w + 1/2), rounding
            idx, on = knn.nearest_np(out[:, :n], out[:, n:] + np.float32(0.5), bits)
        else:
            with np.errstate(over="ignore"):                                               # exp(-out) -> inf gives 0, as sigmoid
                e = np.float32(1.0) / (np.float32(1.0) + np.exp(-out))                     # sigmoid proto-action
            k = self.mapping.k
            if k == 1:
                idx, on = knn.nearest_np(e[:, :n], e[:, n:], bits)
            else:                                                                          # Alg. 2: k nearest, best Q_low
                idx, on, _, valid = knn._k_nearest_np(e[:, :n].astype(np.float64), e[:, n:].astype(np.float64),
                                                      bits, k, int(bits.max()))
                u = idx.astype(np.float32) / np.power(np.float32(2.0), bits.astype(np.float32)).reshape(B, 1, 1)
                enc = np.concatenate([np.cos(np.float32(TWO_PI) * u), np.sin(np.float32(TWO_PI) * u), on.astype(np.float32)], -1)
                q_in = np.concatenate([np.broadcast_to(ctx[:, None], (B, k, ctx.shape[1])), enc], -1)
                q = np.where(valid, _np_mlp(nets["low_q"], q_in)[..., 0], -np.inf)
                best = q.argmax(-1)
                idx, on = idx[np.arange(B), best], on[np.arange(B), best]
        return {"bits": torch.from_numpy(bits.astype(np.int64)), "phase_idx": torch.from_numpy(idx.astype(np.int64)),
                "on": torch.from_numpy(on.astype(bool))}


def _np_layers(mlp: nn.Module) -> list | None:
    """[(W^T, b, relu_after)] of an ``MLP`` of Linear + ReLU layers, or None for anything else."""
    mods = list(mlp.net) if isinstance(mlp, MLP) else None
    if not mods:
        return None
    layers: list = []
    for m in mods:
        if isinstance(m, nn.Linear):
            layers.append([m.weight.detach().numpy().T.astype(np.float32).copy(), m.bias.detach().numpy().astype(np.float32).copy(), False])
        elif isinstance(m, nn.ReLU) and layers:
            layers[-1][2] = True
        else:
            return None
    return layers


def _np_mlp(layers: list, x: np.ndarray) -> np.ndarray:
    for w, b, relu in layers:
        x = x @ w + b
        if relu:
            x = np.maximum(x, np.float32(0.0))
    return x


class ScaledBeamformerActor(BeamformerActor):
    """The BS agent: obs (B, K) -> power-scaled V (``BeamformerActor``), with two input fixes:
    the observation is divided by its space's bounds, and a constant 1 is appended. The BS
    observation (last slot's powers) starts at zero and the MLP's biases start at zero, so
    without the constant a fresh actor would emit V = 0, observe zero power again, and never
    transmit."""

    def __init__(self, obs_dim: int, n_antennas: int, n_users: int, p_max_w: float, obs_scale: Sequence[float],
                 hidden: Sequence[int] = (64, 64), activation: str = "relu", power_mode: str = "full") -> None:
        super().__init__(obs_dim + 1, n_antennas, n_users, p_max_w, hidden, activation, power_mode)
        self._kw.update(obs_dim=int(obs_dim), obs_scale=[float(x) for x in obs_scale])
        self.register_buffer("obs_scale", torch.tensor(self._kw["obs_scale"]), persistent=False)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.cat([obs / self.obs_scale, torch.ones_like(obs[:, :1])], -1)

    def raw(self, obs: torch.Tensor) -> torch.Tensor:
        return super().raw(self.features(obs))

    def scaled(self, raw: torch.Tensor) -> torch.Tensor:
        return scale_to_power(raw, self._kw["p_max_w"], self._kw["power_mode"])

    # -- the BS-head interface MAQ, MADDPG and IL train through (``PowerShareBSActor`` too) --
    head = "direct"

    def params(self, obs: torch.Tensor) -> torch.Tensor:
        """The actor's differentiable output before the fixed map to beams: raw V (B, 2, M, K)."""
        return self.raw(obs)

    def perturb(self, params: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
        """Exploration: Gaussian noise relative to the beam's rms entry."""
        rms = params.flatten(1).square().mean(-1).sqrt().clamp_min(1e-3).view(-1, 1, 1, 1)
        return params + sigma * rms * torch.randn(params.shape, generator=gen)

    def beams(self, obs: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return self.scaled(params)

    @property
    def critic_dim(self) -> int:
        return 2 * self._kw["n_antennas"] * self._kw["n_users"]

    def critic_action(self, obs: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """What the critics see of an executed beam V (B, 2, M, K): every entry over sqrt(P_max)."""
        return V.flatten(1) / math.sqrt(self._kw["p_max_w"])


class PowerShareBSActor(Actor):
    """BS head ``power-mrt`` (project choice, opt-in with ``algo.bs_head=power-mrt``): the
    network learns per-user power shares, the beam directions are computed from the BS's
    observed direct channels (MRT, v_k along h_BU,k) — the usual "learned power allocation +
    model-based direction" design. Needs the CSI observation (``scenario.observation=csi``),
    whose BS part is [P_k,t-1]_k ++ Re d ++ Im d ++ log10 SNR_k with d_k = h_BU,k / ||h_BU,k||
    (k-major). The paper's head (``ScaledBeamformerActor``, 2MK free beam entries) stays the
    default.

    Map: log-amplitudes l (B, K) = R tanh(MLP(obs / scale ++ [1]) / R); V = scale_to_power(
    D * exp(clip(l))), D (B, 2, M, K) the direction features rearranged by a fixed selection
    matrix. Every action transmits exactly P_max (10a) with user k's share softmax(2 l)_k.
    The critics see the centred log-amplitudes (K entries, recovered from any executed V by
    ``critic_action``) instead of 2MK beam entries: Q over (obs, l) is a smooth
    low-dimensional function, which is what makes the head learnable through a critic. The
    soft bound R (power ratios up to e^{4R} between users) and critic inputs in log space
    (not shares) keep a policy from saturating into "all power to one user", where softmax
    gradients vanish: MADDPG and MAQ-PG probes did exactly that with unbounded logits.
    """

    head = "power-mrt"
    LOG_AMP_RANGE = 2.0   # R: |l| < 2, power ratios up to e^8 ~ 3000 between users
    LOGIT_CLIP = 10.0     # safety clip of explored (noisy) log-amplitudes before exp

    def __init__(self, obs_dim: int, n_antennas: int, n_users: int, p_max_w: float, obs_scale: Sequence[float],
                 hidden: Sequence[int] = (64, 64), activation: str = "relu") -> None:
        super().__init__()
        M, K = int(n_antennas), int(n_users)
        if int(obs_dim) != 2 * K + 2 * K * M:
            raise ConfigError(f"algo.bs_head: 'power-mrt' reads the BS's channel directions from its observation and needs "
                              f"scenario.observation=csi (a BS observation of 2K + 2KM = {2 * K + 2 * K * M} entries), "
                              f"got {obs_dim}; use --set scenario.observation=csi or algo.bs_head=direct")
        if p_max_w <= 0:
            raise ConfigError(f"p_max_w: transmit power must be positive, got {p_max_w}")
        self._kw = dict(obs_dim=int(obs_dim), n_antennas=M, n_users=K, p_max_w=float(p_max_w),
                        obs_scale=[float(x) for x in obs_scale], hidden=[int(h) for h in hidden],
                        activation=str(activation))
        self.net = MLP(int(obs_dim) + 1, K, hidden, activation, out_gain=0.01)   # near-equal shares at start
        select = torch.zeros(2 * M * K, int(obs_dim))
        for c in range(2):              # V[c, m, k] = part c (re, im) of d_k[m] = obs[K + c KM + k M + m]
            for m in range(M):
                for k in range(K):
                    select[(c * M + m) * K + k, K + c * K * M + k * M + m] = 1.0
        self.register_buffer("select", select, persistent=False)
        self.register_buffer("obs_scale", torch.tensor(self._kw["obs_scale"]), persistent=False)

    def arch_kwargs(self) -> dict[str, Any]:
        return dict(self._kw)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.cat([obs / self.obs_scale, torch.ones_like(obs[:, :1])], -1)

    def params(self, obs: torch.Tensor) -> torch.Tensor:
        """Per-user log-amplitudes l (B, K), softly bounded to (-R, R)."""
        R = self.LOG_AMP_RANGE
        return R * torch.tanh(self.net(self.features(obs)) / R)

    def perturb(self, params: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
        return params + sigma * torch.randn(params.shape, generator=gen)

    def beams(self, obs: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        kw = self._kw
        D = (obs @ self.select.T).view(-1, 2, kw["n_antennas"], kw["n_users"])
        amp = torch.exp(params.clamp(-self.LOGIT_CLIP, self.LOGIT_CLIP)).view(-1, 1, 1, kw["n_users"])
        return scale_to_power(D * amp, kw["p_max_w"], "full")

    @property
    def critic_dim(self) -> int:
        return self._kw["n_users"]

    def critic_action(self, obs: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """Centred log-amplitudes (B, K) of an executed beam (any V, not just this head's):
        l_k = log ||v_k|| minus its mean over users, clipped to [-2R, 2R] (a silent user)."""
        R = self.LOG_AMP_RANGE
        la = 0.5 * torch.log(V.square().sum((1, 2)).clamp_min(1e-30))
        return (la - la.mean(-1, keepdim=True)).clamp(-2.0 * R, 2.0 * R)

    def forward(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"V": self.beams(obs, self.params(obs))}


class SNRPowerBSActor(PowerShareBSActor):
    """BS head ``snr-power-mrt`` (project choice, opt-in): MRT directions as ``power-mrt``, and
    ONE learned number per slot, an exponent c(s) in (-C, C): user k's power share is
    proportional to SNR_k^c (SNR_k the observed direct-path SNR). c = 0 is the equal split,
    c > 0 favours strong users (sum rate), c < 0 weak ones (the eq. 19 rate requirement).
    A one-dimensional action keeps Q(s, c) easy for every critic to learn. The critics see c,
    recovered from any executed V by a least-squares fit of log ||v_k|| on log SNR_k.

    Map: c = C tanh(z / C), z = MLP(obs / scale ++ [1]); l_k = (ln 10 / 2) c log10 SNR_k,
    centred over users and clipped to +-10; V = scale_to_power(D * exp(l)).
    """

    head = "snr-power-mrt"
    EXP_RANGE = 4.0       # C: shares from SNR^-4 to SNR^4 (c = 2..4 is near the reward optimum here)
    HALF_LN10 = 0.5 * math.log(10.0)

    def __init__(self, obs_dim: int, n_antennas: int, n_users: int, p_max_w: float, obs_scale: Sequence[float],
                 hidden: Sequence[int] = (64, 64), activation: str = "relu") -> None:
        super().__init__(obs_dim, n_antennas, n_users, p_max_w, obs_scale, hidden, activation)
        self.net = MLP(int(obs_dim) + 1, 1, hidden, activation, out_gain=0.01)   # c ~ 0 (equal split) at start

    def params(self, obs: torch.Tensor) -> torch.Tensor:
        """The exponent c (B, 1)."""
        C = self.EXP_RANGE
        return C * torch.tanh(self.net(self.features(obs)) / C)

    def log_snr(self, obs: torch.Tensor) -> torch.Tensor:
        return obs[:, -self._kw["n_users"]:]            # log10 SNR_k, the last K entries of the CSI observation

    def beams(self, obs: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        kw = self._kw
        D = (obs @ self.select.T).view(-1, 2, kw["n_antennas"], kw["n_users"])
        l = (self.HALF_LN10 * params) * self.log_snr(obs)
        l = (l - l.mean(-1, keepdim=True)).clamp(-self.LOGIT_CLIP, self.LOGIT_CLIP)
        return scale_to_power(D * torch.exp(l).view(-1, 1, 1, kw["n_users"]), kw["p_max_w"], "full")

    @property
    def critic_dim(self) -> int:
        return 1

    def critic_action(self, obs: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
        """c (B, 1) of an executed beam: slope of centred log ||v_k|| over centred (ln 10 / 2) log10 SNR_k."""
        la = 0.5 * torch.log(V.square().sum((1, 2)).clamp_min(1e-30))
        x = self.HALF_LN10 * self.log_snr(obs)
        la, x = la - la.mean(-1, keepdim=True), x - x.mean(-1, keepdim=True)
        c = (la * x).sum(-1, keepdim=True) / x.square().sum(-1, keepdim=True).clamp_min(1e-6)
        return c.clamp(-2.0 * self.EXP_RANGE, 2.0 * self.EXP_RANGE)


BS_HEADS = ("direct", "power-mrt", "snr-power-mrt")


def make_bs_actor(head: str, d: "P1Dims", hidden: Sequence[int]) -> "ScaledBeamformerActor | PowerShareBSActor":
    """The BS actor of ``algo.bs_head``: "direct" (the paper's: beam entries), "power-mrt" or "snr-power-mrt"."""
    if head == "direct":
        return ScaledBeamformerActor(d.bs_obs_dim, d.n_antennas, d.n_users, d.p_max_w, d.bs_obs_scale, hidden)
    if head == "power-mrt":
        return PowerShareBSActor(d.bs_obs_dim, d.n_antennas, d.n_users, d.p_max_w, d.bs_obs_scale, hidden)
    if head == "snr-power-mrt":
        return SNRPowerBSActor(d.bs_obs_dim, d.n_antennas, d.n_users, d.p_max_w, d.bs_obs_scale, hidden)
    raise ConfigError(f"algo.bs_head: {head!r} is unknown; use one of {list(BS_HEADS)}")


# =========================================================================== 4. the algorithm

@dataclass(frozen=True)
class P1Dims:
    """What MAQ needs to know about a P1 environment, read from its spaces."""

    irs_ids: tuple[str, ...]
    bs_id: str
    irs_obs_dim: int
    bs_obs_dim: int
    state_dim: int
    n_elements: int
    bit_choices: tuple[int, ...]
    n_antennas: int
    n_users: int
    p_max_w: float
    irs_obs_scale: tuple[float, ...]
    bs_obs_scale: tuple[float, ...]
    state_scale: tuple[float, ...]


def _scale(high: Any) -> tuple[float, ...]:
    """Divide by the space's upper bound where it is a positive finite number, else by 1."""
    return tuple(float(h) if math.isfinite(float(h)) and float(h) > 0 else 1.0 for h in high.reshape(-1))


def p1_dims(env: BatchedEnv) -> P1Dims:
    irs_ids = tuple(a for a in env.agent_ids if a.startswith("irs"))
    bs_ids = tuple(a for a in env.agent_ids if a.startswith("bs"))
    if not irs_ids or len(bs_ids) != 1:
        raise ConfigError(f"scenario: MAQ needs one BS agent and at least one IRS agent, got agents {list(env.agent_ids)}")
    irs_space, bs_space = env.action_spaces[irs_ids[0]], env.action_spaces[bs_ids[0]]
    v_space = bs_space["V"]
    _, M, K = v_space.shape
    state_space = getattr(env, "state_space", None)
    state_dim = int(env.state().shape[-1]) if state_space is None else int(state_space.shape[0])
    return P1Dims(
        irs_ids=irs_ids, bs_id=bs_ids[0],
        irs_obs_dim=int(env.observation_spaces[irs_ids[0]].shape[0]),
        bs_obs_dim=int(env.observation_spaces[bs_ids[0]].shape[0]),
        state_dim=state_dim,
        n_elements=int(irs_space.n_elements), bit_choices=tuple(irs_space.bit_choices),
        n_antennas=int(M), n_users=int(K), p_max_w=float(v_space.high.max()) ** 2,
        irs_obs_scale=_scale(env.observation_spaces[irs_ids[0]].high),
        bs_obs_scale=_scale(env.observation_spaces[bs_ids[0]].high),
        state_scale=_scale(state_space.high) if state_space is not None else (1.0,) * state_dim,
    )


def _hard_update(target: nn.Module, source: nn.Module) -> None:
    target.load_state_dict(source.state_dict())


class MAQ(Algorithm):
    """Multi-agent Q-mix (P1 Alg. 1) with a mapping object (Wolpertinger or policy gradient)."""

    name = "maq"
    config_cls: type[MAQConfig] = MAQConfig

    def __init__(self, env: BatchedEnv, config: MAQConfig | None = None, seed: int = 0,
                 mapping: WolpertingerMapping | PolicyGradientMapping | None = None) -> None:
        cfg = self.config_cls() if config is None else config
        _check(cfg)
        self.cfg, self.seed = cfg, int(seed)
        self.dims = d = p1_dims(env)
        self.mapping = mapping if mapping is not None else WolpertingerMapping(getattr(cfg, "k", 1))
        self.L, self.N, self.num_envs = len(d.irs_ids), d.n_elements, env.num_envs
        self.max_bits = max(d.bit_choices)
        self.gen = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            mkw = ({"mapping": "wp", "k": self.mapping.k} if self.mapping.name == "wp" else
                   {"mapping": "pg", "init_log_std": self.mapping.init_log_std, "pg_samples": self.mapping.samples})
            self.irs = nn.ModuleList(
                MAQIRSActor(d.irs_obs_dim, d.n_elements, d.bit_choices, l, self.L, d.irs_obs_scale, cfg.hidden, **mkw)
                for l in range(self.L))
            for a in self.irs[1:]:
                a.high_q = self.irs[0].high_q                  # one high-level agent net, one-hot ids
            self.bs = make_bs_actor(cfg.bs_head, d, cfg.hidden)
            self.bs_q = MLP(d.bs_obs_dim + self.bs.critic_dim, 1, cfg.hidden)   # Q_low_B(s_B, a_B)
            # Mixers: high conditioned on [s, x] (eq. 24), low on [s, b] (eq. 25).
            self.mix_high = MonotonicMixer(self.L, d.state_dim + self.L * 3 * self.N, cfg.mixer_embed, cfg.mixer_hyper)
            self.mix_low = MonotonicMixer(self.L + 1, d.state_dim + self.L, cfg.mixer_embed, cfg.mixer_hyper)
            self.extra = nn.ModuleList(
                m for m in (self.mapping.make_extra(self.N, self.max_bits, cfg.hidden) for _ in range(self.L)) if m is not None)
        self.online = nn.ModuleDict({"irs": self.irs, "bs": self.bs, "bs_q": self.bs_q,
                                     "mix_high": self.mix_high, "mix_low": self.mix_low})
        self.target = copy.deepcopy(self.online)
        for a in self.target["irs"][1:]:
            a.high_q = self.target["irs"][0].high_q
        self.target.requires_grad_(False)
        high_params = list(self.irs[0].high_q.parameters()) + list(self.mix_high.parameters())
        low_params = [p for a in self.irs for p in a.low_q.parameters()] + list(self.bs_q.parameters()) + list(self.mix_low.parameters())
        pol_groups = [{"params": [p for a in self.irs for p in a.policy.parameters()] + list(self.bs.parameters())}]
        if len(self.extra):
            pol_groups.append({"params": list(self.extra.parameters()), "lr": getattr(cfg, "lr_estimator", cfg.lr_policy)})
        self.opt_high = torch.optim.Adam(high_params, lr=cfg.lr_high)
        self.opt_low = torch.optim.Adam(low_params, lr=cfg.lr_low)
        self.opt_policy = torch.optim.Adam(pol_groups, lr=cfg.lr_policy)
        self.buffer = ReplayBuffer(cfg.buffer_size)
        self.state_scale = torch.tensor(d.state_scale)
        self.prev_bits = self._initial_bits(self.num_envs)
        self.transitions = 0      # environment transitions stored (all B envs)
        self.updates = 0          # gradient updates done

    # ---------------------------------------------------------------- acting (Alg. 1 l. 5-9)

    def _initial_bits(self, B: int) -> torch.Tensor:
        return torch.full((B, self.L), self.dims.bit_choices[0], dtype=torch.long)

    def epsilon(self) -> float:
        frac = min(1.0, self.transitions / max(1, self.cfg.eps_decay_steps))
        return self.cfg.eps_start + frac * (self.cfg.eps_end - self.cfg.eps_start)

    @torch.no_grad()
    def act(self, obs: Obs, state: torch.Tensor, explore: bool) -> Action:
        d, B = self.dims, state.shape[0]
        if self.prev_bits.shape[0] != B:
            self.prev_bits = self._initial_bits(B)
        choices = torch.tensor(d.bit_choices)
        actions: Action = {}
        for l, (a_id, actor) in enumerate(zip(d.irs_ids, self.irs)):
            obs_n = actor.norm(obs[a_id])
            choice = actor.high_values(obs_n, self.prev_bits[:, l]).argmax(-1)          # eq. 23
            if explore:
                rand = torch.rand(B, generator=self.gen) < self.epsilon()
                choice = torch.where(rand, torch.randint(len(choices), (B,), generator=self.gen), choice)
            bits = choices[choice]
            noise = self.cfg.proto_noise if explore else 0.0
            phase_idx, on = actor.low_action(obs_n, bits, noise, self.gen)
            actions[a_id] = {"bits": bits, "phase_idx": phase_idx, "on": on}
        params = self.bs.params(obs[d.bs_id])
        if explore and self.cfg.bs_noise > 0:
            params = self.bs.perturb(params, self.cfg.bs_noise, self.gen)
        actions[d.bs_id] = {"V": self.bs.beams(obs[d.bs_id], params)}
        return actions

    def observe(self, obs: Obs, state: torch.Tensor, action: Action, result: StepResult, next_state: torch.Tensor) -> None:
        d = self.dims
        bits = torch.stack([action[a]["bits"] for a in d.irs_ids], 1).long()
        self.buffer.add({
            "obs": {a: obs[a] for a in d.irs_ids + (d.bs_id,)},
            "next_obs": {a: result.obs[a] for a in d.irs_ids + (d.bs_id,)},
            "state": state, "next_state": next_state,
            "prev_bits": self.prev_bits, "bits": bits,
            "phase_idx": torch.stack([action[a]["phase_idx"] for a in d.irs_ids], 1).long(),
            "on": torch.stack([action[a]["on"] for a in d.irs_ids], 1).bool(),
            "V": torch.as_tensor(action[d.bs_id]["V"]).float(),
            "reward": result.rewards[d.bs_id].float() * self.cfg.reward_scale,
            "terminated": result.terminated.float(),
        })
        done = (result.terminated | result.truncated).unsqueeze(-1)
        self.prev_bits = torch.where(done, self._initial_bits(bits.shape[0]), bits)
        self.transitions += bits.shape[0]

    # ---------------------------------------------------------------- learning (Alg. 1 l. 12-21)

    def update(self) -> dict[str, float]:
        if len(self.buffer) < max(self.cfg.learning_starts, self.cfg.batch_size):
            return {"eps": self.epsilon()}
        metrics: dict[str, float] = {}
        for _ in range(self.cfg.updates_per_step):
            metrics = self._update_once(self.buffer.sample(self.cfg.batch_size, self.gen))
        metrics["eps"] = self.epsilon()
        return metrics

    def _enc_joint(self, phase_idx: torch.Tensor, on: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        """Joint low-level IRS action x = [x_1..x_L] encoded, (B, L*3N)."""
        return torch.cat([encode_discrete(phase_idx[:, l], on[:, l], bits[:, l]) for l in range(self.L)], -1)

    def _q_low_tot(self, nets: nn.ModuleDict, obs_n: list[torch.Tensor], obs_bs: torch.Tensor, state_n: torch.Tensor,
                   bits: torch.Tensor, x_enc: list[torch.Tensor], V: torch.Tensor) -> torch.Tensor:
        """Q_low,tot(s, b, x, a_B) through the low-level mixer (eq. 25)."""
        q = [nets["irs"][l].low_value(obs_n[l], bits[:, l], x_enc[l]) for l in range(self.L)]
        q.append(nets["bs_q"](torch.cat([obs_bs / nets["bs"].obs_scale, nets["bs"].critic_action(obs_bs, V)], -1)).squeeze(-1))
        return nets["mix_low"](torch.stack(q, -1), torch.cat([state_n, bits.float() / self.max_bits], -1))

    def _update_once(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg, d, L = self.cfg, self.dims, self.L
        choices = torch.tensor(d.bit_choices)
        s_n, s2_n = batch["state"] / self.state_scale, batch["next_state"] / self.state_scale
        obs_n = [self.irs[l].norm(batch["obs"][a]) for l, a in enumerate(d.irs_ids)]
        obs2_n = [self.irs[l].norm(batch["next_obs"][a]) for l, a in enumerate(d.irs_ids)]
        bits, prev_bits = batch["bits"], batch["prev_bits"]
        x_enc = [encode_discrete(batch["phase_idx"][:, l], batch["on"][:, l], bits[:, l]) for l in range(L)]
        r, not_term = batch["reward"], 1.0 - batch["terminated"]

        # Next greedy resolutions b' (online argmax) and the target nets' next low-level actions x', a_B'.
        with torch.no_grad():
            q2_high = [self.target["irs"][l].high_values(obs2_n[l], bits[:, l]) for l in range(L)]
            b2_choice = torch.stack([self.irs[l].high_values(obs2_n[l], bits[:, l]).argmax(-1) for l in range(L)], 1)
            bits2 = choices[b2_choice]
            x2 = [self.target["irs"][l].low_action(obs2_n[l], bits2[:, l]) for l in range(L)]
            x2_enc = [encode_discrete(x2[l][0], x2[l][1], bits2[:, l]) for l in range(L)]
            obs2_bs = batch["next_obs"][d.bs_id]
            V2 = self.target["bs"].beams(obs2_bs, self.target["bs"].params(obs2_bs))
            # eq. 24: y_high = r + gamma max_b' Q_high,tar(s', b', x')
            q2h = torch.stack([q2_high[l].gather(1, b2_choice[:, l:l + 1]).squeeze(1) for l in range(L)], -1)
            y_high = r + cfg.gamma * not_term * self.target["mix_high"](q2h, torch.cat([s2_n] + x2_enc, -1))
            # eq. 25: y_low = r + gamma max_x' Q_low,tar(s', b', x')
            y_low = r + cfg.gamma * not_term * self._q_low_tot(self.target, obs2_n, batch["next_obs"][d.bs_id], s2_n,
                                                                bits2, x2_enc, V2)

        # High level, eq. 24.
        b_choice = (bits.unsqueeze(-1) == choices).float().argmax(-1)
        q_high = torch.stack([self.irs[l].high_values(obs_n[l], prev_bits[:, l]).gather(1, b_choice[:, l:l + 1]).squeeze(1)
                              for l in range(L)], -1)
        loss_high = (y_high - self.mix_high(q_high, torch.cat([s_n] + x_enc, -1))).square().mean()
        self._step(self.opt_high, loss_high)

        # Policies: IRS by the mapping (eq. 26 or 31 + 33), BS DDPG-style through Q_low_B (eq. 27).
        loss_pol, extra_metrics = 0.0, {}
        for l, actor in enumerate(self.irs):
            q_fn = lambda x, l=l: self.irs[l].low_value(obs_n[l], bits[:, l], x)
            inp = actor.policy_input(obs_n[l], bits[:, l])
            loss_l, m = self.mapping.policy_loss(actor.policy, inp, bits[:, l], q_fn, self.gen,
                                                 self.extra[l] if len(self.extra) else None)
            loss_pol = loss_pol + loss_l
            for key, val in m.items():
                extra_metrics[key] = extra_metrics.get(key, 0.0) + val / L
        obs_bs = batch["obs"][d.bs_id]
        a_bs = self.bs.critic_action(obs_bs, self.bs.beams(obs_bs, self.bs.params(obs_bs)))
        loss_bs = -self.bs_q(torch.cat([obs_bs / self.bs.obs_scale, a_bs], -1)).mean()
        self._step(self.opt_policy, loss_pol + loss_bs)

        # Low level, eq. 25.
        q_low = self._q_low_tot(self.online, obs_n, obs_bs, s_n, bits, x_enc, batch["V"])
        loss_low = (y_low - q_low).square().mean()
        self._step(self.opt_low, loss_low)

        self.updates += 1
        if self.updates % cfg.target_period == 0:   # Alg. 1 l. 21: hard copies every target_period updates
            _hard_update(self.target, self.online)
        return {"loss_high": loss_high.item(), "loss_low": loss_low.item(), "loss_policy": float(loss_pol.detach()),
                "loss_bs": loss_bs.item(), "q_low": q_low.mean().item(), **extra_metrics}

    def _step(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        self.online.zero_grad(set_to_none=True)
        self.extra.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in opt.param_groups for p in g["params"]]
        nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        opt.step()

    # ---------------------------------------------------------------- execution and persistence

    def actors(self) -> dict[str, Actor]:
        """The live actors; IRS actors start a new episode (so evaluations do not depend on the last one)."""
        for actor in self.irs:
            actor.reset_state()
        out: dict[str, Actor] = {a: self.irs[l] for l, a in enumerate(self.dims.irs_ids)}
        out[self.dims.bs_id] = self.bs
        return out

    def role_of(self, agent_id: str) -> str:
        return own_role(agent_id, self.dims.irs_ids + (self.dims.bs_id,))

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg), "online": self.online.state_dict(), "target": self.target.state_dict(),
            "extra": self.extra.state_dict(), "opt_high": self.opt_high.state_dict(),
            "opt_low": self.opt_low.state_dict(), "opt_policy": self.opt_policy.state_dict(),
            "buffer": self.buffer.state_dict(), "gen": self.gen.get_state(), "prev_bits": self.prev_bits.clone(),
            "transitions": self.transitions, "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.online.load_state_dict(state["online"])
        self.target.load_state_dict(state["target"])
        self.extra.load_state_dict(state["extra"])
        self.opt_high.load_state_dict(state["opt_high"])
        self.opt_low.load_state_dict(state["opt_low"])
        self.opt_policy.load_state_dict(state["opt_policy"])
        self.buffer.load_state_dict(state["buffer"])
        self.gen.set_state(state["gen"])
        self.prev_bits = state["prev_bits"].clone()
        self.transitions, self.updates = int(state["transitions"]), int(state["updates"])


class MAQWP(MAQ):
    """MAQ-WP: the Wolpertinger mapping (Alg. 2, eq. 26)."""

    name = "maq-wp"
    config_cls = MAQWPConfig

    def __init__(self, env: BatchedEnv, config: MAQWPConfig | None = None, seed: int = 0) -> None:
        cfg = MAQWPConfig() if config is None else config
        super().__init__(env, cfg, seed, WolpertingerMapping(cfg.k))


class MAQPG(MAQ):
    """MAQ-PG: Gaussian proto-actions, deterministic mapping, Lemma 1 gradient (eq. 31), estimator (eq. 33)."""

    name = "maq-pg"
    config_cls = MAQPGConfig

    def __init__(self, env: BatchedEnv, config: MAQPGConfig | None = None, seed: int = 0) -> None:
        cfg = MAQPGConfig() if config is None else config
        super().__init__(env, cfg, seed, PolicyGradientMapping(cfg.init_log_std, cfg.pg_samples))
