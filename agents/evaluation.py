"""Deterministic evaluation of actors and reference decisions on seeded episodes; tables, plots.

Every policy of one comparison runs on the same episodes: the environment is reset with the
same seed and stepped to truncation, so geometry, fading and energy arrivals are identical
(their random draws do not depend on the actions). A rollout returns per-step metrics as
(T, B) arrays: ``reward`` (mean over agents) and every real-valued ``info`` entry of the
environment (entries with extra axes are averaged over them and named ``<key>_mean``;
for P1 ``rate_mean`` is the average user rate).

Plots: :func:`plot_learning_curves` (P1 Fig. 3: reward / rate vs training steps per
algorithm, mean and spread over seeds) and :func:`plot_sweep` (P1 Fig. 4: average user
rate vs a swept scenario parameter).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from agents.base import Actor
from twin.envs.base import Action, BatchedEnv, Obs

Policy = Callable[[BatchedEnv, Obs], Action]


# --------------------------------------------------------------------------- rollouts

def step_metrics(rewards: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per-environment (B,) metrics of one step."""
    out = {"reward": torch.stack([r.double() for r in rewards.values()]).mean(0).numpy()}
    for k, v in info.items():
        if not isinstance(v, torch.Tensor) or v.is_complex() or v.dim() == 0:
            continue
        v = v.double()
        out[k if v.dim() == 1 else f"{k}_mean"] = (v if v.dim() == 1 else v.flatten(1).mean(-1)).numpy()
    return out


def rollout(env: BatchedEnv, policy: Policy, seed: int, max_steps: int | None = None) -> dict[str, np.ndarray]:
    """One batched episode from ``reset(seed)``: metric name -> (T, B) array."""
    obs = env.reset(seed=seed)
    reset = getattr(policy, "reset", None)
    if callable(reset):  # a new episode for policies with per-episode state
        reset()
    rows: list[dict[str, np.ndarray]] = []
    while True:
        result = env.step(policy(env, obs))
        rows.append(step_metrics(result.rewards, result.info))
        obs = result.obs
        if bool((result.terminated | result.truncated).all()) or (max_steps is not None and len(rows) >= max_steps):
            break
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def summarize(trace: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per metric: mean over steps and episodes, and the spread (std) of the episode means."""
    out = {}
    for k, v in trace.items():
        episode_means = v.mean(0)
        out[k] = {"mean": float(v.mean()), "std": float(episode_means.std()), "episodes": int(v.shape[1])}
    return out


def actors_policy(actors: Mapping[str, Actor], role_of: Callable[[str], str]) -> Policy:
    """Decentralized execution: each agent's actor on its own local observation only."""

    def policy(env: BatchedEnv, obs: Obs) -> Action:
        with torch.inference_mode():
            return {a: actors[role_of(a)](o) for a, o in obs.items()}

    # Roles that override the local decisions (P3 MAGAR's periodic global agent) wrap the rest.
    for actor in actors.values():
        if hasattr(actor, "wrap_policy"):
            policy = actor.wrap_policy(policy)

    wrapped_reset = getattr(policy, "reset", None)

    def reset() -> None:
        """Actors with per-episode state (MAQ's last resolution) start each episode afresh."""
        from agents.bundle import reset_actor

        for actor in actors.values():
            reset_actor(actor)
        if callable(wrapped_reset):
            wrapped_reset()

    try:
        policy.reset = reset  # type: ignore[attr-defined]
    except AttributeError:  # a wrapper that does not take attributes keeps its own episode logic
        pass
    return policy


def bundle_policy(bundle: Any) -> Policy:
    return actors_policy({r: bundle.actor_for(bundle.manifest["roles"][r]["agent_ids"][0]) for r in bundle.roles}, bundle.role_of)


# --------------------------------------------------------------------------- P1 references

def _p1_action(env: Any, V: torch.Tensor, bits: torch.Tensor, phase_idx: torch.Tensor, on: torch.Tensor) -> Action:
    """P1 action dict from V (B,M,K) complex and (B,L)/(B,L,N) IRS tensors."""
    v = torch.stack([V.real, V.imag], 1).to(torch.float32)
    # Full-power beams can exceed the action box by rounding only; clamp to it.
    bound = float(getattr(env, "v_bound", math.inf))
    actions: dict[str, Any] = {"bs0": {"V": v.clamp(-bound, bound)}}
    for l, a in enumerate(env.irs_ids):
        actions[a] = {"bits": bits[:, l], "phase_idx": phase_idx[:, l], "on": on[:, l]}
    return actions


def p1_reference_policies(env: Any, seed: int, include_upper: bool = True) -> dict[str, Policy]:
    """P1's reference decisions with full CSI of the current slot (agents/reference.py).

    random:               random resolution, phases, ON/OFF and beams (full power)
    all-on+align+mrt/zf:  every element ON, multi-user phase alignment quantized to the
                          highest resolution, MRT / ZF beams
    half-on+align+zf:     a random half of the elements ON (saves IRS energy), ZF beams
    wmmse+ca (upper):     WMMSE alternated with discrete coordinate ascent, all elements ON,
                          highest resolution; ignores the energy budget, hence an upper
                          reference for the sum rate, not for the reward
    """
    from agents import reference as ref
    from twin.signal import effective_channel

    gen = torch.Generator().manual_seed(int(seed))
    bits_max = max(env.bit_choices)
    choices = torch.tensor(env.bit_choices)
    cfg = env.cfg

    def channels() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = env.scene  # full CSI of the current slot
        return s.H_BR, s.h_RU, s.h_BU

    def dims() -> tuple[int, int, int, int, int]:
        H_BR, h_RU, _ = channels()
        B, L, N, M = H_BR.shape
        return B, L, N, M, h_RU.shape[2]

    def random_policy(env: Any, obs: Obs) -> Action:
        B, L, N, M, K = dims()
        bits = choices[torch.randint(0, len(choices), (B, L), generator=gen)]
        idx = ref.random_phase_idx(B, L, N, bits, gen)
        on = torch.rand((B, L, N), generator=gen) < 0.5
        V = ref.random_precoder(B, M, K, cfg.p_max_w, gen, dtype=channels()[0].dtype)
        return _p1_action(env, V, bits, idx, on)

    def aligned(precoder: str, half: bool) -> Policy:
        def policy(env: Any, obs: Obs) -> Action:
            H_BR, h_RU, h_BU = channels()
            B, L, N, M, K = dims()
            idx = ref.quantize_phases(ref.align_phases_multiuser(H_BR, h_RU, h_BU), bits_max)
            on = ref.half_on(B, L, N, gen) if half else ref.all_on(B, L, N)
            G = effective_channel(H_BR, h_RU, h_BU, ref.phases_from_idx(idx, bits_max, on, H_BR.dtype))
            V = ref.PRECODERS[precoder](G, cfg.noise_w, cfg.p_max_w)
            return _p1_action(env, V, torch.full((B, L), bits_max), idx, on)
        return policy

    def upper(env: Any, obs: Obs) -> Action:
        H_BR, h_RU, h_BU = channels()
        B, L, N, M, K = dims()
        res = ref.wmmse_phase_search(H_BR, h_RU, h_BU, cfg.noise_w, cfg.p_max_w, bits_max)
        return _p1_action(env, res.V, torch.full((B, L), bits_max), res.phase_idx, res.on)

    policies: dict[str, Policy] = {
        "random": random_policy,
        "all-on+align+mrt": aligned("mrt", False),
        "all-on+align+zf": aligned("zf", False),
        "half-on+align+zf": aligned("zf", True),
    }
    if include_upper:
        policies["wmmse+ca (upper)"] = upper
    return policies


# scenario -> (env, seed, include_upper) -> {name: policy}; other papers' references add entries.
def _p2_reference_policies(env: Any, seed: int, include_upper: bool = True) -> dict[str, Policy]:
    from agents.p2_reference import p2_reference_policies  # random / random, fixed, per-slot best association

    return p2_reference_policies(env, seed, include_upper)


def _p4_reference_policies(env: Any, seed: int, include_upper: bool = True) -> dict[str, Policy]:
    from agents.mappo import p4_reference_policies  # random, round-robin + AO, BFS-AO

    return p4_reference_policies(env, seed, include_upper)


REFERENCE_POLICIES: dict[str, Callable[[Any, int, bool], dict[str, Policy]]] = {
    "p1": p1_reference_policies,
    "p2": _p2_reference_policies,
    "p4": _p4_reference_policies,
}


def reference_policies(scenario: str, env: Any, seed: int, include_upper: bool = True) -> dict[str, Policy]:
    """The reference decisions `ristwin evaluate` compares a bundle with (none if unregistered)."""
    make = REFERENCE_POLICIES.get(scenario)
    return make(env, seed, include_upper) if make is not None else {}


def evaluate_policies(env: BatchedEnv, policies: Mapping[str, Policy], seed: int,
                      max_steps: int | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """policy name -> metric -> {mean, std, episodes}, every policy on the same episodes."""
    return {name: summarize(rollout(env, policy, seed, max_steps)) for name, policy in policies.items()}


# --------------------------------------------------------------------------- plots

def save_png(fig: Any, out: Path) -> Path:
    """Write ``fig`` to ``out`` as PNG (atomically) and close it."""
    from agents.runs import write_atomic
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(out, buf.getvalue())
    return out


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def label_axes(ax: Any, xlabel: str, ylabel: str) -> None:
    """Axis labels, a light grid, and a legend when a line was drawn."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend()


def mean_and_spread(curves: Sequence[tuple[Sequence[float], Sequence[float]]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Curves (steps, values) of several seeds on a common step grid (the steps all of them
    reached, interpolated): grid, mean, std."""
    curves = [(np.asarray(x, float), np.asarray(y, float)) for x, y in curves if len(x)]
    if not curves:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    end = min(x[-1] for x, _ in curves)
    grid = np.unique(np.concatenate([x[x <= end] for x, _ in curves]))
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(0), ys.std(0)


def plot_learning_curves(groups: Mapping[str, Sequence[tuple[Sequence[float], Sequence[float]]]],
                         out: Path, ylabel: str = "reward", xlabel: str = "training steps") -> Path:
    """Fig. 3-like: one line per algorithm (mean over its runs), shaded +- one std."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, curves in sorted(groups.items()):
        grid, mean, std = mean_and_spread(curves)
        if grid.size == 0:
            continue
        line, = ax.plot(grid, mean, marker="o" if grid.size < 20 else None, label=f"{name} (n={len(curves)})")
        ax.fill_between(grid, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    label_axes(ax, xlabel, ylabel)
    return save_png(fig, out)


def plot_sweep(groups: Mapping[str, Mapping[float, Sequence[float]]], out: Path, xlabel: str,
               ylabel: str = "average user rate (bit/s/Hz)") -> Path:
    """Fig. 4-like: value vs swept parameter per algorithm, mean and std over runs."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, by_x in sorted(groups.items()):
        xs = sorted(by_x)
        mean = np.array([np.mean(by_x[x]) for x in xs])
        std = np.array([np.std(by_x[x]) for x in xs])
        ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.lines or ax.containers:
        ax.legend()
    return save_png(fig, out)
