"""Hardware in the loop beyond P1: P3 (STAR-RIS) and P4 (continuous phases) deployments over
ZeroMQ with sim / emulated boards against in-process evaluation, slot by slot."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
import torch

from controller.runlog import read_runlog
from tests.controller.conftest import ZmqBus
from tests.controller.test_runtime import run_deployment


def _export(tmp_path_factory, scenario: str, algo_name: str, craft=None):
    """A deterministic (untrained, seeded) bundle, exported as training does (extra roles too);
    ``craft(actors)`` may set weights first."""
    from agents import registry
    from agents.bundle import export_bundle

    torch.manual_seed(0)
    cfg = registry.scenario_config(scenario)
    env = registry.make_env(scenario, cfg, 1)
    algo_cls, algo_cfg = registry.algorithm(algo_name)
    algo = algo_cls(env, algo_cfg(), 0)
    if craft is not None:
        craft(algo.actors())
    role_of = {a: algo.role_of(a) for a in env.agent_ids}
    obs_specs, action_specs = dict(env.observation_spaces), dict(env.action_spaces)
    extra = getattr(algo, "extra_agents", None)
    for aid, (role, obs_space, action_space) in (extra() if extra else {}).items():
        role_of[aid], obs_specs[aid], action_specs[aid] = role, obs_space, action_space
    path = export_bundle(tmp_path_factory.mktemp(scenario) / "bundle", algo_name, scenario, cfg, algo.actors(),
                         role_of, obs_specs, action_specs)
    return path, tuple(env.agent_ids), env.N


P3_THETA_UP_1 = 6 * 1 + 2       # star0: theta_R += Delta on element 1, every slot
P3_TOGGLE_2 = 6 * 2 + 5         # star1: toggle ON/OFF of element 2, every slot


def _p3_steady_moves(actors):
    """An untrained MAGAR star agent repeats a beta_R move, which no board carries; these
    actors' Q heads (dueling: output 0 is V, 1 + a the advantage of a) pick a phase move
    (star0) and an ON/OFF toggle (star1) instead, so the boards' part is exercised."""
    with torch.no_grad():
        for agent, action in (("star0", P3_THETA_UP_1), ("star1", P3_TOGGLE_2)):
            head = actors[agent].q.body.net[-1]
            head.weight.zero_()
            head.bias.zero_()
            head.bias[1 + action] = 1.0


@pytest.fixture(scope="module")
def p3_bundle(tmp_path_factory):
    return _export(tmp_path_factory, "p3", "magar", craft=_p3_steady_moves)


@pytest.fixture(scope="module")
def p4_bundle(tmp_path_factory):
    return _export(tmp_path_factory, "p4", "mappo")


def in_process(bundle_path, seed, slots, edit=None):
    """The same actors (the daemons' numpy runtime) on the same env, no bus and no boards;
    ``edit(env, actions)`` changes the actions before the step (quantization, stuck elements)."""
    from agents import registry
    from agents.bundle import load_bundle
    from controller.daemon import load_agent_bundle
    from controller.twin_server import _batched_action

    bundle = load_bundle(bundle_path)
    env = registry.make_env(bundle.scenario_name, registry.rebuild_scenario(bundle.scenario_name, bundle.scenario_config), 1)
    deciding = load_agent_bundle(bundle_path)
    obs = env.reset(seed=seed)
    rows = []
    for _ in range(slots):
        actions = {a: _batched_action(a, deciding.decide(a, obs[a][0].numpy()), env.action_spaces[a]) for a in env.agent_ids}
        if edit is not None:
            actions = edit(env, actions)
        result = env.step(actions)
        state = {}
        if hasattr(env, "star_ids"):
            state = {a: (env.theta_idx[0, v].tolist(), env.on[0, v].tolist()) for v, a in enumerate(env.star_ids)}
        rows.append((actions, {a: float(r[0]) for a, r in result.rewards.items()}, state))
        obs = result.obs
    return rows


def deploy(bundle, agents, drivers, tmp_path, slots, delays=None, deadline_s=2.0):
    bus = ZmqBus()
    log = tmp_path / "run.jsonl"
    overrides = {a: {"driver_url": url} for a, url in drivers.items()}
    for a, delay in (delays or {}).items():
        overrides[a]["delay_s"] = delay
    try:
        summary, daemons = asyncio.run(run_deployment(
            bus.cfg, bundle, log, slots, agents=agents, deadline_s=deadline_s, daemon_overrides=overrides))
    finally:
        bus.close()
    assert summary["invalid"] == {}
    assert summary["missed"] == ({} if not delays else {a: slots for a in delays})
    records = read_runlog(log, "slot")
    assert [r["slot"] for r in records] == list(range(slots))
    return records, daemons


def test_p3_deployment_with_sim_boards_equals_in_process(p3_bundle, tmp_path):
    """STAR-RIS increments are on the board's grid (theta_R on the pi/16 grid = 5 bits), so the
    twin stepped with what the boards report equals in-process evaluation exactly."""
    bundle, agents, N = p3_bundle
    slots = 8
    sim = f"sim://?elements={N}&bits=5"
    records, daemons = deploy(bundle, agents, {"star0": sim, "star1": sim}, tmp_path, slots)
    reference = in_process(bundle, 11, slots)
    for rec, (actions, rewards, state) in zip(records, reference):
        assert rec["rewards"] == rewards                                      # every agent, bit-identical
        for a in ("star0", "star1"):
            assert int(rec["agents"][a]["action"]["action"]) == int(actions[a][0])
            applied = rec["agents"][a]["applied"]
            assert applied["bits"] == 5
            assert (applied["phase_idx"], [bool(x) for x in applied["on"]]) == state[a]   # the twin's new state
    # The boards' part moved: star0 walked theta_R of element 1 up, star1 toggled element 2.
    assert [row[2]["star0"][0][1] for row in reference] == list(range(1, slots + 1))
    assert [row[2]["star1"][1][2] for row in reference] == [t % 2 == 0 for t in range(1, slots + 1)]   # starts ON
    assert daemons["star0"].get("unmappable_action", 0) == 0


def _quantize(bits, stuck=()):
    """P4 phases as a b-bit board latches them: the nearest grid point; stuck elements at 0 (ris0)."""
    step = 2 * math.pi / (1 << bits)

    def edit(env, actions):
        out = dict(actions)
        for a in env.ris_ids:
            idx = np.mod(np.rint(actions[a].double().numpy() / step), 1 << bits)
            if a == "ris0":
                idx[:, list(stuck)] = 0
            out[a] = torch.from_numpy((idx * step).astype(np.float32))
        return out
    return edit


def test_p4_deployment_with_sim_boards_equals_quantized_in_process(p4_bundle, tmp_path):
    """P4's continuous phases reach the twin as the boards' 3-bit grid points: the run equals
    in-process evaluation of the same actions rounded to the nearest grid point."""
    bundle, agents, N = p4_bundle
    slots = 6
    sim = f"sim://?elements={N}&bits=1,2,3"
    records, _ = deploy(bundle, agents, {"ris0": sim, "ris1": sim}, tmp_path, slots)
    reference = in_process(bundle, 11, slots, edit=_quantize(3))
    unquantized = in_process(bundle, 11, slots)
    for rec, (actions, rewards, _) in zip(records, reference):
        assert rec["rewards"] == rewards
        for a in ("ris0", "ris1"):
            applied = rec["agents"][a]["applied"]
            assert applied["bits"] == 3 and all(applied["on"])
            latched = (np.asarray(applied["phase_idx"]) * (2 * math.pi / 8)).astype(np.float32)
            np.testing.assert_array_equal(latched, actions[a][0].numpy())      # the nearest grid points
    # Quantization is real: the unquantized policy would have scored differently.
    assert any(rec["reward"] != row[1]["bs0"] for rec, row in zip(records, unquantized))


def test_p4_stuck_element_on_an_emulated_board_shows_in_the_twins_reward(p4_bundle, tmp_path):
    bundle, agents, N = p4_bundle
    slots = 4
    stuck = (0, 5)
    emu = f"emu://?elements={N}&bits=3&wire=0&stuck={','.join(map(str, stuck))}&timeout_ms=50"
    records, _ = deploy(bundle, agents, {"ris0": emu, "ris1": f"sim://?elements={N}&bits=3"}, tmp_path, slots)
    with_stuck = in_process(bundle, 11, slots, edit=_quantize(3, stuck))
    healthy = in_process(bundle, 11, slots, edit=_quantize(3))
    for rec, (_, rewards, _) in zip(records, with_stuck):
        applied = rec["agents"]["ris0"]["applied"]
        assert [applied["phase_idx"][i] for i in stuck] == [0, 0] and all(applied["on"][i] for i in stuck)
        assert rec["rewards"] == rewards                       # the twin evaluated the stuck board
    requested = [r["agents"]["ris0"]["action"]["action"] for r in records]
    assert any(round(float(a[i]) / (2 * math.pi / 8)) % 8 != 0 for a in requested for i in stuck)
    assert any(rec["reward"] != row[1]["bs0"] for rec, row in zip(records, healthy))


def test_p3_stuck_element_shows_in_the_twins_state_and_rewards(p3_bundle, tmp_path):
    """A STAR-RIS board with elements stuck at phase 0, ON: the twin takes theta_R and ON/OFF from
    the board's report, so the stuck elements stay put in its state and its rewards follow."""
    bundle, agents, N = p3_bundle
    slots = 6
    healthy = in_process(bundle, 11, slots)
    touched = {"star0": 1, "star1": 2}          # the elements the crafted actors move
    emu = f"emu://?elements={N}&bits=5&wire=0&timeout_ms=50&stuck=1"
    records, _ = deploy(bundle, agents, {"star0": emu, "star1": f"sim://?elements={N}&bits=5&stuck=2"},
                        tmp_path, slots)
    for rec in records:
        for a, i in touched.items():
            applied = rec["agents"][a]["applied"]
            assert applied["phase_idx"][i] == 0 and applied["on"][i]    # stuck: phase 0, ON

    # The same slots in process, star0 stepped with the logged board reports: identical rewards.
    from agents import registry
    from agents.bundle import load_bundle

    b = load_bundle(bundle)
    env = registry.make_env("p3", registry.rebuild_scenario("p3", b.scenario_config), 1)
    env.reset(seed=11)
    for rec in records:
        acts = {a: torch.tensor([int(rec["agents"][a]["action"]["action"])]) for a in env.agent_ids}
        for a in touched:
            applied = rec["agents"][a]["applied"]
            acts[a] = {"increment": acts[a], "theta_idx": torch.tensor([applied["phase_idx"]]),
                       "on": torch.tensor([applied["on"]]).bool()}
        result = env.step(acts)
        assert {a: float(r[0]) for a, r in result.rewards.items()} == rec["rewards"]
        assert env.theta_idx[0, 0, 1] == 0 and bool(env.on[0, 1, 2])      # the twin's state is stuck too
    assert all(rec["rewards"] != row[1] for rec, row in zip(records, healthy))


def test_p3_silent_surface_latches_the_safe_pattern_in_the_twin(p3_bundle, tmp_path):
    """A STAR daemon that always answers after the deadline never reports an applied config: its
    surface is the safe pattern (all OFF, phase 0) in the twin, with no increment applied."""
    bundle, agents, N = p3_bundle
    slots, deadline = 3, 0.3
    sim = f"sim://?elements={N}&bits=5"
    records, _ = deploy(bundle, agents, {"star0": sim, "star1": sim}, tmp_path, slots,
                        delays={"star1": 2 * deadline}, deadline_s=deadline)

    def star1_safe(env, actions):
        return {**actions, "star1": {"increment": torch.tensor([env.n_star_actions - 1]),
                                     "theta_idx": torch.zeros(1, N, dtype=torch.long),
                                     "on": torch.zeros(1, N, dtype=torch.bool)}}

    reference = in_process(bundle, 11, slots, edit=star1_safe)
    for rec, (_, rewards, state) in zip(records, reference):
        assert rec["missed"] == ["star1"] and rec["agents"]["star1"]["fallback"] == "safe"
        assert rec["agents"]["star1"]["applied"] == {"bits": 5, "phase_idx": [0] * N, "on": [0] * N}
        assert state["star1"] == ([0] * N, [False] * N)
        assert rec["rewards"] == rewards
