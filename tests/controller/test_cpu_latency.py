"""The CPU wake-up latency bound (Linux PM QoS) a deployment may hold: what it writes, that it
holds it only while open, that every failure is one clear line and never stops a process, and
that the twin server and the daemons take it from the deployment file."""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

import pytest

from controller import cpu_latency as cl
from controller.deploy import load_deployment


def test_holds_the_value_while_open(tmp_path: Path, monkeypatch):
    device = tmp_path / "cpu_dma_latency"   # the real device takes one binary int32 per open file
    device.write_bytes(b"")
    monkeypatch.setattr(cl, "DEVICE", str(device))
    fds_before = set(os.listdir("/proc/self/fd"))
    with cl.CpuLatencyHold(7) as hold:
        assert hold.held and hold.status == "held: 7 us"
        assert device.read_bytes() == struct.pack("=i", 7)
        assert len(set(os.listdir("/proc/self/fd")) - fds_before) == 1     # the fd that holds it
    assert not hold.held and hold.status == "released"
    assert set(os.listdir("/proc/self/fd")) == fds_before                  # released: the fd is closed


def test_off_opens_nothing(monkeypatch):
    monkeypatch.setattr(cl, "DEVICE", "/nonexistent/never-opened")
    hold = cl.CpuLatencyHold(None)
    assert hold.status == "off" and not hold.held
    hold.close()


@pytest.mark.parametrize("value", [-1, 2**31, 1.5, True, "0"])
def test_refuses_values_the_device_cannot_take(value):
    with pytest.raises(ValueError, match="cpu_latency_us"):
        cl.CpuLatencyHold(value)


def test_missing_device_is_one_warning_and_no_bound(monkeypatch, caplog):
    monkeypatch.setattr(cl, "DEVICE", "/nonexistent/cpu_dma_latency")
    with caplog.at_level(logging.WARNING, logger="ristwin.cpu_latency"):
        hold = cl.CpuLatencyHold(0)
    assert not hold.held and "PM QoS" in hold.status
    assert [r.getMessage() for r in caplog.records] == [f"cpu_latency_us = 0 {hold.status}"]


def test_no_permission_names_the_fix(monkeypatch, tmp_path: Path, caplog):
    def refuse(path, flags, *a):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(cl, "DEVICE", str(tmp_path / "dev"))
    monkeypatch.setattr(cl.os, "open", refuse)
    with caplog.at_level(logging.WARNING, logger="ristwin.cpu_latency"):
        hold = cl.CpuLatencyHold(0)
    assert not hold.held
    assert "not writable" in hold.status and "root" in hold.status and "drop cpu_latency_us" in hold.status
    assert len(caplog.records) == 1


def test_the_deployment_file_reaches_server_and_daemons(tmp_path: Path, p1_bundle: Path):
    toml = tmp_path / "dep.toml"
    toml.write_text(f'[deployment]\nbundle = "{p1_bundle}"\ncpu_latency_us = 0\n'
                    '[[agent]]\nid = "bs0"\n[[agent]]\nid = "irs0"\ndriver = "sim://?elements=10"\n')
    dep = load_deployment(toml)
    assert dep.cpu_latency_us == 0
    assert dep.server_config().cpu_latency_us == 0
    assert {dep.daemon_config(a).cpu_latency_us for a in ("bs0", "irs0")} == {0}
    toml.write_text(f'[deployment]\nbundle = "{p1_bundle}"\n[[agent]]\nid = "bs0"\n')
    assert load_deployment(toml).server_config().cpu_latency_us is None      # left out: no bound


@pytest.mark.skipif(not os.access(cl.DEVICE, os.W_OK), reason="needs a writable /dev/cpu_dma_latency (root)")
def test_the_real_device_takes_it():
    with cl.CpuLatencyHold(0) as hold:
        assert hold.held and hold.status == "held: 0 us"


def test_the_run_log_says_what_held(tmp_path: Path, p1_bundle: Path, monkeypatch):
    from controller.runlog import read_runlog
    from tests.controller.conftest import ZmqBus
    from tests.controller.test_sync_daemon import SyncDaemons, daemon_configs, run_server, server_for

    device = tmp_path / "cpu_dma_latency"
    device.write_bytes(b"")
    monkeypatch.setattr(cl, "DEVICE", str(device))
    bus = ZmqBus()
    try:
        for us, log, expected in ((0, "held.jsonl", "held: 0 us"), (None, "off.jsonl", "off")):
            daemons = SyncDaemons(daemon_configs(bus.cfg, p1_bundle))
            run_server(server_for(bus.cfg, p1_bundle, tmp_path / log, 2, cpu_latency_us=us))
            daemons.stop()
            assert read_runlog(tmp_path / log, "start")[0]["cpu_latency"] == expected
    finally:
        bus.close()
    assert device.read_bytes() == struct.pack("=i", 0)
