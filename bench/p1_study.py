"""P1 study: MAQ-WP, MAQ-PG, MADDPG and IL vs the reference decisions, default preset and L sweep.

  python bench/p1_study.py train   --out runs/p1study --L 2 --seeds 0 1 2 [--obs csi|paper] [--algos ...]
  python bench/p1_study.py refs    --out runs/p1study --L 1 2 3 [--obs csi]
  python bench/p1_study.py report  --out runs/p1study [--plot docs/p1_convergence.png]
  python bench/p1_study.py ablate  --out runs/p1study --L 2     # learned vs random vs CA phases per run
  python bench/p1_study.py physics --out runs/p1phys --grid "direct_blockage_db=0" "direct_blockage_db=20;p_max_dbm=25"

``--scenario-set KEY=VALUE`` (train, refs) changes scenario fields of the P1 preset, e.g. a blocked
direct link; give such a study its own ``--out``. ``physics`` is the no-learning study of what the
IRS phases are worth per scenario variant (``--grid``: one variant per argument, fields joined by ';').

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
from twin.scenarios import get_scenario, parse_overrides

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


def scenario(L: int, obs: str, sets: list[str] | tuple[str, ...] = ()):
    return get_scenario("p1", n_irs=L, observation=obs, **parse_overrides("p1", sets))


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
                trainer = Trainer(run, tc, scenario(L, a.obs, a.scenario_set), study_cfg(algo, a))
                trainer.run(plot=False)
                secs = time.perf_counter() - t0
                env = P1Env(num_envs=a.eval_episodes, cfg=scenario(L, a.obs, a.scenario_set))
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
        env = P1Env(num_envs=a.eval_episodes, cfg=scenario(L, a.obs, a.scenario_set))
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


def transitions_to_frac_of_final(run: Path, key: str = "eval_sum_rate", frac: float = 0.9) -> float:
    """First training-evaluation point (transitions) where the curve reaches ``frac`` of its final value
    (mean of the last two evaluations); for positive metrics such as the sum rate. nan if no curve."""
    xs, ys = _curve(run, key)
    if len(ys) < 3:
        return float("nan")
    final = float(np.mean(ys[-2:]))
    return next((x for x, y in zip(xs, ys) if y >= frac * final), xs[-1])


def _ratios(L_dir: Path) -> None:
    """Each learner's mean sum rate against random, its untrained start and WMMSE + CA (when refs exist)."""
    ref_path = L_dir / "refs.json"
    if not ref_path.exists():
        return
    refs = json.loads(ref_path.read_text())
    print("\n| policy | x random | vs untrained start | vs WMMSE + CA | transitions to 90 % of final sum rate |")
    print("|---|---|---|---|---|")
    for algo in ALGOS:
        paths = sorted(L_dir.glob(f"{algo}-s*/study_eval.json"))
        if not paths:
            continue
        sr = float(np.mean([json.loads(p.read_text())["sum_rate"] for p in paths]))
        untrained = refs.get(f"untrained {algo} actors", {}).get("sum_rate", float("nan"))
        t90 = [transitions_to_frac_of_final(p.parent) for p in paths]
        print(f"| {algo.upper()} | {sr / refs['random']['sum_rate']:.2f} | {100 * (sr / untrained - 1):+.1f} % "
              f"| {100 * sr / refs['wmmse+ca (upper)']['sum_rate']:.1f} % | {np.mean(t90):.0f} ± {np.std(t90):.0f} |")


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
            _ratios(L_dir)
    if a.plot:
        L_dir = out / a.plot_obs / f"L{a.plot_L}"
        for key, suffix in (("eval_sum_rate", "sum_rate"), ("eval_reward", "reward")):
            groups = {algo.upper(): [_curve(r, key) for r in sorted(L_dir.glob(f"{algo}-s*"))] for algo in ALGOS}
            groups = {k: v for k, v in groups.items() if v}
            target = Path(a.plot).with_name(Path(a.plot).stem + f"_{suffix}.png")
            plot_learning_curves(groups, target, ylabel=key.replace("eval_", "evaluation "), xlabel="training transitions")
            print(f"plot: {target} ({target.stat().st_size // 1024} KB)")
    print(f"SUMMARY p1_study report: {n_rows} algorithm rows from {out}")


def physics_policies(env: P1Env, seed: int) -> dict:
    """No learning, every policy on the same episodes: what the IRS phases are worth, and whether MRT on
    the *observed direct* channels (the ``snr-power-mrt`` head's direction) is still a sensible BS beam.
    Full CSI except where named "head" (those beams use the BS observation only)."""
    from agents import reference as ref
    from agents.evaluation import _p1_action
    from agents.maq import SNRPowerBSActor, p1_dims
    from twin.signal import effective_channel

    gen = torch.Generator().manual_seed(seed + 7)
    cfg, bits = env.cfg, max(env.bit_choices)
    d = p1_dims(env)
    head = SNRPowerBSActor(d.bs_obs_dim, d.n_antennas, d.n_users, d.p_max_w, d.bs_obs_scale, (8,))

    def chans():
        s = env.scene
        return s.H_BR, s.h_RU, s.h_BU

    def head_beams(obs, c):
        with torch.no_grad():
            V2 = head.beams(obs["bs0"], torch.full((obs["bs0"].shape[0], 1), c))    # (B, 2, M, K) real
        return torch.complex(V2[:, 0], V2[:, 1]).to(env.scene.H_BR.dtype)

    def irs_state(kind):
        H_BR, _, _ = chans()
        B, L, N, _ = H_BR.shape
        if kind == "off":
            return torch.zeros((B, L, N), dtype=torch.long), torch.zeros((B, L, N), dtype=torch.bool)
        return ref.random_phase_idx(B, L, N, bits, gen), ref.all_on(B, L, N)

    def full(B, L):
        return torch.full((B, L), bits)

    def wmmse_fixed_irs(kind):
        def policy(env, obs):
            H_BR, h_RU, h_BU = chans()
            idx, on = irs_state(kind)
            G = effective_channel(H_BR, h_RU, h_BU, ref.phases_from_idx(idx, bits, on, H_BR.dtype))
            return _p1_action(env, ref.wmmse(G, cfg.noise_w, cfg.p_max_w), full(*H_BR.shape[:2]), idx, on)
        return policy

    def head_random_irs(c):
        def policy(env, obs):
            H_BR, _, _ = chans()
            idx, on = irs_state("random")
            return _p1_action(env, head_beams(obs, c), full(*H_BR.shape[:2]), idx, on)
        return policy

    def head_ca(c, b=bits):
        """The head's beams held, IRS phases by coordinate ascent on the true sum rate (full CSI), every
        element ON at b bits: what ideal IRS learners could add next to a head with exponent c."""
        def policy(env, obs):
            H_BR, h_RU, h_BU = chans()
            V = head_beams(obs, c)
            res = ref.coordinate_ascent_phases(H_BR, h_RU, h_BU, cfg.noise_w, cfg.p_max_w, b,
                                               reprecode="never", V=V, sweeps=2)
            return _p1_action(env, V, torch.full(H_BR.shape[:2], b), res.phase_idx, res.on)
        return policy

    def mrt_eff_ca(env, obs):
        """MRT on the *effective* channel (equal power), phases by coordinate ascent: the direction the
        head would need if it saw the IRS paths."""
        H_BR, h_RU, h_BU = chans()
        res = ref.coordinate_ascent_phases(H_BR, h_RU, h_BU, cfg.noise_w, cfg.p_max_w, bits,
                                           precoder="mrt", reprecode="candidate", sweeps=2)
        return _p1_action(env, res.V, full(*H_BR.shape[:2]), res.phase_idx, res.on)

    refs = p1_reference_policies(env, seed, include_upper=True)
    return {
        "random": refs["random"],
        "WMMSE + CA phases (upper)": refs["wmmse+ca (upper)"],
        "WMMSE, random IRS phases": wmmse_fixed_irs("random"),
        "WMMSE, IRS off": wmmse_fixed_irs("off"),
        "MRT(effective) + CA phases": mrt_eff_ca,
        "head c=0 (untrained start) + random IRS": head_random_irs(0.0),
        "head c=2 + random IRS": head_random_irs(2.0),
        "head c=0 + CA phases": head_ca(0.0),
        "head c=2 + CA phases": head_ca(2.0),
        # all ON at 2 bits spends 10 x 1 mW x 0.2 s = 2 units per slot < the 2.2 mean arrival: no energy penalty
        "head c=2 + CA phases at 2 bits": head_ca(2.0, 2),
    }


def cmd_physics(a: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    out = Path(a.out)
    rows = {}
    for spec in a.grid:
        sets = [x for x in spec.split(";") if x]
        path = out / f"physics_L{a.L[0]}_{spec.replace(';', '_').replace('=', '')}.json"
        if path.exists():
            rows[spec] = json.loads(path.read_text())
        else:
            env = P1Env(num_envs=a.eval_episodes, cfg=scenario(a.L[0], a.obs, list(a.scenario_set) + sets))
            t0 = time.perf_counter()
            res = evaluate_policies(env, physics_policies(env, a.eval_seed), a.eval_seed, a.eval_slots)
            rows[spec] = {name: {m: r[m]["mean"] for m in METRICS if m in r} for name, r in res.items()}
            path.parent.mkdir(parents=True, exist_ok=True)
            runs.write_atomic(path, json.dumps(rows[spec], indent=1))
            print(f"{spec}: {time.perf_counter() - t0:.0f} s", flush=True)
        r = rows[spec]
        up = r["WMMSE + CA phases (upper)"]["sum_rate"]
        print(f"\n### {spec} (L = {a.L[0]}, {a.eval_episodes} episodes x {a.eval_slots} slots)")
        print("| policy | sum rate | % of WMMSE + CA | reward |")
        print("|---|---|---|---|")
        for name, v in r.items():
            print(f"| {name} | {v['sum_rate']:.4f} | {100 * v['sum_rate'] / up:.1f} | {v['reward']:.4f} |")
        worth = up / r["WMMSE, random IRS phases"]["sum_rate"] - 1
        head = r["head c=2 + CA phases"]["sum_rate"] / r["head c=2 + random IRS"]["sum_rate"] - 1
        print(f"IRS phases worth (WMMSE+CA / WMMSE random phases - 1): {100 * worth:+.1f} %; "
              f"with the head's beams (c=2 + CA / c=2 + random): {100 * head:+.1f} %")
    print(f"SUMMARY p1_study physics: {len(a.grid)} scenario variants under {out}")


def ablation_policies(env: P1Env, actors_pol, seed: int) -> dict:
    """A trained run's actors, and the same with the IRS phases changed, resolution and ON/OFF kept:
    random phases (what the learned phases add) and coordinate-ascent phases on the true sum rate with
    the learned beams held (what ideal phases would add at the learned resolution and ON set)."""
    from agents import reference as ref

    gen = torch.Generator().manual_seed(seed + 11)

    def with_phases(mode):
        def policy(env, obs):
            act = actors_pol(env, obs)
            s = env.scene
            bits = torch.stack([torch.as_tensor(act[a]["bits"]).long() for a in env.irs_ids], 1)      # (B, L)
            on = torch.stack([torch.as_tensor(act[a]["on"]).bool() for a in env.irs_ids], 1)          # (B, L, N)
            if mode == "random":
                levels = torch.pow(2, bits)[..., None].expand(on.shape)
                idx = (torch.rand(on.shape, generator=gen) * levels).long()
            else:
                V2 = torch.as_tensor(act["bs0"]["V"])
                V = torch.complex(V2[:, 0], V2[:, 1]).to(s.H_BR.dtype)
                idx0 = torch.stack([torch.as_tensor(act[a]["phase_idx"]).long() for a in env.irs_ids], 1)
                idx = ref.coordinate_ascent_phases(s.H_BR, s.h_RU, s.h_BU, env.cfg.noise_w, env.cfg.p_max_w, bits,
                                                   reprecode="never", V=V, phase_idx=idx0, on=on, sweeps=2).phase_idx
            for l, a in enumerate(env.irs_ids):
                act[a] = dict(act[a], phase_idx=idx[:, l])
            return act
        return policy

    return {"learned": actors_pol, "learned, random phases": with_phases("random"),
            "learned, CA phases": with_phases("ca")}


def cmd_ablate(a: argparse.Namespace) -> None:
    """Per trained run: how much of its sum rate its learned IRS phases earn (see ablation_policies)."""
    torch.set_num_threads(1)
    out = Path(a.out)
    print("| run | learned | random phases | CA phases | learned phases gain | CA headroom | ON fraction | bits |")
    print("|---|---|---|---|---|---|---|---|")
    n = 0
    for L in a.L:
        for algo in a.algos:
            for seed in a.seeds:
                run = run_dir(out, a.obs, L, algo, seed)
                path = run / "ablation.json"
                if not (run / "study_eval.json").exists():
                    continue
                if not path.exists():
                    trainer = Trainer.from_run_dir(run)
                    trainer._build()
                    trainer.algo.load_state_dict(runs.load_checkpoint(run / runs.CHECKPOINT)["algo"])
                    env = P1Env(num_envs=a.eval_episodes, cfg=trainer.scenario_cfg)
                    pol = actors_policy(trainer.algo.actors(), trainer.algo.role_of)
                    stats = {"on": [], "bits": []}

                    def counting(env, obs, pol=pol, stats=stats):
                        act = pol(env, obs)
                        stats["on"] += [float(torch.as_tensor(act[x]["on"]).float().mean()) for x in env.irs_ids]
                        stats["bits"] += [float(torch.as_tensor(act[x]["bits"]).float().mean()) for x in env.irs_ids]
                        return act
                    res = evaluate_policies(env, ablation_policies(env, counting, a.eval_seed), a.eval_seed, a.eval_slots)
                    rec = {name: {m: r[m]["mean"] for m in METRICS if m in r} for name, r in res.items()}
                    rec["on_fraction"] = float(np.mean(stats["on"]))
                    rec["bits"] = float(np.mean(stats["bits"]))
                    runs.write_atomic(path, json.dumps(rec, indent=1))
                rec = json.loads(path.read_text())
                sr = {k: rec[k]["sum_rate"] for k in ("learned", "learned, random phases", "learned, CA phases")}
                print(f"| {algo} s{seed} L={L} | {sr['learned']:.4f} | {sr['learned, random phases']:.4f} "
                      f"| {sr['learned, CA phases']:.4f} | {100 * (sr['learned'] / sr['learned, random phases'] - 1):+.1f} % "
                      f"| {100 * (sr['learned, CA phases'] / sr['learned'] - 1):+.1f} % | {rec['on_fraction']:.2f} "
                      f"| {rec['bits']:.2f} |", flush=True)
                n += 1
    print(f"SUMMARY p1_study ablate: {n} runs under {out / a.obs}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=("train", "refs", "report", "physics", "ablate"))
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
    p.add_argument("--scenario-set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="P1 scenario field overrides (as ristwin train --set scenario.FIELD=VALUE)")
    p.add_argument("--grid", nargs="*", default=["direct_blockage_db=0"], help="physics: scenario variants, fields joined by ';'")
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
    {"train": cmd_train, "refs": cmd_refs, "report": cmd_report, "physics": cmd_physics, "ablate": cmd_ablate}[a.phase](a)


if __name__ == "__main__":
    main()
