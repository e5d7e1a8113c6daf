"""Per-agent decision latency of exported actors, torch backend next to the numpy runtime
(B = 1, one core), a cold-start column, and the centralized P1 reference decisions.

For every registered algorithm (untrained: latency does not depend on the weights) the
actors are exported to a temporary bundle in the algorithm's scenario (P1 for MAQ, MADDPG,
IL; P2 MDLBI; P3 MAGAR / MADQN / Q-learning; P4 MAPPO / PPO-AO) and timed through
``decide(agent_id, obs)`` with real observations of the scenario, numpy in, numpy out, as a
daemon calls it: once loaded with ``agents.bundle.load_bundle`` (torch actors) and once
with ``agents.runtime.load_runtime`` (numpy graphs, no torch). The process is pinned to one
core (``os.sched_setaffinity``) with one torch thread. ``--bundle RUN/bundle`` times a
trained bundle instead.

Cold start: wall time of a fresh ``python -c`` that loads the bundle and makes one decision
(what a restarted daemon pays before it can answer), torch vs numpy backend, median of
``--cold-repeats`` runs, for ``--cold-algos``.

    /work/venv/bin/python bench/decide_latency.py [--iters 2000] [--algos maq-wp ...] [--bundle PATH]
        [--cold-algos maq-wp] [--cold-repeats 3] [--ref-iters 5] [--core N] [--per-agent]

On a machine shared with other jobs, run it at real-time priority so nothing preempts the
pinned core (the kernel's RT throttling still applies):

    chrt -f 10 /work/venv/bin/python bench/decide_latency.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# One core means one BLAS thread too: OpenBLAS splits products above ~65k multiply-adds
# (MAQ-WP's Q_low over 50 candidates) across threads, which costs more than it saves here and
# escapes the core pinning. Must be set before numpy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents import registry  # noqa: E402
from agents.bundle import export_bundle, load_bundle  # noqa: E402
from agents.runtime import load_runtime  # noqa: E402
from agents.training import derive_seed  # noqa: E402
from twin.errors import ConfigError  # noqa: E402

TARGET_P99_MS = 0.2
SCENARIOS = ("p1", "p2", "p3", "p4")


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    a = np.asarray(samples_s) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def time_decide(bundle, agent_id: str, observations: list[np.ndarray], iters: int) -> tuple[float, float, float, float]:
    """Wall-clock p50 / p99 and the p99 / p50 of the thread's CPU time (immune to preemption
    by other processes on a loaded machine, not to their cache traffic), in ms."""
    for i in range(200):  # warm-up
        bundle.decide(agent_id, observations[i % len(observations)])
    wall, cpu = [], []
    for i in range(iters):
        obs = observations[i % len(observations)]
        c0, t0 = time.thread_time_ns(), time.perf_counter()
        bundle.decide(agent_id, obs)
        wall.append(time.perf_counter() - t0)
        cpu.append((time.thread_time_ns() - c0) * 1e-9)
    c50, c99 = percentiles(cpu)
    return (*percentiles(wall), c99, c50)


def observations_of(env, bundle, n: int) -> dict[str, list[np.ndarray]]:
    """Real local observations from a reset (agents outside the env, e.g. MAGAR's global
    agent, get standard normal ones of their size)."""
    obs = env.reset(seed=1)
    rng = np.random.default_rng(1)
    out = {}
    for a in bundle.agent_ids:
        rows = list(obs[a].numpy()) if a in obs else list(rng.normal(size=(16, bundle.obs_dim(a))).astype(np.float32))
        out[a] = rows * (n // len(rows) + 1)
    return out


def export_untrained(name: str, tmp: Path):
    """(scenario, scenario config, bundle path) of ``name``'s untrained actors, in the first
    scenario the algorithm accepts."""
    algo_cls, cfg_cls = registry.algorithm(name)
    for scenario in SCENARIOS:
        cfg = registry.scenario_config(scenario)
        env = registry.make_env(scenario, cfg, 1)
        torch.manual_seed(derive_seed(0, "algo"))
        try:
            algo = algo_cls(env, cfg_cls(), derive_seed(0, "algo"))
        except ConfigError:
            continue
        role_of = {a: algo.role_of(a) for a in env.agent_ids}
        obs_specs, act_specs = dict(env.observation_spaces), dict(env.action_spaces)
        extra = getattr(algo, "extra_agents", None)
        for aid, (role, o, sp) in (extra() if extra else {}).items():
            role_of[aid], obs_specs[aid], act_specs[aid] = role, o, sp
        path = export_bundle(tmp / name, name, scenario, cfg, algo.actors(), role_of, obs_specs, act_specs)
        return scenario, cfg, path
    raise ConfigError(f"{name}: acts on none of {SCENARIOS}")


COLD = {
    "torch": "from agents.bundle import load_bundle as load\n",
    "numpy": "from agents.runtime import load_runtime as load\n",
}


def cold_start(path: Path, agent_id: str, obs_dim: int, backend: str, repeats: int, core: int | None) -> float:
    """Median wall time (ms) of a fresh interpreter that loads the bundle and decides once."""
    code = (
        "import numpy as np\n" + COLD[backend]
        + f"b = load({str(path)!r})\nb.decide({agent_id!r}, np.zeros({obs_dim}, np.float32))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                       preexec_fn=(lambda: os.sched_setaffinity(0, {core})) if core is not None else None)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


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
    for name, fn, n in (("align+zf (P1, all agents)", align_zf, max(iters, 50)), ("wmmse+ca (P1, all agents)", upper, iters)):
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
    p.add_argument("--ref-iters", type=int, default=5, help="timed slots of the P1 reference decisions (0: skip)")
    p.add_argument("--bundle", type=Path, default=None, help="time a trained bundle instead of untrained actors")
    p.add_argument("--algos", nargs="*", default=None)
    p.add_argument("--cold-algos", nargs="*", default=["maq-wp"], help="algorithms with a cold-start measurement")
    p.add_argument("--cold-repeats", type=int, default=3)
    p.add_argument("--core", type=int, default=None, help="CPU to pin to (default: the last one allowed)")
    p.add_argument("--per-agent", action="store_true", help="one row per agent instead of the worst agent per algorithm")
    args = p.parse_args()
    core = args.core if args.core is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)

    print(f"decide(agent, obs), B = 1, pinned to CPU {core}, 1 torch thread, {args.iters} decisions per agent and backend")
    print(f"{'algorithm':<13} {'scen':<4} {'agent':<8} {'torch p50':>9} {'p99':>7} {'cpu99':>7}   "
          f"{'numpy p50':>9} {'p99':>7} {'cpu99':>7} {'cpu50':>7} {'x p50':>6}   {'cold torch':>10} {'cold numpy':>10}")
    worst: dict[str, dict[str, float]] = {"torch": {}, "numpy": {}}
    cold_rows: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        if args.bundle is not None:
            tb = load_bundle(args.bundle)
            jobs.append((args.bundle.name, tb.scenario_name, registry.rebuild_scenario(tb.scenario_name, tb.scenario_config), args.bundle))
        else:
            for name in args.algos if args.algos is not None else sorted(registry.ALGORITHMS):
                jobs.append((name, *export_untrained(name, Path(tmp))))
        for name, scenario, cfg, path in jobs:
            tb, rt = load_bundle(path), load_runtime(path)
            env = registry.make_env(scenario, cfg, 16)
            observations = observations_of(env, tb, args.iters)
            rows = []
            for a in tb.agent_ids:
                t = time_decide(tb, a, observations[a], args.iters)
                n = time_decide(rt, a, observations[a], args.iters)
                rows.append((a, t, n))
                worst["torch"][name] = max(worst["torch"].get(name, 0.0), t[1])
                worst["numpy"][name] = max(worst["numpy"].get(name, 0.0), n[1])
            if not args.per_agent:   # the agent with the slowest numpy p99 stands for the algorithm
                rows = [max(rows, key=lambda r: r[2][1])]
            cold = ("", "")
            if name in (args.cold_algos or []) or args.bundle is not None:
                a = rows[0][0]
                ct = cold_start(path, a, tb.obs_dim(a), "torch", args.cold_repeats, core)
                cn = cold_start(path, a, tb.obs_dim(a), "numpy", args.cold_repeats, core)
                cold = (f"{ct:>8.0f}ms", f"{cn:>8.0f}ms")
                cold_rows.append(f"{name} {ct:.0f} -> {cn:.0f} ms")
            for i, (a, t, n) in enumerate(rows):
                c = cold if i == 0 else ("", "")
                print(f"{name:<13} {scenario:<4} {a:<8} {t[0]:>9.3f} {t[1]:>7.3f} {t[2]:>7.3f}   "
                      f"{n[0]:>9.3f} {n[1]:>7.3f} {n[2]:>7.3f} {n[3]:>7.3f} {t[0] / n[0]:>5.1f}x   {c[0]:>10} {c[1]:>10}", flush=True)
    if args.ref_iters > 0 and args.bundle is None:
        for name, p50, p99 in time_references(registry.scenario_config("p1"), args.ref_iters):
            print(f"{name:<27} {'':<8} {p50:>9.3f} {p99:>7.3f}", flush=True)
    meets = sorted(n for n, v in worst["numpy"].items() if v < TARGET_P99_MS)
    misses = sorted(n for n, v in worst["numpy"].items() if v >= TARGET_P99_MS)
    detail = ", ".join(f"{n} {worst['torch'][n]:.3f}->{v:.3f}" for n, v in worst["numpy"].items())
    print(f"summary: worst decision p99 per bundle, torch->numpy (ms): {detail}; numpy under the {TARGET_P99_MS} ms "
          f"target: {len(meets)}/{len(worst['numpy'])}{' (missed: ' + ', '.join(misses) + ')' if misses else ''}; "
          f"cold start torch->numpy: {'; '.join(cold_rows) or 'not measured'}")


if __name__ == "__main__":
    main()
