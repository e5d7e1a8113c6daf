"""Multi-agent DQN on P3's increment actions: MADQN, MADQN-LR and tabular Q-learning (seed 003).

P3's benchmarks and the local half of MAGAR (``agents.magar``) are one piece of code:

- every agent mu (``star0``.. and ``bs0``) owns a Q-network Q_mu(s_mu, .; xi_mu) over its
  Discrete increment actions, acts eps-greedily with a fixed eps (eq. 14) and sees only its
  own configuration (the env's local observation);
- loss (18): L_mu = E[(psi_mu - Q_mu(s_mu, a_mu; xi_mu))^2] with
  psi_mu = r + gamma max_a Q_mu(s'_mu, a; xi^-_mu) from target parameters xi^-_mu;
- (17), Q <- (1 - lambda) Q + lambda y, is the tabular form of that regression; with
  networks the paper's "parameters from previous slots" are tracked by the soft update
  xi^- <- (1 - lambda) xi^- + lambda xi after every gradient step (project reading: lambda
  is the paper's only named rate; the optimizer's learning rate is open);
- ``reward = "global"`` trains every agent on r_q = R / P_total (eq. 15): MADQN;
  ``reward = "local"`` on r_mu = R_mu / P_mu, the EE with only mu's change applied (eq. 16):
  MADQN-LR. One class, two configs.

Rewards are learned as relative EE gains, r / b - 1, where b is the mean global reward of
the first stored batch (the EE of the initial configuration): the EE is ~1e2 Mbit/J while
single increments move it by ~1 %, so Q-networks fit the differences better around 0; a
positive affine map of every reward stream leaves the greedy policies unchanged.

Tabular Q-learning (the paper's [16]) applies (17) literally to a table per agent; the
local configuration has far too many states to tabulate (N elements x 21 x 32 x 2 x 2
levels), so states are hashed into ``table_size`` buckets (project reading; collisions
merge states, which is the point of the baseline: no function approximation).
Truncation at the episode's end bootstraps (a time limit, not a terminal state).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from agents.base import Actor, Algorithm, own_role
from agents.buffers import ReplayBuffer
from agents.networks import MLP
from twin.envs.base import Action, BatchedEnv, Obs, StepResult
from twin.errors import ConfigError

REWARDS = ("global", "local")


# =========================================================================== configs

@dataclass(frozen=True)
class MADQNConfig:
    """MADQN: independent DQN agents on the global reward (P3's benchmark [17])."""

    reward: str = "global"             # "global" r_q (eq. 15) or "local" r_mu (eq. 16)
    epsilon: float = 0.3               # paper: fixed eps = 0.3 (eq. 14)
    soft_update: float = 0.1           # paper: lambda = 0.1 (eq. 17), here the target-parameter rate
    gamma: float = 0.9                 # paper
    lr: float = 1e-3                   # open: Adam learning rate
    hidden: tuple[int, ...] = (128, 128)  # open: Q-network widths
    dueling: bool = True               # open: Q = V + A - mean A (increments differ by ~1 % of V)
    buffer_size: int = 20_000          # open: replay transitions
    batch_size: int = 128              # open
    learning_starts: int = 512         # open: transitions stored before the first update
    updates_per_step: int = 1          # open: gradient steps per batched env step
    grad_clip: float = 10.0            # open: gradient-norm clip


@dataclass(frozen=True)
class MADQNLRConfig(MADQNConfig):
    """MADQN-LR: the same agents on their local rewards R_mu / P_mu (eq. 16)."""

    reward: str = "local"


@dataclass(frozen=True)
class QLearningConfig:
    """Tabular Q-learning per agent (P3's benchmark [16]), eq. (17) on hashed local states."""

    reward: str = "local"              # open: the paper does not say; local like its other agents
    epsilon: float = 0.3               # paper
    q_lambda: float = 0.1              # paper: lambda in (17)
    gamma: float = 0.9                 # paper
    table_size: int = 4096             # open: hashed state buckets per agent


def _check_common(cfg: Any) -> None:
    if cfg.reward not in REWARDS:
        raise ConfigError(f"reward: {cfg.reward!r} is unknown; use one of {REWARDS}")
    if not 0.0 <= cfg.epsilon <= 1.0 or not 0.0 <= cfg.gamma < 1.0:
        raise ConfigError(f"epsilon/gamma: need eps in [0, 1] and gamma in [0, 1), got {cfg.epsilon}, {cfg.gamma}")


def _check_dqn(cfg: MADQNConfig) -> None:
    _check_common(cfg)
    if not 0.0 < cfg.soft_update <= 1.0:
        raise ConfigError(f"soft_update: lambda must be in (0, 1], got {cfg.soft_update}")
    if cfg.batch_size < 1 or cfg.buffer_size < cfg.batch_size or cfg.updates_per_step < 0:
        raise ConfigError("batch_size/buffer_size/updates_per_step: need 1 <= batch_size <= buffer_size, updates >= 0")


def _discrete_n(space: Any, agent: str) -> int:
    n = getattr(space, "n", None)
    if n is None:
        raise ConfigError(f"{agent}: DQN agents need a Discrete action space, got {type(space).__name__}")
    return int(n)


def _box_bounds(space: Any) -> tuple[list[float], list[float]]:
    return [float(x) for x in np.asarray(space.low).ravel()], [float(x) for x in np.asarray(space.high).ravel()]


# =========================================================================== networks / actors

class QNetwork(nn.Module):
    """obs (B, d) in [-1, 1] -> Q (B, n); dueling head V + A - mean(A) when ``dueling``."""

    def __init__(self, in_dim: int, n_actions: int, hidden: Sequence[int], dueling: bool) -> None:
        super().__init__()
        self.dueling = bool(dueling)
        self.body = MLP(in_dim, n_actions + int(self.dueling), hidden, out_gain=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if not self.dueling:
            return out
        adv = out[:, 1:]
        return out[:, :1] + adv - adv.mean(-1, keepdim=True)


class BoxScaler(nn.Module):
    """Maps a Box observation affinely onto [-1, 1] from its bounds (arch kwargs, JSON-able)."""

    def __init__(self, low: Sequence[float], high: Sequence[float]) -> None:
        super().__init__()
        lo, hi = torch.tensor(low, dtype=torch.float32), torch.tensor(high, dtype=torch.float32)
        self.register_buffer("mid", (hi + lo) / 2, persistent=False)
        self.register_buffer("half_range", torch.clamp((hi - lo) / 2, min=1e-12), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mid) / self.half_range


class DQNActor(Actor):
    """A local agent at execution: own configuration (B, d) -> greedy increment index (B,) long."""

    def __init__(self, obs_low: Sequence[float], obs_high: Sequence[float], n_actions: int,
                 hidden: Sequence[int] = (128, 128), dueling: bool = True) -> None:
        super().__init__()
        if len(obs_low) != len(obs_high) or not obs_low:
            raise ConfigError("obs_low/obs_high: need equal, non-empty bounds")
        self._kw = dict(obs_low=[float(x) for x in obs_low], obs_high=[float(x) for x in obs_high],
                        n_actions=int(n_actions), hidden=[int(h) for h in hidden], dueling=bool(dueling))
        self.scale = BoxScaler(obs_low, obs_high)
        self.q = QNetwork(len(obs_low), int(n_actions), hidden, dueling)

    def arch_kwargs(self) -> dict[str, Any]:
        return dict(self._kw)

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q(self.scale(obs))

    @torch.no_grad()
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.values(obs).argmax(-1)


class QTableActor(Actor):
    """Tabular Q over hashed states: obs (B, d) -> argmax_a Q[hash(obs), a] (B,) long.

    The hash rounds the observation to 1e-3 (P3 configurations lie on step grids) and mixes
    the integers with fixed odd multipliers from ``hash_seed``, modulo ``table_size``.
    """

    def __init__(self, obs_dim: int, n_actions: int, table_size: int = 4096, hash_seed: int = 0) -> None:
        super().__init__()
        if table_size < 1:
            raise ConfigError(f"table_size: need at least 1 bucket, got {table_size}")
        self._kw = dict(obs_dim=int(obs_dim), n_actions=int(n_actions), table_size=int(table_size), hash_seed=int(hash_seed))
        g = torch.Generator().manual_seed(int(hash_seed))
        self.register_buffer("mult", torch.randint(1, 1 << 30, (int(obs_dim),), generator=g) * 2 + 1, persistent=False)
        self.table = nn.Parameter(torch.zeros(int(table_size), int(n_actions)), requires_grad=False)

    def arch_kwargs(self) -> dict[str, Any]:
        return dict(self._kw)

    def key(self, obs: torch.Tensor) -> torch.Tensor:
        ints = torch.round(obs.double() * 1000.0).long()
        return torch.remainder((ints * self.mult).sum(-1), self._kw["table_size"])

    @torch.no_grad()
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.table[self.key(obs)].argmax(-1)


# =========================================================================== shared pieces

def eps_greedy(greedy: torch.Tensor, n_actions: int, eps: float, gen: torch.Generator) -> torch.Tensor:
    """Eq. (14): a uniformly random action with probability eps, else the greedy one."""
    explore = torch.rand(greedy.shape, generator=gen) < eps
    random = torch.randint(0, n_actions, greedy.shape, generator=gen)
    return torch.where(explore, random, greedy)


def soft_update_(target: nn.Module, online: nn.Module, lam: float) -> None:
    """xi^- <- (1 - lambda) xi^- + lambda xi (the network counterpart of eq. 17)."""
    with torch.no_grad():
        for t, o in zip(target.parameters(), online.parameters()):
            t.mul_(1.0 - lam).add_(o, alpha=lam)


class _RewardRef:
    """b: the mean global reward of the first stored batch; rewards are learned as r / b - 1."""

    def __init__(self) -> None:
        self.b: float | None = None

    def norm(self, r: torch.Tensor) -> torch.Tensor:
        return r.float() / self.b - 1.0

    def first(self, global_reward: torch.Tensor) -> None:
        if self.b is None:
            b = float(global_reward.double().mean())
            self.b = b if b > 0 else 1.0


def _rewards_of(cfg: Any, agent_ids: Sequence[str], result: StepResult) -> dict[str, torch.Tensor]:
    if cfg.reward == "local":
        return {a: result.rewards[a] for a in agent_ids}
    if "global_reward" not in result.info:
        raise ConfigError("reward=global: the environment reports no info['global_reward']")
    return {a: result.info["global_reward"] for a in agent_ids}


# =========================================================================== MADQN / MADQN-LR

class MADQN(Algorithm):
    """Independent DQN agents (one per STAR-RIS and one for the BS); reward per ``cfg.reward``."""

    name = "madqn"
    config_cls = MADQNConfig

    def __init__(self, env: BatchedEnv, config: MADQNConfig | None = None, seed: int = 0) -> None:
        self.cfg = config if config is not None else self.config_cls()
        _check_dqn(self.cfg)
        self.env = env
        self.agent_ids = tuple(env.agent_ids)
        self.gen = torch.Generator().manual_seed(int(seed))
        torch.manual_seed(int(seed))
        c = self.cfg
        self.n_actions = {a: _discrete_n(env.action_spaces[a], a) for a in self.agent_ids}
        self.q = nn.ModuleDict({a: DQNActor(*_box_bounds(env.observation_spaces[a]), self.n_actions[a],
                                            c.hidden, c.dueling) for a in self.agent_ids})
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.params = list(self.q.parameters())
        self.opt = torch.optim.Adam(self.params, lr=c.lr)
        self.buffer = ReplayBuffer(c.buffer_size)
        self.ref = _RewardRef()
        self.updates = 0

    # ---- acting ------------------------------------------------------------------------------

    def local_actions(self, obs: Obs, explore: bool) -> dict[str, torch.Tensor]:
        out = {}
        with torch.no_grad():
            for a in self.agent_ids:
                greedy = self.q[a](obs[a])
                out[a] = eps_greedy(greedy, self.n_actions[a], self.cfg.epsilon, self.gen) if explore else greedy
        return out

    def act(self, obs: Obs, state: torch.Tensor, explore: bool) -> Action:
        return self.local_actions(obs, explore)

    # ---- learning ----------------------------------------------------------------------------

    def observe(self, obs: Obs, state: torch.Tensor, action: Action, result: StepResult, next_state: torch.Tensor) -> None:
        self.ref.first(result.info["global_reward"])
        self.buffer.add({
            "obs": {a: obs[a] for a in self.agent_ids},
            "next_obs": {a: result.obs[a] for a in self.agent_ids},
            "action": {a: torch.as_tensor(action[a]).long() for a in self.agent_ids},
            "reward": _rewards_of(self.cfg, self.agent_ids, result),
            "global_reward": result.info["global_reward"],
            "done": result.terminated,
        })

    def _local_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Sum over agents of eq. (18) with psi_mu from the target parameters."""
        c, loss, logs = self.cfg, torch.zeros(()), {}
        not_done = 1.0 - batch["done"].float()
        for a in self.agent_ids:
            q = self.q[a].values(batch["obs"][a]).gather(1, batch["action"][a].view(-1, 1)).squeeze(1)
            with torch.no_grad():
                nxt = self.q_target[a].values(batch["next_obs"][a]).max(-1).values
                psi = self.ref.norm(batch["reward"][a]) + c.gamma * not_done * nxt
            la = nn.functional.mse_loss(q, psi)
            loss = loss + la
            logs[f"loss_{a}"] = float(la.detach())
        return loss, logs

    def extra_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Hook for MAGAR's global agent; nothing for the plain multi-agent DQN."""
        return torch.zeros(()), {}

    def clip_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.q[a].parameters()) for a in self.agent_ids]

    def soft_update_targets(self) -> None:
        soft_update_(self.q_target, self.q, self.cfg.soft_update)

    def update(self) -> dict[str, float]:
        c = self.cfg
        if len(self.buffer) < max(c.learning_starts, c.batch_size):
            return {}
        logs: dict[str, float] = {}
        for _ in range(c.updates_per_step):
            batch = self.buffer.sample(c.batch_size, self.gen)
            local, logs = self._local_loss(batch)
            extra, extra_logs = self.extra_loss(batch)
            self.opt.zero_grad()
            (local + extra).backward()
            for group in self.clip_groups():   # per network: one agent's large loss must not shrink another's step
                nn.utils.clip_grad_norm_(group, c.grad_clip)
            self.opt.step()
            self.soft_update_targets()
            self.updates += 1
            logs = {**logs, **extra_logs, "loss": float(local.detach())}
        return logs

    # ---- execution / persistence ---------------------------------------------------------------

    def actors(self) -> dict[str, Actor]:
        return {a: self.q[a] for a in self.agent_ids}

    def role_of(self, agent_id: str) -> str:
        return own_role(agent_id, self.agent_ids)

    def state_dict(self) -> dict[str, Any]:
        return {
            "q": self.q.state_dict(), "q_target": self.q_target.state_dict(), "opt": self.opt.state_dict(),
            "buffer": self.buffer.state_dict(), "gen": self.gen.get_state(), "ref": self.ref.b,
            "updates": self.updates, "config": asdict(self.cfg),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q.load_state_dict(state["q"])
        self.q_target.load_state_dict(state["q_target"])
        self.opt.load_state_dict(state["opt"])
        self.buffer.load_state_dict(state["buffer"])
        self.gen.set_state(state["gen"])
        self.ref.b = state["ref"]
        self.updates = int(state["updates"])


class MADQNLR(MADQN):
    name = "madqn-lr"
    config_cls = MADQNLRConfig


# =========================================================================== tabular Q-learning

class QLearning(Algorithm):
    """Independent tabular Q-learners, eq. (17) literally: Q <- (1 - lambda) Q + lambda (r + gamma max Q')."""

    name = "q-learning"
    config_cls = QLearningConfig

    def __init__(self, env: BatchedEnv, config: QLearningConfig | None = None, seed: int = 0) -> None:
        self.cfg = config if config is not None else QLearningConfig()
        _check_common(self.cfg)
        if not 0.0 < self.cfg.q_lambda <= 1.0:
            raise ConfigError(f"q_lambda: need lambda in (0, 1], got {self.cfg.q_lambda}")
        self.env = env
        self.agent_ids = tuple(env.agent_ids)
        self.gen = torch.Generator().manual_seed(int(seed))
        self.n_actions = {a: _discrete_n(env.action_spaces[a], a) for a in self.agent_ids}
        self.tables = nn.ModuleDict({
            a: QTableActor(int(np.prod(env.observation_spaces[a].shape)), self.n_actions[a], self.cfg.table_size, i)
            for i, a in enumerate(self.agent_ids)})
        self.ref = _RewardRef()
        self._pending: dict[str, Any] | None = None

    def act(self, obs: Obs, state: torch.Tensor, explore: bool) -> Action:
        out = {}
        for a in self.agent_ids:
            greedy = self.tables[a](obs[a])
            out[a] = eps_greedy(greedy, self.n_actions[a], self.cfg.epsilon, self.gen) if explore else greedy
        return out

    def observe(self, obs: Obs, state: torch.Tensor, action: Action, result: StepResult, next_state: torch.Tensor) -> None:
        self.ref.first(result.info["global_reward"])
        self._pending = {"obs": obs, "next_obs": result.obs, "action": action,
                         "reward": _rewards_of(self.cfg, self.agent_ids, result), "done": result.terminated}

    def update(self) -> dict[str, float]:
        """Eq. (17) for the B transitions of the last step, one environment after another
        (so two environments hitting the same bucket both count)."""
        if self._pending is None:
            return {}
        p, c, lam = self._pending, self.cfg, self.cfg.q_lambda
        self._pending = None
        not_done = 1.0 - p["done"].float()
        with torch.no_grad():
            for a in self.agent_ids:
                tab = self.tables[a]
                s, s2 = tab.key(p["obs"][a]), tab.key(p["next_obs"][a])
                act = torch.as_tensor(p["action"][a]).long()
                r = self.ref.norm(p["reward"][a])
                for i in range(s.shape[0]):
                    y = r[i] + c.gamma * not_done[i] * tab.table[s2[i]].max()
                    tab.table[s[i], act[i]] = (1.0 - lam) * tab.table[s[i], act[i]] + lam * y   # (17)
        return {}

    def actors(self) -> dict[str, Actor]:
        return {a: self.tables[a] for a in self.agent_ids}

    def role_of(self, agent_id: str) -> str:
        return own_role(agent_id, self.agent_ids)

    def state_dict(self) -> dict[str, Any]:
        return {"tables": self.tables.state_dict(), "gen": self.gen.get_state(), "ref": self.ref.b,
                "config": asdict(self.cfg)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tables.load_state_dict(state["tables"])
        self.gen.set_state(state["gen"])
        self.ref.b = state["ref"]
