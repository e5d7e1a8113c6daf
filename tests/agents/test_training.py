import json
import tomllib

import pytest

from agents import runs
from agents.bundle import load_bundle
from agents.training import TrainConfig, Trainer
from controller.cli import main
from tests.agents import toy


@pytest.fixture(autouse=True)
def _toy(monkeypatch):
    toy.register(monkeypatch)


CFG = TrainConfig(scenario="toy", algo="toy", steps=22, num_envs=3, seed=5, log_every=2,
                  eval_every=5, eval_episodes=2, checkpoint_every=4)


def _trainer(path, **changes):
    import dataclasses

    return Trainer(path, dataclasses.replace(CFG, **changes), toy.ToyConfig(), toy.ToyAlgoConfig())


def _outputs(path):
    m = json.loads((path / "bundle" / "manifest.json").read_text())
    return {
        "metrics": (path / runs.METRICS_CSV).read_text(),
        "eval": (path / runs.EVAL_CSV).read_text(),
        "final": (path / "final_eval.json").read_text(),
        "weights": {r: s["sha256"] for r, s in m["roles"].items()},
    }


def test_resumed_runs_equal_an_uninterrupted_run(tmp_path):
    whole = tmp_path / "whole"
    _trainer(whole).run(plot=False)
    reference = _outputs(whole)
    assert reference["metrics"].count("\n") == 1 + 22 // 2 and "algo/loss" in reference["metrics"]

    # 1. interrupted (Ctrl-C) mid-episode at step 13, then resumed from the step-10 checkpoint
    cut = tmp_path / "cut"

    def interrupt(step, total, stats):
        if step == 13:
            raise KeyboardInterrupt

    result = _trainer(cut).run(progress=interrupt, plot=False)
    assert result.interrupted and result.bundle is None
    assert runs.load_checkpoint(cut / runs.CHECKPOINT)["step"] == 10  # the last episode boundary
    assert "12," in (cut / runs.METRICS_CSV).read_text()  # rows past the checkpoint exist ...
    Trainer.from_run_dir(cut).run(resume=True, plot=False)  # ... and are replayed, not duplicated
    assert _outputs(cut) == reference

    # 2. trained for fewer steps, then extended with --steps
    short = tmp_path / "short"
    _trainer(short, steps=12).run(plot=False)
    Trainer.from_run_dir(short, steps=22).run(resume=True, plot=False)
    assert _outputs(short) == reference

    # a different seed gives a different run (the comparison above can fail)
    other = tmp_path / "other"
    _trainer(other, seed=6).run(plot=False)
    assert _outputs(other)["metrics"] != reference["metrics"]


def test_run_directory_contents(tmp_path):
    run = tmp_path / "run"
    _trainer(run, steps=10).run()
    cfg = json.loads((run / runs.CONFIG_JSON).read_text())
    assert cfg["train"]["seed"] == 5 and cfg["scenario"]["n_elements"] == 4 and cfg["algo"]["hidden"] == [16]
    with open(run / runs.CONFIG_TOML, "rb") as f:
        toml_cfg = tomllib.load(f)
    assert toml_cfg["train"] == cfg["train"] and toml_cfg["algo"] == cfg["algo"]
    assert (run / runs.CURVE_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (run / runs.EVAL_CSV).read_text().splitlines()[0].split(",")
    assert header[:3] == ["step", "env_steps", "eval_reward"] and "eval_rate_mean" in header
    rows = runs.MetricsCSV(run / runs.METRICS_CSV).read()
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10]
    assert all(r["env_steps"] == str(int(r["step"]) * 3) for r in rows)
    # the bundle fits the scenario it was trained on, and no temp files are left anywhere
    load_bundle(run / "bundle", env=toy.ToyEnv(2), scenario_name="toy")
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    # starting a new run over an existing one is refused
    with pytest.raises(Exception, match="already holds a run"):
        _trainer(run, steps=10).run()
    # so is a second trainer writing into a directory that another one holds
    with runs.RunLock(run):
        with pytest.raises(Exception, match="another process is training"):
            Trainer.from_run_dir(run, steps=12).run(resume=True)
    Trainer.from_run_dir(run, steps=12).run(resume=True, plot=False)  # the lock is released again


def _cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_train_evaluate_compare(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = _cli(capsys, "train", "--scenario", "toy", "--algo", "toy", "--steps", "10", "--num-envs", "2",
                          "--seed", "1", "--out", str(run), "--eval-every", "5", "--log-every", "5",
                          "--set", "algo.lr=0.05", "--set", "scenario.n_elements=6", "--quiet")
    assert code == 0, err
    assert "bundle:" in out
    cfg = json.loads((run / runs.CONFIG_JSON).read_text())
    assert cfg["algo"]["lr"] == 0.05 and cfg["scenario"]["n_elements"] == 6
    assert load_bundle(run / "bundle").manifest["roles"]["irs"]["arch_kwargs"]["n_elements"] == 6

    code, out, err = _cli(capsys, "evaluate", str(run), "--episodes", "3", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["episodes"] == 3 and "toy (bundle)" in report["policies"]
    assert report["policies"]["toy (bundle)"]["reward"]["episodes"] == 3

    run2 = tmp_path / "run2"
    assert _cli(capsys, "train", "--scenario", "toy", "--algo", "toy", "--steps", "10", "--num-envs", "2",
                "--seed", "2", "--out", str(run2), "--eval-every", "5", "--set", "scenario.n_elements=8", "--quiet")[0] == 0
    plots = tmp_path / "plots"
    code, out, err = _cli(capsys, "compare", str(run), str(run2), "--out", str(plots), "--sweep", "scenario.n_elements", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert set(report["final"]) == {"toy n_elements=6", "toy n_elements=8"}
    assert [p.rsplit("/", 1)[-1] for p in report["plots"]] == [
        "learning_curves_eval_reward.png", "learning_curves_eval_sum_rate.png", "sweep_n_elements.png"]
    for p in report["plots"]:
        assert open(p, "rb").read(4) == b"\x89PNG"


@pytest.mark.parametrize("args, message", [
    (["train", "--scenario", "toy", "--algo", "nope", "--out", "{run}"], "unknown algorithm"),
    (["train", "--scenario", "nowhere", "--algo", "toy", "--out", "{run}"], "unknown scenario"),
    (["train", "--scenario", "toy", "--out", "{run}"], "--algo: required"),
    (["train", "--scenario", "toy", "--algo", "toy", "--out", "{run}", "--set", "lr=1"], "scenario.FIELD=VALUE"),
    (["train", "--scenario", "toy", "--algo", "toy", "--out", "{run}", "--set", "algo.nope=1"], "algo.nope: not a field"),
    (["train", "--scenario", "toy", "--algo", "toy", "--out", "{run}", "--set", "algo.lr=fast"], "cannot read 'fast'"),
    (["train", "--scenario", "toy", "--algo", "toy", "--out", "{run}", "--steps", "0"], "--steps: must be a positive"),
    (["train", "--scenario", "p1", "--algo", "toy", "--out", "{run}", "--set", "scenario.n_users=-1"], "n_users"),
    (["evaluate", "{run}"], "config.json is missing"),
    (["compare", "{run}"], "config.json is missing"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    code, out, err = _cli(capsys, *[a.replace("{run}", str(tmp_path / "run")) for a in args])
    assert code == 2
    assert message in err and err.count("\n") == 1 and err.startswith("ristwin: error:")


def test_cli_resume_refuses_config_changes_and_existing_runs(tmp_path, capsys):
    run = str(tmp_path / "run")
    base = ["train", "--scenario", "toy", "--algo", "toy", "--steps", "5", "--num-envs", "2", "--out", run, "--quiet"]
    assert _cli(capsys, *base)[0] == 0
    code, _, err = _cli(capsys, *base)
    assert code == 2 and "already holds a run" in err
    code, _, err = _cli(capsys, *base, "--resume", "--seed", "9")
    assert code == 2 and "seed" in err and err.count("\n") == 1
    code, out, err = _cli(capsys, "train", "--out", run, "--resume", "--steps", "10", "--quiet")
    assert code == 0, err
    assert runs.MetricsCSV(tmp_path / "run" / runs.METRICS_CSV).read() is not None


def _small_algo_config(cfg_cls):
    """The algorithm's defaults with learning from the first few transitions (fast tests)."""
    import dataclasses

    cfg = cfg_cls()
    small = {"batch_size": 8, "learning_starts": 8, "buffer_size": 500}
    return dataclasses.replace(cfg, **{k: v for k, v in small.items() if hasattr(cfg, k)})


def _home_scenario(algo, cfg_cls):
    """The first scenario (p1..p4) whose environment the algorithm accepts."""
    from agents import registry
    from twin.errors import ConfigError

    algo_cls, _ = registry.algorithm(algo)
    for scenario in ("p1", "p2", "p3", "p4"):
        scenario_cfg = registry.scenario_config(scenario, ["episode_steps=4"])
        try:
            algo_cls(registry.make_env(scenario, scenario_cfg, 2), _small_algo_config(cfg_cls), 0)
        except ConfigError:
            continue
        return scenario, scenario_cfg
    pytest.fail(f"{algo}: no scenario accepts it")


@pytest.mark.parametrize("algo", sorted(set(__import__("agents.registry").registry.ALGORITHMS) - {"toy"}))
def test_registered_algorithm_resumes_exactly(tmp_path, algo):
    """Every registered algorithm on short episodes of its scenario: interrupted + resumed == uninterrupted."""
    import dataclasses

    from agents import registry

    _, cfg_cls = registry.algorithm(algo)
    algo_cfg = _small_algo_config(cfg_cls)
    scenario, scenario_cfg = _home_scenario(algo, cfg_cls)
    cfg = TrainConfig(scenario=scenario, algo=algo, steps=8, num_envs=2, seed=3, log_every=2, eval_every=4,
                      eval_episodes=2, checkpoint_every=4)
    Trainer(tmp_path / "a", cfg, scenario_cfg, algo_cfg).run(plot=False)
    Trainer(tmp_path / "b", dataclasses.replace(cfg, steps=4), scenario_cfg, algo_cfg).run(plot=False)
    Trainer.from_run_dir(tmp_path / "b", steps=8).run(resume=True, plot=False)
    assert _outputs(tmp_path / "b") == _outputs(tmp_path / "a")


def test_reference_decisions_share_episodes_and_rank_sensibly():
    """P1 references on the same seeded episodes: valid actions, identical per-step channels
    (energy-independent quantities agree between policies), full-CSI designs beat random."""
    from agents import registry
    from agents.evaluation import evaluate_policies, p1_reference_policies, rollout

    env = registry.make_env("p1", registry.scenario_config("p1"), 3)
    policies = p1_reference_policies(env, seed=0)
    results = evaluate_policies(env, policies, seed=11, max_steps=2)
    assert set(results) == {"random", "all-on+align+mrt", "all-on+align+zf", "half-on+align+zf", "wmmse+ca (upper)"}
    rate = {k: v["sum_rate"]["mean"] for k, v in results.items()}
    assert rate["wmmse+ca (upper)"] > rate["random"] and rate["all-on+align+mrt"] > rate["random"]
    assert results["half-on+align+zf"]["irs_power_w"]["mean"] < results["all-on+align+zf"]["irs_power_w"]["mean"]
    # same seed -> same episode: a deterministic policy gives identical traces twice
    a = rollout(env, policies["all-on+align+zf"], seed=11, max_steps=2)
    b = rollout(env, policies["all-on+align+zf"], seed=11, max_steps=2)
    assert all((a[k] == b[k]).all() for k in a)


def test_mean_and_spread_interpolates_seeds_on_a_common_grid():
    import numpy as np

    from agents.evaluation import mean_and_spread

    grid, mean, std = mean_and_spread([([0, 10, 20], [0.0, 1.0, 2.0]), ([0, 20, 30], [2.0, 4.0, 9.0])])
    assert grid.tolist() == [0, 10, 20]  # only steps every seed reached
    assert np.allclose(mean, [1.0, 2.0, 3.0]) and np.allclose(std, [1.0, 1.0, 1.0])


def test_cli_config_file_reproduces_a_run(tmp_path, capsys):
    """`--config RUN/config.toml` starts a new run with the same resolved config (and results)."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert _cli(capsys, "train", "--scenario", "toy", "--algo", "toy", "--steps", "10", "--num-envs", "2", "--seed", "4",
                "--out", str(first), "--set", "scenario.n_elements=5", "--set", "algo.hidden=8,8", "--quiet")[0] == 0
    code, _, err = _cli(capsys, "train", "--config", str(first / runs.CONFIG_TOML), "--out", str(second), "--quiet")
    assert code == 0, err
    assert json.loads((second / runs.CONFIG_JSON).read_text()) == json.loads((first / runs.CONFIG_JSON).read_text())
    assert _outputs(second) == _outputs(first)
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nspeed = 3\n")
    code, _, err = _cli(capsys, "train", "--config", str(bad), "--out", str(tmp_path / "x"))
    assert code == 2 and "train.speed" in err and err.count("\n") == 1


def test_cli_evaluate_p1_bundle_against_references(tmp_path, capsys):
    """A P1 bundle of the shared actor classes in a run directory, evaluated next to the references."""
    import torch

    from agents import registry
    from agents.bundle import export_bundle, to_jsonable
    from agents.networks import BeamformerActor, HybridIRSActor

    cfg = registry.scenario_config("p1", ["n_elements=6"])
    env = registry.make_env("p1", cfg, 1)
    torch.manual_seed(0)
    actors = {"irs": HybridIRSActor(env.K + 1, env.N, env.bit_choices), "bs": BeamformerActor(env.K, env.M, env.K, cfg.p_max_w)}
    run = tmp_path / "run"
    export_bundle(run / "bundle", "hand-built", "p1", cfg, actors,
                  {a: "bs" if a == "bs0" else "irs" for a in env.agent_ids}, env.observation_spaces, env.action_spaces)
    runs.save_config(run, {"train": to_jsonable(TrainConfig(scenario="p1", algo="hand-built")), "scenario": to_jsonable(cfg), "algo": {}})
    code, out, err = _cli(capsys, "evaluate", str(run), "--episodes", "2", "--max-steps", "2", "--no-upper", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert set(report["policies"]) == {"hand-built (bundle)", "random", "all-on+align+mrt", "all-on+align+zf", "half-on+align+zf"}
    assert report["bundle_hash"] == load_bundle(run / "bundle").content_hash
    assert json.loads((run / "evaluation.json").read_text()) == report
    # the same bundle against a scenario with another N is refused, naming the field
    cfg_json = json.loads((run / runs.CONFIG_JSON).read_text())
    cfg_json["scenario"]["n_elements"] = 7
    (run / runs.CONFIG_JSON).write_text(json.dumps(cfg_json))
    code, _, err = _cli(capsys, "evaluate", str(run), "--episodes", "1", "--no-upper")
    assert code == 2 and "action_spec" in err and err.count("\n") == 1
