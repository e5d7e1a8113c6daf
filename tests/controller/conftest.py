"""Fixtures for the runtime tests: a real Mosquitto broker on a free loopback port."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from controller.transports import BusConfig, connect
from controller.transports.zmq_bus import ZmqHub

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def curve_buses(keys: Path, agents) -> tuple[Path, BusConfig, BusConfig]:
    """CURVE key pairs for the hub and every agent in ``keys``; the hub's bus config (it holds
    the server secret) and the clients' (without it; each adds its own client secret)."""
    from controller.security import generate_curve_keys

    for name in ("hub", *agents):
        generate_curve_keys(keys, name)
    hub_side = BusConfig(pub_port=free_port(), sub_port=free_port(), curve_server_secret=str(keys / "hub.key_secret"),
                         curve_server_public=str(keys / "hub.key"))
    return keys, hub_side, dataclasses.replace(hub_side, curve_server_secret="")


async def connect_when_up(cfg: BusConfig, name: str):
    """Connect, retrying every 0.1 s until the hub (hosted by a server still starting) answers."""
    while True:
        try:
            return await connect(cfg, name)
        except Exception:
            await asyncio.sleep(0.1)


def blocking_hub() -> tuple[ZmqHub, BusConfig]:
    """A hub forwarded only by its owner's loop (as the twin server hosts it) and the clients'
    bus config for it."""
    hub = ZmqHub(BusConfig(pub_port=0, sub_port=0), threaded=False).start()
    return hub, BusConfig(pub_port=hub.pub_port, sub_port=hub.sub_port)


async def hub_owner(hub: ZmqHub, prefix: str = "act/"):
    """The hub owner's transport, started, and the list the topics it receives under ``prefix``
    land in."""
    own = hub.local_transport("twin")
    await own.start()
    got: list[str] = []
    await own.subscribe(prefix, callback=lambda t, p: got.append(t))
    return own, got


class Broker:
    """One mosquitto process with a temp config; ``restart()`` keeps the port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
            f"persistence false\nlog_dest none\n"
            # As root, mosquitto drops to user "mosquitto", which cannot read pytest's 0700 tmp dirs.
            + ("user root\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else "")
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("mosquitto exited at start")
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not listen within 5 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


class ZmqBus:
    def __init__(self) -> None:
        self.hub = ZmqHub(BusConfig(kind="zmq", pub_port=0, sub_port=0)).start()
        self.cfg = BusConfig(kind="zmq", pub_port=self.hub.pub_port, sub_port=self.hub.sub_port)

    def restart(self) -> None:
        self.hub.close()
        self.hub = ZmqHub(self.cfg).start()

    def close(self) -> None:
        self.hub.close()


class MqttBus:
    def __init__(self, broker) -> None:
        self.broker = broker
        self.cfg = BusConfig(kind="mqtt", mqtt_port=broker.port, deployment="t1")

    def restart(self) -> None:
        self.broker.restart()

    def close(self) -> None:
        pass


@pytest.fixture(params=["zmq", pytest.param("mqtt", marks=pytest.mark.mqtt)])
def bus(request):
    """A running bus of each kind: a ZeroMQ hub on free ports, or a real Mosquitto broker."""
    if request.param == "zmq":
        b = ZmqBus()
    else:
        b = MqttBus(request.getfixturevalue("mosquitto"))
    yield b
    b.close()


@pytest.fixture
def mosquitto(tmp_path):
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto binary not installed")
    broker = Broker(tmp_path)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def p1_bundle(tmp_path_factory) -> Path:
    """A deterministic (untrained, seeded) MAQ-WP actor bundle for the default P1 scenario."""
    import torch

    from agents import registry
    from agents.bundle import export_bundle
    from twin.scenarios import get_scenario

    torch.manual_seed(0)
    cfg = get_scenario("p1")
    env = registry.make_env("p1", cfg, 1)
    algo_cls, algo_cfg = registry.algorithm("maq-wp")
    algo = algo_cls(env, algo_cfg(), 3)
    return export_bundle(tmp_path_factory.mktemp("bundle") / "bundle", "maq-wp", "p1", cfg, algo.actors(),
                         {a: algo.role_of(a) for a in env.agent_ids}, env.observation_spaces, env.action_spaces)


def run_in_threads(worker, n: int) -> None:
    """``worker(k)`` for k in 0..n-1, each in its own thread, all started before any is joined."""
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
