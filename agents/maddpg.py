"""MADDPG on P1 with a continuous relaxation of the hybrid IRS action (the paper's baseline).

P1 compares MAQ with "the MADDPG-based approach" (Lowe et al. 2017) without saying how
MADDPG handles the discrete IRS action. The project's reading, read top to bottom:

- Relaxation. Each IRS actor (``agents.networks.HybridIRSActor``) outputs resolution logits,
  N phase angles and N ON logits. The critics see the *relaxed* action: softmax of the
  resolution logits, (cos theta, sin theta) per element and sigmoid of the ON logits.
- Quantization at execution. The environment receives bits = argmax of the logits, each
  phase rounded to the nearest point of that resolution's grid, ON = logit > 0; every
  such action is valid by construction. During training the environment is a
  deterministic function of the relaxed action, so the critic learns Q(s, relaxed action)
  of exactly what was executed.
- Exploration: Gaussian noise on the logits and angles (``noise``), the BS's raw beams
  (relative to their size); targets are soft-updated with ``tau`` (Lowe et al.), one
  critic per agent.
- Critic inputs are one choice: ``critic = "global"`` (MADDPG: global state and every
  agent's action) or ``"local"`` (independent learners, ``agents.il``: the agent's own
  observation and action only). Everything else is shared.

The BS actor is MAQ's (``agents.maq.make_bs_actor``): by default ``ScaledBeamformerActor``
(power-scaled beams, P1 eq. 10a, critics see the beam entries); ``bs_head = "power-mrt"``
learns per-user power shares over MRT directions (critics see the shares).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import nn

from agents.base import Actor, Algorithm, own_role
from agents.buffers import ReplayBuffer
from agents.maq import make_bs_actor, p1_dims
from agents.networks import MLP, HybridIRSActor
from twin.envs.base import Action, BatchedEnv, Obs, StepResult
from twin.errors import ConfigError

TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class MADDPGConfig:
    buffer_size: int = 100_000          # as P1 Table III for MAQ (the baseline's are not given)
    batch_size: int = 128               # idem
    gamma: float = 0.99                 # idem
    lr_actor: float = 1e-4              # idem ("all learning rates 1e-4")
    lr_critic: float = 1e-4             # idem
    tau: float = 0.01                   # open: soft target update rate (Lowe et al. use 0.01)
    noise: float = 0.1                  # open: exploration std on logits / angles (rad / 2 pi) / beams
    hidden: tuple[int, ...] = (64, 64)  # open
    learning_starts: int = 1_000        # open: transitions before the first update
    updates_per_step: int = 1           # open: gradient updates per batched env step
    reward_scale: float = 1.0           # open
    grad_clip: float = 10.0             # open
    critic: str = "global"              # "global" = MADDPG, "local" = independent learners
    bs_head: str = "direct"             # BS policy head, as MAQ's (agents.maq.make_bs_actor)
    bs_noise: float = -1.0              # exploration std on the BS head's output; < 0: the same as ``noise``


class ScaledHybridIRSActor(HybridIRSActor):
    """``HybridIRSActor`` (quantized execution) whose observation is divided by its space's bounds."""

    def __init__(self, obs_dim: int, n_elements: int, bit_choices: Sequence[int], obs_scale: Sequence[float],
                 hidden: Sequence[int] = (64, 64), activation: str = "relu") -> None:
        super().__init__(obs_dim, n_elements, bit_choices, hidden, activation)
        self._kw["obs_scale"] = [float(x) for x in obs_scale]
        self.register_buffer("obs_scale", torch.tensor(self._kw["obs_scale"]), persistent=False)

    def relaxed(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw outputs (bit logits (B,|B|), theta (B,N) rad, ON logits (B,N)) of the normalized obs."""
        return self.net(obs / self.obs_scale)

    def forward(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.discretize(*self.relaxed(obs))


def relaxed_irs(bit_logits: torch.Tensor, theta: torch.Tensor, on_logits: torch.Tensor) -> torch.Tensor:
    """The critic's view of an IRS action: [softmax(bits), cos theta, sin theta, sigmoid(on)]."""
    return torch.cat([torch.softmax(bit_logits, -1), torch.cos(theta), torch.sin(theta), torch.sigmoid(on_logits)], -1)


class MADDPG(Algorithm):
    """Deterministic actors per agent, one critic per agent (global or local inputs)."""

    name = "maddpg"
    config_cls: type[MADDPGConfig] = MADDPGConfig

    def __init__(self, env: BatchedEnv, config: MADDPGConfig | None = None, seed: int = 0) -> None:
        cfg = self.config_cls() if config is None else config
        if cfg.critic not in ("global", "local"):
            raise ConfigError(f"critic: {cfg.critic!r} is unknown; use 'global' (MADDPG) or 'local' (independent learners)")
        self.cfg, self.seed = cfg, int(seed)
        self.dims = d = p1_dims(env)
        self.ids = d.irs_ids + (d.bs_id,)
        self.gen = torch.Generator().manual_seed(self.seed)
        nb, n = len(d.bit_choices), d.n_elements
        obs_dims = {**{a: d.irs_obs_dim for a in d.irs_ids}, d.bs_id: d.bs_obs_dim}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            actors: dict[str, nn.Module] = {
                a: ScaledHybridIRSActor(d.irs_obs_dim, n, d.bit_choices, d.irs_obs_scale, cfg.hidden) for a in d.irs_ids}
            actors[d.bs_id] = make_bs_actor(cfg.bs_head, d, cfg.hidden)
            self.act_dims = {**{a: nb + 3 * n for a in d.irs_ids}, d.bs_id: actors[d.bs_id].critic_dim}
            if cfg.critic == "global":
                critic_in = {a: d.state_dim + sum(self.act_dims.values()) for a in self.ids}
            else:
                critic_in = {a: obs_dims[a] + self.act_dims[a] for a in self.ids}
            critics = {a: MLP(critic_in[a], 1, cfg.hidden, out_gain=1.0) for a in self.ids}
        self.actor_nets = nn.ModuleDict(actors)
        self.critics = nn.ModuleDict(critics)
        self.target_actors = copy.deepcopy(self.actor_nets).requires_grad_(False)
        self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
        self.opt_actor = torch.optim.Adam(self.actor_nets.parameters(), lr=cfg.lr_actor)
        self.opt_critic = torch.optim.Adam(self.critics.parameters(), lr=cfg.lr_critic)
        self.buffer = ReplayBuffer(cfg.buffer_size)
        self.state_scale = torch.tensor(d.state_scale)
        self.obs_scale = {**{a: torch.tensor(d.irs_obs_scale) for a in d.irs_ids}, d.bs_id: torch.tensor(d.bs_obs_scale)}
        self.transitions = 0
        self.updates = 0
        self._pending: tuple[Any, dict[str, torch.Tensor]] = (None, {})

    # ---------------------------------------------------------------- relaxed actions

    def _relaxed(self, nets: nn.ModuleDict, agent: str, obs: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """(relaxed action for the critic, raw outputs to quantize) of one agent's actor."""
        net = nets[agent]
        if agent == self.dims.bs_id:
            V = net.beams(obs, net.params(obs))
            return net.critic_action(obs, V), V
        raw = net.relaxed(obs)
        return relaxed_irs(*raw), raw

    @torch.no_grad()
    def act(self, obs: Obs, state: torch.Tensor, explore: bool) -> Action:
        actions: Action = {}
        relaxed: dict[str, torch.Tensor] = {}
        sigma = self.cfg.noise if explore else 0.0
        for a in self.ids:
            net = self.actor_nets[a]
            if a == self.dims.bs_id:
                params = net.params(obs[a])
                bs_sigma = (self.cfg.noise if self.cfg.bs_noise < 0 else self.cfg.bs_noise) if explore else 0.0
                if bs_sigma > 0:
                    params = net.perturb(params, bs_sigma, self.gen)
                actions[a] = {"V": net.beams(obs[a], params)}
                continue
            bit_logits, theta, on_logits = net.relaxed(obs[a])
            if sigma > 0:
                bit_logits = bit_logits + sigma * torch.randn(bit_logits.shape, generator=self.gen)
                theta = theta + sigma * TWO_PI * torch.randn(theta.shape, generator=self.gen)
                on_logits = on_logits + sigma * torch.randn(on_logits.shape, generator=self.gen)
            actions[a] = net.discretize(bit_logits, theta, on_logits)   # quantized at execution
            relaxed[a] = relaxed_irs(bit_logits, theta, on_logits)
        self._pending = (actions, relaxed)   # observe() stores the relaxed form of exactly these actions
        return actions

    def observe(self, obs: Obs, state: torch.Tensor, action: Action, result: StepResult, next_state: torch.Tensor) -> None:
        d = self.dims
        pending_action, pending_relaxed = self._pending
        relaxed = dict(pending_relaxed) if action is pending_action else {}
        for a in d.irs_ids:
            if a not in relaxed:  # an action from elsewhere (not act()): its quantized form, relaxed
                relaxed[a] = self._relax_discrete(action[a])
        relaxed[d.bs_id] = self.actor_nets[d.bs_id].critic_action(obs[d.bs_id], torch.as_tensor(action[d.bs_id]["V"]).float())
        self.buffer.add({
            "obs": {a: obs[a] for a in self.ids}, "next_obs": {a: result.obs[a] for a in self.ids},
            "state": state, "next_state": next_state, "action": relaxed,
            "reward": result.rewards[d.bs_id].float() * self.cfg.reward_scale,
            "terminated": result.terminated.float(),
        })
        self.transitions += state.shape[0]

    def _relax_discrete(self, act: dict[str, torch.Tensor]) -> torch.Tensor:
        choices = torch.tensor(self.dims.bit_choices)
        one_hot = (act["bits"].unsqueeze(-1) == choices).float()
        theta = act["phase_idx"].float() * TWO_PI / torch.pow(2.0, act["bits"].float()).unsqueeze(-1)
        return torch.cat([one_hot, torch.cos(theta), torch.sin(theta), act["on"].float()], -1)

    # ---------------------------------------------------------------- learning

    def update(self) -> dict[str, float]:
        if len(self.buffer) < max(self.cfg.learning_starts, self.cfg.batch_size):
            return {}
        metrics: dict[str, float] = {}
        for _ in range(self.cfg.updates_per_step):
            metrics = self._update_once(self.buffer.sample(self.cfg.batch_size, self.gen))
        return metrics

    def _critic_input(self, agent: str, state_n: torch.Tensor, obs: dict[str, torch.Tensor],
                      acts: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.cfg.critic == "global":
            return torch.cat([state_n] + [acts[a] for a in self.ids], -1)
        return torch.cat([obs[agent] / self.obs_scale[agent], acts[agent]], -1)

    def _update_once(self, batch: dict[str, Any]) -> dict[str, float]:
        cfg = self.cfg
        s_n, s2_n = batch["state"] / self.state_scale, batch["next_state"] / self.state_scale
        obs, obs2, acts = batch["obs"], batch["next_obs"], batch["action"]
        r, not_term = batch["reward"], 1.0 - batch["terminated"]
        with torch.no_grad():
            acts2 = {a: self._relaxed(self.target_actors, a, obs2[a])[0] for a in self.ids}
        critic_loss, actor_loss = 0.0, 0.0
        for a in self.ids:
            with torch.no_grad():
                y = r + cfg.gamma * not_term * self.target_critics[a](self._critic_input(a, s2_n, obs2, acts2)).squeeze(-1)
            q = self.critics[a](self._critic_input(a, s_n, obs, acts)).squeeze(-1)
            critic_loss = critic_loss + (y - q).square().mean()
        self._step(self.opt_critic, critic_loss, self.critics)
        for a in self.ids:   # each actor through its own critic, the others' actions from the buffer
            mine = {**acts, a: self._relaxed(self.actor_nets, a, obs[a])[0]}
            actor_loss = actor_loss - self.critics[a](self._critic_input(a, s_n, obs, mine)).mean()
        self._step(self.opt_actor, actor_loss, self.actor_nets)
        with torch.no_grad():
            for tgt, src in ((self.target_actors, self.actor_nets), (self.target_critics, self.critics)):
                for pt, ps in zip(tgt.parameters(), src.parameters()):
                    pt.lerp_(ps, cfg.tau)
        self.updates += 1
        return {"loss_critic": float(critic_loss.detach()), "loss_actor": float(actor_loss.detach())}

    def _step(self, opt: torch.optim.Optimizer, loss: torch.Tensor, module: nn.Module) -> None:
        self.actor_nets.zero_grad(set_to_none=True)
        self.critics.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(module.parameters(), self.cfg.grad_clip)
        opt.step()

    # ---------------------------------------------------------------- execution and persistence

    def actors(self) -> dict[str, Actor]:
        return {a: self.actor_nets[a] for a in self.ids}

    def role_of(self, agent_id: str) -> str:
        return own_role(agent_id, self.ids)

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg), "actors": self.actor_nets.state_dict(), "critics": self.critics.state_dict(),
            "target_actors": self.target_actors.state_dict(), "target_critics": self.target_critics.state_dict(),
            "opt_actor": self.opt_actor.state_dict(), "opt_critic": self.opt_critic.state_dict(),
            "buffer": self.buffer.state_dict(), "gen": self.gen.get_state(),
            "transitions": self.transitions, "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor_nets.load_state_dict(state["actors"])
        self.critics.load_state_dict(state["critics"])
        self.target_actors.load_state_dict(state["target_actors"])
        self.target_critics.load_state_dict(state["target_critics"])
        self.opt_actor.load_state_dict(state["opt_actor"])
        self.opt_critic.load_state_dict(state["opt_critic"])
        self.buffer.load_state_dict(state["buffer"])
        self.gen.set_state(state["gen"])
        self.transitions, self.updates = int(state["transitions"]), int(state["updates"])
