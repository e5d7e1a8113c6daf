"""The ZeroMQ slot fast path without an event loop: ``AgentDaemon.run_sync`` (what a ``ristwin
agent`` process runs on a ZeroMQ bus) and its client, ``ZmqSyncClient``.

The daemons run in threads next to the twin server's event loop, each with its own bus
connection, so every message crosses the hub. The process-level behaviour of the same path
(kill -9 and rejoin, SIGTERM hold / safe, the warm spare) is in test_processes.py, whose
daemon processes run it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import numpy as np
import pytest

from controller import messages as m
from controller.daemon import AgentDaemon, DaemonConfig
from controller.runlog import read_runlog
from controller.transports import BusConfig
from controller.transports.zmq_sync import ZmqSyncClient
from controller.twin_server import ServerConfig, TwinServer
from tests.controller.conftest import ZmqBus, blocking_hub, connect_when_up, curve_buses, free_port, hub_owner
from tests.controller.test_runtime import AGENTS, SIM, publish_junk, reference_run


class SyncDaemons:
    """One ``run_sync`` daemon per agent, each in its own thread."""

    def __init__(self, configs: list[DaemonConfig]) -> None:
        self.daemons = [AgentDaemon(c) for c in configs]
        self.results: dict[str, dict] = {}
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(d,), daemon=True) for d in self.daemons]
        for t in self.threads:
            t.start()

    def _run(self, daemon: AgentDaemon) -> None:
        try:
            self.results[daemon.agent] = daemon.run_sync()
        except BaseException as exc:   # surfaced by stop()
            self.errors.append(exc)

    def stop(self, timeout: float = 5.0) -> float:
        """Stop every daemon; the seconds until all threads ended."""
        t0 = time.monotonic()
        for d in self.daemons:
            d.stop()
        for t in self.threads:
            t.join(timeout)
        assert not any(t.is_alive() for t in self.threads), "a sync daemon did not stop"
        assert not self.errors, self.errors
        return time.monotonic() - t0


def daemon_configs(bus_cfg, bundle, overrides=None, agents=AGENTS) -> list[DaemonConfig]:
    configs = []
    for a in agents:
        cfg = DaemonConfig(bus=bus_cfg, agent=a, bundle=str(bundle), driver_url=SIM if a.startswith("irs") else "")
        configs.append(dataclasses.replace(cfg, **(overrides or {}).get(a, {})))
    return configs


def run_server(server: TwinServer, during=None) -> dict:
    async def main():
        task = asyncio.ensure_future(server.run())
        if during is not None:
            await during(server)
        return await task

    return asyncio.run(main())


def server_for(bus_cfg, bundle, runlog, slots, **kw) -> TwinServer:
    cfg = dict(bus=bus_cfg, agents=AGENTS, runlog=str(runlog), bundle=str(bundle), seed=11, slots=slots,
               deadline_s=2.0, host_hub=False, join_timeout_s=30)
    cfg.update(kw)
    return TwinServer(ServerConfig(**cfg))


def test_sync_daemons_equal_in_process(p1_bundle, tmp_path):
    bus = ZmqBus()
    slots = 12
    try:
        daemons = SyncDaemons(daemon_configs(bus.cfg, p1_bundle))
        summary = run_server(server_for(bus.cfg, p1_bundle, tmp_path / "run.jsonl", slots))
        stop_s = daemons.stop()
    finally:
        bus.close()
    assert summary["slots"] == slots and summary["missed"] == {} and summary["late"] == {}
    records = read_runlog(tmp_path / "run.jsonl", "slot")
    assert [r["slot"] for r in records] == list(range(slots))
    reference = reference_run(p1_bundle, 11, slots)
    for rec, (actions, reward, sum_rate) in zip(records, reference):
        assert rec["reward"] == reward and rec["metrics"]["sum_rate"] == sum_rate   # bit-identical
        np.testing.assert_array_equal(np.asarray(rec["agents"]["bs0"]["action"]["V"], np.float32),
                                      actions["bs0"]["V"][0].numpy())
        for irs in ("irs0", "irs1"):
            assert rec["agents"][irs]["applied"]["phase_idx"] == actions[irs]["phase_idx"][0].tolist()
    results = daemons.results
    assert all(results[a]["answered"] == slots for a in AGENTS)
    # The BS read the surfaces' reports from its quiet socket; the surfaces read no peers.
    assert results["bs0"]["peer_msgs"] == 2 * slots
    assert "peer_msgs" not in results["irs0"]
    assert stop_s < 2.0                                          # stop() wakes the blocking poll


def test_sync_late_agent_never_stalls_the_slot(p1_bundle, tmp_path):
    bus = ZmqBus()
    slots, deadline = 5, 0.3
    try:
        daemons = SyncDaemons(daemon_configs(bus.cfg, p1_bundle, {"irs1": {"delay_s": 2 * deadline}}))
        summary = run_server(server_for(bus.cfg, p1_bundle, tmp_path / "run.jsonl", slots, deadline_s=deadline))
        daemons.stop()
    finally:
        bus.close()
    records = read_runlog(tmp_path / "run.jsonl", "slot")
    assert all(r["missed"] == ["irs1"] for r in records)
    assert summary["late"].get("irs1", 0) >= 1
    # A slow daemon answers only the newest of the observations queued meanwhile.
    assert daemons.results["irs1"].get("skipped_stale", 0) + daemons.results["irs1"].get("late_observation", 0) >= 1
    assert all(r["agents"]["irs0"]["answered"] for r in records)


def test_sync_daemons_drop_and_count_junk(p1_bundle, tmp_path):
    bus = ZmqBus()
    slots = 8

    async def attack(server):
        async def oversized(rogue):
            await rogue.publish("obs/irs0", b"\x00" * (m.MAX_MESSAGE_BYTES + 1))

        await publish_junk(bus.cfg, server, ("obs/irs0", "obs/bs0", "ctl/all", "welcome/irs0", "act/irs0", "obs/irs01"),
                           then=oversized)

    try:
        daemons = SyncDaemons(daemon_configs(bus.cfg, p1_bundle))
        summary = run_server(server_for(bus.cfg, p1_bundle, tmp_path / "run.jsonl", slots, period_s=0.1),
                             during=attack)
        daemons.stop()
    finally:
        bus.close()
    assert summary["slots"] == slots and summary["missed"] == {}
    irs0, bs0 = daemons.results["irs0"], daemons.results["bs0"]
    assert irs0["malformed"] >= 5 and bs0["malformed"] >= 5      # obs/ + ctl/ + welcome junk, never a crash
    assert "ctl_stop" not in irs0                                # a truncated control is not obeyed
    assert irs0["transport"]["dropped_oversized"] == 1
    # bs0's peers' junk on act/irs0 was counted after its answers; obs/irs01 is not irs0's topic.
    assert bs0["malformed"] >= 10
    assert irs0["answered"] == slots


def test_sync_daemons_with_curve_identity_binding(p1_bundle, tmp_path):
    """CURVE on the sync path: each daemon authenticates with its own key; a member claiming
    another agent's id is dropped at the hub and counted, and the run goes on."""
    keys, hub_side, client = curve_buses(tmp_path / "keys", AGENTS)
    slots = 10
    server = server_for(hub_side, p1_bundle, tmp_path / "run.jsonl", slots, period_s=0.05, host_hub=True,
                        agent_keys={a: str(keys / f"{a}.key") for a in AGENTS})
    configs = [dataclasses.replace(c, bus=dataclasses.replace(client, curve_client_secret=str(keys / f"{c.agent}.key_secret")))
               for c in daemon_configs(client, p1_bundle)]
    sent = []

    async def impostor(server):
        rogue_cfg = dataclasses.replace(client, curve_client_secret=str(keys / "irs0.key_secret"))
        rogue = await connect_when_up(rogue_cfg, "rogue")
        try:
            while server.slot < slots - 3:
                slot = server._open_slot
                if slot >= 2 and slot not in sent:
                    await rogue.publish("act/irs1", m.encode(m.Action(slot, "irs1", {}, None)))
                    await rogue.publish("obs/irs1", m.encode(m.Observation(slot, "irs1", np.zeros(5, np.float32), 1e12)))
                    sent.append(slot)
                await asyncio.sleep(0.002)
        finally:
            await rogue.close()

    daemons = SyncDaemons(configs)
    summary = run_server(server, during=impostor)
    daemons.stop()
    assert len(sent) >= 3
    assert summary["dropped"]["impostor"] == 2 * len(sent)
    assert summary["slots"] == slots and summary["missed"] == {}
    assert daemons.results["irs1"]["answered"] == slots            # the forged observations never reached irs1
    records = read_runlog(tmp_path / "run.jsonl", "slot")
    assert [r["reward"] for r in records] == [ref[1] for ref in reference_run(p1_bundle, 11, slots)]


def test_sync_daemons_wait_for_a_late_hub_and_outlive_a_server_restart(p1_bundle, tmp_path):
    bus = BusConfig(pub_port=free_port(), sub_port=free_port())
    daemons = SyncDaemons(daemon_configs(bus, p1_bundle))
    time.sleep(1.0)                                                 # no hub yet: the daemons retry
    summaries = []
    for run in range(2):                                            # two servers, each hosting the hub
        server = server_for(bus, p1_bundle, tmp_path / f"run{run}.jsonl", 3, seed=run, host_hub=True,
                            join_timeout_s=40)
        summaries.append(run_server(server))
    daemons.stop()
    assert [s["slots"] for s in summaries] == [3, 3] and all(s["missed"] == {} for s in summaries)
    assert all(r["answered"] == 6 for r in daemons.results.values())  # the same daemons served both runs
    assert all(r["ctl_start"] >= 1 for r in daemons.results.values())


@pytest.mark.parametrize("by_slack,blocking", [(True, False), (True, True), (False, True)])
def test_an_agent_with_slack_gets_its_observation_later(p1_bundle, tmp_path, by_slack, blocking):
    """Surfaces whose board takes 40 ms per apply and a BS that decides in well under 1 ms: from
    the second slot on, the BS's observation goes out half its slack later (ServerConfig.
    release_by_slack), and its answer still comes before the surfaces', so the slot is no
    longer; off, every observation goes out at the slot's start."""
    slow = SIM + "&latency_ms=40"
    slots = 6
    # blocking: the server hosts the hub and blocks on its sockets (``ristwin twin-server``)
    bus = BusConfig(pub_port=free_port(), sub_port=free_port()) if blocking else ZmqBus()
    bus_cfg = bus if blocking else bus.cfg
    try:
        configs = [dataclasses.replace(c, driver_url=slow) if c.agent != "bs0" else c
                   for c in daemon_configs(bus_cfg, p1_bundle)]
        daemons = SyncDaemons(configs)
        summary = run_server(server_for(bus_cfg, p1_bundle, tmp_path / "run.jsonl", slots, release_by_slack=by_slack,
                                        host_hub=blocking, blocking_collect=blocking))
        daemons.stop()
    finally:
        if not blocking:
            bus.close()
    assert summary["missed"] == {}
    records = read_runlog(tmp_path / "run.jsonl", "slot")
    first, later = records[0]["agents"], [r["agents"] for r in records[1:]]
    assert first["bs0"]["timing"]["recv_lag_s"] < 0.01            # no estimate yet: all at once
    for agents in later:
        bs_lag = agents["bs0"]["timing"]["recv_lag_s"]
        if by_slack:
            assert 0.012 < bs_lag < 0.03                            # ~(40 ms - <1 ms) / 2
            assert agents["bs0"]["arrived_s"] < min(agents[a]["arrived_s"] for a in ("irs0", "irs1"))
        else:
            assert bs_lag < 0.01
        assert all(agents[a]["timing"]["recv_lag_s"] < 0.01 for a in ("irs0", "irs1"))


def test_bs_absorbs_every_batch_of_reports_between_slots(p1_bundle):
    """The peers' reports of a slot may reach the BS in several batches (the hub forwards what
    it holds as it comes). Each batch wakes the BS between slots: none is left queued for the
    next slot's answer to find, i.e. to decode inside the next latency window."""
    bus = ZmqBus()
    server = ZmqSyncClient(bus.cfg, "fake-server").start()
    try:
        server.subscribe("hello/", "act/bs0")
        # no heartbeat during the test: its drain of the quiet socket would hide a missed wake-up
        daemons = SyncDaemons(daemon_configs(bus.cfg, p1_bundle, {"bs0": {"heartbeat_s": 600.0}}, agents=("bs0",)))
        bs = daemons.daemons[0]
        deadline = time.monotonic() + 10
        welcomed = False
        while not welcomed and time.monotonic() < deadline:
            if server.wait(0.2):
                for topic, payload in server.drain():
                    hello = m.decode(payload)
                    if isinstance(hello, m.Hello):
                        server.publish("welcome/bs0", m.encode(m.Welcome("bs0", hello.incarnation, 0)))
                        welcomed = True
        obs = np.zeros(bs.bundle.obs_dim("bs0"), np.float32)
        server.publish("obs/bs0", m.encode(m.Observation(0, "bs0", obs, time.time() + 60, time.time())))
        answered = False
        while not answered and time.monotonic() < deadline:
            answered = server.wait(0.2) and any(t == "act/bs0" for t, _ in server.drain())
        assert answered
        reports = {}
        for irs in ("irs0", "irs1"):   # the surfaces' answers, as their daemons send them
            d = AgentDaemon(daemon_configs(bus.cfg, p1_bundle, agents=(irs,))[0])
            rec = m.Observation(0, irs, np.zeros(d.bundle.obs_dim(irs), np.float32), time.time() + 60, time.time())
            decided = d._decide(rec)
            reports[irs] = d._apply_and_report(rec, decided, time.thread_time())
            d.driver.close()
        for irs, body in reports.items():   # two batches, 0.3 s apart
            server.publish(f"act/{irs}", body)
            time.sleep(0.3)
        waited = time.monotonic()
        while set(bs.peers) != {"irs0", "irs1"} and time.monotonic() < waited + 2.0:
            time.sleep(0.02)
        # Both absorbed with no further observation: the second batch woke it too.
        assert set(bs.peers) == {"irs0", "irs1"}
        assert bs.counters["peer_msgs"] == 2
        daemons.stop()
    finally:
        server.close()
        bus.close()


def test_sync_client_prefix_rule_and_quiet_socket():
    """The shared topic rule on the byte-prefix SUB (obs/irs1 is not obs/irs10), and a quiet
    subscription that queues without ending wait()."""
    bus = ZmqBus()
    try:
        sender = ZmqSyncClient(bus.cfg, "sender").start()
        receiver = ZmqSyncClient(bus.cfg, "receiver").start()
        receiver.subscribe("obs/irs1")
        receiver.subscribe_quiet("act/")
        sender.subscribe()
        for topic in ("act/irs0", "obs/irs10", "obs/irs1", "obs/irs1/x"):
            sender.publish(topic, topic.encode())
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 2 and time.monotonic() < deadline:
            if receiver.wait(0.5):
                got += receiver.drain()
        assert [t for t, _ in got] == ["obs/irs1", "obs/irs1/x"]
        assert not receiver.wait(0.1)                               # act/irs0 did not wake the poll ...
        assert receiver.drain_quiet() == [("act/irs0", b"act/irs0")]   # ... it waited on the quiet socket
        # Armed, the quiet socket ends wait() too (False: no slot traffic), and the SUB comes first.
        receiver.arm_quiet()
        t0 = time.monotonic()
        assert not receiver.wait(0.2) and not receiver.quiet_pending()   # nothing queued: a timeout
        assert time.monotonic() - t0 >= 0.15
        sender.publish("act/irs2", b"late")
        t0 = time.monotonic()
        assert not receiver.wait(5.0) and receiver.quiet_pending()
        assert time.monotonic() - t0 < 2.0                              # woken by it, not the timeout
        sender.publish("obs/irs1", b"next")
        time.sleep(0.2)
        assert receiver.wait(5.0)                                      # both queued: slot traffic first ...
        assert receiver.drain() == [("obs/irs1", b"next")]
        assert receiver.drain_quiet() == [("act/irs2", b"late")]        # ... then the reports
        receiver.arm_quiet(False)
        sender.publish("act/irs3", b"x")
        time.sleep(0.2)
        assert not receiver.wait(0.1) and not receiver.quiet_pending()   # disarmed: queued, not waking
        assert receiver.drain_quiet() == [("act/irs3", b"x")]
        with pytest.raises(Exception, match="topic"):
            sender.publish("bad topic", b"")
        sender.close()
        receiver.close()
    finally:
        bus.close()


def test_server_hosting_the_hub_collects_blocking(p1_bundle, tmp_path):
    """The twin server as ``ristwin twin-server`` runs it: its loop forwards the hub's traffic
    itself (no proxy thread) and blocks on the hub's sockets while a slot is open. Same
    answers as in-process; a late agent is a miss at the deadline, not a stall."""
    bus = BusConfig(pub_port=free_port(), sub_port=free_port())
    slots, deadline = 8, 0.3
    daemons = SyncDaemons(daemon_configs(bus, p1_bundle, {"irs1": {"delay_s": 2 * deadline}}))
    server = server_for(bus, p1_bundle, tmp_path / "run.jsonl", slots, host_hub=True, blocking_collect=True,
                        deadline_s=deadline)
    t0 = time.monotonic()
    summary = run_server(server)
    wall = time.monotonic() - t0
    daemons.stop()
    assert server.hub is not None and not server.hub.threaded
    records = read_runlog(tmp_path / "run.jsonl", "slot")
    assert [r["slot"] for r in records] == list(range(slots))
    assert all(r["missed"] == ["irs1"] for r in records) and summary["late"].get("irs1", 0) >= 1
    assert wall < slots * deadline + 30                            # every slot closed at its deadline
    assert daemons.results["bs0"]["answered"] == slots and daemons.results["irs0"]["answered"] == slots
    assert daemons.results["bs0"]["peer_msgs"] >= slots            # irs0's reports forwarded by the server's loop

    # Everyone on time: slot by slot what in-process evaluation gives.
    daemons = SyncDaemons(daemon_configs(bus, p1_bundle))
    server = server_for(bus, p1_bundle, tmp_path / "run2.jsonl", slots, host_hub=True, blocking_collect=True)
    summary = run_server(server)
    daemons.stop()
    assert summary["missed"] == {} and summary["late"] == {}
    records = read_runlog(tmp_path / "run2.jsonl", "slot")
    assert [r["reward"] for r in records] == [ref[1] for ref in reference_run(p1_bundle, 11, slots)]
    # The observations go out longest job first, by each agent's last decide + apply time.
    work = {a: e["timing"]["decide_s"] + e["timing"]["apply_s"] for a, e in records[-1]["agents"].items()}
    assert list(server._fanout) == sorted(AGENTS, key=lambda a: -work[a])


@pytest.mark.mqtt
def test_blocking_collect_is_ignored_without_the_hub(mosquitto, p1_bundle, tmp_path):
    """``serve`` always asks for blocking_collect; over MQTT (no hub in the process) the server
    collects through its event loop as before, and MQTT daemons keep their asyncio path."""
    bus = BusConfig(kind="mqtt", mqtt_port=mosquitto.port, deployment="blk")
    slots = 6
    daemons = [AgentDaemon(c) for c in daemon_configs(bus, p1_bundle)]
    results, loops = {}, {}

    async def run_one(d):
        loops[d.agent] = asyncio.get_running_loop()
        results[d.agent] = await d.run()

    threads = [threading.Thread(target=lambda d=d: asyncio.run(run_one(d)), daemon=True) for d in daemons]
    for t in threads:
        t.start()
    server = server_for(bus, p1_bundle, tmp_path / "run.jsonl", slots, blocking_collect=True, host_hub=True)
    summary = run_server(server)
    for d in daemons:
        loops[d.agent].call_soon_threadsafe(d.stop)
    for t in threads:
        t.join(10)
    assert summary["slots"] == slots and summary["missed"] == {}
    assert all(results[a]["answered"] == slots for a in AGENTS)
    with pytest.raises(Exception, match="run_sync needs 'zmq'"):
        daemons[0].run_sync()


def test_hub_transport_wait_returns_once_something_was_delivered():
    """HubTransport.wait (the server's blocking collect) must not sleep on the sockets after
    its first look already delivered a message: the slot may be complete."""
    hub, cfg = blocking_hub()

    async def main():
        loop = asyncio.get_running_loop()
        own, got = await hub_owner(hub)
        client = ZmqSyncClient(cfg, "agent")
        await loop.run_in_executor(None, client.start)   # this loop pumps its probe meanwhile
        for fd in own._fds:                               # from here on only wait() forwards
            loop.remove_reader(fd)
        client.publish("act/irs0", b"x")
        time.sleep(0.2)                                   # queued at the hub by now, nothing else comes
        t0 = time.monotonic()
        while not got and time.monotonic() - t0 < 5:
            own.wait(5.0)
        waited = time.monotonic() - t0
        client.close()
        await own.close()
        return got, waited

    try:
        got, waited = asyncio.run(main())
    finally:
        hub.close()
    assert got == ["act/irs0"]
    assert waited < 1.0
