"""Training throughput of every registered algorithm on a scenario (default: the P1 preset).

For each algorithm and batch size B, three numbers:
  act+env steps/s   environment transitions per second while acting with exploration and
                    storing transitions (act -> env.step -> observe), no learning;
  updates/s         gradient updates per second (update() calls on a warm replay buffer,
                    times the algorithm's updates_per_step);
  loop steps/s      transitions per second of the full training loop (act, step, observe,
                    update every batched step), what `ristwin train` achieves.
A "random" row gives the environment alone with random valid actions.

    /work/venv/bin/python bench/train_throughput.py [--scenario p1] [--num-envs 1 16]
        [--steps 100] [--algos maq-wp maq-pg] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import registry  # noqa: E402
from agents.training import derive_seed, learn_step  # noqa: E402
from twin.errors import ConfigError  # noqa: E402


def _random_actions(env, gen):
    acts = {}
    for a in env.agent_ids:
        space = env.action_spaces[a]
        out = {}
        B = env.num_envs
        for key, sub in space.spaces.items():
            if key == "bits":
                out[key] = torch.tensor(env.bit_choices)[torch.randint(0, len(env.bit_choices), (B,), generator=gen)]
            elif key == "phase_idx":
                out[key] = torch.randint(0, 1 << min(env.bit_choices), (B, *sub.shape), generator=gen)
            elif key == "on":
                out[key] = torch.rand((B, *sub.shape), generator=gen) < 0.5
            else:
                lim = float(sub.high.max()) / 2
                out[key] = (torch.rand((B, *sub.shape), generator=gen) * 2 - 1) * lim
        acts[a] = out
    return acts


def bench_env(scenario: str, cfg, B: int, steps: int) -> float:
    env = registry.make_env(scenario, cfg, B)
    gen = torch.Generator().manual_seed(0)
    env.reset(seed=0)
    for _ in range(5):  # warm-up (lazy allocations, first-call dispatch)
        env.step(_random_actions(env, gen))
    t0 = time.perf_counter()
    for i in range(steps):
        r = env.step(_random_actions(env, gen))
        if bool(r.truncated.all()):
            env.reset()
    return steps * B / (time.perf_counter() - t0)


def bench_algo(scenario: str, cfg, name: str, B: int, steps: int) -> tuple[float, float, float]:
    algo_cls, cfg_cls = registry.algorithm(name)
    acfg = cfg_cls()
    fields = {f.name for f in dataclasses.fields(acfg)}
    batch = getattr(acfg, "batch_size", 32)
    if "learning_starts" in fields:  # learn from the first full batch so updates are measured
        acfg = dataclasses.replace(acfg, learning_starts=batch)
    env = registry.make_env(scenario, cfg, B)
    torch.manual_seed(derive_seed(0, "algo"))
    algo = algo_cls(env, acfg, derive_seed(0, "algo"))
    obs = env.reset(seed=0)
    state = env.state()

    def one_step(learn: bool):
        nonlocal obs, state
        _, result, nxt, _ = learn_step(algo, env, obs, state, learn)
        obs, state = result.obs, nxt
        if bool((result.terminated | result.truncated).all()):
            obs = env.reset()
            state = env.state()

    while True:  # fill the buffer past one batch
        one_step(False)
        buf = getattr(algo, "buffer", None)
        if buf is None or len(buf) >= 2 * batch:
            break
    t0 = time.perf_counter()
    for _ in range(steps):
        one_step(False)
    act_rate = steps * B / (time.perf_counter() - t0)

    n_upd = max(steps // 4, 5)
    per_call = getattr(acfg, "updates_per_step", 1)
    algo.update()  # warm-up (lazy allocations)
    t0 = time.perf_counter()
    for _ in range(n_upd):
        algo.update()
    upd_rate = n_upd * per_call / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    for _ in range(n_upd):
        one_step(True)
    loop_rate = n_upd * B / (time.perf_counter() - t0)
    return act_rate, upd_rate, loop_rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="p1")
    p.add_argument("--num-envs", type=int, nargs="+", default=[1, 16])
    p.add_argument("--steps", type=int, default=100, help="timed batched steps per measurement")
    p.add_argument("--algos", nargs="*", default=None, help="default: every registered algorithm")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = registry.scenario_config(args.scenario)
    algos = args.algos if args.algos is not None else sorted(registry.ALGORITHMS)
    print(f"scenario {args.scenario}, torch threads {args.threads}, {args.steps} timed steps")
    print(f"{'algorithm':<12} {'B':>5} {'act+env steps/s':>16} {'updates/s':>10} {'loop steps/s':>13}")
    best = {}
    for B in args.num_envs:
        rate = bench_env(args.scenario, cfg, B, args.steps)
        print(f"{'random':<12} {B:>5} {rate:>16.0f} {'-':>10} {'-':>13}", flush=True)
        for name in algos:
            try:
                act, upd, loop = bench_algo(args.scenario, cfg, name, B, args.steps)
            except ConfigError as exc:  # an algorithm of another paper's scenario
                print(f"{name:<12} {B:>5} skipped: {str(exc)[:60]}", flush=True)
                continue
            print(f"{name:<12} {B:>5} {act:>16.0f} {upd:>10.1f} {loop:>13.0f}", flush=True)
            best[name] = max(best.get(name, (0, 0)), (loop, upd))
    summary = ", ".join(f"{n} {l:.0f} loop steps/s ({u:.1f} updates/s)" for n, (l, u) in best.items()) or "no algorithms registered"
    print(f"summary: best training-loop throughput on {args.scenario}: {summary}")


if __name__ == "__main__":
    main()
