"""The training loop: seeded, checkpointed, resumable bit-for-bit, ending in an actor bundle.

One *step* is one batched environment step (all ``num_envs`` environments advance one
slot), so a run of ``steps`` steps sees ``steps * num_envs`` transitions. Per step the loop
calls ``act(explore=True)`` -> ``env.step`` -> ``observe`` -> ``update``.

Seeding: one run seed derives (through ``numpy.random.SeedSequence``) the algorithm's seed,
the seed of every training episode's ``env.reset`` and the evaluation seed. Each episode
starts from its own derived seed, so the environment needs no state of its own in the
checkpoint: checkpoints are taken at episode boundaries (the first boundary at or after
every ``checkpoint_every`` steps) and hold the algorithm's ``state_dict``, torch's global
RNG state and the loop counters. Resuming replays from the last checkpoint and gives the
same metrics, weights and bundle as a run that was never interrupted (same machine, CPU).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from agents import registry, runs
from agents.base import Algorithm
from agents.bundle import export_bundle, to_jsonable
from agents.evaluation import actors_policy, label_axes, pyplot, rollout, save_png, step_metrics
from twin.errors import ConfigError

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainConfig:
    """What ``ristwin train`` controls besides the scenario and algorithm configs."""

    scenario: str = "p1"
    algo: str = "maq-wp"
    steps: int = 20_000            # batched environment steps (paper: 20000 epochs x 100 steps at B = 1)
    num_envs: int = 8              # environments stepped together
    seed: int = 0
    log_every: int = 100           # steps between metrics.csv rows
    eval_every: int = 1_000        # steps between deterministic evaluations (eval.csv)
    eval_episodes: int = 8         # evaluation episodes (one batch)
    checkpoint_every: int = 1_000  # steps; the checkpoint is taken at the next episode boundary
    threads: int = 1               # torch intra-op threads; fixed so results do not depend on the core count

    def check(self) -> "TrainConfig":
        for name in ("steps", "num_envs", "log_every", "eval_every", "eval_episodes", "checkpoint_every", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: must be a positive integer, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"--seed: must be a non-negative integer, got {self.seed!r}")
        return self


def derive_seed(seed: int, *stream: int | str) -> int:
    """A 63-bit seed for one named stream of a run (independent streams from one seed)."""
    words = [int(seed)] + [int.from_bytes(s.encode(), "little") % (1 << 32) if isinstance(s, str) else int(s) for s in stream]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))


def learn_step(algo: Any, env: Any, obs: Any, state: Any, learn: bool = True) -> tuple[Any, Any, Any, Any]:
    """One training transition: act with exploration, step the env, store the transition and,
    when ``learn``, one update. Returns (action, step result, next state, update metrics)."""
    action = algo.act(obs, state, explore=True)
    result = env.step(action)
    next_state = env.state()
    algo.observe(obs, state, action, result, next_state)
    return action, result, next_state, (algo.update() if learn else None)


class _Window:
    """Running sums for one logging window (plain floats: deterministic and checkpointable)."""

    def __init__(self, state: Mapping[str, Any] | None = None) -> None:
        self.sums: dict[str, float] = dict(state["sums"]) if state else {}
        self.counts: dict[str, int] = dict(state["counts"]) if state else {}

    def add(self, values: Mapping[str, Any], prefix: str = "") -> None:
        for k, v in values.items():
            if isinstance(v, torch.Tensor):
                if v.numel() != 1:
                    continue
                v = v.item()
            if isinstance(v, (bool, int, float)) and math.isfinite(float(v)):
                key = prefix + k
                self.sums[key] = self.sums.get(key, 0.0) + float(v)
                self.counts[key] = self.counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}

    def state(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    episodes: int
    bundle: Path | None
    final_eval: dict[str, float]
    interrupted: bool = False


ProgressFn = Callable[[int, int, Mapping[str, float]], None]


class Trainer:
    """Runs one training run into a run directory (see agents/runs.py for the layout)."""

    def __init__(self, run_dir: str | Path, train_cfg: TrainConfig, scenario_cfg: Any, algo_cfg: Any) -> None:
        self.run_dir = Path(run_dir)
        self.cfg = train_cfg.check()
        self.scenario_cfg = scenario_cfg
        self.algo_cfg = algo_cfg
        self.algo_cls, _ = registry.algorithm(train_cfg.algo)

    # ---- construction -------------------------------------------------------------------------

    def resolved_config(self) -> dict[str, Any]:
        return {
            "train": to_jsonable(self.cfg),
            "scenario": to_jsonable(self.scenario_cfg),
            "algo": to_jsonable(self.algo_cfg),
            "versions": {"torch": torch.__version__},
        }

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, steps: int | None = None) -> "Trainer":
        """Rebuild a run's trainer from its saved config (for --resume); ``steps`` may extend it."""
        run_dir = Path(run_dir)
        saved = runs.load_config(run_dir)
        try:
            train_cfg = TrainConfig(**saved["train"])
        except TypeError as exc:
            raise ConfigError(f"{run_dir / runs.CONFIG_JSON}: train section does not fit this ristwin ({exc})") from None
        if steps is not None:
            train_cfg = dataclasses.replace(train_cfg, steps=int(steps))
        scenario_cfg = registry.rebuild_scenario(train_cfg.scenario, saved.get("scenario", {}))
        _, algo_cfg_cls = registry.algorithm(train_cfg.algo)
        algo_cfg = registry.rebuild_dataclass(algo_cfg_cls, saved.get("algo", {}), "algo")
        return cls(run_dir, train_cfg, scenario_cfg, algo_cfg)

    def _build(self) -> None:
        c = self.cfg
        self.env = registry.make_env(c.scenario, self.scenario_cfg, c.num_envs)
        self.eval_env = registry.make_env(c.scenario, self.scenario_cfg, c.eval_episodes)
        algo_seed = derive_seed(c.seed, "algo")
        torch.manual_seed(algo_seed)  # network initializations that use torch's global RNG
        self.algo: Algorithm = self.algo_cls(self.env, self.algo_cfg, algo_seed)

    # ---- evaluation ---------------------------------------------------------------------------

    def evaluate(self) -> dict[str, float]:
        """Deterministic actors on the run's fixed evaluation episodes: per-step means."""
        policy = actors_policy(self.algo.actors(), self.algo.role_of)
        trace = rollout(self.eval_env, policy, derive_seed(self.cfg.seed, "eval"))
        return {f"eval_{k}": float(v.mean()) for k, v in trace.items()}

    # ---- checkpoints --------------------------------------------------------------------------

    def _save_checkpoint(self, step: int, episode: int, window: _Window) -> None:
        runs.save_torch_atomic({
            "format": CHECKPOINT_FORMAT,
            "step": step,
            "episode": episode,
            "window": window.state(),
            "torch_rng": torch.get_rng_state(),
            "algo": self.algo.state_dict(),
        }, self.run_dir / runs.CHECKPOINT)

    # ---- the loop -----------------------------------------------------------------------------

    def run(self, resume: bool = False, progress: ProgressFn | None = None, plot: bool = True) -> TrainResult:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--out: cannot create the run directory {self.run_dir} ({exc.strerror}); "
                              "choose a writable path") from None
        with runs.RunLock(self.run_dir):
            return self._run(resume, progress, plot)

    def _run(self, resume: bool, progress: ProgressFn | None, plot: bool) -> TrainResult:
        c = self.cfg
        ckpt_path = self.run_dir / runs.CHECKPOINT
        if not resume and (ckpt_path.exists() or (self.run_dir / runs.CONFIG_JSON).exists()):
            raise ConfigError(f"--out: {self.run_dir} already holds a run; pass --resume to continue it or choose a new directory")
        torch.set_num_threads(c.threads)
        self._build()
        metrics = runs.MetricsCSV(self.run_dir / runs.METRICS_CSV)
        evals = runs.MetricsCSV(self.run_dir / runs.EVAL_CSV)
        step, episode, window = 0, 0, _Window()
        if resume and ckpt_path.exists():
            ckpt = runs.load_checkpoint(ckpt_path)
            if ckpt.get("format") != CHECKPOINT_FORMAT:
                raise ConfigError(f"{ckpt_path}: checkpoint format {ckpt.get('format')!r} is not supported")
            self.algo.load_state_dict(ckpt["algo"])
            torch.set_rng_state(ckpt["torch_rng"])
            step, episode, window = int(ckpt["step"]), int(ckpt["episode"]), _Window(ckpt["window"])
        # Rows after the checkpoint are replayed, so drop them (also on a fresh run in an old dir).
        metrics.truncate_after(step)
        evals.truncate_after(step)
        metrics.ensure(["step", "env_steps", "episodes"])
        evals.ensure(["step", "env_steps"])
        runs.save_config(self.run_dir, self.resolved_config())
        tb = runs.TensorBoard(self.run_dir / "tb")

        next_ckpt = (step // c.checkpoint_every + 1) * c.checkpoint_every
        obs = self.env.reset(seed=derive_seed(c.seed, "env", episode))
        state = self.env.state()
        t0, last = time.perf_counter(), {}
        interrupted = False
        try:
            while step < c.steps:
                _, result, next_state, update = learn_step(self.algo, self.env, obs, state)
                update = update or {}
                step += 1
                window.add({k: float(v.mean()) for k, v in step_metrics(result.rewards, result.info).items()})
                window.add(update, prefix="algo/")
                obs, state = result.obs, next_state
                episode_over = bool((result.terminated | result.truncated).all())
                if episode_over:
                    episode += 1
                if step % c.log_every == 0:
                    row = {"step": step, "env_steps": step * c.num_envs, "episodes": episode, **window.means()}
                    metrics.append(row)
                    tb.scalars(step, row)
                    last = row
                    window = _Window()
                if step % c.eval_every == 0:
                    row = {"step": step, "env_steps": step * c.num_envs, **self.evaluate()}
                    evals.append(row)
                    tb.scalars(step, row)
                    last = {**last, **row}
                if episode_over:
                    if step >= next_ckpt or step >= c.steps:
                        self._save_checkpoint(step, episode, window)
                        next_ckpt = (step // c.checkpoint_every + 1) * c.checkpoint_every
                    obs = self.env.reset(seed=derive_seed(c.seed, "env", episode))
                    state = self.env.state()
                if progress is not None:
                    progress(step, c.steps, {**last, "steps_per_s": step / max(time.perf_counter() - t0, 1e-9)})
        except KeyboardInterrupt:
            interrupted = True
        finally:
            tb.close()
        bundle = None
        final_eval: dict[str, float] = {}
        if not interrupted:
            final_eval = {"step": step, **self.evaluate()}
            runs.write_atomic(self.run_dir / "final_eval.json", _json(final_eval))
            bundle = self.export()
        if plot:
            plot_learning_curve(self.run_dir)
        return TrainResult(self.run_dir, step, episode, bundle, final_eval, interrupted)

    def export(self) -> Path:
        env = self.env
        role_of = {a: self.algo.role_of(a) for a in env.agent_ids}
        obs_specs, action_specs = dict(env.observation_spaces), dict(env.action_spaces)
        # Roles without an env agent (P3 MAGAR's global agent): {agent id: (role, obs space, action space)}.
        extra = getattr(self.algo, "extra_agents", None)
        for aid, (role, obs_space, action_space) in (extra() if extra else {}).items():
            role_of[aid], obs_specs[aid], action_specs[aid] = role, obs_space, action_space
        return export_bundle(
            self.run_dir / runs.BUNDLE_DIR, self.cfg.algo, self.cfg.scenario, self.scenario_cfg,
            self.algo.actors(), role_of, obs_specs, action_specs,
        )


def _json(d: Mapping[str, Any]) -> str:
    import json

    return json.dumps(to_jsonable(d), indent=2) + "\n"


def plot_learning_curve(run_dir: Path) -> Path | None:
    """RUN/learning_curve.png: training reward (and evaluation reward / sum rate) vs steps."""
    plt = pyplot()
    series = [
        ("reward", runs.METRICS_CSV, "train reward"),
        ("eval_reward", runs.EVAL_CSV, "eval reward (deterministic)"),
    ]
    rate = [("sum_rate", runs.METRICS_CSV, "train sum rate"), ("eval_sum_rate", runs.EVAL_CSV, "eval sum rate")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    drawn = False
    for ax, group, ylabel in ((axes[0], series, "reward per step"), (axes[1], rate, "sum rate (bit/s/Hz)")):
        for key, fname, label in group:
            xs, ys = runs.read_series(run_dir / fname, key)
            if xs:
                ax.plot(xs, ys, label=label)
                drawn = True
        label_axes(ax, "training steps", ylabel)
    if not drawn:
        plt.close(fig)
        return None
    return save_png(fig, run_dir / runs.CURVE_PNG)
