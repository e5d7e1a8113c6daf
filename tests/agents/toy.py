"""A tiny P1-shaped environment and a tiny learning algorithm for infrastructure tests.

The environment has P1's agents and action formats (bs0 beams, irs0 hybrid action) at toy
sizes and cheap physics; the algorithm uses a replay buffer, Adam, exploration noise from
its own generator and the shared actor classes, so every piece of state the training loop
must checkpoint for an exact resume is exercised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.base import Actor, Algorithm
from agents.buffers import ReplayBuffer
from agents.networks import BeamformerActor, HybridIRSActor, phase_from_index, scale_to_power
from twin.envs.base import BatchedEnv, StepResult
from twin.envs.spaces import IRSActionSpace


@dataclass(frozen=True)
class ToyConfig:
    n_antennas: int = 2
    n_users: int = 2
    n_elements: int = 4
    bit_choices: tuple[int, ...] = (1, 2)
    p_max_w: float = 1.0
    episode_len: int = 5


class ToyEnv(BatchedEnv):
    def __init__(self, num_envs: int = 1, cfg: ToyConfig | None = None) -> None:
        self.cfg = cfg or ToyConfig()
        c = self.cfg
        self.num_envs = num_envs
        self.M, self.K, self.N = c.n_antennas, c.n_users, c.n_elements
        self.bit_choices = tuple(c.bit_choices)
        self.agent_ids = ("bs0", "irs0")
        self.observation_spaces = {
            "bs0": gym.spaces.Box(-10.0, 10.0, shape=(self.K,), dtype=np.float32),
            "irs0": gym.spaces.Box(-10.0, 10.0, shape=(self.K + 1,), dtype=np.float32),
        }
        bound = math.sqrt(c.p_max_w)
        self.action_spaces = {
            "bs0": gym.spaces.Dict({"V": gym.spaces.Box(-bound, bound, shape=(2, self.M, self.K), dtype=np.float32)}),
            "irs0": IRSActionSpace(self.N, self.bit_choices),
        }
        self._gen = torch.Generator().manual_seed(0)

    def reset(self, seed: int | None = None):
        if seed is not None:
            self._gen.manual_seed(int(seed))
        B = self.num_envs
        self.target = 2 * math.pi * torch.rand(B, self.N, generator=self._gen)
        self.h = torch.randn(B, 2, self.M, self.K, generator=self._gen)
        self.t = 0
        self.last = torch.zeros(B, self.K)
        return self._obs()

    def _obs(self):
        irs = torch.cat([self.last, torch.cos(self.target).mean(-1, keepdim=True)], -1)
        return {"bs0": self.last.clone(), "irs0": irs}

    def state(self) -> torch.Tensor:
        o = self._obs()
        return torch.cat([o["irs0"], o["bs0"]], -1)

    def step(self, actions) -> StepResult:
        irs, V = actions["irs0"], actions["bs0"]["V"]
        theta = phase_from_index(irs["phase_idx"], irs["bits"])
        align = (torch.cos(theta - self.target) * irs["on"].float()).mean(-1)
        gain = (V * self.h).sum(dim=(1, 2))                       # (B, K)
        rate = torch.log2(1 + gain.pow(2))
        reward = rate.sum(-1) + align
        self.last = rate.float()
        self.target = self.target + 0.1 * torch.randn(self.target.shape, generator=self._gen)
        self.t += 1
        B = self.num_envs
        r = reward.float()
        return StepResult(self._obs(), {"bs0": r, "irs0": r}, torch.zeros(B, dtype=torch.bool),
                          torch.full((B,), self.t >= self.cfg.episode_len), {"sum_rate": rate.sum(-1), "rate": rate})


@dataclass(frozen=True)
class ToyAlgoConfig:
    lr: float = 1e-2
    batch_size: int = 8
    buffer_size: int = 64
    noise: float = 0.3
    hidden: tuple[int, ...] = (16,)


class ToyAlgo(Algorithm):
    """Deterministic-policy learner: beams pushed toward the sampled high-reward actions."""

    name = "toy"

    def __init__(self, env: BatchedEnv, config: ToyAlgoConfig, seed: int) -> None:
        self.cfg = config
        self.gen = torch.Generator().manual_seed(seed)
        c = env.cfg
        self.irs = HybridIRSActor(c.n_users + 1, c.n_elements, c.bit_choices, config.hidden)
        self.bs = BeamformerActor(c.n_users, c.n_antennas, c.n_users, c.p_max_w, config.hidden)
        self.opt = torch.optim.Adam([*self.irs.parameters(), *self.bs.parameters()], lr=config.lr)
        self.buffer = ReplayBuffer(config.buffer_size)
        self.p_max = c.p_max_w

    def act(self, obs, state, explore):
        with torch.no_grad():
            irs = self.irs(obs["irs0"])
            raw = self.bs.raw(obs["bs0"])
            if explore:
                raw = raw + self.cfg.noise * torch.randn(raw.shape, generator=self.gen)
                flip = torch.rand(irs["on"].shape, generator=self.gen) < 0.1
                irs = {**irs, "on": irs["on"] ^ flip}
            return {"bs0": {"V": scale_to_power(raw, self.p_max).clamp(-1, 1)}, "irs0": irs}

    def observe(self, obs, state, action, result, next_state):
        self.buffer.add({"obs": obs, "V": action["bs0"]["V"], "reward": result.rewards["bs0"]})

    def update(self):
        if len(self.buffer) < self.cfg.batch_size:
            return {}
        b = self.buffer.sample(self.cfg.batch_size, self.gen)
        w = torch.softmax(b["reward"], 0)
        pred = self.bs(b["obs"]["bs0"])["V"]
        loss = (w[:, None, None, None] * (pred - b["V"]).pow(2)).sum()
        proto = self.irs.net(b["obs"]["irs0"])[0]
        loss = loss + 1e-3 * proto.pow(2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.item()}

    def actors(self) -> dict[str, Actor]:
        return {"bs": self.bs, "irs": self.irs}

    def role_of(self, agent_id: str) -> str:
        return "bs" if agent_id.startswith("bs") else "irs"

    def state_dict(self) -> dict[str, Any]:
        return {"irs": self.irs.state_dict(), "bs": self.bs.state_dict(), "opt": self.opt.state_dict(),
                "buffer": self.buffer.state_dict(), "gen": self.gen.get_state()}

    def load_state_dict(self, state) -> None:
        self.irs.load_state_dict(state["irs"])
        self.bs.load_state_dict(state["bs"])
        self.opt.load_state_dict(state["opt"])
        self.buffer.load_state_dict(state["buffer"])
        self.gen.set_state(state["gen"])


def register(monkeypatch) -> None:
    """Make scenario "toy" and algorithm "toy" available to the registry for one test."""
    from agents import registry

    monkeypatch.setitem(registry.ENVIRONMENTS, "toy", (ToyEnv, ToyConfig))
    monkeypatch.setitem(registry.ALGORITHMS, "toy", (ToyAlgo, ToyAlgoConfig))
