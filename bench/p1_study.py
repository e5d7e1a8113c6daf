"""P1 study: MAQ-WP, MAQ-PG, MADDPG and IL vs the reference decisions, default preset and L sweep.

  python bench/p1_study.py train   --out runs/p1study --L 2 --seeds 0 1 2 [--obs csi|paper] [--algos ...]
  python bench/p1_study.py refs    --out runs/p1study --L 1 2 3 [--obs csi]
  python bench/p1_study.py report  --out runs/p1study [--plot docs/p1_convergence.png]

Training runs are ordinary run directories (``agents.training.Trainer``, the code behind
``ristwin train``; ``config.toml`` in each run re-makes it with the CLI). Every algorithm gets
the same *study settings* (``study_cfg``): the paper's Table III except where the budget forces
a change, each named below with the reason (docs/RESULTS.md, P1). After training every run is
evaluated with its deterministic actors (decentralized execution) on the same seeded
episodes as the references (``--eval-seed``, ``--eval-episodes`` x ``--eval-slots``).
Each phase prints a table and ends with one summary line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from agents import registry, runs
from agents.evaluation import actors_policy, evaluate_policies, p1_reference_policies, plot_learning_curves
from agents.training import Trainer, TrainConfig
from twin.envs.p1 import P1Env
from twin.scenarios import get_scenario

ALGOS = ("maq-wp", "maq-pg", "maddpg", "il")
METRICS = ("sum_rate", "reward", "satisfied", "irs_power_w")


def study_cfg(algo: str, a: argparse.Namespace) -> object:
    """Table III except: learning rates ``--lr`` (1e-4 moves nothing in a few thousand updates),
    widths ``--hidden``, BS exploration ``--noise`` (relative to the beam), ``--gamma`` (the BS
    action only changes the current slot's reward), ``--updates`` per batched step, MAQ-WP's
    ``--k`` (cost of the Wolpertinger step) and the eps schedule over the run's transitions."""
    _, cls = registry.algorithm(algo)
    base = cls()
    common = dict(gamma=a.gamma, hidden=tuple(a.hidden), updates_per_step=a.updates, bs_head=a.bs_head)
    if algo.startswith("maq"):
        kw = dict(common, lr_high=a.lr, lr_policy=a.lr, lr_low=a.lr, bs_noise=a.noise if a.bs_noise is None else a.bs_noise,
                  eps_decay_steps=a.steps * a.num_envs)
        if algo == "maq-wp":
            kw["k"] = a.k
    else:
        kw = dict(common, lr_actor=a.lr, lr_critic=a.lr, noise=a.noise)
        if a.bs_noise is not None:
            kw["bs_noise"] = a.bs_noise
    for item in a.algo_set:                 # extra overrides, applied to the algorithms that have the field
        key, _, raw = item.partition("=")
        if hasattr(base, key):
            kw[key] = type(getattr(base, key))(raw)
    return dataclasses.replace(base, **kw)


def scenario(L: int, obs: str):
    return get_scenario("p1", n_irs=L, observation=obs)


def run_dir(out: Path, obs: str, L: int, algo: str, seed: int) -> Path:
    return out / obs / f"L{L}" / f"{algo}-s{seed}"


def final_eval(env: P1Env, policy, a: argparse.Namespace) -> dict[str, float]:
    res = evaluate_policies(env, {"p": policy}, a.eval_seed, a.eval_slots)["p"]
    return {m: res[m]["mean"] for m in METRICS if m in res}


def cmd_train(a: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    out = Path(a.out)
    for L in a.L:
        for seed in a.seeds:
            for algo in a.algos:
                run = run_dir(out, a.obs, L, algo, seed)
                if (run / "study_eval.json").exists():
                    continue
                if run.exists():
                    shutil.rmtree(run)
                tc = TrainConfig(scenario="p1", algo=algo, steps=a.steps, num_envs=a.num_envs, seed=seed,
                                 log_every=a.eval_every, eval_every=a.eval_every, eval_episodes=a.train_eval_episodes,
                                 checkpoint_every=a.steps)
                t0 = time.perf_counter()
                trainer = Trainer(run, tc, scenario(L, a.obs), study_cfg(algo, a))
                trainer.run(plot=False)
                secs = time.perf_counter() - t0
                env = P1Env(num_envs=a.eval_episodes, cfg=scenario(L, a.obs))
                ev = final_eval(env, actors_policy(trainer.algo.actors(), trainer.algo.role_of), a)
                ev.update(seconds=secs, transitions=a.steps * a.num_envs, updates=int(trainer.algo.updates))
                runs.write_atomic(run / "study_eval.json", json.dumps(ev, indent=1))
                print(f"{a.obs} L={L} {algo:7s} seed {seed}: sum rate {ev['sum_rate']:.4f} reward {ev['reward']:.4f} "
                      f"({secs:.0f} s, {ev['transitions']} transitions, {ev['updates']} updates)", flush=True)
    print(f"SUMMARY p1_study train: {len(a.L) * len(a.seeds) * len(a.algos)} runs under {out / a.obs}")


def head_references(env: P1Env, a: argparse.Namespace, L: int) -> dict:
    """With an MRT-direction BS head: what the head does *without learning*, on the same episodes.
    The untrained actors of each algorithm (the BS beams MRT with a near-equal split), and
    random IRS decisions with the head's map at a fixed exponent c (shares ~ SNR^c): c = 0 is
    the equal split, c = 2 a value hand-tuned offline for the reward (docs/RESULTS.md, P1)."""
    from agents.maq import SNRPowerBSActor, p1_dims
    from agents.evaluation import p1_reference_policies

    refs = {}
    for algo in a.algos:
        cls, _ = registry.algorithm(algo)
        agent = cls(env, study_cfg(algo, a), 0)
        refs[f"untrained {algo} actors"] = actors_policy(agent.actors(), agent.role_of)
    d = p1_dims(env)
    rand = p1_reference_policies(env, a.eval_seed + 1, include_upper=False)["random"]
    for c in (0.0, 2.0):
        head = SNRPowerBSActor(d.bs_obs_dim, d.n_antennas, d.n_users, d.p_max_w, d.bs_obs_scale, (8,))

        def policy(env, obs, head=head, c=c):
            act = rand(env, obs)
            with torch.no_grad():
                act["bs0"] = {"V": head.beams(obs["bs0"], torch.full((obs["bs0"].shape[0], 1), c))}
            return act
        refs[f"random IRS + MRT, shares ~ SNR^{c:g} (fixed)"] = policy
    return refs


def cmd_refs(a: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    out = Path(a.out)
    for L in a.L:
        path = out / a.obs / f"L{L}" / "refs.json"
        if path.exists():
            continue
        env = P1Env(num_envs=a.eval_episodes, cfg=scenario(L, a.obs))
        t0 = time.perf_counter()
        pols = p1_reference_policies(env, a.eval_seed, include_upper=not a.no_upper)
        pols.pop("all-on+align+zf", None)   # kept in docs from earlier runs; not needed twice
        if a.bs_head != "direct":
            pols.update(head_references(env, a, L))
        res = evaluate_policies(env, pols, a.eval_seed, a.eval_slots)
        refs = {name: {m: r[m]["mean"] for m in METRICS if m in r} for name, r in res.items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        runs.write_atomic(path, json.dumps(refs, indent=1))
        print(f"refs L={L} ({time.perf_counter() - t0:.0f} s): "
              + ", ".join(f"{n} {v['sum_rate']:.4f}" for n, v in refs.items()), flush=True)
    print(f"SUMMARY p1_study refs: L = {a.L} on {a.eval_episodes} episodes x {a.eval_slots} slots")


def _curve(run: Path, key: str) -> tuple[list[float], list[float]]:
    rows = runs.MetricsCSV(run / runs.EVAL_CSV).read() if (run / runs.EVAL_CSV).exists() else []
    xs = [float(r["env_steps"]) for r in rows if r.get(key) not in (None, "")]
    ys = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
    return xs, ys


def transitions_to_90(run: Path, key: str = "eval_reward") -> float:
    """First training-evaluation point (transitions) where the curve has covered 90 % of its way
    from its first evaluation to its final level (mean of the last two evaluations); nan if no curve."""
    xs, ys = _curve(run, key)
    if len(ys) < 3:
        return float("nan")
    start, final = ys[0], float(np.mean(ys[-2:]))
    for x, y in zip(xs, ys):
        if (y - start) >= 0.9 * (final - start):
            return x
    return xs[-1]


def cmd_report(a: argparse.Namespace) -> None:
    out = Path(a.out)
    n_rows = 0
    for obs_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        for L_dir in sorted(p for p in obs_dir.iterdir() if p.is_dir()):
            print(f"\n### {obs_dir.name} observations, {L_dir.name}")
            print("| policy | seeds | sum rate (bit/s/Hz) | reward / slot | users >= R_req | IRS power (mW) | s / run "
                  "| transitions to 90 % |")
            print("|---|---|---|---|---|---|---|---|")
            for algo in ALGOS:
                evs = [json.loads(p.read_text()) for p in sorted(L_dir.glob(f"{algo}-s*/study_eval.json"))]
                if not evs:
                    continue
                def ms(key: str, scale: float = 1.0, fmt: str = ".4f") -> str:
                    v = np.array([e[key] for e in evs]) * scale
                    return f"{v.mean():{fmt}} ± {v.std():{fmt}}"
                t90 = [transitions_to_90(p.parent) for p in sorted(L_dir.glob(f"{algo}-s*/study_eval.json"))]
                print(f"| {algo.upper()} | {len(evs)} | {ms('sum_rate')} | {ms('reward')} | {ms('satisfied', 1, '.2f')} "
                      f"| {ms('irs_power_w', 1e3, '.1f')} | {np.mean([e['seconds'] for e in evs]):.0f} "
                      f"| {np.mean(t90):.0f} ± {np.std(t90):.0f} |")
                n_rows += 1
            ref_path = L_dir / "refs.json"
            if ref_path.exists():
                for name, v in json.loads(ref_path.read_text()).items():
                    print(f"| {name} (reference) | - | {v['sum_rate']:.4f} | {v['reward']:.4f} | {v['satisfied']:.2f} "
                          f"| {v['irs_power_w'] * 1e3:.1f} | | |")
    if a.plot:
        L_dir = out / a.plot_obs / f"L{a.plot_L}"
        for key, suffix in (("eval_sum_rate", "sum_rate"), ("eval_reward", "reward")):
            groups = {algo.upper(): [_curve(r, key) for r in sorted(L_dir.glob(f"{algo}-s*"))] for algo in ALGOS}
            groups = {k: v for k, v in groups.items() if v}
            target = Path(a.plot).with_name(Path(a.plot).stem + f"_{suffix}.png")
            plot_learning_curves(groups, target, ylabel=key.replace("eval_", "evaluation "), xlabel="training transitions")
            print(f"plot: {target} ({target.stat().st_size // 1024} KB)")
    print(f"SUMMARY p1_study report: {n_rows} algorithm rows from {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=("train", "refs", "report"))
    p.add_argument("--out", default="runs/p1study")
    p.add_argument("--obs", default="csi", choices=("csi", "paper"))
    p.add_argument("--L", type=int, nargs="+", default=[2])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--num-envs", type=int, default=32)
    p.add_argument("--updates", type=int, default=2)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--noise", type=float, default=0.3)
    p.add_argument("--gamma", type=float, default=0.5)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--bs-head", default="direct", choices=("direct", "power-mrt", "snr-power-mrt"))
    p.add_argument("--bs-noise", type=float, default=None, help="BS exploration std (default: --noise)")
    p.add_argument("--algo-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for the algorithms that have KEY (numbers and strings)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--train-eval-episodes", type=int, default=16)
    p.add_argument("--eval-seed", type=int, default=12345)
    p.add_argument("--eval-episodes", type=int, default=32)
    p.add_argument("--eval-slots", type=int, default=50)
    p.add_argument("--no-upper", action="store_true")
    p.add_argument("--plot", default=None)
    p.add_argument("--plot-obs", default="csi")
    p.add_argument("--plot-L", type=int, default=2)
    a = p.parse_args()
    {"train": cmd_train, "refs": cmd_refs, "report": cmd_report}[a.phase](a)


if __name__ == "__main__":
    main()
