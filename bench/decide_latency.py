"""Per-agent decision latency of exported actors (Bundle.decide, B = 1, one thread), next to
the centralized reference decisions (full CSI) for one slot.

For every registered algorithm (untrained: latency does not depend on the weights) the
actors are exported to a temporary bundle, loaded back with agents.bundle.load_bundle and
timed through ``Bundle.decide(agent_id, obs)`` with real observations of the scenario,
numpy in, numpy out, as a daemon calls it. ``--bundle RUN/bundle`` times a trained bundle
instead. References: quantized multi-user alignment + ZF, and WMMSE + coordinate ascent
(the upper reference), one slot for all agents at once.

    /work/venv/bin/python bench/decide_latency.py [--iters 2000] [--bundle PATH] [--ref-iters 20]

On a machine shared with other jobs, measure "one core" by giving the bench one core at
real-time priority (others cannot preempt it; the kernel's RT throttling still applies):

    chrt -f 10 taskset -c 1 /work/venv/bin/python bench/decide_latency.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents import registry  # noqa: E402
from agents.bundle import load_bundle  # noqa: E402
from agents.training import derive_seed  # noqa: E402
from twin.errors import ConfigError  # noqa: E402

TARGET_P99_MS = 0.2


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    a = np.asarray(samples_s) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def time_decide(bundle, agent_id: str, observations: list[np.ndarray], iters: int) -> tuple[float, float, float]:
    """Wall-clock p50 / p99 and the p99 of the thread's CPU time (immune to preemption by
    other processes on a loaded machine), in ms."""
    for i in range(200):  # warm-up
        bundle.decide(agent_id, observations[i % len(observations)])
    wall, cpu = [], []
    for i in range(iters):
        obs = observations[i % len(observations)]
        c0, t0 = time.thread_time(), time.perf_counter()
        bundle.decide(agent_id, obs)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return (*percentiles(wall), percentiles(cpu)[1])


def observations_of(env, n: int) -> dict[str, list[np.ndarray]]:
    """Real local observations from a few slots (random valid actions do not matter here)."""
    out: dict[str, list[np.ndarray]] = {a: [] for a in env.agent_ids}
    obs = env.reset(seed=1)
    for a, o in obs.items():
        out[a].extend(o.numpy())
    return {a: v * (n // len(v) + 1) for a, v in out.items()}


def export_untrained(name: str, scenario: str, cfg, tmp: Path):
    algo_cls, cfg_cls = registry.algorithm(name)
    env = registry.make_env(scenario, cfg, 1)
    torch.manual_seed(derive_seed(0, "algo"))
    algo = algo_cls(env, cfg_cls(), derive_seed(0, "algo"))
    from agents.bundle import export_bundle

    path = export_bundle(tmp / name, name, scenario, cfg, algo.actors(), {a: algo.role_of(a) for a in env.agent_ids},
                         env.observation_spaces, env.action_spaces)
    return load_bundle(path, env=env)


def time_references(cfg, iters: int) -> list[tuple[str, float, float]]:
    from agents import reference as ref
    from twin.signal import effective_channel

    env = registry.make_env("p1", cfg, 1)
    env.reset(seed=2)
    s = env.scene
    H_BR, h_RU, h_BU = s.H_BR, s.h_RU, s.h_BU
    bits = max(env.bit_choices)

    def align_zf():
        idx = ref.quantize_phases(ref.align_phases_multiuser(H_BR, h_RU, h_BU), bits)
        G = effective_channel(H_BR, h_RU, h_BU, ref.phases_from_idx(idx, bits, None, H_BR.dtype))
        return ref.zf(G, cfg.noise_w, cfg.p_max_w)

    def upper():
        return ref.wmmse_phase_search(H_BR, h_RU, h_BU, cfg.noise_w, cfg.p_max_w, bits)

    rows = []
    for name, fn, n in (("align+zf (all agents)", align_zf, max(iters, 50)), ("wmmse+ca (all agents)", upper, iters)):
        fn()
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        rows.append((name, *percentiles(samples)))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--ref-iters", type=int, default=20, help="timed slots of the reference decisions")
    p.add_argument("--bundle", type=Path, default=None, help="time a trained bundle instead of untrained actors")
    p.add_argument("--algos", nargs="*", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = registry.scenario_config("p1")
    env = registry.make_env("p1", cfg, 16)
    observations = observations_of(env, args.iters)

    print(f"P1 default preset (L={cfg.n_irs}, K={cfg.n_users}, N={cfg.n_elements}, M={cfg.n_bs_antennas}), "
          f"1 torch thread, {args.iters} decisions per agent")
    print(f"{'actor / decision':<28} {'agent':<8} {'p50 ms':>8} {'p99 ms':>8} {'cpu p99 ms':>11}")
    worst, worst_cpu = 0.0, 0.0
    per_bundle: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        bundles = []
        if args.bundle is not None:
            bundles.append((f"bundle {args.bundle.name}", load_bundle(args.bundle)))
        else:
            for name in args.algos if args.algos is not None else sorted(registry.ALGORITHMS):
                try:
                    bundles.append((f"{name} (exported)", export_untrained(name, "p1", cfg, Path(tmp))))
                except ConfigError:  # an algorithm of another paper's scenario
                    print(f"{name + ' (exported)':<28} skipped: does not act on p1")
        for label, b in bundles:
            for a in b.agent_ids:
                p50, p99, cpu99 = time_decide(b, a, observations[a], args.iters)
                worst, worst_cpu = max(worst, p99), max(worst_cpu, cpu99)
                per_bundle[label.split(" ")[0]] = max(per_bundle.get(label.split(" ")[0], 0.0), p99)
                print(f"{label:<28} {a:<8} {p50:>8.3f} {p99:>8.3f} {cpu99:>11.3f}", flush=True)
    for name, p50, p99 in time_references(cfg, args.ref_iters):
        print(f"{name:<28} {'-':<8} {p50:>8.3f} {p99:>8.3f} {'-':>11}", flush=True)
    meets = sorted(n for n, v in per_bundle.items() if v < TARGET_P99_MS)
    detail = ", ".join(f"{n} {v:.3f}" for n, v in per_bundle.items())
    print(f"summary: worst decision p99 per exported bundle (ms): {detail}; under the {TARGET_P99_MS} ms target: "
          f"{', '.join(meets) or 'none'}; worst thread-CPU p99 {worst_cpu:.3f} ms")


if __name__ == "__main__":
    main()
