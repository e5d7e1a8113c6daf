"""P3 study (seed 003, section V): the EE figures of the MAGAR paper, at small budgets.

Subcommands (every one appends JSON lines to --out and ``report`` prints the tables):

  physics   CSI reference configurations (agents/p3_reference.py), no learning:
            EE vs N and vs V for the ON/OFF policies all-on / half-on / optimized (Fig. 4),
            EE vs users K for the surface modes ES multi-hop / MS / RIS / none (Fig. 5),
            EE vs inter-surface distance varsigma 10..200 m (Fig. 6);
            each on two channel variants: "preset" (the paper's printed model, direct link
            included) and "blocked" (direct BS-user links removed: users reachable only
            through the surfaces, the coverage case multi-hop STAR-RISs are proposed for).
  learning  MAGAR vs MADQN-LR vs MADQN vs Q-learning vs BS antennas M (Fig. 7), and MAGAR
            vs T_q (Fig. 3's global-period effect), on the preset. The agents see only
            their own configuration (no CSI), so each run learns one deployment: one scene
            per seed, ``--num-envs`` parallel copies of it for exploration, episodes
            restarting from the initial configuration (all ON, beta_R = 0.5, MRT beams);
            evaluation = the greedy policies on that scene for one episode.
  report    mean +- std over seeds of everything in --out.

  python bench/p3_study.py physics --seeds 3 --scenes 4 --out /tmp/p3_study.jsonl
  python bench/p3_study.py learning --seeds 3 --steps 600 --out /tmp/p3_study.jsonl
  python bench/p3_study.py report --out /tmp/p3_study.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from agents import p3_reference as pr
from agents import registry
from agents.evaluation import actors_policy, rollout
from twin.envs.p3 import P3Env
from twin.scenarios import get_scenario
from twin.scene import sample_p3


def _emit(out: Path, row: dict) -> None:
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


def _scene(scn, n: int, seed: int, variant: str):
    scene = sample_p3(scn, n, torch.Generator().manual_seed(seed))
    if variant == "blocked":
        scene = dataclasses.replace(scene, h_BU=torch.zeros_like(scene.h_BU))
    return scene


# --------------------------------------------------------------------------- physics

def physics(args) -> None:
    jobs = []
    for variant in args.variants:
        for N in args.n_values:                                        # Fig. 4: EE vs N, V = 2
            jobs += [("N", N, variant, "es", o, dict(n_elements=N)) for o in pr.ONOFF_POLICIES]
        for V in (1, 2, 3):                                            # Fig. 4: EE vs V, N = 16
            jobs += [("V", V, variant, "es", o, dict(n_surfaces=V)) for o in pr.ONOFF_POLICIES]
        for K in (2, 4, 6, 8, 10):                                     # Fig. 5: modes vs K
            jobs += [("K", K, variant, m, "optimized", dict(n_users=K)) for m in pr.MODES]
        for s in (10, 25, 50, 100, 200):                               # Fig. 6: distance
            jobs += [("spacing", s, variant, "es", o, dict(spacing_m=float(s))) for o in ("all-on", "optimized")]
    jobs = [j for j in jobs if j[0] in args.only]
    for seed in range(args.seeds):
        for sweep, x, variant, mode, onoff, over in jobs:
            scn = get_scenario("p3", **over)
            scene = _scene(scn, args.scenes, 1000 + seed, variant)
            t0 = time.perf_counter()
            cfg, ev = pr.optimize(scene, scn, mode, onoff, torch.Generator().manual_seed(seed), sweeps=args.sweeps)
            _emit(args.out, {"kind": "physics", "sweep": sweep, "x": x, "variant": variant, "mode": mode, "onoff": onoff,
                             "seed": seed, "ee_mbit_per_j": float(ev["ee_bit_per_j"].mean()) / 1e6,
                             "rate_mbps": float(ev["sum_rate_bps"].mean()) / 1e6, "power_w": float(ev["power_w"].mean()),
                             "n_on": float(cfg.on.float().sum((1, 2)).mean()) if mode != "none" else 0.0,
                             "seconds": time.perf_counter() - t0})
        print(f"physics seed {seed} done", flush=True)


# --------------------------------------------------------------------------- learning

def _fixed(env: P3Env, scene1) -> None:
    """Every environment of the batch gets the same scene (one deployment)."""
    rep = lambda x: x.repeat(env.num_envs, *([1] * (x.dim() - 1))) if isinstance(x, torch.Tensor) else x
    fields = {f.name: getattr(scene1, f.name) for f in dataclasses.fields(scene1)}
    fields = {k: (tuple(rep(y) for y in v) if isinstance(v, tuple) else rep(v)) for k, v in fields.items()}
    env.set_scene(type(scene1)(**fields))


def train_one(algo: str, scn, seed: int, steps: int, num_envs: int, algo_over: dict) -> dict:
    scene1 = _scene(scn, 1, 2000 + seed, "preset")
    env = P3Env(num_envs=num_envs, cfg=scn, seed=seed)
    algo_cls, cfg_cls = registry.algorithm(algo)
    torch.manual_seed(seed)
    alg = algo_cls(env, dataclasses.replace(cfg_cls(), **algo_over), seed)
    obs = env.reset(seed=seed)
    _fixed(env, scene1)
    t0 = time.perf_counter()
    for _ in range(steps):
        state = env.state()
        action = alg.act(obs, state, True)
        result = env.step(action)
        alg.observe(obs, state, action, result, env.state())
        alg.update()
        obs = result.obs
        if bool(result.truncated.all()):
            obs = env.reset(seed=seed)
            _fixed(env, scene1)
    train_s = time.perf_counter() - t0
    ev = P3Env(num_envs=1, cfg=scn, seed=seed)
    policy = actors_policy(alg.actors(), alg.role_of)
    obs = ev.reset(seed=seed)
    ev.set_scene(scene1)
    start = ev.evaluate_config(ev.beta_idx, ev.theta_idx, ev.t_sign, ev.on, ev.W)["ee_bit_per_j"].item()
    ees, n_on = [], []
    for _ in range(scn.episode_steps):
        r = ev.step(policy(ev, obs))
        obs = r.obs
        ees.append(float(r.info["ee_bit_per_j"]))
        n_on.append(float(r.info["n_on"]))
    _, ref = pr.optimize(scene1, scn, "es", "optimized", torch.Generator().manual_seed(seed), sweeps=1)
    return {"ee_mean": float(np.mean(ees)) / 1e6, "ee_last": ees[-1] / 1e6, "n_on_last": n_on[-1],
            "ee_initial": start / 1e6, "ee_csi_reference": float(ref["ee_bit_per_j"]) / 1e6, "train_s": train_s}


def learning(args) -> None:
    jobs = []
    for M in args.antennas:
        jobs += [("M", M, a, {}, dict(n_bs_antennas=M)) for a in ("magar", "madqn-lr", "madqn", "q-learning")]
    jobs += [("Tq", T, "magar", {"global_period": T}, {}) for T in args.periods if T != 20]
    done = set()
    if args.out.exists():
        for line in open(args.out):
            r = json.loads(line)
            if r.get("kind") == "learning":
                done.add((r.get("tag", ""), r["sweep"], r["x"], r["algo"], r["seed"], r["steps"]))
    for i, job in enumerate(jobs):
        if i % args.parts != args.part:
            continue
        sweep, x, algo, algo_over, scn_over = job
        scn = get_scenario("p3", **{"episode_steps": args.episode_steps, **scn_over})
        for seed in range(args.seeds):
            if (args.tag, sweep, x, algo, seed, args.steps) in done:    # resume an interrupted study
                continue
            res = train_one(algo, scn, seed, args.steps, args.num_envs, algo_over)
            row = {"kind": "learning", "tag": args.tag, "sweep": sweep, "x": x, "algo": algo, "seed": seed, "steps": args.steps,
                   "num_envs": args.num_envs, "episode_steps": args.episode_steps, **res}
            _emit(args.out, row)
            if sweep == "M" and algo == "magar" and x == 5:   # T_q = 20 point of the T_q sweep
                _emit(args.out, {**row, "sweep": "Tq", "x": 20})
            print(json.dumps(row), flush=True)


# --------------------------------------------------------------------------- report

def _ms(values) -> str:
    v = np.asarray(values, float)
    return f"{v.mean():.1f} +- {v.std():.1f}" if v.size else "-"


def report(args) -> None:
    rows = [json.loads(line) for line in open(args.out)]
    phys = [r for r in rows if r["kind"] == "physics"]
    learn = [r for r in rows if r["kind"] == "learning"]
    for variant in ("preset", "blocked"):
        for sweep, key, names in (("N", "onoff", pr.ONOFF_POLICIES), ("V", "onoff", pr.ONOFF_POLICIES),
                                  ("K", "mode", pr.MODES), ("spacing", "onoff", ("all-on", "optimized"))):
            sel = [r for r in phys if r["variant"] == variant and r["sweep"] == sweep]
            if not sel:
                continue
            xs = sorted({r["x"] for r in sel})
            print(f"\nEE (Mbit/J) vs {sweep}, {variant} channels, CSI reference, mean +- std over seeds")
            print(f"| {key} | " + " | ".join(f"{sweep}={x}" for x in xs) + " |")
            print("|---|" + "---|" * len(xs))
            for name in names:
                cells = [_ms([r["ee_mbit_per_j"] for r in sel if r[key] == name and r["x"] == x]) for x in xs]
                if any(c != "-" for c in cells):
                    print(f"| {name} | " + " | ".join(cells) + " |")
    tags = sorted({r.get("tag", "") for r in learn})
    for tag, sweep, label in ((t, s, l) for t in tags for s, l in (("M", "BS antennas M"), ("Tq", "T_q (MAGAR)"))):
        sel = [r for r in learn if r["sweep"] == sweep and r.get("tag", "") == tag]
        if not sel:
            continue
        xs = sorted({r["x"] for r in sel})
        budget = f"{sel[0]['steps']} steps x {sel[0]['num_envs']} envs, episodes of {sel[0]['episode_steps']} slots"
        print(f"\nLearned EE (Mbit/J, episode mean / last slot) vs {label}, {budget}, mean +- std over seeds")
        print("| algorithm | " + " | ".join(f"{sweep}={x}" for x in xs) + " |")
        print("|---|" + "---|" * len(xs))
        for algo in ("magar", "madqn-lr", "madqn", "q-learning"):
            cells = []
            for x in xs:
                s = [r for r in sel if r["algo"] == algo and r["x"] == x]
                cells.append(f"{_ms([r['ee_mean'] for r in s])} / {_ms([r['ee_last'] for r in s])} (n={len(s)})" if s else "-")
            if any(c != "-" for c in cells):
                print(f"| {algo} | " + " | ".join(cells) + " |")
        print(f"Paired gain of the last-slot EE over the same scene's initial EE (%), mean +- std over seeds")
        for algo in ("magar", "madqn-lr", "madqn", "q-learning"):
            cells = []
            for x in xs:
                s = [100.0 * (r["ee_last"] / r["ee_initial"] - 1.0) for r in sel if r["algo"] == algo and r["x"] == x]
                cells.append(_ms(s) if s else "-")
            if any(c != "-" for c in cells):
                print(f"| {algo} (gain %) | " + " | ".join(cells) + " |")
        refs = defaultdict(list)
        for r in sel:
            refs[r["x"]].append((r["ee_initial"], r["ee_csi_reference"], r["n_on_last"]))
        print("| initial config (all ON, MRT) | " + " | ".join(_ms([a for a, _, _ in refs[x]]) for x in xs) + " |")
        print("| CSI reference (ES, optimized ON/OFF, RZF) | " + " | ".join(_ms([b for _, b, _ in refs[x]]) for x in xs) + " |")
    n = len(rows)
    print(f"\nsummary: {n} result rows ({len(phys)} physics, {len(learn)} learning) from {args.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("physics", "learning", "report"))
    p.add_argument("--out", type=Path, default=Path("/tmp/p3_study.jsonl"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--scenes", type=int, default=4, help="physics: scenes per seed")
    p.add_argument("--sweeps", type=int, default=1, help="physics: element sweeps before ON/OFF")
    p.add_argument("--steps", type=int, default=600, help="learning: batched env steps per run")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--episode-steps", type=int, default=50)
    p.add_argument("--antennas", type=int, nargs="+", default=[3, 5, 7])
    p.add_argument("--periods", type=int, nargs="+", default=[1, 5, 20, 1000])
    p.add_argument("--variants", nargs="+", default=["preset", "blocked"], help="physics: channel variants")
    p.add_argument("--n-values", type=int, nargs="+", default=[4, 8, 16, 24, 32], help="physics: N of the N sweep")
    p.add_argument("--only", nargs="+", default=["N", "V", "K", "spacing"], help="physics: sweeps to run")
    p.add_argument("--tag", default="", help="learning: label stored with the rows (report groups by it)")
    p.add_argument("--part", type=int, default=0)
    p.add_argument("--parts", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    {"physics": physics, "learning": learning, "report": report}[args.what](args)


if __name__ == "__main__":
    main()
