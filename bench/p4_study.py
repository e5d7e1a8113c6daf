"""P4 study at small budgets: MAPPO / PPO-AO vs BFS-AO and the simple baselines (seed 004).

Parts (each prints a table; the run ends with ONE summary line):

  fig5    ergodic-rate approximation (eq. 11) vs Monte Carlo (eq. 10) for BFS-AO and random
          decisions, over P_max (the paper's Fig. 5)
  train   per deployment seed: BFS-AO, then MAPPO (initialized from BFS-AO's first iterate)
          and PPO-AO trained at the preset (P_max 30 dBm, Rician 10 / 3 dB) on that deployment
          (the paper's static environment: statistics fixed, each step refines the actions)
  gen     the models trained at the preset, tested at other P_max and Rician factors on the
          same deployment, next to BFS-AO, random precoding, random RIS and round-robin
  omega   fairness weight omega of Jain's index in the reward: MAPPO's JFI and sum rate
  table2  decision time (one environment, one thread) and % of BFS-AO's rate (Table II)

    nice -n 10 /work/venv/bin/python bench/p4_study.py --seeds 0 1 2 --steps 1500
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from agents import bfs_ao as ao  # noqa: E402
from agents.mappo import MAPPO, PPOAO, MAPPOConfig, PPOAOConfig  # noqa: E402
from agents.training import learn_step  # noqa: E402
from twin import statistical as st  # noqa: E402
from twin.envs.p4 import P4Env  # noqa: E402
from twin.scenarios import get_scenario  # noqa: E402
from twin.scene import P4Scene, sample_p4  # noqa: E402

console = Console(width=220)
NUM_ENVS = 8  # copies of the one deployment stepped together


def deployment(scn, seed: int) -> P4Scene:
    return sample_p4(scn, 1, torch.Generator().manual_seed(1000 + seed))


def tile(scene: P4Scene, B: int) -> P4Scene:
    return P4Scene(*(getattr(scene, f.name).expand(B, *getattr(scene, f.name).shape[1:]).contiguous()
                     for f in dataclasses.fields(scene)))


def static_env(scn, scene: P4Scene, B: int = NUM_ENVS) -> P4Env:
    env = P4Env(B, dataclasses.replace(scn, episode_steps=10**9))
    env.reset(seed=0)
    env.set_scene(tile(scene, B))
    return env


def rate_of(env: P4Env, actions) -> torch.Tensor:
    d = env.decode_actions(actions)
    return env.evaluate(d["W_raw"], d["theta"], d["sched_idx"])["rate"]


def train(algo, env: P4Env, steps: int) -> tuple[dict, torch.Tensor, list[float]]:
    obs, state = env._observe(), env.state()
    curve = []
    for t in range(steps):
        _, out, nxt, update = learn_step(algo, env, obs, state)
        if update:
            curve.append(float(out.info["sum_rate"].mean()))
        obs, state = out.obs, nxt
    return obs, state, curve


def execute(algo, env: P4Env, steps: int = 10) -> tuple[torch.Tensor, dict]:
    """Deterministic actors from the environment's current actions; mean rate over the last steps."""
    obs = env._observe()
    rates, last = [], None
    for _ in range(steps):
        a = algo.act(obs, env.state(), explore=False)
        out = env.step(a)
        rates.append(out.info["rate"])
        obs, last = out.obs, a
    return torch.stack(rates[-5:]).mean(0), last


def mappo_cfg(**kw) -> MAPPOConfig:
    return dataclasses.replace(MAPPOConfig(init_from_bfs_ao=False), **kw)


def train_mappo(scn, scene, steps: int, seed: int, **kw):
    env = static_env(scn, scene)
    algo = MAPPO(env, mappo_cfg(**kw), seed=seed)
    init = algo.init_from_first_iterate(env)
    _, _, curve = train(algo, env, steps)
    return algo, env, init, curve


def train_ppo_ao(scn, scene, steps: int, seed: int):
    env = static_env(scn, scene)
    algo = PPOAO(env, PPOAOConfig(), seed=seed)
    _, _, curve = train(algo, env, steps)
    return algo, env, curve


def test_setting(algo, train_env: P4Env, scn_t, scene_t: P4Scene, steps: int = 10) -> torch.Tensor:
    """The trained model at another setting: same deployment, started from the last training action."""
    env = static_env(scn_t, scene_t)
    env.set_actions(W=train_env.W_raw, theta=train_env.theta, schedule_idx=train_env.sched_idx)
    old = algo.env
    algo.env = env  # PPO-AO computes AO precoding on the test statistics
    try:
        rate, _ = execute(algo, env, steps)
    finally:
        algo.env = old
    return rate.mean(0)  # (K,) the copies are identical up to float rounding


def baselines(scn, scene: P4Scene, seed: int) -> dict[str, torch.Tensor]:
    """Per-user rates (K,) of BFS-AO, random precoding, random RIS, round-robin, random decisions."""
    g = torch.Generator().manual_seed(seed)
    S, nw, pw = scn.n_scheduled, scn.noise_w, scn.p_max_w
    out = {}
    bfs = ao.bfs_ao(scene, S, nw, pw)
    out["BFS-AO"] = _user_rates(scene, bfs, nw)
    out["random precoding"] = _user_rates(scene, ao.random_precoding(scene, S, nw, pw, g), nw)
    out["random RIS"] = _user_rates(scene, ao.random_ris(scene, S, nw, pw, g), nw)
    C = math.comb(scn.n_users, S)
    rr = [_user_rates(scene, ao.round_robin(scene, S, nw, pw, c), nw) for c in range(C)]
    out["round-robin"] = torch.stack(rr).mean(0)  # the time average over one cycle of the codebook
    env = static_env(scn, scene, 64)
    out["random"] = torch.stack([rate_of(env, env.sample_actions(g)) for _ in range(4)]).mean((0, 1))
    return out


def _user_rates(scene, res, noise_w) -> torch.Tensor:
    return st.ergodic_rate_approx(scene.G_bar, scene.beta_G, scene.kappa_G, scene.h_bar, scene.beta_h, scene.kappa_h,
                                  res.phi, res.W, noise_w)[0]


# --------------------------------------------------------------------------- parts


def part_fig5(seeds, draws: int) -> dict:
    t = Table(title="Fig. 5: ergodic-rate approximation (eq. 11) vs Monte Carlo (eq. 10), sum rate bit/s/Hz, mean over seeds")
    for c in ("P_max dBm", "decision", "approx", "Monte Carlo", "gap %"):
        t.add_column(c)
    gaps = []
    for p in (20.0, 25.0, 30.0, 35.0, 40.0):
        scn = get_scenario("p4", p_max_dbm=p)
        scene = P4Scene(*(torch.cat([getattr(deployment(scn, s), f.name) for s in seeds]) for f in dataclasses.fields(P4Scene)))
        g = torch.Generator().manual_seed(7)
        bfs = ao.bfs_ao(scene, scn.n_scheduled, scn.noise_w, scn.p_max_w)
        B, L, N, M = scene.G_bar.shape
        theta = 2 * math.pi * torch.rand(B, L, N, generator=g)
        Wr = st.apply_schedule(torch.randn(B, M, scn.n_users, dtype=torch.complex64, generator=g), bfs.schedule)
        Wr = Wr * (math.sqrt(scn.p_max_w) / torch.linalg.matrix_norm(Wr))[:, None, None]
        for name, W, phi in (("BFS-AO", bfs.W, bfs.phi), ("random W, phases", Wr, torch.polar(torch.ones_like(theta), theta))):
            args = (scene.G_bar, scene.beta_G, scene.kappa_G, scene.h_bar, scene.beta_h, scene.kappa_h, phi, W, scn.noise_w)
            apx = st.ergodic_rate_approx(*args).sum(-1).mean()
            mc = st.monte_carlo_rate(*args, n_samples=draws, generator=g).sum(-1).mean()
            gap = 100 * float((apx - mc) / mc)
            gaps.append(abs(gap))
            t.add_row(f"{p:.0f}", name, f"{apx:.3f}", f"{mc:.3f}", f"{gap:+.1f}")
    console.print(t)
    return {"fig5_max_abs_gap_pct": max(gaps)}


def part_main(seeds, steps: int, ppo_steps: int) -> dict:
    """Train at the preset per deployment seed; test across P_max and Rician factor; Table II."""
    base = get_scenario("p4")
    settings = [("P_max", p, dict(p_max_dbm=p)) for p in (20.0, 25.0, 30.0, 35.0, 40.0)]
    settings += [("Rician RIS-user dB", k, dict(rician_ris_user_db=k)) for k in (0.0, 3.0, 10.0)]
    settings += [("Rician BS-RIS dB", k, dict(rician_bs_ris_db=k)) for k in (3.0, 10.0, 20.0)]
    rows: dict[tuple, dict[str, list[float]]] = {}
    trained = {}
    tt = Table(title=f"Training at the preset per deployment ({steps} MAPPO steps, {ppo_steps} PPO-AO steps, x{NUM_ENVS} copies)")
    for c in ("seed", "first iterate", "MAPPO", "PPO-AO", "BFS-AO", "MAPPO %", "PPO-AO %", "MAPPO s", "PPO-AO s"):
        tt.add_column(c)
    for s in seeds:
        scene = deployment(base, s)
        t0 = time.perf_counter()
        m_algo, m_env, init, _ = train_mappo(base, scene, steps, s)
        t1 = time.perf_counter()
        p_algo, p_env, _ = train_ppo_ao(base, scene, ppo_steps, s)
        t2 = time.perf_counter()
        trained[s] = (m_algo, m_env, p_algo, p_env, scene)
        mr = float(test_setting(m_algo, m_env, base, scene).sum())
        pr = float(test_setting(p_algo, p_env, base, scene).sum())
        b = init["bfs_ao_rate"]
        tt.add_row(str(s), f"{init['first_iterate_rate']:.3f}", f"{mr:.3f}", f"{pr:.3f}", f"{b:.3f}",
                   f"{100 * mr / b:.1f}", f"{100 * pr / b:.1f}", f"{t1 - t0:.0f}", f"{t2 - t1:.0f}")
    console.print(tt)
    for kind, val, over in settings:
        scn_t = get_scenario("p4", **over)
        for s in seeds:
            m_algo, m_env, p_algo, p_env, _ = trained[s]
            scene_t = deployment(scn_t, s)
            res = {"MAPPO": test_setting(m_algo, m_env, scn_t, scene_t), "PPO-AO": test_setting(p_algo, p_env, scn_t, scene_t)}
            res.update(baselines(scn_t, scene_t, s))
            for name, r in res.items():
                rows.setdefault((kind, val), {}).setdefault(name, []).append(float(r.sum()))
    names = ["MAPPO", "PPO-AO", "BFS-AO", "random precoding", "random RIS", "round-robin", "random"]
    tg = Table(title=f"Generalization: trained at the preset (30 dBm, 10 / 3 dB), sum rate bit/s/Hz, mean +- std over {len(seeds)} seeds")
    tg.add_column("setting")
    for n in names + ["MAPPO % BFS", "PPO-AO % BFS"]:
        tg.add_column(n)
    pct = {}
    for (kind, val), r in rows.items():
        bfs = np.array(r["BFS-AO"])
        cells = [f"{np.mean(r[n]):.2f}+-{np.std(r[n]):.2f}" for n in names]
        mp, pp = 100 * np.mean(np.array(r["MAPPO"]) / bfs), 100 * np.mean(np.array(r["PPO-AO"]) / bfs)
        pct[(kind, val)] = (mp, pp)
        tg.add_row(f"{kind} {val:g}", *cells, f"{mp:.1f}", f"{pp:.1f}")
    console.print(tg)
    out = {"mappo_pct_preset": pct[("P_max", 30.0)][0], "ppo_ao_pct_preset": pct[("P_max", 30.0)][1]}
    out.update(part_table2(trained, out))
    return out


def part_table2(trained, pct: dict, repeats: int = 300) -> dict:
    """Decision time at B = 1, one thread: MAPPO (all actors in turn), PPO-AO, BFS-AO."""
    s0 = sorted(trained)[0]
    m_algo, m_env, p_algo, p_env, scene = trained[s0]
    base = get_scenario("p4")
    env1 = static_env(base, scene, 1)
    obs = env1._observe()
    actors = m_algo.actors()

    def mappo_decide():
        with torch.inference_mode():
            actors["sched"](obs["sched"])
            actors["bs"](obs["bs0"])
            for a in env1.ris_ids:
                actors["ris"](obs[a])

    def ppo_ao_decide():
        with torch.inference_mode():
            c = p_algo.nets["sched"](obs["sched"])
        ao.ao_for_schedule(scene, base.n_scheduled, base.noise_w, base.p_max_w, c)

    def bfs_decide():
        ao.bfs_ao(scene, base.n_scheduled, base.noise_w, base.p_max_w)

    def timed(fn, n):
        fn()
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return 1e3 * float(np.median(ts)), 1e3 * float(np.mean(ts))

    mt = timed(mappo_decide, repeats)
    pt = timed(ppo_ao_decide, 10)
    bt = timed(bfs_decide, 10)
    t = Table(title="Table II: decision time (B = 1, one thread, median / mean ms) and % of BFS-AO's rate at the preset")
    for c in ("method", "median ms", "mean ms", "% of BFS-AO", "speed-up vs BFS-AO (median)"):
        t.add_column(c)
    t.add_row("MAPPO", f"{mt[0]:.3f}", f"{mt[1]:.3f}", f"{pct['mappo_pct_preset']:.1f}", f"{bt[0] / mt[0]:.0f}x")
    t.add_row("PPO-AO", f"{pt[0]:.1f}", f"{pt[1]:.1f}", f"{pct['ppo_ao_pct_preset']:.1f}", f"{bt[0] / pt[0]:.1f}x")
    t.add_row("BFS-AO", f"{bt[0]:.1f}", f"{bt[1]:.1f}", "100.0", "1x")
    console.print(t)
    return {"mappo_ms": mt[0], "ppo_ao_ms": pt[0], "bfs_ao_ms": bt[0], "speedup": bt[0] / mt[0]}


def part_omega(seeds, steps: int, episode: int, omegas=(0.0, 0.5, 0.9), algos=("MAPPO", "PPO-AO"), logit_gap: float = 4.0) -> dict:
    """MAPPO trained with reward (1 - omega) R_sum + omega J (J over ``episode``-step episodes)."""
    t = Table(title=f"Fairness weight omega ({steps} steps, Jain's index over {episode}-step episodes), mean over {len(seeds)} seeds")
    for c in ("algorithm", "omega", "JFI", "sum rate", "schedules used"):
        t.add_column(c)
    out = {}
    for name, w in [(n, w) for n in algos for w in omegas]:
        scn = get_scenario("p4", fairness_weight=w)
        jfi, rate, used = [], [], []
        for s in seeds:
            scene = deployment(scn, s)
            env = static_env(scn, scene)
            env.cfg = dataclasses.replace(env.cfg, episode_steps=episode)
            if name == "MAPPO":
                algo = MAPPO(env, mappo_cfg(init_logit_gap=logit_gap), seed=s)
                algo.init_from_first_iterate(env)
            else:
                algo = PPOAO(env, PPOAOConfig(), seed=s)
            obs, state = env._observe(), env.state()
            for _ in range(steps):
                _, out_, nxt, _ = learn_step(algo, env, obs, state)
                obs, state = out_.obs, nxt
                if bool(out_.truncated.all()):
                    obs, state = _restart(env, scene)
            obs, state = _restart(env, scene)
            j, r, u = None, [], set()
            for _ in range(episode):
                a = algo.act(obs, state, explore=False)
                o = env.step(a)
                obs, state = o.obs, env.state()
                r.append(float(o.info["sum_rate"].mean()))
                j = float(o.info["jain"].mean())
                u.add(int(a["sched"][0]))
            jfi.append(j)
            rate.append(np.mean(r))
            used.append(len(u))
        t.add_row(name, f"{w:g}", f"{np.mean(jfi):.3f}", f"{np.mean(rate):.3f}", f"{np.mean(used):.1f}")
        out[(name, w)] = (float(np.mean(jfi)), float(np.mean(rate)))
    console.print(t)
    return {f"jfi_{n.lower()}_omega{w:g}": out[(n, w)][0] for n, w in out}


def _restart(env: P4Env, scene: P4Scene):
    """A new episode on the same statistics, continuing from the current actions (static env)."""
    W, theta, idx = env.W_raw, env.theta, env.sched_idx
    env.reset(seed=0)
    env.set_scene(tile(scene, env.num_envs))
    obs = env.set_actions(W=W, theta=theta, schedule_idx=idx)
    return obs, env.state()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=1280, help="MAPPO training steps per deployment (x8 copies)")
    ap.add_argument("--ppo-ao-steps", type=int, default=512)
    ap.add_argument("--omega-steps", type=int, default=640)
    ap.add_argument("--omega-episode", type=int, default=16)
    ap.add_argument("--omegas", type=float, nargs="+", default=[0.0, 0.5, 0.9])
    ap.add_argument("--omega-algos", nargs="+", default=["MAPPO", "PPO-AO"], choices=["MAPPO", "PPO-AO"])
    ap.add_argument("--omega-logit-gap", type=float, default=4.0, help="MAPPO init_logit_gap in the omega sweep")
    ap.add_argument("--mc-draws", type=int, default=4000)
    ap.add_argument("--parts", nargs="+", default=["fig5", "main", "omega"], choices=["fig5", "main", "omega"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    summary = {}
    t0 = time.perf_counter()
    if "fig5" in args.parts:
        summary.update(part_fig5(args.seeds, args.mc_draws))
    if "main" in args.parts:
        summary.update(part_main(args.seeds, args.steps, args.ppo_ao_steps))
    if "omega" in args.parts:
        summary.update(part_omega(args.seeds, args.omega_steps, args.omega_episode, args.omegas, args.omega_algos, args.omega_logit_gap))
    summary["wall_s"] = time.perf_counter() - t0
    print("SUMMARY p4_study " + " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
