"""MAGAR: multi-agent global and local deep RL for multi-hop STAR-RISs (P3 section III-B, seed 003).

Local agents: one DQN per STAR-RIS and one for the BS (``agents.dqn.MADQN`` with
``reward = "local"``): eps-greedy on their own configuration (eq. 14), trained on
r_mu = R_mu / P_mu (eq. 16) with loss (18) and target parameters moved by lambda (eq. 17).

Global agent Q_tot: sees the global state S_q = (S_v for every v, S_B) and picks a joint
action A_q = (A_v for every v, A_B). Eq. (13): in slot t the executed joint action is

    F_t = A_q   if t mod T_q == 0,   else   (A_mu)_mu

(t counts slots from the episode's reset, as the env's ``t`` does). Its target is

    psi_q = r_q + gamma * sum_mu max_a Q_mu(s'_mu, a; xi^-_mu)

with r_q = R / P_total (eq. 15) and the local agents' target networks, and its loss is
(18) with q in place of mu. Project readings (the paper leaves them open):
- the joint action space is a product of (6N+1)^V (4MK+1) actions, so Q_tot is factored
  into one head per local agent over a shared trunk, Q_q(s, a) = V(s) + sum_mu A_mu(s, a_mu)
  (centred advantages); its argmax is the per-head argmax;
- the printed target evaluates max Q_mu at s_{mu,t}; we use the next local states
  s'_{mu} = s_{mu,t+1}, the usual one-step bootstrap (with s_t the target would not depend
  on the outcome of the action);
- Q_tot learns from every stored transition (the executed joint action is a joint action
  whichever agent chose it; off-policy replay), not only from its own slots;
- exploration of Q_tot is eps-greedy per head with the same fixed eps.

At execution the global agent is its own bundle role (agent id ``global``, observation =
the concatenated local observations, action = the joint increment vector); it runs where
the BS runs, and ``wrap_policy`` lets it replace the local decisions every T_q slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents.base import Actor
from agents.dqn import MADQN, BoxScaler, MADQNLRConfig, _box_bounds, eps_greedy
from agents.networks import MLP
from twin.envs.base import Action, BatchedEnv, Obs
from twin.errors import ConfigError

GLOBAL_ID = "global"
GLOBAL_ROLE = "global"


@dataclass(frozen=True)
class MAGARConfig(MADQNLRConfig):
    """{T_q, eps, lambda, gamma} = {20, 0.3, 0.1, 0.9} (paper); the rest as in MADQN-LR (open)."""

    global_period: int = 20            # paper: T_q (eq. 13)
    global_weight: float = 1.0         # open: weight of Q_tot's loss next to the local losses


class GlobalQActor(Actor):
    """Q_tot at execution: global state (B, sum d_mu) -> joint action (B, n_agents) long.

    ``agent_ids`` gives the order of the heads (and of the state's blocks); ``period`` is T_q.
    """

    def __init__(self, state_low: Sequence[float], state_high: Sequence[float], n_actions: Sequence[int],
                 agent_ids: Sequence[str], period: int = 20, hidden: Sequence[int] = (128, 128)) -> None:
        super().__init__()
        if len(n_actions) != len(agent_ids) or not agent_ids:
            raise ConfigError("n_actions/agent_ids: need one action count per agent")
        if int(period) < 1:
            raise ConfigError(f"global_period: T_q must be >= 1, got {period}")
        self._kw = dict(state_low=[float(x) for x in state_low], state_high=[float(x) for x in state_high],
                        n_actions=[int(n) for n in n_actions], agent_ids=[str(a) for a in agent_ids],
                        period=int(period), hidden=[int(h) for h in hidden])
        self.scale = BoxScaler(state_low, state_high)
        self.net = MLP(len(state_low), 1 + sum(self._kw["n_actions"]), hidden, out_gain=0.1)

    def arch_kwargs(self) -> dict[str, Any]:
        return dict(self._kw)

    @property
    def period(self) -> int:
        return self._kw["period"]

    @property
    def agent_ids(self) -> list[str]:
        return list(self._kw["agent_ids"])

    def heads(self, state: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """V(s) (B,) and the centred advantages A_mu(s, .) of every head."""
        out = self.net(self.scale(state))
        adv = list(torch.split(out[:, 1:], self._kw["n_actions"], dim=-1))
        return out[:, 0], [a - a.mean(-1, keepdim=True) for a in adv]

    def q_value(self, state: torch.Tensor, joint: torch.Tensor) -> torch.Tensor:
        """Q_q(s, a) = V(s) + sum_mu A_mu(s, a_mu) for a joint action (B, n_agents)."""
        v, adv = self.heads(state)
        return v + sum(a.gather(1, joint[:, i:i + 1]).squeeze(1) for i, a in enumerate(adv))

    @torch.no_grad()
    def forward(self, state: torch.Tensor) -> torch.Tensor:
        _, adv = self.heads(state)
        return torch.stack([a.argmax(-1) for a in adv], dim=1)

    def state_of(self, obs: Obs) -> torch.Tensor:
        """S_q: the local observations concatenated in head order."""
        return torch.cat([torch.as_tensor(obs[a]).float() for a in self._kw["agent_ids"]], dim=-1)

    def global_turn(self, env: BatchedEnv) -> bool:
        """Eq. (13): the global agent acts in slot t iff t mod T_q == 0."""
        return int(getattr(env, "t")) % self.period == 0

    def wrap_policy(self, local: Callable[[BatchedEnv, Obs], Action]) -> Callable[[BatchedEnv, Obs], Action]:
        """The decentralized ``local`` policy with Q_tot replacing every agent's action when t mod T_q == 0."""

        def policy(env: BatchedEnv, obs: Obs) -> Action:
            actions = local(env, obs)
            if self.global_turn(env):
                with torch.inference_mode():
                    joint = self(self.state_of(obs))
                actions = {**actions, **{a: joint[:, i] for i, a in enumerate(self._kw["agent_ids"])}}
            return actions

        return policy


class MAGAR(MADQN):
    """Local DQN agents on local rewards plus the periodic global agent Q_tot (module docstring)."""

    name = "magar"
    config_cls = MAGARConfig

    def __init__(self, env: BatchedEnv, config: MAGARConfig | None = None, seed: int = 0) -> None:
        super().__init__(env, config, seed)
        c = self.cfg
        if c.reward != "local":
            raise ConfigError("reward: MAGAR's local agents learn from their local rewards; use reward=local")
        if c.global_period < 1:
            raise ConfigError(f"global_period: T_q must be >= 1, got {c.global_period}")
        lows, highs = zip(*(_box_bounds(env.observation_spaces[a]) for a in self.agent_ids))
        self.global_q = GlobalQActor(sum(lows, []), sum(highs, []), [self.n_actions[a] for a in self.agent_ids],
                                     self.agent_ids, c.global_period, c.hidden)
        self.params = list(self.q.parameters()) + list(self.global_q.parameters())
        self.opt = torch.optim.Adam(self.params, lr=c.lr)
        self.global_decisions = 0          # slots in which Q_tot's joint action was executed
        self.last_global_turn = False

    def clip_groups(self) -> list[list[nn.Parameter]]:
        return super().clip_groups() + [list(self.global_q.parameters())]

    def act(self, obs: Obs, state: torch.Tensor, explore: bool) -> Action:
        actions = self.local_actions(obs, explore)
        self.last_global_turn = self.global_q.global_turn(self.env)
        if self.last_global_turn:                                             # eq. (13)
            with torch.no_grad():
                joint = self.global_q(self.global_q.state_of(obs))
            for i, a in enumerate(self.agent_ids):
                g = joint[:, i]
                actions[a] = eps_greedy(g, self.n_actions[a], self.cfg.epsilon, self.gen) if explore else g
            self.global_decisions += 1
        return actions

    def extra_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Q_tot's loss: (psi_q - Q_q(s, a))^2, psi_q = r_q + gamma sum_mu max_a Q_mu(s'_mu, a; xi^-_mu)."""
        s = self.global_q.state_of(batch["obs"])
        joint = torch.stack([batch["action"][a] for a in self.agent_ids], dim=1)
        q = self.global_q.q_value(s, joint)
        with torch.no_grad():
            local_max = sum(self.q_target[a].values(batch["next_obs"][a]).max(-1).values for a in self.agent_ids)
            psi = self.ref.norm(batch["global_reward"]) + self.cfg.gamma * (1.0 - batch["done"].float()) * local_max
        loss = nn.functional.mse_loss(q, psi)
        return self.cfg.global_weight * loss, {"loss_global": float(loss.detach())}

    # ---- execution / persistence ---------------------------------------------------------------

    def actors(self) -> dict[str, Actor]:
        return {**super().actors(), GLOBAL_ROLE: self.global_q}

    def role_of(self, agent_id: str) -> str:
        return GLOBAL_ROLE if agent_id == GLOBAL_ID else super().role_of(agent_id)

    def extra_agents(self) -> dict[str, tuple[str, gym.Space, gym.Space]]:
        """Bundle entries beyond the env's agents: the global agent's id, role and specs."""
        kw = self.global_q.arch_kwargs()
        obs = gym.spaces.Box(np.array(kw["state_low"], np.float32), np.array(kw["state_high"], np.float32), dtype=np.float32)
        return {GLOBAL_ID: (GLOBAL_ROLE, obs, gym.spaces.MultiDiscrete(kw["n_actions"]))}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "global_q": self.global_q.state_dict(), "global_decisions": self.global_decisions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.global_q.load_state_dict(state["global_q"])
        super().load_state_dict(state)
        self.global_decisions = int(state["global_decisions"])
