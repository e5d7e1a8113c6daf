"""Small network building blocks every algorithm reuses: MLPs, action heads, actors.

Actors here are ``agents.base.Actor`` subclasses whose constructor takes only plain values
(ints, floats, tuples, strings), so ``arch_kwargs()`` round-trips through a bundle manifest
(JSON) and the bundle can rebuild them with torch and ristwin alone.

Action formats follow ``prompts/contracts.md`` (P1):
  IRS: {"bits": (B,) long, "phase_idx": (B, N) long in [0, 2^bits), "on": (B, N) bool}
  BS:  {"V": (B, 2, M, K) float32}, real and imaginary parts of the beamformers in sqrt(W).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from agents.base import Actor
from twin.errors import ConfigError

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU}


def orthogonal_init(module: nn.Module, gain: float = math.sqrt(2.0)) -> nn.Module:
    """Orthogonal weights, zero biases on every Linear inside ``module`` (the PPO / DDPG habit)."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, gain=gain)
            nn.init.zeros_(layer.bias)
    return module


class MLP(nn.Module):
    """in_dim -> hidden... -> out_dim, activation between layers, none after the last.

    The last layer gets its own (usually small) orthogonal gain so initial outputs stay near
    zero, which keeps initial actions and Q values unbiased.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        out_gain: float = 0.01,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ConfigError(f"activation: {activation!r} is unknown; use one of {sorted(ACTIVATIONS)}")
        if in_dim <= 0 or out_dim <= 0 or any(h <= 0 for h in hidden):
            raise ConfigError(f"MLP sizes must be positive, got in={in_dim} hidden={tuple(hidden)} out={out_dim}")
        layers: list[nn.Module] = []
        prev = in_dim
        for width in hidden:
            layers.append(orthogonal_init(nn.Linear(prev, width)))
            if layer_norm:
                layers.append(nn.LayerNorm(width))
            layers.append(ACTIVATIONS[activation]())
            prev = width
        layers.append(orthogonal_init(nn.Linear(prev, out_dim), gain=out_gain))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# --------------------------------------------------------------------------- phases / powers

def quantize_phase(theta: torch.Tensor, bits: torch.Tensor | int) -> torch.Tensor:
    """Nearest point of the b-bit grid F_b (P1 eq. 6) as an index in [0, 2^b).

    theta: (B, N) radians (any real value); bits: (B,) long or an int.
    """
    if isinstance(bits, int):
        levels = torch.full((theta.shape[0], 1), float(1 << bits), dtype=theta.dtype, device=theta.device)
    else:
        levels = torch.pow(2.0, bits.to(theta.dtype)).unsqueeze(-1)
    step = 2.0 * math.pi / levels
    idx = torch.round(theta / step)
    return torch.remainder(idx, levels).to(torch.long)


def phase_from_index(phase_idx: torch.Tensor, bits: torch.Tensor | int) -> torch.Tensor:
    """theta = 2 pi i / 2^b in radians, (B, N)."""
    levels = float(1 << bits) if isinstance(bits, int) else torch.pow(2.0, bits.float()).unsqueeze(-1)
    return phase_idx.float() * (2.0 * math.pi / levels)


def scale_to_power(V: torch.Tensor, p_max_w: float, mode: str = "full", eps: float = 1e-12) -> torch.Tensor:
    """Scale beamformers (B, 2, M, K) so the total power sum_k ||v_k||^2 meets P_max (P1 10a).

    mode "full": every action transmits exactly P_max (direction is what the network learns);
    mode "ball": actions inside the power ball are kept, outside ones projected to its surface.
    """
    power = V.pow(2).flatten(1).sum(-1)  # (B,) = sum_k ||v_k||^2, real+imag parts
    if mode == "full":
        scale = torch.sqrt(p_max_w / (power + eps))
    elif mode == "ball":
        scale = torch.sqrt(torch.clamp(p_max_w / (power + eps), max=1.0))
    else:
        raise ConfigError(f"power_mode: {mode!r} is unknown; use 'full' or 'ball'")
    return V * scale.view(-1, *([1] * (V.dim() - 1)))


class GaussianHead(nn.Module):
    """A diagonal Gaussian over a continuous proto-action: mean from an MLP, state-free log std."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (64, 64),
                 activation: str = "tanh", init_log_std: float = -0.5) -> None:
        super().__init__()
        self.mean = MLP(in_dim, out_dim, hidden, activation, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((out_dim,), float(init_log_std)))

    def forward(self, x: torch.Tensor) -> torch.distributions.Normal:
        mean = self.mean(x)
        return torch.distributions.Normal(mean, self.log_std.clamp(-5.0, 2.0).exp().expand_as(mean))


# --------------------------------------------------------------------------- actors

class IRSProtoNet(nn.Module):
    """Shared trunk of a P1 IRS policy: obs -> (resolution logits, phase angles, ON logits).

    The continuous proto-action is what MAQ / MADDPG train through; the deterministic
    mapping to the discrete action lives in :meth:`HybridIRSActor.discretize`.
    """

    def __init__(self, obs_dim: int, n_elements: int, n_bit_choices: int,
                 hidden: Sequence[int], activation: str) -> None:
        super().__init__()
        self.n_elements, self.n_bit_choices = n_elements, n_bit_choices
        self.body = MLP(obs_dim, n_bit_choices + 3 * n_elements, hidden, activation, out_gain=0.01)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.body(obs)
        nb, n = self.n_bit_choices, self.n_elements
        bit_logits = out[:, :nb]
        cos_sin = out[:, nb:nb + 2 * n].view(-1, n, 2)
        theta = torch.remainder(torch.atan2(cos_sin[..., 1], cos_sin[..., 0]), 2.0 * math.pi)
        on_logits = out[:, nb + 2 * n:]
        return bit_logits, theta, on_logits


class HybridIRSActor(Actor):
    """Deterministic P1 IRS actor: obs (B, K+1) -> {"bits", "phase_idx", "on"}.

    bits: argmax over ``bit_choices``; phases: nearest b-bit grid point to the proto angle;
    on: ON logit > 0. When ``fixed_bits`` is given (a separate high-level agent picks the
    resolution, as in MAQ), the network's resolution logits are ignored.
    """

    def __init__(self, obs_dim: int, n_elements: int, bit_choices: Sequence[int] = (1, 2, 3),
                 hidden: Sequence[int] = (64, 64), activation: str = "relu") -> None:
        super().__init__()
        if not bit_choices:
            raise ConfigError("bit_choices: need at least one phase resolution")
        self._kw = dict(obs_dim=int(obs_dim), n_elements=int(n_elements),
                        bit_choices=[int(b) for b in bit_choices], hidden=[int(h) for h in hidden],
                        activation=str(activation))
        self.net = IRSProtoNet(obs_dim, n_elements, len(bit_choices), hidden, activation)
        self.register_buffer("bit_values", torch.tensor(self._kw["bit_choices"], dtype=torch.long), persistent=False)

    def arch_kwargs(self) -> dict[str, Any]:
        return dict(self._kw)

    def discretize(self, bit_logits: torch.Tensor, theta: torch.Tensor, on_logits: torch.Tensor,
                   bits: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if bits is None:
            bits = self.bit_values[bit_logits.argmax(-1)]
        return {"bits": bits, "phase_idx": quantize_phase(theta, bits), "on": on_logits > 0}

    def forward(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.discretize(*self.net(obs))


class BeamformerActor(Actor):
    """Deterministic P1 BS actor: obs (B, K) -> {"V": (B, 2, M, K)} scaled to P_max."""

    def __init__(self, obs_dim: int, n_antennas: int, n_users: int, p_max_w: float,
                 hidden: Sequence[int] = (64, 64), activation: str = "relu", power_mode: str = "full") -> None:
        super().__init__()
        if p_max_w <= 0:
            raise ConfigError(f"p_max_w: transmit power must be positive, got {p_max_w}")
        self._kw = dict(obs_dim=int(obs_dim), n_antennas=int(n_antennas), n_users=int(n_users),
                        p_max_w=float(p_max_w), hidden=[int(h) for h in hidden],
                        activation=str(activation), power_mode=str(power_mode))
        scale_to_power(torch.ones(1, 2, 1, 1), 1.0, power_mode)  # validates the mode early
        # out_gain 1: an all-near-zero output would make the power normalization ill-conditioned.
        self.net = MLP(obs_dim, 2 * n_antennas * n_users, hidden, activation, out_gain=1.0)

    def arch_kwargs(self) -> dict[str, Any]:
        return dict(self._kw)

    def raw(self, obs: torch.Tensor) -> torch.Tensor:
        kw = self._kw
        return self.net(obs).view(-1, 2, kw["n_antennas"], kw["n_users"])

    def forward(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"V": scale_to_power(self.raw(obs), self._kw["p_max_w"], self._kw["power_mode"])}
