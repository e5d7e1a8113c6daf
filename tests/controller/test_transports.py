"""One test suite for both transports: ZeroMQ (hub) and MQTT (real Mosquitto)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from controller.transports import BusConfig, connect, topic_matches
from controller.transports.zmq_bus import ZmqHub
from tests.controller.conftest import blocking_hub, hub_owner
from twin.errors import TransportError


def run(coro, timeout=20):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def drain(sub, n, timeout=3.0):
    out = []
    for _ in range(n):
        out.append(await sub.get(timeout))
    return out


def test_topic_matching_rule():
    assert topic_matches("", "obs/irs0")
    assert topic_matches("obs/", "obs/irs0")
    assert topic_matches("obs/irs1", "obs/irs1")
    assert not topic_matches("obs/irs1", "obs/irs10")   # whole levels only, unlike a byte prefix
    assert topic_matches("obs/irs1", "obs/irs1/x")
    assert not topic_matches("obs/", "obs")


def test_delivery_ordering_and_prefix(bus):
    async def go():
        a = await connect(bus.cfg, "a")
        b = await connect(bus.cfg, "b")
        try:
            sub_all = await b.subscribe("obs/")
            sub_one = await b.subscribe("obs/irs1")
            sub_act = await b.subscribe("act/", )
            # The first message after subscribe arrives: no slow-joiner loss.
            for i in range(50):
                await a.publish("obs/irs1", str(i).encode())
                await a.publish("obs/irs10", b"ten")
            await a.publish("act/bs0", b"x")
            got_all = await drain(sub_all, 100)
            got_one = await drain(sub_one, 50)
            assert [p for t, p in got_all if t == "obs/irs1"] == [str(i).encode() for i in range(50)]
            assert {t for t, _ in got_all} == {"obs/irs1", "obs/irs10"}
            assert [t for t, _ in got_one] == ["obs/irs1"] * 50   # irs10 is not under irs1
            assert await sub_act.get(3) == ("act/bs0", b"x")
            with pytest.raises(asyncio.TimeoutError):
                await sub_one.get(0.2)                           # exactly once, nothing extra
        finally:
            await a.close()
            await b.close()

    run(go())


def test_callback_subscription_and_close(bus):
    async def go():
        a = await connect(bus.cfg, "a")
        got = []
        await a.subscribe("hb/", callback=lambda t, p: got.append((t, p)))
        sub = await a.subscribe("ctl/")
        await a.publish("hb/irs0", b"1")
        for _ in range(100):
            if got:
                break
            await asyncio.sleep(0.02)
        assert got == [("hb/irs0", b"1")]
        await a.close()
        # A closed transport ends its iterators and refuses to publish.
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()
        with pytest.raises(TransportError):
            await a.publish("hb/irs0", b"2")

    run(go())


def test_oversized_frames_are_dropped_and_counted(bus):
    from controller.messages import MAX_MESSAGE_BYTES

    async def go():
        a = await connect(bus.cfg, "a")
        b = await connect(bus.cfg, "b")
        try:
            sub = await b.subscribe("act/")
            await a.publish("act/x", b"\0" * (MAX_MESSAGE_BYTES + 10))
            await a.publish("act/x", b"ok")
            assert await sub.get(3) == ("act/x", b"ok")
            assert b.stats.dropped_oversized == 1
        finally:
            await a.close()
            await b.close()

    run(go())


def test_bad_topics_refused(bus):
    async def go():
        a = await connect(bus.cfg, "a")
        try:
            for bad in ("obs/#", "a//b", "", "obs/+", "with space"):
                with pytest.raises(TransportError):
                    await a.publish(bad, b"")
        finally:
            await a.close()

    run(go())


def test_reconnect_after_bus_restart(bus):
    async def go():
        a = await connect(bus.cfg, "a")
        b = await connect(bus.cfg, "b")
        try:
            sub = await b.subscribe("obs/")
            await a.publish("obs/x", b"before")
            assert await sub.get(3) == ("obs/x", b"before")
            bus.restart()
            # Publish until the message makes it through the restarted broker / hub.
            for _ in range(200):
                await a.publish("obs/x", b"after")
                try:
                    topic, payload = await sub.get(0.05)
                    if payload == b"after":
                        break
                except asyncio.TimeoutError:
                    continue
            else:
                pytest.fail("no delivery within 10 s of the restart")
        finally:
            await a.close()
            await b.close()

    run(go(), timeout=30)


def test_no_server_is_a_clear_error():
    async def go():
        cfg = BusConfig(kind="zmq", pub_port=1, sub_port=2)
        with pytest.raises(TransportError, match="hub"):
            from controller.transports.zmq_bus import ZmqTransport

            t = ZmqTransport(cfg, "x")
            t_start = t.start()
            try:
                await asyncio.wait_for(t_start, 15)
            finally:
                await t.close()

    # shrink the probe timeout for the test
    import controller.transports.zmq_bus as zb

    orig = zb.ZmqTransport._probe

    async def quick(self, timeout):
        return await orig(self, min(timeout, 0.5))

    zb.ZmqTransport._probe = quick
    try:
        run(go())
    finally:
        zb.ZmqTransport._probe = orig


def test_non_loopback_needs_auth_unless_insecure():
    from controller.transports import make_transport

    for kind in ("zmq", "mqtt"):
        cfg = BusConfig(kind=kind, host="10.1.2.3")
        with pytest.raises(TransportError, match="insecure = true"):
            make_transport(cfg, "x")
        make_transport(dataclasses.replace(cfg, insecure=True), "x")
    with pytest.raises(TransportError, match="not loopback"):
        ZmqHub(BusConfig(kind="zmq", host="0.0.0.0"))


@pytest.mark.mqtt
def test_mqtt_last_will_reports_a_killed_client_offline(mosquitto):
    import subprocess
    import sys

    cfg = BusConfig(kind="mqtt", mqtt_port=mosquitto.port, deployment="will")
    child = subprocess.Popen([sys.executable, "-c", (
        "import asyncio, sys\n"
        "from controller.transports import BusConfig, connect\n"
        f"cfg = BusConfig(kind='mqtt', mqtt_port={mosquitto.port}, deployment='will')\n"
        "async def main():\n"
        "    t = await connect(cfg, 'victim')\n"
        "    print(t.client_id, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n")], stdout=subprocess.PIPE, text=True)
    try:
        client_id = child.stdout.readline().strip()
        assert client_id.startswith("victim-")

        async def read_live():
            t = await connect(cfg, "watcher")
            sub = await t.subscribe(f"live/{client_id}")
            first = await sub.get(5)                 # retained: the victim said "online"
            child.kill()                             # kill -9: no DISCONNECT, the broker sends the will
            second = await sub.get(10)
            await t.close()
            return first, second

        first, second = run(read_live(), timeout=30)
        assert first == (f"live/{client_id}", b"online")
        assert second == (f"live/{client_id}", b"offline")
    finally:
        child.kill()
        child.wait()


def pump_until(own, cond, timeout: float = 3.0) -> None:
    """Let the hub owner forward (its blocking wait) until ``cond()`` or ``timeout`` seconds."""
    import time

    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        own.wait(0.02)


def test_hub_owner_parks_peer_reports_until_release():
    """While the twin server holds (a slot is open), the agents' act/ and share/ reports reach
    the server at once but their peers only at release, in order; anything else flows."""
    import time

    from controller.transports.zmq_sync import ZmqSyncClient

    hub, cfg = blocking_hub()

    async def main():
        loop = asyncio.get_running_loop()
        own, mine = await hub_owner(hub)
        peer, agent = ZmqSyncClient(cfg, "bs0"), ZmqSyncClient(cfg, "irs0")
        await loop.run_in_executor(None, peer.start)     # this loop pumps the probes meanwhile
        await loop.run_in_executor(None, agent.start)
        await loop.run_in_executor(None, peer.subscribe, "act/", "share/", "hb/")
        for fd in own._fds:                              # from here on only wait() forwards
            loop.remove_reader(fd)
        seen = []
        own.hold()
        for topic in ("act/irs0", "share/irs0", "hb/irs0", "act/irs0"):
            agent.publish(topic, topic.encode())
        pump_until(own, lambda: len(mine) == 2)
        time.sleep(0.1)
        seen += peer.drain()
        held = list(seen)
        own.release()
        pump_until(own, lambda: False, timeout=0.2)
        time.sleep(0.1)
        seen += peer.drain()
        agent.publish("act/irs0", b"after")              # not held any more: straight through
        pump_until(own, lambda: len(mine) == 3)
        time.sleep(0.1)
        seen += peer.drain()
        peer.close()
        agent.close()
        await own.close()
        return mine, held, seen

    try:
        mine, held, seen = asyncio.run(main())
    finally:
        hub.close()
    assert mine == ["act/irs0"] * 3                      # the owner sees the answers at once
    assert [t for t, _ in held] == ["hb/irs0"]           # the peer only what is not a report
    assert [t for t, _ in seen] == ["hb/irs0", "act/irs0", "share/irs0", "act/irs0", "act/irs0"]
    assert seen[-1][1] == b"after"


def test_publishers_send_only_what_someone_subscribed_to():
    """Subscriptions travel upstream: a report nobody subscribed to (share/ without a monitor)
    never leaves its publisher, so it never reaches the hub; once a client subscribes to it,
    it flows. The hub owner's own prefixes hold for every publisher from its first connection."""
    import time

    from controller.transports.zmq_sync import ZmqSyncClient

    hub, cfg = blocking_hub()

    async def main():
        loop = asyncio.get_running_loop()
        own, mine = await hub_owner(hub)                 # the twin server: act/ only
        agent = ZmqSyncClient(cfg, "irs0")
        await loop.run_in_executor(None, agent.start)
        for fd in own._fds:                              # from here on only wait() forwards
            loop.remove_reader(fd)
        own.hold()                                       # parked: what reached the hub, in order
        agent.publish("share/irs0", b"nobody listens")
        agent.publish("act/irs0", b"a1")
        pump_until(own, lambda: len(mine) == 1)
        before = [head.bytes for head, _ in own._parked]
        monitor = ZmqSyncClient(cfg, "monitor")
        fut = loop.run_in_executor(None, lambda: (monitor.start(), monitor.subscribe("share/")))
        while not fut.done():                            # pump the monitor's probes
            own.wait(0.01)
            await asyncio.sleep(0)
        await fut
        sent = 0
        end = time.monotonic() + 3.0
        while not any(h.bytes == b"share/irs0" for h, _ in own._parked) and time.monotonic() < end:
            agent.publish("share/irs0", b"wanted")       # until the subscription reached the agent
            sent += 1
            pump_until(own, lambda: False, timeout=0.02)
        after = [head.bytes for head, _ in own._parked]
        own.release()
        got = []
        end = time.monotonic() + 3.0
        while not got and time.monotonic() < end:
            own.wait(0.02)
            if monitor.wait(0.01):
                got += monitor.drain()
        agent.close()
        monitor.close()
        await own.close()
        return mine, before, after, got

    try:
        mine, before, after, got = asyncio.run(main())
    finally:
        hub.close()
    assert mine == ["act/irs0"]
    assert before == [b"act/irs0"]                       # the unwanted share never reached the hub
    assert after.count(b"share/irs0") >= 1 and after[0] == b"act/irs0"
    assert got and got[0] == ("share/irs0", b"wanted")
