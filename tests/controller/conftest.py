"""Fixtures for the runtime tests: a real Mosquitto broker on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.fixture
def mosquitto(tmp_path):
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto binary not installed")
    broker = Broker(tmp_path)
    broker.start()
    yield broker
    broker.stop()
