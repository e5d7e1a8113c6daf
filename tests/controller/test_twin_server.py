"""The twin server's answer collection: answers are peeked at on arrival and fully validated
once the slot's answers are in; every message is still validated, and the counts (malformed,
duplicate, spoofed, late) are what decoding each message on arrival gave."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from controller import messages as m
from controller.transports import BusConfig
from controller.twin_server import MAX_PENDING_PER_AGENT, ServerConfig, TwinServer
from twin.surface_config import SurfaceConfig

AGENTS = ("bs0", "irs0", "irs1")


@pytest.fixture
def server(tmp_path):
    srv = TwinServer(ServerConfig(bus=BusConfig(), agents=AGENTS, runlog=str(tmp_path / "run.jsonl"), scenario="p1"))
    srv._open_slot = 5
    return srv


def answer(agent: str, slot: int = 5, n: int = 10) -> bytes:
    if agent == "bs0":
        return m.encode(m.Action(slot, agent, {"V": np.zeros((2, 4, 4), np.float32)}, None, {"decide_s": 1e-4}))
    cfg = SurfaceConfig(1, np.zeros(n, np.int64), np.ones(n, bool))
    return m.encode(m.Action(slot, agent, {"phase_idx": np.zeros(n, np.int64)}, cfg, {"decide_s": 1e-4}))


def corrupt(payload: bytes) -> bytes:
    """Same header (slot, agent: peek_action reads it), a body that does not decode."""
    return payload[:40] + b"\xc1" * (len(payload) - 40)


def test_answers_are_parked_then_validated(server):
    for a in AGENTS:
        server._on_action(f"act/{a}", answer(a))
    assert server._all_in_at is not None and server._got == {}     # peeked, not decoded yet
    assert server._settle()
    assert set(server._got) == set(AGENTS) and all(isinstance(v, m.Action) for v in server._got.values())
    assert server._got["irs0"].applied.n_elements == 10
    assert not server.counters


def test_an_invalid_answer_with_a_valid_header_is_malformed_and_the_agent_awaited_again(server):
    server._on_action("act/irs0", corrupt(answer("irs0")))       # arrives first, looks like irs0's answer
    server._on_action("act/bs0", answer("bs0"))
    server._on_action("act/irs1", answer("irs1"))
    assert server._all_in_at is not None
    assert not server._settle()                                  # validation finds it out
    assert server.counters["malformed"] == 1 and "irs0" not in server._got
    assert server._all_in_at is None and server._answered == {"bs0", "irs1"}
    server._on_action("act/irs0", answer("irs0"))               # the real answer still counts
    assert server._all_in_at is not None and server._settle()
    assert set(server._got) == set(AGENTS) and "duplicate" not in server.counters


def test_junk_then_real_answer_already_parked_both_settle_in_order(server):
    server._on_action("act/irs0", corrupt(answer("irs0")))
    server._on_action("act/irs0", answer("irs0"))
    server._on_action("act/irs0", answer("irs0"))                # a second valid one: a duplicate
    for a in ("bs0", "irs1"):
        server._on_action(f"act/{a}", answer(a))
    assert server._settle()
    assert server.counters["malformed"] == 1 and server.counters["duplicate"] == 1


def test_a_flood_is_validated_as_it_comes_and_never_parked_unbounded(server):
    n = 5 * MAX_PENDING_PER_AGENT + 1
    for _ in range(n):
        server._on_action("act/irs0", corrupt(answer("irs0")))
        assert len(server._pending.get("irs0", ())) < MAX_PENDING_PER_AGENT
    server._settle()
    assert server.counters["malformed"] == n                     # every one decoded and counted
    assert "irs0" not in server._answered
    server._on_action("act/irs0", answer("irs0"))
    for _ in range(3):                                           # after a valid one: duplicates, decoded at once
        server._on_action("act/irs0", answer("irs0"))
    server._settle()
    assert server.counters["duplicate"] == 3 and "irs0" in server._got


def test_spoofed_late_foreign_and_unexpected_are_decoded_and_counted_at_once(server):
    server._on_action("act/irs1", answer("irs0"))                # irs0's answer on irs1's topic
    server._on_action("act/irs0", answer("irs0", slot=4))        # the previous slot's
    server._on_action("act/irs9", answer("irs9"))                # no such agent here
    server._on_action("act/irs0", m.encode(m.Heartbeat("irs0", 1, 0.0)))
    server._on_action("act/irs0", b"\x81")
    assert server._pending == {} and server._answered == set()
    assert server.counters["spoofed"] == 1 and server.late["irs0"] == 1
    assert server.counters["unexpected"] == 2 and server.counters["malformed"] == 1


def test_collect_waits_again_until_the_deadline_after_a_failed_validation(server):
    async def run() -> tuple[dict, float | None, float]:
        loop = asyncio.get_running_loop()
        server._all_in = loop.create_future()
        server._on_action("act/irs0", corrupt(answer("irs0")))
        for a in ("bs0", "irs1"):
            server._on_action(f"act/{a}", answer(a))
        loop.call_later(0.05, server._on_action, "act/irs0", answer("irs0"))
        start = loop.time()
        got, all_in_at = await server._collect(5, time.time() + 2.0)
        return got, all_in_at, loop.time() - start

    got, all_in_at, waited = asyncio.run(run())
    assert set(got) == set(AGENTS) and all_in_at is not None
    assert 0.04 < waited < 1.0 and server.counters["malformed"] == 1
    assert server._open_slot == -1
    server._on_action("act/irs1", answer("irs1"))                # after the slot closed: late
    assert server.late["irs1"] == 1


def test_collect_returns_at_the_deadline_with_what_validated(server):
    async def run():
        server._all_in = asyncio.get_running_loop().create_future()
        for a in AGENTS:
            server._on_action(f"act/{a}", answer(a) if a != "irs1" else corrupt(answer(a)))
        return await server._collect(5, time.time() + 0.1)

    got, all_in_at = asyncio.run(run())
    assert set(got) == {"bs0", "irs0"} and all_in_at is None
