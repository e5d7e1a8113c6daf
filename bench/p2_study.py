"""P2 study: MDLBI vs centralized DDPG, (K, L) sweep, mobility, collisions, and a diagnosis.

  python bench/p2_study.py convergence --out runs/p2study --steps 1600 --num-envs 64 --seeds 0 1 2
  python bench/p2_study.py sweep       --out runs/p2study --steps 400 --case 30 1
  python bench/p2_study.py mobility    --out runs/p2study --horizon 60 --mobility-case 10 1
  python bench/p2_study.py diagnose    --mobility-case 10 1     # simple precoders, actor capacity
  python bench/p2_study.py report      --out runs/p2study

Training runs are ordinary run directories (agents.training.Trainer, the code behind
``ristwin train``), so every number can be re-made with the CLI. Each phase prints a table
and ends with one summary line; ``report`` prints everything from the saved files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from agents import runs
from agents.evaluation import actors_policy, rollout
from agents.mdlbi import CentralDDPGConfig, MDLBIConfig
from agents.p2_reference import decide_from_user_irs, p2_reference_policies, to_action
from agents.training import Trainer, TrainConfig
from twin.envs.p2 import P2Env
from twin.scenarios import get_scenario

CASES = ((10, 1), (30, 1), (30, 2), (30, 4))   # P2 Fig. 4 (K, L), M = 2


def algo_cfg(name: str, updates_per_step: int, hidden: tuple[int, ...]) -> MDLBIConfig:
    # Paper defaults otherwise; updates_per_step gradient updates per batched step of num_envs transitions.
    base = CentralDDPGConfig() if name == "ddpg-central" else MDLBIConfig()
    return dataclasses.replace(base, updates_per_step=updates_per_step, hidden=hidden)


def train_one(out: Path, algo: str, K: int, L: int, seed: int, a: argparse.Namespace) -> Path:
    run = out / f"{algo}-K{K}-L{L}-s{seed}"
    if (run / "final_eval.json").exists():
        return run
    if run.exists():
        import shutil

        shutil.rmtree(run)
    scn = get_scenario("p2", n_users=K, n_irs=L, episode_steps=a.episode_steps)
    tc = TrainConfig(scenario="p2", algo=algo, steps=a.steps, num_envs=a.num_envs, seed=seed, log_every=a.log_every,
                     eval_every=a.eval_every, eval_episodes=a.eval_episodes, checkpoint_every=a.steps)
    t0 = time.perf_counter()
    Trainer(run, tc, scn, algo_cfg(algo, a.updates_per_step, tuple(a.hidden))).run(plot=False)
    print(f"  trained {run.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def final(run: Path) -> dict:
    return json.loads((run / "final_eval.json").read_text())


def curve(run: Path, key: str, fname: str = runs.EVAL_CSV) -> tuple[list[float], list[float]]:
    return runs.read_series(run / fname, key)


def references(K: int, L: int, a: argparse.Namespace, names: tuple[str, ...]) -> dict[str, float]:
    """Reference decisions on the evaluation episodes of the runs (same seed as Trainer.evaluate uses per run seed 0)."""
    from agents.training import derive_seed

    env = P2Env(num_envs=a.eval_episodes, cfg=get_scenario("p2", n_users=K, n_irs=L, episode_steps=a.episode_steps))
    pols = p2_reference_policies(env, 0, include_upper=False)
    out = {}
    for n in names:
        vals = [rollout(env, pols[n], derive_seed(s, "eval"), max_steps=a.ref_steps)["sum_rate"].mean() for s in a.seeds]
        out[n] = float(np.mean(vals))
    return out


def cmd_convergence(a: argparse.Namespace) -> None:
    rows = []
    for algo in ("mdlbi", "ddpg-central"):
        for s in a.seeds:
            run = train_one(a.out, algo, 10, 1, s, a)
            xs, ys = curve(run, "eval_sum_rate")
            _, cs = curve(run, "collisions", runs.METRICS_CSV)
            rows.append({"algo": algo, "seed": s, "steps": xs, "eval_sum_rate": ys, "final": final(run)["eval_sum_rate"],
                         "train_collisions": cs})
    (a.out / "convergence.json").write_text(json.dumps(rows))
    print_convergence(rows)


def print_convergence(rows: list[dict]) -> None:
    print("algo          seed  eval sum rate over training (bit/s/Hz)                       final")
    for r in rows:
        print(f"{r['algo']:13s} {r['seed']:4d}  " + " ".join(f"{y:5.2f}" for y in r["eval_sum_rate"]) + f"   {r['final']:.2f}")
    for algo in sorted({r["algo"] for r in rows}):
        f = [r["final"] for r in rows if r["algo"] == algo]
        first = [r["eval_sum_rate"][0] for r in rows if r["algo"] == algo and r["eval_sum_rate"]]
        print(f"SUMMARY convergence {algo}: first eval {np.mean(first):.2f}, final {np.mean(f):.2f} +- {np.std(f):.2f} bit/s/Hz over {len(f)} seeds")


def cmd_sweep(a: argparse.Namespace) -> None:
    rows = []
    for K, L in ([tuple(a.case)] if a.case else CASES):
        finals = [final(train_one(a.out, "mdlbi", K, L, s, a))["eval_sum_rate"] for s in a.seeds]
        refs = references(K, L, a, ("random", "fixed-assoc"))
        rows.append({"K": K, "L": L, "mdlbi": finals, **refs})
        print(f"  K={K} L={L}: mdlbi {np.mean(finals):.2f} +- {np.std(finals):.2f}, " + ", ".join(f"{k} {v:.2f}" for k, v in refs.items()), flush=True)
    (a.out / (f"sweep-K{a.case[0]}-L{a.case[1]}.json" if a.case else "sweep.json")).write_text(json.dumps(rows))
    print_sweep(rows)


def print_sweep(rows: list[dict]) -> None:
    print("K   L   MDLBI (mean +- std over seeds)   random   fixed-assoc+align+WMMSE")
    for r in rows:
        print(f"{r['K']:<3d} {r['L']:<3d} {np.mean(r['mdlbi']):6.2f} +- {np.std(r['mdlbi']):4.2f}                 {r['random']:6.2f}   {r['fixed-assoc']:6.2f}")
    print("SUMMARY sweep: MDLBI " + ", ".join(f"(K{r['K']},L{r['L']}) {np.mean(r['mdlbi']):.2f}" for r in rows))


def mdlbi_assoc_policy(bundle_policy, cfg):
    """MDLBI's learned association (its claims, collisions included) with aligned phases and WMMSE:
    isolates the association decision from the (hard to learn) precoders."""

    def policy(env, obs):
        act = bundle_policy(env, obs)
        user_irs = env.decode_actions(act)["user_irs"]
        d = decide_from_user_irs(env.scene, user_irs, cfg.noise_w, cfg.p_max_w)
        return to_action(env, d["W"], d["phi"], user_irs)

    return policy


def cmd_mobility(a: argparse.Namespace) -> None:
    K, L = a.mobility_case
    cfg = get_scenario("p2", n_users=K, n_irs=L, episode_steps=a.horizon)
    out = {}
    for s in a.seeds:
        run = a.out / f"mdlbi-K{K}-L{L}-s{s}"
        from agents.bundle import load_bundle
        from agents.evaluation import bundle_policy

        env = P2Env(num_envs=a.eval_episodes, cfg=cfg)
        pols = p2_reference_policies(env, s, include_upper=True)
        bp = bundle_policy(load_bundle(run / runs.BUNDLE_DIR))
        todo = {"mdlbi": bp, "mdlbi-assoc+align+wmmse": mdlbi_assoc_policy(bp, cfg), "fixed-assoc": pols["fixed-assoc"],
                "adaptive-assoc (ref)": pols["adaptive-assoc (ref)"], "random-assoc": pols["random-assoc"], "random": pols["random"]}
        for name, pol in todo.items():
            tr = rollout(env, pol, 1000 + s)
            out.setdefault(name, []).append({"sum_rate": tr["sum_rate"].mean(1).tolist(), "collisions": tr["collisions"].mean(1).tolist(),
                                             "handovers": tr["handovers"].mean(1).tolist()})
        print(f"  mobility seed {s} done", flush=True)
    (a.out / "mobility.json").write_text(json.dumps(out))
    print_mobility(out)


def print_mobility(out: dict) -> None:
    print("policy                     mean    std over time   min    max    collisions/slot")
    for name, per_seed in out.items():
        x = np.array([r["sum_rate"] for r in per_seed])  # (seeds, T)
        c = np.array([r["collisions"] for r in per_seed])
        print(f"{name:26s} {x.mean():6.2f}  {x.std(1).mean():6.2f}          {x.mean(0).min():6.2f} {x.mean(0).max():6.2f}  {c.mean():.3f}")
    fa, ad = np.array([r["sum_rate"] for r in out["fixed-assoc"]]), np.array([r["sum_rate"] for r in out["adaptive-assoc (ref)"]])
    gap = (ad - fa).mean(0)
    print(f"SUMMARY mobility: adaptive - fixed association gap {gap[:10].mean():.2f} (first 10 slots) -> {gap[-10:].mean():.2f} (last 10) bit/s/Hz")


def _slot_rate(env: P2Env, W: torch.Tensor) -> torch.Tensor:
    """Sum rate (B,) of precoders W (B, n_bs, N_b, K) on the env's current slot, no IRS claimed,
    W masked to own users and scaled to P_max exactly as the env does."""
    from twin import multicell as mc

    s, B, nb = env.scene, env.num_envs, env.n_bs
    own = s.user_cell.unsqueeze(1) == torch.arange(nb).view(1, nb, 1)
    W = W * own.unsqueeze(2).to(W.dtype)
    W = W * (env.cfg.p_max_w ** 0.5 / torch.linalg.vector_norm(W.flatten(2), dim=-1).clamp_min(1e-12))[:, :, None, None]
    phi = torch.ones(B, env.L, env.Nl, dtype=s.h_IU.dtype)
    none = torch.zeros(B, nb, env.L, dtype=torch.bool)
    ev = mc.evaluate(s.H_BI, s.h_IU, s.h_BU, phi, none, s.user_cell, torch.full((B, env.K), -1), W.to(s.h_BU.dtype), env.cfg.noise_w)
    return ev["sum_rate_bps_hz"]


def cmd_diagnose(a: argparse.Namespace) -> None:
    """Why the learners sat at the random level: simple precoders and the actor's capacity.

    Heuristics (no IRS): random entries; all power on the first own user with a fixed beam
    (uses only the own-user mask, no CSI); MRT on every own user; MRT on the strongest own
    user. Capacity check (not part of the product): the MDLBI actor network with each
    precoder head trained by the *exact* gradient of the sum rate through the channel model
    (a perfect critic) on fresh slots: the best a DDPG actor of that shape could reach."""
    from agents.mdlbi import P2BSActor

    K, L = a.mobility_case
    env = P2Env(num_envs=256, cfg=get_scenario("p2", n_users=K, n_irs=L), seed=0)
    env.reset(seed=12345)
    s, nb, Nb = env.scene, env.n_bs, env.Nb
    own = s.user_cell.unsqueeze(1) == torch.arange(nb).view(1, nb, 1)
    g = torch.Generator().manual_seed(0)
    u = lambda: 2 * torch.rand(env.num_envs, nb, Nb, K, generator=g) - 1
    first = torch.zeros(env.num_envs, nb, K).scatter_(2, own.float().argmax(-1, keepdim=True), 1.0)
    e1 = torch.zeros(env.num_envs, nb, Nb, K, dtype=torch.complex64)
    e1[:, :, 0, :] = first
    mrt = (s.h_BU / s.h_BU.abs().square().sum(-1, keepdim=True).sqrt()).transpose(-1, -2)   # (B, nb, Nb, K)
    best = torch.zeros(env.num_envs, nb, K).scatter_(2, (s.h_BU.abs().square().sum(-1) * own).argmax(-1, keepdim=True), 1.0)
    rows = {"random entries (as the random policy)": _slot_rate(env, torch.complex(u(), u())),
            "first own user, fixed beam (no CSI)": _slot_rate(env, e1),
            "MRT, every own user, equal power": _slot_rate(env, mrt),
            "MRT, strongest own user only": _slot_rate(env, mrt * best.unsqueeze(2))}
    print(f"K={K} L={L}: sum rate of simple precoders on 256 slots (bit/s/Hz)")
    for name, r in rows.items():
        print(f"  {name:40s} {float(r.mean()):6.2f}")
    obs = lambda: env._all_obs()
    for head in ("direct", "power-direction"):
        torch.manual_seed(0)
        actor = P2BSActor(env.obs_dim, Nb, K, L, env.Nl, hidden=tuple(a.hidden), precoder_head=head)
        opt = torch.optim.Adam(actor.parameters(), lr=1e-3)
        t0, hist = time.perf_counter(), []
        for it in range(a.diag_iters):
            env.reset(seed=10_000 + it)
            o = obs()
            W = actor(o.reshape(-1, env.obs_dim))["W"].reshape(env.num_envs, nb, 2, Nb, K)
            r = _slot_rate(env, torch.complex(W[:, :, 0], W[:, :, 1]))
            opt.zero_grad()
            (-r.mean()).backward()
            opt.step()
            hist.append(float(r.detach().mean()))
        env.reset(seed=12345)
        with torch.no_grad():
            W = actor(obs().reshape(-1, env.obs_dim))["W"].reshape(env.num_envs, nb, 2, Nb, K)
            held = float(_slot_rate(env, torch.complex(W[:, :, 0], W[:, :, 1])).mean())
        print(f"  actor '{head}' head, exact-gradient training ({a.diag_iters} x 256 slots, {time.perf_counter() - t0:.0f} s): "
              f"best window {max(np.mean(hist[i:i + 50]) for i in range(0, len(hist), 50)):.2f}, held-out {held:.2f}")
    print(f"SUMMARY diagnose K={K} L={L}: random {float(rows['random entries (as the random policy)'].mean()):.2f}, "
          f"no-CSI one user {float(rows['first own user, fixed beam (no CSI)'].mean()):.2f}, "
          f"MRT strongest {float(rows['MRT, strongest own user only'].mean()):.2f} bit/s/Hz")


def cmd_plot(a: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if (a.out / "convergence.json").exists():
        rows = json.loads((a.out / "convergence.json").read_text())
        for algo in sorted({r["algo"] for r in rows}):
            rr = [r for r in rows if r["algo"] == algo]
            n = min(len(r["eval_sum_rate"]) for r in rr)
            y = np.array([r["eval_sum_rate"][:n] for r in rr])
            axes[0].plot(rr[0]["steps"][:n], y.mean(0), label=f"{algo} (n={len(rr)})")
            axes[0].fill_between(rr[0]["steps"][:n], y.mean(0) - y.std(0), y.mean(0) + y.std(0), alpha=0.2)
            m = min(len(r["train_collisions"]) for r in rr)
            axes[2].plot(np.array([r["train_collisions"][:m] for r in rr]).mean(0), label=algo)
        axes[0].set(xlabel="training steps", ylabel="eval sum rate (bit/s/Hz)", title="convergence, K=10 L=1")
        axes[2].set(xlabel="log window", ylabel="collisions per slot (training)", title="collision rate")
        axes[0].legend(), axes[2].legend()
    if (a.out / "mobility.json").exists():
        out = json.loads((a.out / "mobility.json").read_text())
        for name, per_seed in out.items():
            axes[1].plot(np.array([r["sum_rate"] for r in per_seed]).mean(0), label=name)
        axes[1].set(xlabel="slot", ylabel="sum rate (bit/s/Hz)", title="under mobility", yscale="log")
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out / "p2_study.png", dpi=100)
    print(f"SUMMARY plot: {a.out / 'p2_study.png'}")


def cmd_report(a: argparse.Namespace) -> None:
    parts = sorted(a.out.glob("sweep-K*-L*.json"))
    if parts:  # one file per case when the cases ran as separate processes
        rows = [r for p in parts for r in json.loads(p.read_text())]
        (a.out / "sweep.json").write_text(json.dumps(sorted(rows, key=lambda r: (r["K"], r["L"]))))
    for name, fn in (("convergence", print_convergence), ("sweep", print_sweep), ("mobility", print_mobility)):
        p = a.out / f"{name}.json"
        if p.exists():
            fn(json.loads(p.read_text()))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=("convergence", "sweep", "mobility", "plot", "report", "diagnose"))
    ap.add_argument("--out", type=Path, default=Path("runs/p2study"))
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--num-envs", type=int, default=64)
    ap.add_argument("--updates-per-step", type=int, default=4, help="gradient updates per batched step (per BS)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--episode-steps", type=int, default=100, help="slots per episode (paper 800)")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--eval-episodes", type=int, default=4)
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    ap.add_argument("--ref-steps", type=int, default=20, help="slots of each reference rollout in the sweep (WMMSE is slow)")
    ap.add_argument("--case", type=int, nargs=2, default=None, metavar=("K", "L"), help="sweep only this (K, L) case")
    ap.add_argument("--horizon", type=int, default=100, help="slots of the mobility episode")
    ap.add_argument("--mobility-case", type=int, nargs=2, default=[30, 2], metavar=("K", "L"), help="also the case of diagnose")
    ap.add_argument("--diag-iters", type=int, default=600, help="exact-gradient iterations of the diagnose capacity check")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    {"convergence": cmd_convergence, "sweep": cmd_sweep, "mobility": cmd_mobility, "plot": cmd_plot, "report": cmd_report, "diagnose": cmd_diagnose}[a.phase](a)


if __name__ == "__main__":
    main(sys.argv[1:])
