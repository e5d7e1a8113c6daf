r"""MAPPO for P4 (seed 004, Algorithm 2, CTDE) and PPO-AO as a configuration of the same code.

Agents (twin/envs/p4.py): ``sched`` picks one codeword of the C(K,S) schedule codebook,
``bs0`` outputs the real and imaginary parts of W (the environment masks them with the
schedule and scales them to P_max; the unscaled W feeds the next observation, paper IV-C2),
``ris0``..``ris{L-1}`` output N real phases (e^{j theta} in the reward). Roles: ``sched``,
``bs`` and one ``ris`` role shared by every RIS (actor parameters shared, paper IV-C3).

Training (paper IV-D, Table I): on-policy rollouts of ``buffer_size`` transitions, each
reused ``reuse`` times in minibatches of ``batch_size``; per-agent clipped surrogate (35)
with the shared advantage of one centralized critic on the global state (GAE, 36-37); the
critic regresses the GAE returns (38); entropy bonus; running state / observation
normalization inside every network (so a bundle carries its statistics); advantage
normalization; orthogonal initialization; one Tanh hidden layer; Adam. Execution:
scheduler argmax, Gaussian means.

Initialization from BFS-AO's first iterate (paper: "training starts from the first iterate of
BFS-AO"): :meth:`MAPPO.init_from_first_iterate` runs BFS-AO on a batch of scenes, installs
its first AO iterate as the environment's current actions (so the observations are those of
that iterate) and fits every actor's output layer (ridge least squares on the hidden
features) so that, at those observations, the actor outputs that iterate: the initial policy
is BFS-AO's first iterate and its own fixed point. The scheduler's logits are fitted to favour
BFS-AO's schedule by ``init_logit_gap``.

PPO-AO (``precoding = "ao"``): only the scheduler is learned; W and the phases of the chosen
schedule come from AO (agents/bfs_ao.py) on the statistical CSI, computed once per scene for
every codeword and cached (the environment is static for given statistics).

Fairness: the reward weight omega of Jain's index is the scenario's ``fairness_weight``
(the environment mixes it into the shared reward, twin/envs/p4.py).

Varying number of users (paper V-B), small functions usable at execution: more users than
trained -> :func:`prescreen_users` keeps the K with the highest priority (random ties), and
:func:`update_priority` adds 1 to every unscheduled user and resets the scheduled ones;
fewer users -> :func:`pad_virtual_users` adds users with all-zero channels and
:func:`best_real_codeword` picks the best codeword that schedules no virtual user.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

import torch
from torch import nn

from agents import bfs_ao as ao
from agents.base import Actor, Algorithm
from agents.networks import MLP
from twin.envs.base import Action, BatchedEnv, Obs, StepResult
from twin.errors import ConfigError

SCHED, BS, RIS = "sched", "bs", "ris"


@dataclass(frozen=True)
class MAPPOConfig:
    """Table I defaults; every value the paper leaves open (or that was lost) is marked open."""

    buffer_size: int = 1024        # Table I
    batch_size: int = 128          # Table I
    reuse: int = 10                # Table I: sample reuse (epochs over one rollout)
    gamma: float = 0.45            # Table I
    gae_lambda: float = 0.45       # Table I
    clip: float = 0.3              # Table I
    entropy_coef: float = 0.01     # Table I
    hidden: tuple[int, ...] = (64,)  # Table I: one hidden layer; width lost -> open (64)
    activation: str = "tanh"       # Table I: Tanh
    lr_actor: float = 1e-3         # open (lost): tuned on one p4 deployment (3e-4 learns ~3x slower)
    lr_critic: float = 1e-3        # open (lost)
    max_grad_norm: float = 0.5     # open: the common PPO value
    init_log_std_bs: float = -2.0  # open: exploration std of the raw W entries (RMS-1 units)
    init_log_std_ris: float = -1.5  # open: exploration std of the phases (rad)
    obs_std_floor: float = 0.1     # open: floor of the normalizers' std (static scenes vary little)
    running_norm: bool = False     # open: False = normalization statistics fixed at initialization
                                   # (drifting statistics move the fitted first iterate; see docs)
    init_perturbations: int = 64   # open: perturbed first iterates per scene for those statistics
    init_from_bfs_ao: bool = True  # paper IV-D: start from BFS-AO's first iterate
    init_scenes: int = 8           # open: scenes whose first iterates the output layers are fitted to
    init_logit_gap: float = 4.0    # open: logit lead of BFS-AO's schedule at initialization
    init_ridge: float = 1e-1       # open: ridge of the output-layer fit
    precoding: str = "learned"     # "learned" = MAPPO, "ao" = PPO-AO (learned scheduler + AO precoding)


@dataclass(frozen=True)
class PPOAOConfig(MAPPOConfig):
    """PPO-AO (P4 VI baseline): the MAPPO scheduler, AO precoding for its schedule."""

    precoding: str = "ao"


# --------------------------------------------------------------------------- building blocks


class RunningNorm(nn.Module):
    """Running mean / variance of a feature vector (persistent buffers: saved in bundles)."""

    def __init__(self, dim: int, std_floor: float = 0.1) -> None:
        super().__init__()
        self.std_floor = float(std_floor)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.zeros(()))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, self.mean.shape[0]).float()
        n = x.shape[0]
        if n == 0:
            return
        bmean, bvar = x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = bmean - self.mean
        self.mean.add_(delta * n / total)
        self.var.copy_((self.var * self.count + bvar * n + delta.square() * self.count * n / total) / total)
        self.count.fill_(float(total))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std = self.var.sqrt().clamp_min(self.std_floor)
        return ((x - self.mean) / std).clamp(-10.0, 10.0)


class _NormMLP(nn.Module):
    """RunningNorm -> MLP; ``features`` exposes the hidden activations for the output-layer fit."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int], activation: str, out_gain: float,
                 std_floor: float) -> None:
        super().__init__()
        self.norm = RunningNorm(in_dim, std_floor)
        self.mlp = MLP(in_dim, out_dim, hidden, activation, out_gain=out_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp.net[:-1](self.norm(x))

    @property
    def head(self) -> nn.Linear:
        return self.mlp.net[-1]

    @torch.no_grad()
    def fit_head(self, x: torch.Tensor, target: torch.Tensor, ridge: float) -> None:
        """Set the output layer to the ridge least-squares map from features(x) to target."""
        f = self.features(x)
        a = torch.cat([f, torch.ones(f.shape[0], 1)], 1).double()
        lhs = a.T @ a + ridge * torch.eye(a.shape[1], dtype=torch.float64)
        sol = torch.linalg.solve(lhs, a.T @ target.double())  # (h+1, out)
        self.head.weight.copy_(sol[:-1].T.float())
        self.head.bias.copy_(sol[-1].float())


class SchedulerActor(Actor):
    """Scheduling agent: obs -> softmax over the codebook; execution = argmax (paper IV-C1)."""

    def __init__(self, obs_dim: int, n_codewords: int, hidden: Sequence[int] = (64,), activation: str = "tanh",
                 std_floor: float = 0.1) -> None:
        super().__init__()
        self._kw = dict(obs_dim=int(obs_dim), n_codewords=int(n_codewords), hidden=[int(h) for h in hidden],
                        activation=str(activation), std_floor=float(std_floor))
        self.net = _NormMLP(obs_dim, n_codewords, hidden, activation, 0.01, std_floor)

    def arch_kwargs(self) -> dict[str, Any]:
        return dict(self._kw)

    def dist(self, obs: torch.Tensor) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.net(obs))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).argmax(-1)


class GaussianActor(Actor):
    """Continuous agent (BS precoder or RIS phases): Gaussian with state-free log std;
    execution = the mean, reshaped to ``action_shape``."""

    def __init__(self, obs_dim: int, action_shape: Sequence[int], hidden: Sequence[int] = (64,),
                 activation: str = "tanh", init_log_std: float = -1.5, std_floor: float = 0.1) -> None:
        super().__init__()
        self._kw = dict(obs_dim=int(obs_dim), action_shape=[int(s) for s in action_shape], hidden=[int(h) for h in hidden],
                        activation=str(activation), init_log_std=float(init_log_std), std_floor=float(std_floor))
        self.action_dim = math.prod(self._kw["action_shape"])
        self.net = _NormMLP(obs_dim, self.action_dim, hidden, activation, 0.01, std_floor)
        self.log_std = nn.Parameter(torch.full((self.action_dim,), float(init_log_std)))

    def arch_kwargs(self) -> dict[str, Any]:
        return dict(self._kw)

    def dist(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean = self.net(obs)
        return torch.distributions.Normal(mean, self.log_std.clamp(-6.0, 1.0).exp().expand_as(mean))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).view(-1, *self._kw["action_shape"])


class AOPrecodingSchedulerActor(SchedulerActor):
    """PPO-AO's scheduler. Its ``wrap_policy`` replaces the BS and RIS decisions with AO for the
    chosen schedule, computed at the BS from the statistical CSI (PPO-AO is not decentralized)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cache = AOCache()

    def wrap_policy(self, local: Callable[[BatchedEnv, Obs], Action]) -> Callable[[BatchedEnv, Obs], Action]:
        def policy(env: BatchedEnv, obs: Obs) -> Action:
            actions = local(env, obs)
            return {**actions, **self.cache.actions(env, actions["sched"])}

        return policy


class AOCache:
    """AO precoding of every codeword for the current scene of an environment (static scenes)."""

    def __init__(self) -> None:
        self._scene: Any = None
        self._W: torch.Tensor | None = None    # (C, B, M, K)
        self._phi: torch.Tensor | None = None  # (C, B, L, N)

    def _fill(self, env: Any) -> None:
        scene = env.scene
        if self._scene is scene:
            return
        C, B = env.codebook.shape[0], env.num_envs
        book = env.codebook.cpu()
        users = torch.stack([row.nonzero().squeeze(-1) for row in book])          # (C, S)
        stats = ao._stack(scene, C)
        res = ao.ao_precoding(stats, users.repeat_interleave(B, 0), env.cfg.noise_w, env.cfg.p_max_w)
        W = ao._full_W(res.W, users.repeat_interleave(B, 0), env.K)
        self._W = W.reshape(C, B, *W.shape[1:])
        self._phi = res.phi.reshape(C, B, *res.phi.shape[1:])
        self._best = res.sum_rate.reshape(C, B).argmax(0)  # BFS: the best codeword per environment
        self._scene = scene

    def best_index(self, env: Any) -> torch.Tensor:
        """BFS-AO's codeword (B,) for env's current scene (same AO as ``agents.bfs_ao.bfs_ao``)."""
        self._fill(env)
        return self._best

    def actions(self, env: Any, sched_idx: torch.Tensor) -> dict[str, torch.Tensor]:
        self._fill(env)
        b = torch.arange(env.num_envs)
        W, phi = self._W[sched_idx, b], self._phi[sched_idx, b]
        out = {"bs0": torch.stack([W.real, W.imag], 1).float()}
        for l, a in enumerate(env.ris_ids):
            out[a] = phi[:, l].angle().float()
        return out


def p4_reference_policies(env: Any, seed: int, include_upper: bool = True) -> dict[str, Callable[[Any, Obs], Action]]:
    """P4's reference decisions for ``ristwin evaluate`` (agents.evaluation.REFERENCE_POLICIES):
    random (uniform codeword, Gaussian W, uniform phases), round-robin (codeword t mod C(K,S)
    with AO precoding) and BFS-AO (upper reference; AO cached per static scene)."""
    gen = torch.Generator().manual_seed(int(seed))
    cache = AOCache()

    def random_policy(env: Any, obs: Obs) -> Action:
        return env.sample_actions(gen)

    def round_robin(env: Any, obs: Obs) -> Action:
        idx = torch.full((env.num_envs,), env.t % env.codebook.shape[0], dtype=torch.long)
        return {"sched": idx, **cache.actions(env, idx)}

    def bfs(env: Any, obs: Obs) -> Action:
        idx = cache.best_index(env)
        return {"sched": idx.clone(), **cache.actions(env, idx)}

    policies = {"random": random_policy, "round-robin+AO": round_robin}
    if include_upper:
        policies["BFS-AO (upper)"] = bfs
    return policies


# --------------------------------------------------------------------------- GAE


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
        done: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (P4 eqs. 36-37) over a (T, B) rollout.

    delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t), with V(s_{t+1}) given per step
    (``next_values``: it bootstraps truncated episodes and the rollout's end);
    A_t = delta_t + gamma lam (1 - done_t) A_{t+1}, done = terminated or truncated.
    Returns (advantages, returns = advantages + values).
    """
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(T)):
        delta = rewards[t] + gamma * (1.0 - terminated[t]) * next_values[t] - values[t]
        running = delta + gamma * lam * (1.0 - done[t]) * running
        adv[t] = running
    return adv, adv + values


# --------------------------------------------------------------------------- varying user count


def update_priority(priority: torch.Tensor, scheduled: torch.Tensor) -> torch.Tensor:
    """After one execution: every unscheduled user's priority + 1, scheduled users reset to 0."""
    return torch.where(scheduled, torch.zeros_like(priority), priority + 1)


def prescreen_users(priority: torch.Tensor, k_trained: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices (sorted) of the ``k_trained`` users with the highest priority, ties broken at random."""
    K = priority.shape[-1]
    if not 0 < k_trained <= K:
        raise ConfigError(f"k_trained: need 0 < k_trained <= {K} present users, got {k_trained}")
    jitter = torch.rand(priority.shape, generator=generator) * 0.5  # < 1: only breaks ties
    keep = torch.topk(priority.double() + jitter.double(), k_trained, dim=-1).indices
    return keep.sort(-1).values


def select_users(scene: Any, users: torch.Tensor) -> Any:
    """The scene restricted to users (K',) long: the per-user tensors indexed along K."""
    from dataclasses import replace as dc_replace

    return dc_replace(scene, h_bar=scene.h_bar[:, :, users], beta_h=scene.beta_h[:, :, users],
                      kappa_h=scene.kappa_h[:, :, users], user_pos=scene.user_pos[:, users])


def pad_virtual_users(scene: Any, k_trained: int) -> Any:
    """Add virtual users with all-zero channels (h_bar = 0, beta_h = 0) up to ``k_trained``."""
    from dataclasses import replace as dc_replace

    K = scene.h_bar.shape[2]
    if K > k_trained:
        raise ConfigError(f"k_trained: the scene has {K} users, more than {k_trained}; use prescreen_users")
    extra = k_trained - K
    if extra == 0:
        return scene
    B, L, _, N = scene.h_bar.shape
    return dc_replace(
        scene,
        h_bar=torch.cat([scene.h_bar, scene.h_bar.new_zeros(B, L, extra, N)], 2),
        beta_h=torch.cat([scene.beta_h, scene.beta_h.new_zeros(B, L, extra)], 2),
        kappa_h=torch.cat([scene.kappa_h, scene.kappa_h.new_ones(B, L, extra)], 2),
        user_pos=torch.cat([scene.user_pos, scene.user_pos[:, :1].expand(B, extra, -1)], 1),
    )


def best_real_codeword(logits: torch.Tensor, codebook: torch.Tensor, n_real: int) -> torch.Tensor:
    """argmax over the codewords that schedule only the first ``n_real`` (real) users, (B,) long."""
    allowed = ~codebook[:, n_real:].any(-1)  # (C,)
    if not bool(allowed.any()):
        raise ConfigError(f"n_real: {n_real} real users cannot fill a codeword of {int(codebook[0].sum())} users")
    return logits.masked_fill(~allowed, -torch.inf).argmax(-1)


# --------------------------------------------------------------------------- the algorithm


class MAPPO(Algorithm):
    """MAPPO on P4 (module docstring). ``precoding = "ao"`` makes it PPO-AO."""

    name = "mappo"
    config_cls: type[MAPPOConfig] = MAPPOConfig

    def __init__(self, env: BatchedEnv, config: MAPPOConfig | None = None, seed: int = 0) -> None:
        cfg = self.config_cls() if config is None else config
        if cfg.precoding not in ("learned", "ao"):
            raise ConfigError(f"precoding: {cfg.precoding!r} is unknown; use 'learned' (MAPPO) or 'ao' (PPO-AO)")
        for name in ("buffer_size", "batch_size", "reuse"):
            if getattr(cfg, name) < 1:
                raise ConfigError(f"{name}: must be a positive integer, got {getattr(cfg, name)}")
        if not hasattr(env, "codebook") or not hasattr(env, "ris_ids"):
            raise ConfigError("--scenario: MAPPO is built for the p4 environment (scheduler, BS and RIS agents)")
        self.env, self.cfg, self.seed = env, cfg, int(seed)
        self.ris_ids = tuple(env.ris_ids)
        self.ids = ("sched", "bs0") + self.ris_ids
        self.M, self.K, self.L, self.N = env.M, env.K, env.L, env.N
        self.learn_precoding = cfg.precoding == "learned"
        self.gen = torch.Generator().manual_seed(self.seed)
        osp = env.observation_spaces
        hid, act, fl = cfg.hidden, cfg.activation, cfg.obs_std_floor
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            sched_cls = SchedulerActor if self.learn_precoding else AOPrecodingSchedulerActor
            self.nets = nn.ModuleDict({
                SCHED: sched_cls(osp["sched"].shape[0], env.codebook.shape[0], hid, act, fl),
                BS: GaussianActor(osp["bs0"].shape[0], (2, self.M, self.K), hid, act, cfg.init_log_std_bs, fl),
                RIS: GaussianActor(osp[self.ris_ids[0]].shape[0], (self.N,), hid, act, cfg.init_log_std_ris, fl),
            })
            self.critic = _NormMLP(env.state_dim, 1, hid, act, 1.0, fl)
        trained = self.nets.parameters() if self.learn_precoding else self.nets[SCHED].parameters()
        self.opt_actor = torch.optim.Adam(list(trained), lr=cfg.lr_actor)
        self.opt_critic = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr_critic)
        self.ao_cache = self.nets[SCHED].cache if not self.learn_precoding else AOCache()
        self.rollout_len = max(1, math.ceil(cfg.buffer_size / env.num_envs))
        self.rollout: list[dict[str, torch.Tensor]] = []
        self.updates = 0
        self._pending: tuple[Any, dict[str, torch.Tensor]] = (None, {})
        if cfg.init_from_bfs_ao and self.learn_precoding:
            ref = type(env)(num_envs=cfg.init_scenes, cfg=env.cfg)
            ref.reset(seed=self.seed)
            self.init_from_first_iterate(ref)

    # ---------------------------------------------------------------- initialization

    @torch.no_grad()
    def init_from_first_iterate(self, env: Any) -> dict[str, float]:
        """BFS-AO's first iterate on env's current scenes becomes env's current actions (so the
        observations are that iterate's) and the actors' output at those observations."""
        res = ao.bfs_ao(env.scene, env.S, env.cfg.noise_w, env.cfg.p_max_w)
        act = ao.env_actions(res, first_iterate=True)
        W = res.first_W.clone()
        # Unscheduled columns are zero in the iterate; give them MRT on the LoS mean channel so
        # another schedule does not start from a zero precoder.
        phi = res.first_phi
        Hmean = torch.einsum("blkn,blnm->bkm", env.scene.h_bar.conj() * phi.unsqueeze(-2), env.scene.G_bar)
        mrt = Hmean.mH / torch.linalg.vector_norm(Hmean.mH, dim=-2, keepdim=True).clamp_min(1e-30)
        col = torch.linalg.vector_norm(W, dim=-2, keepdim=True)                  # (B,1,K)
        mean_col = col.sum(-1, keepdim=True) / env.S
        W = torch.where(res.schedule[:, None, :], W, mrt * mean_col.to(W.dtype))
        W = W / torch.linalg.matrix_norm(W)[:, None, None].clamp_min(1e-30) * math.sqrt(2 * self.M * self.K)
        act["bs0"] = torch.stack([W.real, W.imag], 1).float()
        obs = env.set_actions(W=W, theta=torch.stack([act[a] for a in self.ris_ids], 1), schedule_idx=res.schedule_index)
        nets = self.nets
        # Normalization statistics: observations around the iterate, under the initial exploration noise.
        theta0 = torch.stack([act[a] for a in self.ris_ids], 1)
        std_bs, std_ris = math.exp(self.cfg.init_log_std_bs), math.exp(self.cfg.init_log_std_ris)
        seen: list[dict[str, torch.Tensor]] = []
        for _ in range(self.cfg.init_perturbations):
            Wp = W + std_bs * torch.complex(torch.randn(W.shape, generator=self.gen), torch.randn(W.shape, generator=self.gen)).to(W.dtype) / math.sqrt(2)
            other = torch.randint(0, env.codebook.shape[0], res.schedule_index.shape, generator=self.gen)
            op = env.set_actions(W=Wp, theta=theta0 + std_ris * torch.randn(theta0.shape, generator=self.gen), schedule_idx=other)
            nets[SCHED].net.norm.update(op["sched"])
            nets[BS].net.norm.update(op["bs0"])
            nets[RIS].net.norm.update(torch.cat([op[a] for a in self.ris_ids], 0))
            self.critic.norm.update(env.state())
            seen.append(op)
        obs = env.set_actions(W=W, theta=theta0, schedule_idx=res.schedule_index)
        seen.append(obs)
        # Fit: the iterate's own observation AND the perturbed ones map to the iterate, so the
        # initial policy is a stable fixed point (its observations depend on its own last action).
        reps = len(seen)
        ridge = self.cfg.init_ridge
        logits = torch.nn.functional.one_hot(res.schedule_index, env.codebook.shape[0]).float() * self.cfg.init_logit_gap
        nets[SCHED].net.fit_head(torch.cat([o["sched"] for o in seen]), logits.repeat(reps, 1), ridge)
        nets[BS].net.fit_head(torch.cat([o["bs0"] for o in seen]), act["bs0"].flatten(1).repeat(reps, 1), ridge)
        ris_obs = torch.cat([torch.cat([o[a] for a in self.ris_ids], 0) for o in seen])
        ris_target = torch.cat([act[a] for a in self.ris_ids], 0).repeat(reps, 1)
        nets[RIS].net.fit_head(ris_obs, ris_target, ridge)
        return {"first_iterate_rate": float(ao.sum_rate_approx(env.scene, res.first_W, res.first_phi, env.cfg.noise_w).mean()),
                "bfs_ao_rate": float(res.sum_rate.mean())}

    # ---------------------------------------------------------------- acting

    @torch.no_grad()
    def act(self, obs: Obs, state: torch.Tensor, explore: bool) -> Action:
        nets = self.nets
        ris_obs = torch.stack([obs[a] for a in self.ris_ids], 1)          # (B, L, d)
        B = ris_obs.shape[0]
        if not explore:
            actions = {"sched": nets[SCHED](obs["sched"])}
            if self.learn_precoding:
                actions["bs0"] = nets[BS](obs["bs0"])
                th = nets[RIS](ris_obs.flatten(0, 1)).view(B, self.L, self.N)
                actions.update({a: th[:, l] for l, a in enumerate(self.ris_ids)})
            else:
                actions.update(self.ao_cache.actions(self.env, actions["sched"]))
            self._pending = (None, {})
            return actions
        logits = nets[SCHED].net(obs["sched"])
        sched = torch.multinomial(torch.softmax(logits, -1), 1, generator=self.gen).squeeze(-1)
        logp = {"sched": torch.distributions.Categorical(logits=logits).log_prob(sched)}
        actions: Action = {"sched": sched}
        raw: dict[str, torch.Tensor] = {}
        if self.learn_precoding:
            d_bs = nets[BS].dist(obs["bs0"])
            w = d_bs.mean + d_bs.stddev * torch.randn(d_bs.mean.shape, generator=self.gen)
            d_ris = nets[RIS].dist(ris_obs.flatten(0, 1))
            th = d_ris.mean + d_ris.stddev * torch.randn(d_ris.mean.shape, generator=self.gen)
            logp["bs"] = d_bs.log_prob(w).sum(-1)
            logp["ris"] = d_ris.log_prob(th).sum(-1).view(B, self.L)
            raw = {"bs": w, "ris": th.view(B, self.L, self.N)}
            actions["bs0"] = w.view(B, 2, self.M, self.K)
            actions.update({a: raw["ris"][:, l] for l, a in enumerate(self.ris_ids)})
        else:
            actions.update(self.ao_cache.actions(self.env, sched))
        value = self.critic(state).squeeze(-1)
        self._pending = (actions, {**{f"logp_{k}": v for k, v in logp.items()}, **raw, "value": value})
        return actions

    def observe(self, obs: Obs, state: torch.Tensor, action: Action, result: StepResult, next_state: torch.Tensor) -> None:
        pending_action, extra = self._pending
        if action is not pending_action:
            raise ConfigError("MAPPO.observe: on-policy rollouts need the action returned by act(explore=True)")
        with torch.no_grad():
            next_value = self.critic(next_state).squeeze(-1)
        reward = result.rewards["sched"].float()
        self.rollout.append({
            "obs_sched": obs["sched"], "obs_bs": obs["bs0"], "obs_ris": torch.stack([obs[a] for a in self.ris_ids], 1),
            "state": state, "sched": action["sched"], **extra, "reward": reward, "next_value": next_value,
            "terminated": result.terminated.float(), "done": (result.terminated | result.truncated).float(),
        })
        self._pending = (None, {})

    # ---------------------------------------------------------------- learning

    def update(self) -> dict[str, float]:
        if len(self.rollout) < self.rollout_len:
            return {}
        cfg = self.cfg
        roll = {k: torch.stack([r[k] for r in self.rollout]) for k in self.rollout[0]}   # (T, B, ...)
        self.rollout = []
        adv, ret = gae(roll["reward"], roll["value"], roll["next_value"], roll["terminated"], roll["done"],
                       cfg.gamma, cfg.gae_lambda)
        flat = {k: v.flatten(0, 1) for k, v in roll.items()}
        adv, ret = adv.flatten(), ret.flatten()
        adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)   # advantage normalization
        # State normalization: statistics of this rollout join the running ones before the epochs.
        if cfg.running_norm or not (cfg.init_from_bfs_ao and self.learn_precoding):
            self.critic.norm.update(flat["state"])
            self.nets[SCHED].net.norm.update(flat["obs_sched"])
            if self.learn_precoding:
                self.nets[BS].net.norm.update(flat["obs_bs"])
                self.nets[RIS].net.norm.update(flat["obs_ris"])
        n = adv.shape[0]
        stats = {"loss_actor": 0.0, "loss_critic": 0.0, "entropy": 0.0, "clip_frac": 0.0}
        count = 0
        for _ in range(cfg.reuse):
            perm = torch.randperm(n, generator=self.gen)
            for start in range(0, n, cfg.batch_size):
                i = perm[start:start + cfg.batch_size]
                a_loss, ent, clip_frac = self._actor_loss({k: v[i] for k, v in flat.items()}, adv[i])
                c_loss = (self.critic(flat["state"][i]).squeeze(-1) - ret[i]).square().mean()   # eq. (38)
                self.opt_actor.zero_grad(set_to_none=True)
                self.opt_critic.zero_grad(set_to_none=True)
                (a_loss - cfg.entropy_coef * ent).backward()
                c_loss.backward()
                nn.utils.clip_grad_norm_(self.nets.parameters(), cfg.max_grad_norm)
                nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
                self.opt_actor.step()
                self.opt_critic.step()
                stats["loss_actor"] += float(a_loss.detach())
                stats["loss_critic"] += float(c_loss.detach())
                stats["entropy"] += float(ent.detach())
                stats["clip_frac"] += clip_frac
                count += 1
        self.updates += 1
        return {k: v / count for k, v in stats.items()}

    def _actor_loss(self, b: dict[str, torch.Tensor], adv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Sum over agents of the clipped surrogates (35) with the shared advantage; entropies."""
        eps = self.cfg.clip
        terms = []
        d = self.nets[SCHED].dist(b["obs_sched"])
        terms.append((d.log_prob(b["sched"]), b["logp_sched"], adv, d.entropy()))
        if self.learn_precoding:
            d = self.nets[BS].dist(b["obs_bs"])
            terms.append((d.log_prob(b["bs"]).sum(-1), b["logp_bs"], adv, d.entropy().sum(-1)))
            n, L = b["obs_ris"].shape[:2]
            d = self.nets[RIS].dist(b["obs_ris"].flatten(0, 1))
            logp = d.log_prob(b["ris"].flatten(0, 1)).sum(-1)
            terms.append((logp, b["logp_ris"].flatten(), adv.repeat_interleave(L), d.entropy().sum(-1)))
        loss = torch.zeros(())
        ent = torch.zeros(())
        clipped = 0.0
        for new, old, a, h in terms:
            ratio = (new - old).exp()
            loss = loss - torch.minimum(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a).mean() * (a.numel() // adv.numel())
            ent = ent + h.mean() * (a.numel() // adv.numel())
            clipped += float(((ratio - 1).abs() > eps).float().mean())
        return loss, ent, clipped / len(terms)

    # ---------------------------------------------------------------- execution and persistence

    def actors(self) -> dict[str, Actor]:
        return {SCHED: self.nets[SCHED], BS: self.nets[BS], RIS: self.nets[RIS]}

    def role_of(self, agent_id: str) -> str:
        if agent_id == "sched":
            return SCHED
        if agent_id == "bs0":
            return BS
        if agent_id in self.ris_ids:
            return RIS
        raise ConfigError(f"agent_id: {agent_id!r} is not an agent of this run ({list(self.ids)})")

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg), "nets": self.nets.state_dict(), "critic": self.critic.state_dict(),
            "opt_actor": self.opt_actor.state_dict(), "opt_critic": self.opt_critic.state_dict(),
            "gen": self.gen.get_state(), "rollout": [dict(r) for r in self.rollout], "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])
        self.critic.load_state_dict(state["critic"])
        self.opt_actor.load_state_dict(state["opt_actor"])
        self.opt_critic.load_state_dict(state["opt_critic"])
        self.gen.set_state(state["gen"])
        self.rollout = [dict(r) for r in state["rollout"]]
        self.updates = int(state["updates"])


class PPOAO(MAPPO):
    """PPO-AO: MAPPO's scheduler with AO precoding (``MAPPO`` with ``precoding = "ao"``)."""

    name = "ppo-ao"
    config_cls = PPOAOConfig

    def __init__(self, env: BatchedEnv, config: MAPPOConfig | None = None, seed: int = 0) -> None:
        cfg = self.config_cls() if config is None else config
        super().__init__(env, replace(cfg, precoding="ao") if isinstance(cfg, MAPPOConfig) else cfg, seed)
