"""The pyserial driver against the emulator with injected faults: nothing wrong is ever latched silently."""

import os
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import drivers

from drivers.base import ApplyError, LinkError
from drivers.emulator import BoardEmulator, Faults
from drivers.serial_driver import SerialDriver
from twin.errors import DriverError
from twin.surface_config import SurfaceConfig

pytestmark = pytest.mark.timeout(40)


def rand(rng, n, bits):
    return SurfaceConfig(bits, rng.integers(0, 1 << bits, n), rng.random(n) < 0.7)


def driver(emu, **kw):
    kw.setdefault("timeout_s", 0.01)
    kw.setdefault("reconnect_s", 0.2)
    d = SerialDriver(emu.url.split("?")[0].removeprefix("serial://"), baud=emu.baud, **kw)
    d.connect()
    return d


def run_applies(emu, drv, count, n, resolutions, seed=0):
    """Apply random configs; return (verified, reported_failures) and assert no silent wrong latch."""
    rng = np.random.default_rng(seed)
    verified = failed = 0
    for _ in range(count):
        config = rand(rng, n, int(rng.choice(resolutions)))
        try:
            reported = drv.apply(config)
            verified += 1
        except ApplyError as exc:  # reported, with what the board holds (None = link dead)
            failed += 1
            reported = exc.latched
            assert reported is not None, str(exc)
        assert emu.latched == reported, "the board latched something other than what the driver reported"
    return verified, failed


def test_thousand_applies_with_one_percent_drops_and_corruption():
    with BoardEmulator(32, (1, 2, 3), model_wire=False, faults=Faults(drop=0.01, corrupt=0.01, seed=1)) as emu:
        drv = driver(emu, retries=30, timeout_s=0.01)
        verified, failed = run_applies(emu, drv, 1000, 32, (1, 2, 3))
        drv.close()
    assert verified + failed == 1000
    assert verified >= 990  # failures are allowed only as reported ApplyErrors (checked above)
    assert drv.stats["retries"] > 500 and drv.stats["rx_errors"] > 50  # the faults really happened
    assert emu._rx_mangle.dropped > 100 and emu._tx_mangle.corrupted > 50
    assert emu.core.counters["duplicates"] > 0  # retransmissions were answered from the cache


def test_large_multichunk_board_with_faults_and_reboots():
    faults = Faults(drop=0.0005, corrupt=0.0005, reboot_every=7, seed=2)
    with BoardEmulator(1024, (1, 3, 8), model_wire=False, faults=faults) as emu:
        drv = driver(emu, retries=12)
        verified, failed = run_applies(emu, drv, 60, 1024, (3, 8), seed=3)
        drv.close()
    assert verified + failed == 60 and verified >= 55
    assert emu.reboots >= 5 and drv.stats["reboots"] >= 1 and drv.stats["restarts"] >= 1


def test_slow_board_is_retried_without_double_apply():
    with BoardEmulator(16, (1,), model_wire=False, faults=Faults(slow_ms=25)) as emu:
        drv = driver(emu, retries=30, timeout_s=0.01)
        rng = np.random.default_rng(0)
        for _ in range(5):
            config = rand(rng, 16, 1)
            assert drv.apply(config) == config
        assert drv.stats["retries"] > 0 and emu.core.counters["duplicates"] > 0
        assert emu.core.latch_count == 5  # each configuration latched exactly once
        drv.close()


def test_dead_board_fails_fast_and_says_state_unknown():
    with BoardEmulator(16, (1,), model_wire=False) as emu:
        drv = driver(emu, retries=2, timeout_s=0.01)
        emu.faults = Faults(slow_ms=300)  # the board stops answering in time
        t0 = time.monotonic()
        with pytest.raises(ApplyError, match="UNKNOWN") as exc:
            drv.apply(SurfaceConfig.safe(16))
        assert exc.value.latched is None and time.monotonic() - t0 < 1.5
        drv.close()
    with BoardEmulator(16, (1,), model_wire=False, faults=Faults(slow_ms=300)) as emu:
        drv = SerialDriver(emu.path, timeout_s=0.01, retries=2)
        with pytest.raises(LinkError, match="no valid reply"):
            drv.connect()  # INFO never answered in time
        drv.close()


def test_garbage_from_the_board_is_skipped():
    with BoardEmulator(16, (1, 2), model_wire=False) as emu:
        drv = driver(emu)
        rng = np.random.default_rng(5)
        for _ in range(20):
            os.write(emu._master, rng.integers(0, 256, 50, dtype=np.uint8).tobytes())
            config = rand(rng, 16, 2)
            assert drv.apply(config) == config
        drv.close()


def test_unplug_and_replug_on_a_new_pty():
    rng = np.random.default_rng(7)
    emu = BoardEmulator(16, (1, 2), model_wire=False).__enter__()
    drv = driver(emu)
    assert drv.apply(rand(rng, 16, 1)) is not None
    emu.stop()  # cable pulled: the pty disappears
    with pytest.raises(DriverError):
        drv.apply(rand(rng, 16, 2))
    with BoardEmulator(16, (1, 2), model_wire=False) as emu2:  # plugged back, another device name
        drv.reconnect(emu2.url)
        config = rand(rng, 16, 2)
        assert drv.apply(config) == config and emu2.latched == config
        assert drv.stats["reconnects"] >= 1
        drv.close()


def test_unplug_and_replug_on_the_same_socket():
    rng = np.random.default_rng(8)
    with BoardEmulator(16, (1, 2), model_wire=False, tcp_port=0) as emu:
        port = emu.port
        drv = drivers.open(f"socket://127.0.0.1:{port}?timeout_ms=10&reconnect_ms=1000")
        drv.apply(rand(rng, 16, 1))
    with BoardEmulator(16, (1, 2), model_wire=False, tcp_port=port) as emu2:  # bridge restarted
        config = rand(rng, 16, 2)
        assert drv.apply(config) == config and emu2.latched == config
        assert drv.stats["reconnects"] >= 1
        drv.close()


def test_watchdog_is_rearmed_after_a_board_reset():
    with BoardEmulator(16, (1, 2), model_wire=False) as emu:
        drv = driver(emu)
        safe = SurfaceConfig(1, np.ones(16, int), np.ones(16, bool))
        drv.watchdog(0.05, safe)
        drv.reset()  # RAM state (codebook, watchdog) is gone on the board
        config = SurfaceConfig(2, np.full(16, 2), np.ones(16, bool))
        assert drv.apply(config) == config  # the driver re-stores the safe pattern and re-arms
        time.sleep(0.25)
        assert emu.latched == safe and drv.readback() == safe
        assert drv.stats["reboots"] >= 1
        drv.close()


def test_a_trickle_of_garbage_cannot_stall_the_driver():
    with BoardEmulator(16, (1,), model_wire=False) as emu:
        drv = driver(emu, retries=2, timeout_s=0.02)

        def trickle(deadline):  # a babbling line: one non-delimiter byte every 2 ms, forever
            time.sleep(0.002)
            return b"\x55"

        drv._read_some = trickle
        t0 = time.monotonic()
        with pytest.raises(ApplyError):
            drv.apply(SurfaceConfig.safe(16))
        assert time.monotonic() - t0 < 1.0  # bounded by (retries + 1) x timeout, not by the babble
        drv.close()


@given(st.binary(max_size=300))
@settings(max_examples=150, deadline=None)
def test_any_garbage_before_the_reply_is_skipped(garbage):
    """Fuzz the driver's receive path: whatever precedes a valid ACK, apply succeeds, no other exception."""
    from drivers import protocol as p
    from drivers.base import BoardInfo

    drv = SerialDriver("stub", timeout_s=0.01, retries=1)
    drv.connected, drv._needs_handshake, drv._port = True, False, object()
    drv._info = BoardInfo(12, (1, 2), 921600, "stub", p.PROTOCOL_VERSION)
    config = SurfaceConfig(2, np.arange(12) % 4, np.arange(12) % 3 > 0)
    sent = []
    drv._send = sent.append

    def reply(deadline):
        if len(sent) > len(replies):
            ack = p.LatchAck(True, 1, p.image_crc(config)).pack()
            replies.append(garbage + p.encode_frame(p.Frame(p.MsgType.ACK, drv._seq, bytes([p.MsgType.SET_CONFIG]) + ack)))
            return replies[-1]
        return b""

    replies = []
    drv._read_some = reply
    assert drv.apply(config) == config
