"""`ristwin train | evaluate | compare`: train into a run directory, evaluate its bundle
against the reference decisions, compare runs (tables and Fig. 3 / Fig. 4-like plots)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import click

from twin.errors import ConfigError


def register(root: click.Group) -> None:
    root.add_command(train)
    root.add_command(evaluate)
    root.add_command(compare)


def _split_sets(assignments: tuple[str, ...]) -> tuple[list[str], list[str]]:
    scenario, algo = [], []
    for text in assignments:
        prefix, dot, rest = text.partition(".")
        if not dot or "=" not in rest or prefix not in ("scenario", "algo") or "=" in prefix:
            raise ConfigError(f"--set {text!r}: write scenario.FIELD=VALUE or algo.FIELD=VALUE")
        (scenario if prefix == "scenario" else algo).append(rest)
    return scenario, algo


# --------------------------------------------------------------------------- train

@click.command("train")
@click.option("--scenario", default=None, help="Scenario preset (p1..p4).  [default: p1]")
@click.option("--algo", default=None, help="Algorithm, e.g. maq-pg, maddpg, mdlbi, magar, mappo (omit it to list all).")
@click.option("--steps", type=int, default=None, help="Batched environment steps (each advances all --num-envs).  [default: 20000]")
@click.option("--num-envs", type=int, default=None, help="Environments stepped together.  [default: 8]")
@click.option("--seed", type=int, default=None, help="Run seed (one seed -> env and algorithm generators).  [default: 0]")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run directory.")
@click.option("--set", "assignments", multiple=True, metavar="scenario.FIELD=VALUE|algo.FIELD=VALUE",
              help="Override a scenario or algorithm config field (repeatable).")
@click.option("--log-every", type=int, default=None, help="Steps between metrics.csv rows.  [default: 100]")
@click.option("--eval-every", type=int, default=None, help="Steps between deterministic evaluations.  [default: 1000]")
@click.option("--eval-episodes", type=int, default=None, help="Episodes per evaluation.  [default: 8]")
@click.option("--checkpoint-every", type=int, default=None, help="Steps between checkpoints (taken at the next episode end).  [default: 1000]")
@click.option("--threads", type=int, default=None, help="Torch intra-op threads (results are bit-identical only at equal counts).  [default: 1]")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="TOML with [train], [scenario], [algo] tables (e.g. another run's config.toml); options and --set win.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (same results as uninterrupted).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(scenario: str | None, algo: str | None, steps: int | None, num_envs: int | None, seed: int | None, out: Path,
          assignments: tuple[str, ...], log_every: int | None, eval_every: int | None,
          eval_episodes: int | None, checkpoint_every: int | None, threads: int | None, config_file: Path | None, resume: bool,
          quiet: bool) -> None:
    """Train ALGO on SCENARIO into the run directory --out; ends with the actor bundle in OUT/bundle."""
    from agents import registry, runs
    from agents.training import TrainConfig, Trainer

    loop_opts = {"num_envs": num_envs, "seed": seed, "log_every": log_every, "eval_every": eval_every,
                 "eval_episodes": eval_episodes, "checkpoint_every": checkpoint_every, "threads": threads}
    if resume and (out / runs.CONFIG_JSON).exists():
        trainer = Trainer.from_run_dir(out, steps=steps)
        saved = trainer.cfg
        changed = [k for k, v in loop_opts.items() if v is not None and getattr(saved, k) != v]
        if algo is not None and algo != saved.algo:
            changed.append("algo")
        if scenario is not None and scenario != saved.scenario:
            changed.append("scenario")
        if assignments or changed or config_file is not None:
            raise ConfigError(f"--resume: {', '.join(changed) or '--set'} cannot change when resuming {out}; "
                              "only --steps may (start a new --out to change the config)")
    else:
        if config_file is not None:
            table = _read_toml(config_file)
            file_train = table.get("train", {})
            unknown = sorted(set(file_train) - {f for f in TrainConfig.__dataclass_fields__})
            if unknown:
                raise ConfigError(f"{config_file}: train.{unknown[0]} is not a training option")
            scenario = scenario or file_train.get("scenario")
            algo = algo or file_train.get("algo")
            steps = steps if steps is not None else file_train.get("steps")
            loop_opts = {k: (v if v is not None else file_train.get(k)) for k, v in loop_opts.items()}
            # File values first, so an explicit --set for the same field overrides them.
            assignments = tuple(f"{section}.{k}={_as_text(v)}" for section in ("scenario", "algo")
                                for k, v in table.get(section, {}).items() if k != "name") + assignments
        if algo is None:
            raise ConfigError("--algo: required; choose one of: " + (", ".join(sorted(registry.ALGORITHMS)) or "none registered yet"))
        algo_cls, algo_cfg_cls = registry.algorithm(algo)
        scn_sets, algo_sets = _split_sets(assignments)
        scenario = scenario or "p1"
        scenario_cfg = registry.scenario_config(scenario, scn_sets)
        algo_cfg = registry.algo_config(algo_cfg_cls, algo_sets)
        defaults = TrainConfig()
        cfg = TrainConfig(scenario=scenario, algo=algo, steps=steps if steps is not None else defaults.steps,
                          **{k: (v if v is not None else getattr(defaults, k)) for k, v in loop_opts.items()})
        trainer = Trainer(out, cfg, scenario_cfg, algo_cfg)
    cfg = trainer.cfg
    import signal

    def _sigterm(signum: int, frame: Any) -> None:  # `kill` stops like Ctrl-C: resumable, nothing half-written
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        result = _run_with_progress(trainer, resume, quiet)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result.interrupted:
        click.echo(f"interrupted at step {result.steps}; resume with: ristwin train --out {out} --resume", err=True)
        raise SystemExit(130)
    summary = ", ".join(f"{k} {v:.4g}" for k, v in result.final_eval.items()
                        if k in ("eval_reward", "eval_sum_rate", "eval_rate_mean"))
    click.echo(f"trained {cfg.algo} on {cfg.scenario}: {result.steps} steps x {cfg.num_envs} envs; {summary}")
    click.echo(f"bundle: {result.bundle}")


def _read_toml(path: Path) -> dict:
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _as_text(value: Any) -> str:
    """A TOML value as the text --set takes (tuples comma-separated)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_as_text(v) for v in value)
    return str(value)


def _run_with_progress(trainer: Any, resume: bool, quiet: bool) -> Any:
    if quiet:
        return trainer.run(resume=resume)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]train {task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:>8.0f} steps/s"), TextColumn("reward {task.fields[reward]}"),
               TimeRemainingColumn()]
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(trainer.cfg.algo, total=trainer.cfg.steps, rate=0.0, reward="-")

        def progress(step: int, total: int, stats: dict) -> None:
            if step % 10 == 0 or step == total:
                r = stats.get("reward")
                bar.update(task, completed=step, rate=stats.get("steps_per_s", 0.0),
                           reward=f"{r:.4g}" if r is not None else "-")

        return trainer.run(resume=resume, progress=progress)


# --------------------------------------------------------------------------- evaluate

@click.command("evaluate")
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--episodes", type=int, default=8, show_default=True, help="Seeded evaluation episodes (one batch).")
@click.option("--seed", type=int, default=12345, show_default=True, help="Seed of the evaluation episodes.")
@click.option("--max-steps", type=int, default=None, help="Cut episodes after this many steps (default: full episodes).")
@click.option("--no-upper", is_flag=True, help="Skip the WMMSE + coordinate-ascent upper reference (slow).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def evaluate(run: Path, episodes: int, seed: int, max_steps: int | None, no_upper: bool, as_json: bool) -> None:
    """Evaluate RUN's actor bundle against the reference decisions on the same seeded episodes."""
    from agents import registry, runs
    from agents.bundle import load_bundle
    from agents.evaluation import bundle_policy, evaluate_policies, reference_policies

    if episodes < 1:
        raise ConfigError(f"--episodes: must be >= 1, got {episodes}")
    if max_steps is not None and max_steps < 1:
        raise ConfigError(f"--max-steps: must be >= 1, got {max_steps}")
    config = runs.load_config(run)
    scenario = config["train"]["scenario"]
    scenario_cfg = registry.rebuild_scenario(scenario, config["scenario"])
    env = registry.make_env(scenario, scenario_cfg, episodes)
    bundle = load_bundle(run / runs.BUNDLE_DIR, env=env, scenario_name=scenario)
    policies = {f"{bundle.algorithm} (bundle)": bundle_policy(bundle),
                **reference_policies(scenario, env, seed, include_upper=not no_upper)}
    results = _evaluate_with_progress(env, policies, seed, max_steps, evaluate_policies)
    report = {"run": str(run), "scenario": scenario, "algorithm": bundle.algorithm, "episodes": episodes,
              "seed": seed, "bundle_hash": bundle.content_hash, "policies": results}
    from agents.runs import write_atomic

    write_atomic(run / "evaluation.json", json.dumps(report, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    _print_table(f"{run}: {episodes} episodes, seed {seed}", results)


def _evaluate_with_progress(env: Any, policies: dict, seed: int, max_steps: int | None, evaluate_policies: Any) -> dict:
    """One policy at a time behind a transient bar on stderr: the WMMSE upper reference alone
    can take minutes on P1, and a silent terminal looks hung (stdout stays clean for --json)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results = {}
    with Progress(TextColumn("[bold]evaluate {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=len(policies))
        for name, policy in policies.items():
            bar.update(task, description=name + (" (slow; --no-upper skips it)" if "upper" in name else ""))
            results.update(evaluate_policies(env, {name: policy}, seed, max_steps))
            bar.advance(task)
    return results


_COLUMNS = (("reward", "reward"), ("sum_rate", "sum rate"), ("rate_mean", "avg user rate"),
            ("satisfied", "users >= R_req"), ("tx_power_w", "tx power W"), ("irs_power_w", "IRS power W"))


def _print_table(title: str, results: dict[str, dict[str, dict[str, float]]]) -> None:
    from rich.console import Console
    from rich.table import Table

    present = [(k, label) for k, label in _COLUMNS if any(k in m for m in results.values())]
    if not present:  # another scenario's metrics: show what it reports
        keys = dict.fromkeys(k for m in results.values() for k in m)
        present = [(k, k) for k in list(keys)[:8]]
    table = Table(title=title)
    table.add_column("policy", no_wrap=True)
    for _, label in present:
        table.add_column(label, justify="right")
    for name, metrics in results.items():
        table.add_row(name, *(f"{metrics[k]['mean']:.3g}±{metrics[k]['std']:.2g}" if k in metrics else "-" for k, _ in present))
    import sys

    # Pipes and CI logs get a wide table instead of rich's 80-column default.
    Console(width=None if sys.stdout.isatty() else 160).print(table)


# --------------------------------------------------------------------------- compare

def _config_value(config: dict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"--sweep: {key!r} is not in the run's config.json (e.g. scenario.n_irs, scenario.p_max_dbm)")
        node = node[part]
    return node


@click.command("compare")
@click.argument("runs_", metavar="RUN...", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Directory for the plots and compare.json.")
@click.option("--metric", "metrics", multiple=True, default=("eval_reward", "eval_sum_rate"), show_default=True,
              help="Learning-curve column(s), repeatable: eval_* from eval.csv (deterministic), others from "
                   "metrics.csv (training). One plot per metric.")
@click.option("--sweep", default=None, metavar="KEY", help="Config key varied across runs (e.g. scenario.n_irs): adds a Fig. 4-like plot.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def compare(runs_: tuple[Path, ...], out: Path | None, metrics: tuple[str, ...], sweep: str | None, as_json: bool) -> None:
    """Compare runs: final evaluation per algorithm (mean and spread over seeds) and learning curves."""
    from click.core import ParameterSource

    from agents import runs
    from agents.evaluation import plot_learning_curves, plot_sweep

    defaulted = click.get_current_context().get_parameter_source("metrics") == ParameterSource.DEFAULT
    curves: dict[str, dict[str, list]] = {m: defaultdict(list) for m in metrics}
    finals: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    sweep_points: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs_:
        config = runs.load_config(run)
        algo = config["train"]["algo"]
        x = None
        if sweep is not None:
            x = _config_value(config, sweep)
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise ConfigError(f"--sweep: {sweep} must be a number in every run, got {x!r} in {run}")
        group = algo if x is None else f"{algo} {sweep.split('.')[-1]}={x:g}"
        last: dict[str, float] = {}
        final_path = run / "final_eval.json"
        final = json.loads(final_path.read_text()) if final_path.is_file() else None
        for metric in metrics:
            csv_path = run / (runs.EVAL_CSV if metric.startswith("eval_") else runs.METRICS_CSV)
            xs, ys = runs.read_series(csv_path, metric)
            if not xs and final is not None and metric in final:
                # A run shorter than --eval-every has no periodic evaluation: its final one is the curve.
                xs, ys = [final.get("step", 0)], [float(final[metric])]
            if not xs:
                if defaulted and metric != metrics[0]:
                    continue  # a default curve this scenario does not report (e.g. no sum rate)
                raise ConfigError(f"{csv_path}: no {metric!r} values; is the run trained (see --metric)?")
            curves[metric][group].append((xs, ys))
            last[metric] = ys[-1]
        final = final if final is not None else last
        for k, v in final.items():
            if k != "step":
                finals[group][k].append(float(v))
        if x is not None:
            sweep_points[algo][float(x)].append(float(final.get("eval_rate_mean", final.get(metrics[0], last[metrics[0]]))))
    metrics = tuple(m for m in metrics if curves[m])
    import numpy as np

    table = {g: {k: {"mean": float(np.mean(v)), "std": float(np.std(v)), "runs": len(v)} for k, v in m.items()}
             for g, m in finals.items()}
    report: dict[str, Any] = {"runs": [str(r) for r in runs_], "metrics": list(metrics), "final": table}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        report["plots"] = [str(plot_learning_curves(curves[m], out / f"learning_curves_{m}.png", ylabel=m)) for m in metrics]
        if sweep is not None:
            report["plots"].append(str(plot_sweep(sweep_points, out / f"sweep_{sweep.split('.')[-1]}.png", xlabel=sweep)))
        runs.write_atomic(out / "compare.json", json.dumps(report, indent=2) + "\n")
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    _print_table(f"final deterministic evaluation over {len(runs_)} runs (mean ± std over runs)",
                 {g: {k.removeprefix("eval_"): v for k, v in m.items()} for g, m in table.items()})
    for p in report.get("plots", []):
        click.echo(f"plot: {p}")
