"""One slot of the agent daemon without a bus: what it sends for an observation (the answer and
the share of its local observation), and the steady-state profile switch."""

from __future__ import annotations

import json
import os
import pstats
import threading
import time

import numpy as np
import pytest

from controller import messages as m
from controller.daemon import PIN_ENV, AgentDaemon, DaemonConfig, _SteadyProfile, pin_from_env, pinned_cpu
from controller.transports import BusConfig
from twin.errors import ConfigError
from twin.hil import CONFIG_FROM_ACTION

SIM = "sim://?elements=10&bits=1,2,3"


class Recorder:
    """The part of ZmqSyncClient a slot uses: publish, arm_quiet."""

    def __init__(self) -> None:
        self.sent: dict[str, bytes] = {}

    def publish(self, topic: str, body: bytes) -> None:
        self.sent[topic] = body

    def arm_quiet(self, armed: bool = True) -> None:
        self.armed = armed


def daemon(bundle, agent="irs0", driver=SIM) -> AgentDaemon:
    return AgentDaemon(DaemonConfig(bus=BusConfig(kind="zmq"), agent=agent, bundle=str(bundle),
                                    driver_url=driver))


def one_slot(d: AgentDaemon, obs: np.ndarray, slot: int = 3) -> tuple[bytes, dict[str, bytes]]:
    payload = m.encode(m.Observation(slot, d.agent, obs, time.time() + 60, time.time()))
    msg = d._observation_for_me(payload)
    assert msg is not None
    client = Recorder()
    d._answer_now(client, msg, time.thread_time(), payload)
    return payload, client.sent


@pytest.mark.parametrize("agent", ["irs0", "bs0"])
def test_share_is_the_received_observation(p1_bundle, agent):
    d = daemon(p1_bundle, agent, SIM if agent != "bs0" else "")
    obs = np.random.default_rng(1).standard_normal(d.bundle.obs_dim(agent)).astype(np.float32)
    received, sent = one_slot(d, obs)
    assert sent[f"share/{agent}"] is received          # the validated bytes, not a re-encode
    share = m.decode(sent[f"share/{agent}"])
    want = m.decode(received)
    assert isinstance(share, m.Observation) and share.agent == agent and share.slot == 3
    assert (share.deadline, share.sent_at) == (want.deadline, want.sent_at)
    np.testing.assert_array_equal(share.obs, obs)
    act = m.decode(sent[f"act/{agent}"])
    assert isinstance(act, m.Action) and act.slot == 3 and act.agent == agent
    assert d.counters["answered"] == 1 and d.counters["publish_failed"] == 0


def test_share_of_a_float64_observation_is_the_float32_local_one(p1_bundle):
    d = daemon(p1_bundle)
    obs = np.random.default_rng(2).standard_normal(d.bundle.obs_dim("irs0"))   # float64 on the wire
    _, sent = one_slot(d, obs)
    share = m.decode(sent["share/irs0"])
    assert share.obs.dtype == np.float32
    np.testing.assert_array_equal(share.obs, obs.astype(np.float32))


def test_share_carries_the_boards_energy_not_the_received_entry(p1_bundle):
    d = daemon(p1_bundle, driver=SIM + "&energy_uj=4200&harvest_uw=0&switch_nj=0")
    obs = np.zeros(d.bundle.obs_dim("irs0"), np.float32)
    received, sent = one_slot(d, obs)
    share = m.decode(sent["share/irs0"])
    assert sent["share/irs0"] != received
    assert share.obs[-1] == pytest.approx(4.2, abs=1e-5) and not share.obs[:-1].any()


def test_answer_reports_the_boards_readback_of_a_stuck_element(p1_bundle):
    d = daemon(p1_bundle, driver=SIM + "&stuck=2")
    obs = np.random.default_rng(3).standard_normal(d.bundle.obs_dim("irs0")).astype(np.float32)
    _, sent = one_slot(d, obs)
    act = m.decode(sent["act/irs0"])
    assert act.applied.phase_idx[2] == 0 and act.applied.on[2]          # what the board holds
    requested = CONFIG_FROM_ACTION["p1"](act.action, obs, d.bundle.scenario_config, d.board_resolutions)
    differs = requested.phase_idx[2] != 0 or not requested.on[2]
    assert requested.mismatched_elements(act.applied).tolist() == ([2] if differs else [])
    np.testing.assert_array_equal(np.delete(act.applied.phase_idx, 2), np.delete(requested.phase_idx, 2))


def test_reload_keeps_the_scenarios_mapping(p1_bundle):
    d = daemon(p1_bundle)
    d._on_control("ctl/all", m.encode(m.Control("reload", "all", str(p1_bundle))))
    assert d.counters["ctl_reload"] == 1 and d.counters["reload_failed"] == 0
    assert d._to_config is CONFIG_FROM_ACTION["p1"]
    _, sent = one_slot(d, np.zeros(d.bundle.obs_dim("irs0"), np.float32))
    assert m.decode(sent["act/irs0"]).applied is not None


def test_steady_profile_starts_after_the_warm_up(tmp_path, monkeypatch):
    monkeypatch.setenv("RISTWIN_DAEMON_PROFILE", str(tmp_path))
    monkeypatch.setenv("RISTWIN_DAEMON_PROFILE_AFTER", "5")
    prof = _SteadyProfile.from_env("irs9")
    for answered in range(12):
        prof.tick(answered)
        sum(range(1000))
    prof.finish(12)
    record = json.loads((tmp_path / "irs9.json").read_text())
    assert record["slots"] == 7 and record["utime_s"] >= 0.0
    assert pstats.Stats(str(tmp_path / "irs9.prof")).total_calls > 0
    monkeypatch.delenv("RISTWIN_DAEMON_PROFILE")
    assert _SteadyProfile.from_env("irs9") is None


def test_pinned_cpu_spreads_the_bundles_agents_round_robin():
    ids = ["bs0", "irs0", "irs1", "irs2", "irs3"]
    assert [pinned_cpu(a, ids, [3, 1]) for a in ids] == [1, 3, 1, 3, 1]
    assert pinned_cpu("irs9", ids, [0, 1]) is None          # not in the bundle: left alone
    assert pinned_cpu("irs0", ids, [0]) is None             # one CPU: nothing to choose


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and at least 2 CPUs")
def test_pin_from_env_pins_the_calling_thread_only_when_asked(monkeypatch):
    cpus = sorted(os.sched_getaffinity(0))
    seen = {}

    def in_thread(name):   # affinity is per thread on Linux: the test's own thread stays as it is
        seen[name] = (pin_from_env("irs0", ["bs0", "irs0"]), os.sched_getaffinity(0))

    for value in ("", "auto"):
        monkeypatch.setenv(PIN_ENV, value)
        t = threading.Thread(target=in_thread, args=(value,))
        t.start()
        t.join()
    assert seen[""] == (None, set(cpus))
    assert seen["auto"] == (cpus[1], {cpus[1]})
    assert os.sched_getaffinity(0) == set(cpus)
    monkeypatch.setenv(PIN_ENV, "2")
    with pytest.raises(ConfigError, match=PIN_ENV):
        pin_from_env("irs0", ["bs0", "irs0"])
