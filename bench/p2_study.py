"""P2 study: MDLBI vs centralized DDPG, (K, L) sweep, mobility, collisions, and a diagnosis.

  python bench/p2_study.py convergence --out runs/p2study --steps 1600 --num-envs 64 --seeds 0 1 2
  python bench/p2_study.py sweep       --out runs/p2study --steps 400 --case 30 1
  python bench/p2_study.py mobility    --out runs/p2study --horizon 60 --mobility-case 10 1
  python bench/p2_study.py diagnose    --mobility-case 10 1     # simple precoders, actor capacity
  python bench/p2_study.py report      --out runs/p2study
  python bench/p2_study.py convergence --out runs/p2local --algo-set precoder_head=local   # any MDLBIConfig field
  python bench/p2_study.py sweep --case 10 1 --scenario-set pl_exp_bs_user=5.0 ...         # a scenario variant
  python bench/p2_study.py mobility-local --out runs/p2local --mobility-case 10 1 --with-wmmse
      # MDLBI's claims vs fixed vs per-slot-best association, all with MDLBI's own precoders
  python bench/p2_study.py claim-rules --out runs/p2claims/weak --mobility-case 10 1 --eval-episodes 2 --scenario-set pl_exp_bs_user=5.0
      # hand-set thresholds of the gain claim head on the learned precoders (what a threshold rule reaches)
  python bench/p2_study.py heads --out runs/p2local --mobility-case 10 1    # untrained "local" head settings
  python bench/p2_study.py plot-mobility --inputs preset=runs/p2local/mobility-local-K10-L1.json --png docs/p2_mobility.png
  python bench/p2_study.py convergence --out runs/p2claims/weak --steps 800 --algo-set precoder_head=local gain_features=true \
      claim_head=gain --scenario-set pl_exp_bs_user=5.0     # claims from the own CSI vs a learned threshold

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


def _kv(items: list[str], fields: dict) -> dict:
    """["key=value", ...] -> {key: value} cast to the dataclass field's default type."""
    out = {}
    for it in items:
        k, v = it.split("=", 1)
        if k not in fields:
            raise SystemExit(f"unknown field {k!r}; known: {sorted(fields)}")
        t = type(fields[k])
        out[k] = v if t is str else (v.lower() in ("1", "true") if t is bool else t(v))
    return out


def algo_cfg(name: str, updates_per_step: int, hidden: tuple[int, ...], extra: list[str] = ()) -> MDLBIConfig:
    # Paper defaults otherwise; updates_per_step gradient updates per batched step of num_envs transitions.
    base = CentralDDPGConfig() if name == "ddpg-central" else MDLBIConfig()
    over = _kv(list(extra), {f.name: getattr(base, f.name) for f in dataclasses.fields(base)})
    return dataclasses.replace(base, updates_per_step=updates_per_step, hidden=hidden, **over)


def scenario_over(a: argparse.Namespace) -> dict:
    base = get_scenario("p2")
    return _kv(list(a.scenario_set), {f.name: getattr(base, f.name) for f in dataclasses.fields(base)})


def train_one(out: Path, algo: str, K: int, L: int, seed: int, a: argparse.Namespace) -> Path:
    run = out / f"{algo}-K{K}-L{L}-s{seed}"
    if (run / "final_eval.json").exists():
        return run
    if run.exists():
        import shutil

        shutil.rmtree(run)
    scn = get_scenario("p2", **{**scenario_over(a), "n_users": K, "n_irs": L, "episode_steps": a.episode_steps})
    tc = TrainConfig(scenario="p2", algo=algo, steps=a.steps, num_envs=a.num_envs, seed=seed, log_every=a.log_every,
                     eval_every=a.eval_every, eval_episodes=a.eval_episodes, checkpoint_every=a.steps)
    t0 = time.perf_counter()
    Trainer(run, tc, scn, algo_cfg(algo, a.updates_per_step, tuple(a.hidden), a.algo_set)).run(plot=False)
    print(f"  trained {run.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def final(run: Path) -> dict:
    return json.loads((run / "final_eval.json").read_text())


def curve(run: Path, key: str, fname: str = runs.EVAL_CSV) -> tuple[list[float], list[float]]:
    return runs.read_series(run / fname, key)


def references(K: int, L: int, a: argparse.Namespace, names: tuple[str, ...]) -> dict[str, float]:
    """Reference decisions on the evaluation episodes of the runs (same seed as Trainer.evaluate uses per run seed 0)."""
    from agents.training import derive_seed

    env = P2Env(num_envs=a.eval_episodes, cfg=get_scenario("p2", **{**scenario_over(a), "n_users": K, "n_irs": L,
                                                                  "episode_steps": a.episode_steps}))
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


# ------------------------------------------------------------------ mobility on equal precoding terms

def candidate_owners(n_bs: int, L: int) -> list[tuple[int, ...]]:
    """IRS -> BS assignments a claims head can express (each BS holds at most one IRS; -1 = idle)."""
    import itertools

    return [c for c in itertools.product(range(-1, n_bs), repeat=L) if all(c.count(m) <= 1 for m in range(n_bs))]


def learned_actions(actors: dict, obs: dict, owners: torch.Tensor | None, L: int) -> dict:
    """Each BS's learned action; with ``owners`` (B, L) its claims replaced by that assignment
    (+1 on the IRS it is given, -1 elsewhere) and W / theta recomputed by its own head."""
    acts = {}
    with torch.inference_mode():
        for m, (aid, actor) in enumerate(actors.items()):
            o = torch.as_tensor(obs[aid]).float()
            raw = actor.joint(o)[:, 0]
            claims = None if owners is None else torch.where(owners == m, 1.0, -1.0)
            acts[aid] = actor.split(raw, o, claims)
    return acts


def peek_rate(env: P2Env, acts: dict) -> torch.Tensor:
    """Sum rate (B,) of ``acts`` on the env's current slot, without stepping."""
    from twin import multicell as mc

    d, s = env.decode_actions(acts), env.scene
    return mc.evaluate(s.H_BI, s.h_IU, s.h_BU, d["phi"], d["claims"], s.user_cell, d["user_irs"], d["W"],
                       env.cfg.noise_w)["sum_rate_bps_hz"]


def best_owners(env: P2Env, actors: dict, obs: dict) -> torch.Tensor:
    """(B, L): per env the candidate assignment with the highest sum rate this slot under the learned precoders."""
    cands = candidate_owners(env.n_bs, env.L)
    rates = torch.stack([peek_rate(env, learned_actions(actors, obs, torch.tensor(c).expand(env.num_envs, -1), env.L))
                         for c in cands], -1)
    return torch.tensor(cands)[rates.argmax(-1)]


def run_policy(env: P2Env, name: str, actors: dict, refs: dict, seed: int) -> dict:
    obs = env.reset(seed=seed)
    held = None
    rates, owners, colls = [], [], []
    for t in range(env.cfg.episode_steps):
        if name in refs:
            acts = refs[name](env, obs)
        elif name == "mdlbi":
            acts = learned_actions(actors, obs, None, env.L)
        elif name == "mdlbi prec., no IRS":
            acts = learned_actions(actors, obs, torch.full((env.num_envs, env.L), -1), env.L)
        elif name == "mdlbi prec., fixed assoc.":
            if held is None:
                held = best_owners(env, actors, obs)
            acts = learned_actions(actors, obs, held, env.L)
        elif name == "mdlbi prec., adaptive assoc. (ref)":
            acts = learned_actions(actors, obs, best_owners(env, actors, obs), env.L)
        res = env.step(acts)
        rates.append(res.info["sum_rate"].double().numpy())
        owners.append(res.info["owner"].numpy())
        colls.append(res.info["collisions"].double().numpy())
        obs = res.obs
    return {"sum_rate": np.stack(rates).T.tolist(), "owner": np.stack(owners).transpose(1, 0, 2).tolist(),
            "collisions": np.stack(colls).T.tolist()}


LEARNED = ("mdlbi", "mdlbi prec., fixed assoc.", "mdlbi prec., adaptive assoc. (ref)", "mdlbi prec., no IRS")


def cmd_mobility_local(a: argparse.Namespace) -> None:
    """MDLBI's claims vs fixed vs per-slot-best association, all with MDLBI's own (learned, local-CSI)
    precoders; WMMSE rows with fixed / adaptive association for scale. Per env: (B, T) traces."""
    from agents.bundle import load_bundle

    K, L = a.mobility_case
    cfg = get_scenario("p2", **{**scenario_over(a), "n_users": K, "n_irs": L, "episode_steps": a.horizon})
    out: dict = {}
    for s in a.seeds:
        run = a.out / f"mdlbi-K{K}-L{L}-s{s}"
        bundle = load_bundle(run / runs.BUNDLE_DIR)
        env = P2Env(num_envs=a.eval_episodes, cfg=cfg)
        actors = {aid: bundle.actor_for(aid) for aid in env.agent_ids}
        refs = p2_reference_policies(env, s, include_upper=True)
        refs = {"fixed-assoc + WMMSE": refs["fixed-assoc"], "adaptive-assoc + WMMSE (ref)": refs["adaptive-assoc (ref)"]}
        names = LEARNED + (tuple(refs) if a.with_wmmse else ())
        for name in names:
            out.setdefault(name, []).append(run_policy(env, name, actors, refs, 1000 + s))
        print(f"  mobility seed {s} done", flush=True)
    (a.out / f"mobility-local-K{K}-L{L}.json").write_text(json.dumps(out))
    print_mobility_local(out, a.window)


def print_mobility_local(out: dict, window: int = 10) -> None:
    fixed = np.array([x for r in out["mdlbi prec., fixed assoc."] for x in r["sum_rate"]])    # (seeds * B, T)
    T = fixed.shape[1]
    print(f"policy                               mean   std/time  collisions  gap to fixed per {window}-slot window")
    for name, per_seed in out.items():
        x = np.array([v for r in per_seed for v in r["sum_rate"]])
        c = np.array([v for r in per_seed for v in r["collisions"]])
        gap = (x - fixed).mean(0) if x.shape == fixed.shape else np.full(T, np.nan)
        wins = " ".join(f"{gap[i:i + window].mean():+6.2f}" for i in range(0, T, window))
        print(f"{name:36s} {x.mean():6.2f}  {x.std(1).mean():6.2f}   {c.mean():6.3f}     {wins}")
    own = [np.array(r["owner"]) for r in out["mdlbi"]]          # per seed (B, T, L)
    ada = [np.array(r["owner"]) for r in out["mdlbi prec., adaptive assoc. (ref)"]]
    switch = np.mean([(o[:, 1:] != o[:, :-1]).any(-1).mean() for o in own])
    switch_ref = np.mean([(o[:, 1:] != o[:, :-1]).any(-1).mean() for o in ada])
    agree = np.mean([(o == r).all(-1).mean() for o, r in zip(own, ada)])
    held = np.mean([(o == o[:, :1]).all(-1).mean() for o in own])
    print(f"mdlbi claims: change in {switch:.1%} of slots (adaptive reference {switch_ref:.1%}); equal to the slot-0 "
          f"owner in {held:.1%}; equal to the per-slot best in {agree:.1%}")
    m = np.array([v for r in out["mdlbi"] for v in r["sum_rate"]])
    ad = np.array([v for r in out["mdlbi prec., adaptive assoc. (ref)"] for v in r["sum_rate"]])
    no = np.array([v for r in out["mdlbi prec., no IRS"] for v in r["sum_rate"]])
    print(f"SUMMARY mobility-local: mdlbi {m.mean():.2f}, fixed {fixed.mean():.2f}, adaptive {ad.mean():.2f}, "
          f"no IRS {no.mean():.2f} bit/s/Hz; claims change in {switch:.1%} of slots")


def cmd_claim_rules(a: argparse.Namespace) -> None:
    """Hand-set thresholds of the "gain" claim head (not learned) on each seed's learned precoders,
    same episodes as mobility-local: what a decentralized rule over the own claim value v and the
    overheard claim of the previous slot (rho) can reach. tau = threshold in bit/s/Hz; "yields":
    99 where the other BS claimed last slot; "if idle": claims only where the other did not."""
    from agents.bundle import load_bundle
    from agents.mdlbi import claim_value

    K, L = a.mobility_case
    cfg = get_scenario("p2", **{**scenario_over(a), "n_users": K, "n_irs": L, "episode_steps": a.horizon})
    const = lambda t: lambda rho: torch.full_like(rho, float(t))
    rules: dict = {"learned": None}
    for b in (0, 1):
        for t in (2, 4, 6, 8):
            rules[f"bs{b} 0.5 yields | other {t}"] = {b: lambda rho: 0.5 + 99 * rho, 1 - b: const(t)}
        for t0 in (0.5, 2, 4):
            for t1 in (1, 4):
                rules[f"bs{b} {t0} | other {t1} if idle"] = {b: const(t0), 1 - b: (lambda t1: lambda rho: t1 + 99 * rho)(t1)}
        rules[f"bs{b} 0.5 | other never"] = {b: const(0.5), 1 - b: const(99)}
    res: dict = {n: [] for n in rules}
    for s in a.seeds:
        bundle = load_bundle(a.out / f"mdlbi-K{K}-L{L}-s{s}" / runs.BUNDLE_DIR)
        env = P2Env(num_envs=a.eval_episodes, cfg=cfg)
        actors = {aid: bundle.actor_for(aid) for aid in env.agent_ids}
        for name, rule in rules.items():
            obs, rates, owners, colls = env.reset(seed=1000 + s), [], [], []
            for _ in range(a.horizon):
                acts = {}
                with torch.inference_mode():
                    for m, (aid, actor) in enumerate(actors.items()):
                        o, kw = torch.as_tensor(obs[aid]).float(), actor.arch_kwargs()
                        c = None
                        if rule is not None:
                            v = claim_value(o, n_users=K, n_irs=L, n_antennas=env.Nb, n_elements=env.Nl,
                                            refl_scale=kw["refl_scale"])
                            c = torch.tanh(v - rule[m](o[:, -L:].double()))
                        acts[aid] = actor.split(actor.joint(o)[:, 0], o, c)
                r = env.step(acts)
                rates.append(r.info["sum_rate"].double().numpy()), owners.append(r.info["owner"].numpy())
                colls.append(r.info["collisions"].double().numpy())
                obs = r.obs
            own = np.stack(owners, 1)
            res[name].append((np.stack(rates, 1).mean(), float(np.mean(colls)), float((own[:, 1:] != own[:, :-1]).any(-1).mean())))
        print(f"  claim rules seed {s} done", flush=True)
    print("rule                            mean   per seed               collisions/slot  owner changes")
    for name, r in res.items():
        x = np.array(r)
        print(f"{name:30s} {x[:, 0].mean():6.2f}  " + " / ".join(f"{v:.2f}" for v in x[:, 0]) + f"   {x[:, 1].mean():.3f}   {x[:, 2].mean():.3f}")
    best = max((n for n in res if n != "learned"), key=lambda n: np.mean([v[0] for v in res[n]]))
    print(f"SUMMARY claim-rules: learned {np.mean([v[0] for v in res['learned']]):.2f}, best hand-set "
          f"'{best}' {np.mean([v[0] for v in res[best]]):.2f} bit/s/Hz")


def cmd_heads(a: argparse.Namespace) -> None:
    """Fixed (untrained) settings of the "local" head on each seed's evaluation episodes (as
    Trainer.evaluate draws them): equal power shares, and all power on the N_b own users with the
    strongest direct links (a CSI heuristic, no learning); no IRS claimed. Learning has to beat
    the first; the second is what a good power split of this head can reach without the IRS."""
    from agents.mdlbi import P2BSActor, local_scales
    from agents.training import derive_seed

    K, L = a.mobility_case
    cfg = get_scenario("p2", **{**scenario_over(a), "n_users": K, "n_irs": L, "episode_steps": a.episode_steps})
    env = P2Env(num_envs=a.eval_episodes, cfg=cfg)
    actor = P2BSActor(env.obs_dim, env.Nb, K, L, env.Nl, hidden=(8,), precoder_head="local", assoc_head="claims",
                      **local_scales(env))

    def policy(strongest: bool):
        def pol(env: P2Env, obs: dict) -> dict:
            B, acts = env.num_envs, {}
            for m, aid in enumerate(env.agent_ids):
                q = torch.zeros(B, K)
                if strongest:
                    g = env.scene.h_BU[:, m].abs().square().sum(-1) * (env.scene.user_cell == m)
                    q = torch.full((B, K), -1.0).scatter_(1, g.argsort(-1, descending=True)[:, :env.Nb], 1.0)
                raw = torch.cat([q, torch.zeros(B, 1), -torch.ones(B, L)], -1)
                acts[aid] = actor.split(raw, torch.as_tensor(obs[aid]).float())
            return acts
        return pol

    rows = {}
    for name, strongest in (("equal power shares", False), (f"N_b strongest own users", True)):
        rows[name] = [float(rollout(env, policy(strongest), derive_seed(s, "eval"))["sum_rate"].mean()) for s in a.seeds]
        print(f"  {name:28s} " + " / ".join(f"{v:.2f}" for v in rows[name]) + f"   mean {np.mean(rows[name]):.2f}")
    (a.out / f"heads-K{K}-L{L}.json").write_text(json.dumps(rows))
    print(f"SUMMARY heads K={K} L={L}: " + ", ".join(f"{k} {np.mean(v):.2f}" for k, v in rows.items()) + " bit/s/Hz")


def cmd_plot_mobility(a: argparse.Namespace) -> None:
    """Sum rate over time under mobility (mobility-local files given by --inputs LABEL=PATH):
    top row absolute (learned-precoder rows and the WMMSE rows), bottom row gap to fixed association."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = [s.rsplit("=", 1) for s in a.inputs]
    fig, axes = plt.subplots(2, len(items), figsize=(6 * len(items), 7), squeeze=False)
    for j, (label, path) in enumerate(items):
        out = json.loads(Path(path).read_text())
        fixed = np.array([v for r in out["mdlbi prec., fixed assoc."] for v in r["sum_rate"]])
        for name, per_seed in out.items():
            x = np.array([v for r in per_seed for v in r["sum_rate"]])
            style = "--" if "WMMSE" in name else "-"
            axes[0, j].plot(x.mean(0), style, label=name)
            if "WMMSE" not in name:
                axes[1, j].plot((x - fixed).mean(0), label=name)
        n = sum(len(r["sum_rate"]) for r in out["mdlbi"])
        axes[0, j].set(xlabel="slot", ylabel="sum rate (bit/s/Hz)", title=f"{label}: mean of {n} episodes")
        axes[1, j].set(xlabel="slot", ylabel="minus MDLBI prec. + fixed assoc.", title=f"{label}: gap to fixed association")
        axes[1, j].axhline(0.0, color="k", lw=0.5)
        axes[0, j].legend(fontsize=7), axes[1, j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.png, dpi=60)
    print(f"SUMMARY plot-mobility: {a.png}")


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
    from agents.mdlbi import local_scales

    for head in a.diag_heads:
        torch.manual_seed(0)
        extra = dict(assoc_head="claims", gain_features=a.diag_gain_features, **local_scales(env)) if head == "local" else {}
        actor = P2BSActor(env.obs_dim, Nb, K, L, env.Nl, hidden=tuple(a.hidden), precoder_head=head, **extra)
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


def cmd_collisions(a: argparse.Namespace) -> None:
    """Collisions per slot over training (metrics windows: first, second, third, last) and at the
    last evaluation, with the last evaluation's IRS owner and sum rate, for every run under --out."""
    print("run                          training windows (collisions/slot)      last eval  owner(mean)  eval sum rate")
    for run in sorted(p for p in a.out.iterdir() if (p / "final_eval.json").exists()):
        _, c = curve(run, "collisions", runs.METRICS_CSV)
        _, ec = curve(run, "eval_collisions")
        _, eo = curve(run, "eval_owner_mean")
        _, er = curve(run, "eval_sum_rate")
        w = " -> ".join(f"{c[i]:.2f}" for i in (0, 1, 2)) + f" -> {c[-1]:.3f}" if len(c) > 3 else str(c)
        print(f"{run.name:28s} {w:38s}  {ec[-1]:6.3f}    {eo[-1]:6.2f}      {er[-1]:7.2f}")
    print(f"SUMMARY collisions: {a.out}")


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
    ap.add_argument("phase", choices=("convergence", "sweep", "mobility", "mobility-local", "claim-rules", "heads", "plot-mobility", "collisions", "plot", "report", "diagnose"))
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
    ap.add_argument("--algo-set", nargs="*", default=[], metavar="KEY=VALUE", help="MDLBIConfig fields, e.g. precoder_head=local")
    ap.add_argument("--scenario-set", nargs="*", default=[], metavar="KEY=VALUE", help="P2 preset fields (a scenario variant)")
    ap.add_argument("--window", type=int, default=10, help="slots per window of the mobility gap table")
    ap.add_argument("--with-wmmse", action="store_true", help="mobility-local: also the WMMSE fixed / adaptive rows (slow)")
    ap.add_argument("--inputs", nargs="*", default=[], metavar="LABEL=PATH", help="plot-mobility: mobility-local json files")
    ap.add_argument("--png", type=Path, default=Path("docs/p2_mobility.png"))
    ap.add_argument("--diag-heads", nargs="+", default=["direct", "power-direction"], help="diagnose: precoder heads to check")
    ap.add_argument("--diag-gain-features", action="store_true", help="diagnose: the local head's actor with gain features")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    {"convergence": cmd_convergence, "sweep": cmd_sweep, "mobility": cmd_mobility, "mobility-local": cmd_mobility_local, "claim-rules": cmd_claim_rules, "heads": cmd_heads, "plot-mobility": cmd_plot_mobility, "collisions": cmd_collisions, "plot": cmd_plot, "report": cmd_report, "diagnose": cmd_diagnose}[a.phase](a)


if __name__ == "__main__":
    main(sys.argv[1:])
