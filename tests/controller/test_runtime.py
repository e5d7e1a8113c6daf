"""The decentralized runtime against in-process evaluation, and its faults (in one event loop).

Every daemon has its own transport connection, so messages really cross the bus; the
process-level faults (kill -9, SIGTERM) are in test_processes.py.
"""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
import torch

from controller import messages as m
from controller.daemon import AgentDaemon, DaemonConfig
from controller.runlog import read_runlog
from controller.transports import connect
from controller.twin_server import ServerConfig, TwinServer

AGENTS = ("bs0", "irs0", "irs1")
SIM = "sim://?elements=10&bits=1,2,3"


async def run_deployment(bus_cfg, bundle, runlog, slots, *, seed=11, deadline_s=2.0, period_s=0.0,
                         daemon_overrides=None, during=None, agents=AGENTS):
    """Server + one daemon per agent in this loop; ``during(server)`` runs alongside."""
    server = TwinServer(ServerConfig(bus=bus_cfg, agents=agents, runlog=str(runlog), bundle=str(bundle),
                                     seed=seed, slots=slots, deadline_s=deadline_s, period_s=period_s,
                                     host_hub=False, join_timeout_s=30))
    server_task = asyncio.ensure_future(server.run())
    daemons = []
    for a in agents:
        cfg = DaemonConfig(bus=bus_cfg, agent=a, bundle=str(bundle), driver_url=SIM if a.startswith("irs") else "")
        if daemon_overrides and a in daemon_overrides:
            cfg = dataclasses.replace(cfg, **daemon_overrides[a])
        daemons.append(AgentDaemon(cfg))
    tasks = [asyncio.ensure_future(d.run()) for d in daemons]
    extra = asyncio.ensure_future(during(server, daemons)) if during else None
    summary = await server_task
    if extra is not None:
        await extra
    for d in daemons:
        d.stop()
    results = await asyncio.gather(*tasks)
    return summary, {r["agent"]: r for r in results}


async def run_with_rogue(server, daemons, rogue):
    """Run the server and the daemons next to a rogue client's coroutine; the server's summary
    and each daemon's result by agent id."""
    server_task = asyncio.ensure_future(server.run())
    tasks = [asyncio.ensure_future(d.run()) for d in daemons]
    rogue_task = asyncio.ensure_future(rogue)
    summary = await server_task
    await rogue_task
    for d in daemons:
        d.stop()
    return summary, {r["agent"]: r for r in await asyncio.gather(*tasks)}


def reference_run(bundle_path, seed, slots, backend="runtime"):
    """Centralized in-process evaluation: the same actors on the same env, no bus. ``runtime``
    decides with what the daemons execute (controller.daemon.load_agent_bundle: the numpy
    runtime), ``torch`` with the bundle's torch actors (agents.evaluation.bundle_policy)."""
    from agents import registry
    from agents.bundle import load_bundle
    from agents.evaluation import bundle_policy
    from controller.daemon import load_agent_bundle
    from controller.twin_server import _batched_action

    bundle = load_bundle(bundle_path)
    cfg = registry.rebuild_scenario(bundle.scenario_name, bundle.scenario_config)
    env = registry.make_env(bundle.scenario_name, cfg, 1)
    if backend == "torch":
        policy = bundle_policy(bundle)
    else:
        deciding = load_agent_bundle(bundle_path)

        def policy(env, obs):
            return {a: _batched_action(a, deciding.decide(a, obs[a][0].numpy()), env.action_spaces[a])
                    for a in env.agent_ids}
    obs = env.reset(seed=seed)
    rows = []
    for _ in range(slots):
        actions = policy(env, obs)
        result = env.step(actions)
        rows.append((actions, float(result.rewards["bs0"][0]), float(result.info["sum_rate"][0])))
        obs = result.obs
    return rows


def test_decentralized_equals_in_process(bus, p1_bundle, tmp_path):
    slots = 12
    log = tmp_path / "run.jsonl"
    summary, daemons = asyncio.run(run_deployment(bus.cfg, p1_bundle, log, slots))
    assert summary["slots"] == slots and summary["missed"] == {}
    records = read_runlog(log, "slot")
    assert [r["slot"] for r in records] == list(range(slots))       # one entry per slot
    reference = reference_run(p1_bundle, 11, slots)
    for rec, (actions, reward, sum_rate) in zip(records, reference):
        assert rec["reward"] == reward                              # bit-identical, slot by slot
        assert rec["metrics"]["sum_rate"] == sum_rate
        np.testing.assert_array_equal(np.asarray(rec["agents"]["bs0"]["action"]["V"], np.float32),
                                      actions["bs0"]["V"][0].numpy())
        for irs in ("irs0", "irs1"):
            applied = rec["agents"][irs]["applied"]
            assert applied["bits"] == int(actions[irs]["bits"][0])
            assert applied["phase_idx"] == actions[irs]["phase_idx"][0].tolist()
            assert applied["on"] == actions[irs]["on"][0].tolist()
    # The runtime the daemons use decides like the bundle's torch actors: discrete choices exactly,
    # beams to float32 rounding.
    for rec, (actions, reward, sum_rate) in zip(records, reference_run(p1_bundle, 11, slots, backend="torch")):
        np.testing.assert_allclose(rec["reward"], reward, rtol=1e-4)
        np.testing.assert_allclose(np.asarray(rec["agents"]["bs0"]["action"]["V"], np.float32),
                                   actions["bs0"]["V"][0].numpy(), rtol=1e-4, atol=1e-6)
        for irs in ("irs0", "irs1"):
            assert rec["agents"][irs]["applied"]["phase_idx"] == actions[irs]["phase_idx"][0].tolist()
    # The BS saw the surfaces' reported states over the bus (its paper allows it); surfaces did not.
    assert daemons["bs0"]["peer_msgs"] >= 2 * slots
    assert "peer_msgs" not in daemons["irs0"]


def test_late_agent_never_stalls_the_slot(p1_bundle, tmp_path):
    from tests.controller.conftest import ZmqBus

    bus = ZmqBus()
    try:
        log = tmp_path / "run.jsonl"
        slots, deadline = 6, 0.3
        summary, _ = asyncio.run(run_deployment(
            bus.cfg, p1_bundle, log, slots, deadline_s=deadline,
            daemon_overrides={"irs1": {"delay_s": 2 * deadline}}))
    finally:
        bus.close()
    records = read_runlog(log, "slot")
    assert len(records) == slots
    # irs1 answers after every deadline: every slot closes without it, its surface holds / goes safe.
    assert all(r["missed"] == ["irs1"] for r in records)
    assert records[0]["agents"]["irs1"]["fallback"] == "safe"   # nothing applied yet
    assert summary["missed"] == {"irs1": slots}
    assert summary["late"].get("irs1", 0) >= 1                 # its late answers arrived and were counted
    assert all(r["agents"]["irs0"]["answered"] for r in records)
    walls = np.diff([r["t"] for r in records])
    assert walls.max() < 1.5 * 2 * deadline + 1.0              # a slot costs about one deadline, not the delay chain


JUNK = [b"", b"\xc1", b"\x81\xa1v\x01", m.encode(m.Control("stop"))[:-1], b"\x92" * 1000]


async def publish_junk(cfg, server, topics, then=None) -> None:
    """From slot 2 on, a rogue client publishes every JUNK payload on every topic, then
    ``then(rogue)`` if given, and leaves."""
    rogue = await connect(cfg, "rogue")
    try:
        while server.slot < 2:
            await asyncio.sleep(0.01)
        for payload in JUNK:
            for topic in topics:
                await rogue.publish(topic, payload)
        if then is not None:
            await then(rogue)
        await asyncio.sleep(0.2)
    finally:
        await rogue.close()


def test_malformed_and_spoofed_messages_are_dropped_and_counted(bus, p1_bundle, tmp_path):
    slots = 8

    async def attack(server, daemons):
        async def spoof(rogue):   # a valid action for irs0 sent on irs1's topic: a spoof, not an answer
            await rogue.publish("act/irs1", m.encode(m.Action(server.slot, "irs0", {}, None)))

        await publish_junk(bus.cfg, server, ("act/irs0", "obs/irs0", "obs/bs0", "hello/irs0", "hb/irs1", "ctl/all",
                                             "welcome/irs0"), then=spoof)

    summary, daemons = asyncio.run(run_deployment(bus.cfg, p1_bundle, tmp_path / "run.jsonl", slots,
                                                  period_s=0.1, during=attack))
    assert summary["slots"] == slots and summary["missed"] == {}
    assert summary["dropped"]["malformed"] >= 5                 # act/ + hello/ + hb/ junk at the server
    assert summary["dropped"]["spoofed"] == 1
    assert daemons["irs0"]["malformed"] >= 5                    # obs/irs0 + ctl/ + welcome junk
    assert daemons["bs0"]["malformed"] >= 5
    assert "ctl_stop" not in daemons["irs0"]                    # a truncated control message is not obeyed
    assert len(read_runlog(tmp_path / "run.jsonl", "slot")) == slots


@pytest.mark.mqtt
def test_mqtt_broker_restart_mid_run(mosquitto, p1_bundle, tmp_path):
    from controller.transports import BusConfig

    cfg = BusConfig(kind="mqtt", mqtt_port=mosquitto.port, deployment="restart")
    slots = 30

    async def restart(server, daemons):
        while server.slot < 5:
            await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(None, mosquitto.restart)

    log = tmp_path / "run.jsonl"
    summary, _ = asyncio.run(run_deployment(cfg, p1_bundle, log, slots, deadline_s=0.3, period_s=0.1,
                                            during=restart))
    records = read_runlog(log, "slot")
    assert [r["slot"] for r in records] == list(range(slots))
    assert records[-1]["missed"] == [] and records[-2]["missed"] == []   # ... and everyone came back
    assert summary["transport"]["reconnects"] >= 1


def test_safe_mode_control_switches_the_fallback(p1_bundle, tmp_path):
    from tests.controller.conftest import ZmqBus

    bus = ZmqBus()

    async def safe_then_silence(server, daemons):
        ops = await connect(bus.cfg, "operator")
        try:
            while server.slot < 2:
                await asyncio.sleep(0.01)
            await ops.publish("ctl/irs0", m.encode(m.Control("safe", target="irs0")))
            while server.slot < 5:
                await asyncio.sleep(0.01)
        finally:
            await ops.close()

    try:
        log = tmp_path / "run.jsonl"
        asyncio.run(run_deployment(bus.cfg, p1_bundle, log, 7, period_s=0.1, during=safe_then_silence))
    finally:
        bus.close()
    records = read_runlog(log, "slot")
    last = records[-1]["agents"]["irs0"]["applied"]
    assert last["on"] == [False] * 10                          # safe pattern latched and reported


def test_surface_observation_uses_the_boards_energy_report(p1_bundle, tmp_path):
    from tests.controller.conftest import ZmqBus

    bus = ZmqBus()
    shared = []

    async def listen(server, daemons):
        peer = await connect(bus.cfg, "listener")
        try:
            sub = await peer.subscribe("share/irs0")
            while server.slot < 4:
                try:
                    topic, payload = await sub.get(0.2)
                    shared.append(m.decode(payload))
                except asyncio.TimeoutError:
                    pass
        finally:
            await peer.close()

    board = "sim://?elements=10&bits=1,2,3&energy_uj=4200&harvest_uw=0&switch_nj=0"
    try:
        log = tmp_path / "run.jsonl"
        asyncio.run(run_deployment(bus.cfg, p1_bundle, log, 6, period_s=0.1, during=listen,
                                   daemon_overrides={"irs0": {"driver_url": board}}))
    finally:
        bus.close()
    assert shared and all(isinstance(o, m.Observation) and o.agent == "irs0" for o in shared)
    # The board holds 4.2 mJ = 4.2 energy units of the preset: that, not the twin's buffer, is E_l.
    assert all(o.obs[-1] == pytest.approx(4.2, abs=1e-5) for o in shared)
    twin_energy = [r["metrics"]["energy"][0] for r in read_runlog(log, "slot")]
    assert any(abs(e - 4.2) > 1e-3 for e in twin_energy)


def test_curve_secured_run(p1_bundle, tmp_path):
    from controller.security import generate_curve_keys
    from controller.transports import BusConfig
    from controller.transports.zmq_bus import ZmqHub

    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    allowed.mkdir()
    generate_curve_keys(keys, "hub")
    generate_curve_keys(keys, "agents")
    (allowed / "agents.key").write_text((keys / "agents.key").read_text())
    hub = ZmqHub(BusConfig(pub_port=0, sub_port=0, curve_server_secret=str(keys / "hub.key_secret"),
                           curve_allowed_dir=str(allowed))).start()
    cfg = BusConfig(pub_port=hub.pub_port, sub_port=hub.sub_port, curve_server_public=str(keys / "hub.key"),
                    curve_client_secret=str(keys / "agents.key_secret"))
    try:
        log = tmp_path / "run.jsonl"
        summary, _ = asyncio.run(run_deployment(cfg, p1_bundle, log, 4))
    finally:
        hub.close()
    assert summary["slots"] == 4 and summary["missed"] == {}
    assert hub.auth_denied == 0


def test_invalid_action_is_a_miss_not_a_crash(p1_bundle, tmp_path):
    """A daemon that reports a configuration the twin cannot take (wrong element count) or a
    beamformer out of the box is counted invalid; its device falls back, the slot goes on."""
    from tests.controller.conftest import ZmqBus
    from twin.surface_config import SurfaceConfig

    bus = ZmqBus()

    async def impostor(server, daemons):
        rogue = await connect(bus.cfg, "rogue")
        try:
            for slot in range(1, 4):
                while server.slot < slot:
                    await asyncio.sleep(0.005)
                bad_cfg = SurfaceConfig(1, np.zeros(7, np.int64), np.ones(7, bool))   # N = 7, not 10
                await rogue.publish("act/irs1", m.encode(m.Action(slot, "irs1", {}, bad_cfg)))
                huge_v = np.full((2, 4, 4), 1e6, np.float32)
                await rogue.publish("act/bs0", m.encode(m.Action(slot, "bs0", {"V": huge_v}, None)))
        finally:
            await rogue.close()

    try:
        log = tmp_path / "run.jsonl"
        # The real irs1 / bs0 daemons are slowed so the impostor's answers come first.
        summary, _ = asyncio.run(run_deployment(
            bus.cfg, p1_bundle, log, 5, deadline_s=0.4, period_s=0.05, during=impostor,
            daemon_overrides={"irs1": {"delay_s": 0.2}, "bs0": {"delay_s": 0.2}}))
    finally:
        bus.close()
    records = read_runlog(log, "slot")
    assert len(records) == 5
    assert summary["invalid"].get("irs1", 0) >= 1 and summary["invalid"].get("bs0", 0) >= 1
    hit = [r for r in records if "invalid" in r["agents"]["irs1"]]
    assert hit and all("irs1" in r["missed"] for r in hit)
    assert all(r["agents"]["irs0"]["answered"] and "irs0" not in r["missed"] for r in records)


def test_p2_bundle_runs_decentralized_like_in_process(tmp_path):
    """Scenarios without boards in the loop (P2: two BSs, MDLBI) run their actions through the
    bus unchanged and still match in-process evaluation slot by slot."""
    from agents import registry
    from agents.bundle import export_bundle
    from tests.controller.conftest import ZmqBus

    torch.manual_seed(0)
    cfg = registry.scenario_config("p2")
    env = registry.make_env("p2", cfg, 1)
    algo_cls, algo_cfg = registry.algorithm("mdlbi")
    algo = algo_cls(env, algo_cfg(), 0)
    bundle = export_bundle(tmp_path / "bundle", "mdlbi", "p2", cfg, algo.actors(),
                           {a: algo.role_of(a) for a in env.agent_ids}, env.observation_spaces, env.action_spaces)
    bus = ZmqBus()
    slots = 5
    try:
        summary, daemons = asyncio.run(run_deployment(bus.cfg, bundle, tmp_path / "run.jsonl", slots,
                                                      agents=tuple(env.agent_ids)))
    finally:
        bus.close()
    assert summary["missed"] == {}
    records = read_runlog(tmp_path / "run.jsonl", "slot")
    reference = reference_run(bundle, 11, slots)
    for rec, (actions, reward, sum_rate) in zip(records, reference):
        assert rec["reward"] == reward and set(rec["rewards"]) == {"bs0", "bs1"}
        for a in env.agent_ids:
            for key, value in actions[a].items():
                np.testing.assert_array_equal(np.asarray(rec["agents"][a]["action"][key], np.float32), value[0].numpy())
    assert daemons["bs0"]["peer_msgs"] >= slots          # bs0 overheard bs1's claims on the bus


def test_daemons_outlive_a_twin_server_restart_and_wait_for_a_late_hub(p1_bundle, tmp_path):
    """Daemons started before any hub exists wait for it (probe, then retries); a second server
    run finds them again (it asks for hellos with ctl start) without restarting a daemon."""
    from controller.transports import BusConfig
    from tests.controller.conftest import free_port

    bus = BusConfig(pub_port=free_port(), sub_port=free_port())

    async def main():
        daemons = [AgentDaemon(DaemonConfig(bus=bus, agent=a, bundle=str(p1_bundle),
                                            driver_url=SIM if a != "bs0" else "")) for a in AGENTS]
        tasks = [asyncio.ensure_future(d.run()) for d in daemons]
        await asyncio.sleep(1.0)                                   # no hub yet: daemons retry
        summaries = []
        for run in range(2):                                       # two servers, one after the other
            server = TwinServer(ServerConfig(bus=bus, agents=AGENTS, runlog=str(tmp_path / f"run{run}.jsonl"),
                                             bundle=str(p1_bundle), seed=run, slots=3, deadline_s=2.0,
                                             join_timeout_s=40))
            summaries.append(await server.run())                  # hosts the hub while it runs
        for d in daemons:
            d.stop()
        return summaries, await asyncio.gather(*tasks)

    summaries, results = asyncio.run(main())
    assert [s["slots"] for s in summaries] == [3, 3] and all(s["missed"] == {} for s in summaries)
    assert all(r["answered"] == 6 for r in results)                # the same daemons served both runs


def test_impostor_claiming_another_agents_id_is_dropped_and_counted(p1_bundle, tmp_path):
    """CURVE with identity binding: irs0's key cannot speak for irs1 (nor for the twin)."""
    from tests.controller.conftest import connect_when_up, curve_buses

    keys, hub_side, client = curve_buses(tmp_path / "keys", AGENTS)
    slots = 12
    server = TwinServer(ServerConfig(bus=hub_side, agents=AGENTS, runlog=str(tmp_path / "run.jsonl"),
                                     bundle=str(p1_bundle), seed=11, slots=slots, deadline_s=2.0, period_s=0.05,
                                     host_hub=True, join_timeout_s=30,
                                     agent_keys={a: str(keys / f"{a}.key") for a in AGENTS}))
    daemons = [AgentDaemon(DaemonConfig(bus=dataclasses.replace(client, curve_client_secret=str(keys / f"{a}.key_secret")),
                                        agent=a, bundle=str(p1_bundle), driver_url=SIM if a != "bs0" else ""))
               for a in AGENTS]
    sent = []

    async def impostor():
        # A legitimate member (irs0's key) claims irs1's answers, hello and observation.
        rogue_cfg = dataclasses.replace(client, curve_client_secret=str(keys / "irs0.key_secret"))
        rogue = await connect_when_up(rogue_cfg, "rogue")
        try:
            while server.slot < slots - 4:        # the last forgeries reach the hub slots before the end
                slot = server._open_slot
                if slot >= 2 and slot not in sent:
                    fake = m.Action(slot, "irs1", {}, None)
                    await rogue.publish("act/irs1", m.encode(fake))
                    await rogue.publish("hello/irs1", m.encode(m.Hello("irs1", "irs1", 1, "", "rogue")))
                    await rogue.publish("obs/irs1", m.encode(m.Observation(slot, "irs1", np.zeros(5, np.float32), 1e12)))
                    sent.append(slot)
                await asyncio.sleep(0.002)
        finally:
            await rogue.close()

    summary, results = asyncio.run(run_with_rogue(server, daemons, impostor()))
    assert len(sent) >= 3
    assert server.hub.impostors["irs0"] == 3 * len(sent)            # every forged publish dropped at the hub ...
    assert summary["dropped"]["impostor"] == 3 * len(sent)          # ... and counted in the run's summary
    assert summary["slots"] == slots and summary["missed"] == {}    # the run went on
    assert summary["rejoins"] == {} and "spoofed" not in summary["dropped"]
    assert results["irs1"]["answered"] == slots                     # irs1 never saw the forged observations
    records = read_runlog(tmp_path / "run.jsonl", "slot")
    reference = reference_run(p1_bundle, 11, slots)
    assert [r["reward"] for r in records] == [ref[1] for ref in reference]   # only the real answers counted


@pytest.mark.mqtt
def test_mqtt_acl_keeps_each_agent_to_its_own_topics(p1_bundle, tmp_path):
    """Per-agent MQTT users: the ACL the deployment gives its broker drops irs0 speaking for irs1."""
    import os
    import subprocess

    from controller.deploy import broker_config_text, load_deployment
    from tests.controller.conftest import MOSQUITTO, free_port

    for user in ("twin", *AGENTS):
        pw = tmp_path / f"{user}.pw"
        pw.write_text(f"pw-{user}-{os.urandom(4).hex()}\n")
        os.chmod(pw, 0o600)
    port = free_port()
    slots = 10
    agents_toml = "".join(
        f'\n[[agent]]\nid = "{a}"\nusername = "{a}"\npassword_file = "{a}.pw"\n'
        + (f'driver = "{SIM}"\n' if a != "bs0" else "") for a in AGENTS)
    toml = tmp_path / "acl.toml"
    toml.write_text(f"""
[deployment]
name = "acl"
bundle = "{p1_bundle}"
seed = 11
slots = {slots}
deadline_ms = 2000
period_ms = 50
runlog = "run.jsonl"

[transport]
kind = "mqtt"
broker = true
mqtt_port = {port}
username = "twin"
password_file = "twin.pw"
""" + agents_toml)
    dep = load_deployment(toml)
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(broker_config_text(dep, tmp_path) + "log_dest none\n")
    assert "topic write ristwin/acl/act/irs1" in (tmp_path / "mosquitto.acl").read_text()
    assert "pw-irs1" not in (tmp_path / "mosquitto.passwd").read_text()      # hashed, not plain
    broker = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sent = []
    try:
        server = TwinServer(dataclasses.replace(dep.server_config(), join_timeout_s=30))
        daemons = [AgentDaemon(dep.daemon_config(a)) for a in AGENTS]
        irs1_seen = []

        async def impostor():
            rogue_cfg = dep.daemon_config("irs0").bus                        # irs0's own, valid login
            rogue = None
            while rogue is None:
                try:
                    rogue = await connect(rogue_cfg, "rogue")
                except Exception:
                    await asyncio.sleep(0.1)
            spy = await rogue.subscribe("obs/irs1")                           # not irs0's to read either
            try:
                while server.slot < slots - 2:
                    slot = server._open_slot
                    if slot >= 2 and slot not in sent:
                        await rogue.publish("act/irs1", m.encode(m.Action(slot, "irs1", {}, None)))
                        await rogue.publish("hello/irs1", m.encode(m.Hello("irs1", "irs1", 1, "", "rogue")))
                        await rogue.publish("obs/irs1", m.encode(m.Observation(slot, "irs1", np.zeros(5, np.float32), 1e12)))
                        sent.append(slot)
                    while not spy.queue.empty():
                        irs1_seen.append(spy.queue.get_nowait())
                    await asyncio.sleep(0.002)
            finally:
                await rogue.close()

        summary, results = asyncio.run(asyncio.wait_for(run_with_rogue(server, daemons, impostor()), 90))
    finally:
        broker.terminate()
        broker.wait(10)
    assert len(sent) >= 3
    assert summary["slots"] == slots and summary["missed"] == {}     # the run went on
    assert summary["rejoins"] == {} and "spoofed" not in summary["dropped"] and summary["late"] == {}
    assert results["irs1"]["answered"] == slots                      # the forged observations never reached irs1
    assert irs1_seen == []                                           # nor could irs0 read irs1's observations
    records = read_runlog(dep.runlog, "slot")
    reference = reference_run(p1_bundle, 11, slots)
    assert [r["reward"] for r in records] == [ref[1] for ref in reference]   # only the real answers counted
