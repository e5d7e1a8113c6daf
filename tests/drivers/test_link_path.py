"""The lean per-apply link path: predicted ACKs, one-syscall writes, and an emulator that
never answers faster than its wire model allows."""

import fcntl
import os
import threading
import time

import numpy as np
import pytest
import serial
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import protocol as p
from drivers.base import ReadbackMismatch
from drivers.emulator import BoardEmulator, Faults
from drivers.serial_driver import SerialDriver
from twin.surface_config import SurfaceConfig

pytestmark = pytest.mark.timeout(40)


def rand(rng, n, bits):
    return SurfaceConfig(bits, rng.integers(0, 1 << bits, n), rng.random(n) < 0.7)


def connect(emu, **kw):
    kw.setdefault("timeout_s", 0.02)
    drv = SerialDriver(emu.path, baud=emu.baud, **kw)
    drv.connect()
    return drv


def test_steady_state_replies_are_predicted_and_surprises_are_decoded():
    rng = np.random.default_rng(0)
    with BoardEmulator(24, (1, 2), model_wire=False) as emu:
        drv = connect(emu)
        for _ in range(10):
            config = rand(rng, 24, 2)
            assert drv.apply(config) == config and emu.latched == config
        # the first apply learns the latch counter; every later ACK matched its prediction
        assert drv.stats["predicted"] == 9
        # the board latches behind the driver's back (another host, a watchdog trip): the
        # prediction (latch_id + 1) is wrong, the reply is decoded and still verified
        with emu.lock:
            emu.core._latch(SurfaceConfig.safe(24), time.monotonic(), free=True)
        config = rand(rng, 24, 1)
        assert drv.apply(config) == config and emu.latched == config
        assert drv.stats["predicted"] == 9 and drv.last_apply.verified
        config = rand(rng, 24, 1)
        assert drv.apply(config) == config and drv.stats["predicted"] == 10
        drv.close()


def test_a_stuck_element_is_never_hidden_by_the_prediction():
    rng = np.random.default_rng(1)
    with BoardEmulator(16, (1,), model_wire=False, faults=Faults(stuck=(3,))) as emu:
        drv = connect(emu)
        config = SurfaceConfig(1, np.zeros(16, int), np.zeros(16, bool))  # element 3 cannot turn OFF
        for _ in range(3):
            with pytest.raises(ReadbackMismatch) as exc:
                drv.apply(config)
            assert exc.value.mismatched.tolist() == [3] and exc.value.applied == emu.latched
        assert not drv.last_apply.verified and drv.last_apply.mismatched.tolist() == [3]
        config = rand(rng, 16, 1)
        config.on[3], config.phase_idx[3] = True, 0  # what the stuck element holds anyway
        assert drv.apply(config) == config
        drv.close()


def test_multichunk_transfer_predicts_every_chunk():
    rng = np.random.default_rng(2)
    with BoardEmulator(2048, (8,), model_wire=False) as emu:
        drv = connect(emu)
        for _ in range(3):
            config = rand(rng, 2048, 8)  # 2048 + 256 bytes: 3 chunks
            assert drv.apply(config) == config
        assert len(p.chunk_image(config, 0)[0]) == 3
        assert drv.stats["predicted"] == 2 * 3  # the first transfer taught the latch counter
        drv.close()


def _slow_pipe():
    r, w = os.pipe()
    fcntl.fcntl(w, fcntl.F_SETFL, fcntl.fcntl(w, fcntl.F_GETFL) | os.O_NONBLOCK)
    fcntl.fcntl(w, 1031, 4096)  # F_SETPIPE_SZ: a one-page pipe forces partial writes
    return r, w


class _Port:
    write_timeout = 0.3


def test_send_finishes_partial_writes_in_order():
    r, w = _slow_pipe()
    drv = SerialDriver("stub")
    drv._fd, drv._port = w, _Port()
    data = bytes(np.random.default_rng(3).integers(0, 256, 20000, dtype=np.uint8))
    got = bytearray()

    def drain():
        while len(got) < len(data):
            time.sleep(0.002)
            got.extend(os.read(r, 3000))

    t = threading.Thread(target=drain)
    t.start()
    drv._send(data)
    t.join(5)
    assert bytes(got) == data
    os.close(r), os.close(w)


def test_send_times_out_when_nothing_drains():
    r, w = _slow_pipe()
    drv = SerialDriver("stub")
    drv._fd, drv._port = w, _Port()
    t0 = time.monotonic()
    with pytest.raises(serial.SerialTimeoutException):
        drv._send(bytes(20000))
    assert 0.25 < time.monotonic() - t0 < 2.0
    os.close(r), os.close(w)


@pytest.mark.parametrize("tcp", [False, True])
def test_emulator_never_answers_faster_than_the_wire(tcp):
    """Request + ACK bytes at 10 bits each, plus the latch, is a hard lower bound per apply."""
    rng = np.random.default_rng(4)
    baud, latch_us = 57600, 300.0
    with BoardEmulator(64, (1, 3), baud=baud, latch_us=latch_us, tcp_port=0 if tcp else None) as emu:
        if tcp:
            drv = SerialDriver(f"socket://{emu.path}", baud=baud, timeout_s=0.05)
            drv.connect()
        else:
            drv = connect(emu, timeout_s=0.05)
        for _ in range(8):
            config = rand(rng, 64, 3)
            ex = p.set_exchange_bytes(config)
            floor = p.wire_seconds(ex.request_bytes + ex.response_bytes, baud) + latch_us / 1e6
            t0 = time.perf_counter()
            assert drv.apply(config) == config
            assert time.perf_counter() - t0 >= floor
        drv.close()


@given(st.integers(0, 23), st.integers(1, 255))
@settings(max_examples=60, deadline=None)
def test_a_near_miss_of_the_predicted_ack_is_never_accepted(pos, flip):
    """One flipped byte in the predicted ACK: the driver must not take it as the reply."""
    from drivers.base import BoardInfo

    drv = SerialDriver("stub", timeout_s=0.01, retries=2)
    drv.connected, drv._needs_handshake, drv._port = True, False, object()
    drv._info = BoardInfo(12, (1, 2), 921600, "stub", p.PROTOCOL_VERSION)
    drv._latch_id = 41
    config = SurfaceConfig(2, np.arange(12) % 4, np.arange(12) % 3 > 0)
    sent, replies, predicted_before_good = [], [], []
    drv._send = sent.append

    def reply(deadline):
        if len(sent) > len(replies):
            body = bytes([p.MsgType.SET_CONFIG]) + p.LatchAck(True, 42, p.image_crc(config)).pack()
            good = p.encode_frame(p.Frame(p.MsgType.ACK, drv._seq, body))
            assert len(good) == 24
            if not replies:
                bad = bytearray(good)
                bad[pos] ^= flip
                replies.append(bytes(bad))
            else:
                predicted_before_good.append(drv.stats["predicted"])
                replies.append(good)
            return replies[-1]
        return b""

    drv._read_some = reply
    assert drv.apply(config) == config
    assert drv.stats["retries"] == 1 and predicted_before_good == [0]  # the mangled copy was refused


@pytest.mark.parametrize("cut", [-1, 1])
def test_an_ack_body_of_the_wrong_length_is_an_apply_error_not_a_latch(cut):
    """The apply path reads the SET_CONFIG ACK without LatchAck.unpack; it must still refuse
    a body one byte short or long (valid CRC and seq) instead of reading it as latched."""
    from drivers.base import ApplyError, BoardInfo

    drv = SerialDriver("stub", timeout_s=0.01, retries=0)
    drv.connected, drv._needs_handshake, drv._port = True, False, object()
    drv._info = BoardInfo(12, (1,), 921600, "stub", p.PROTOCOL_VERSION)
    drv._latch_id = 7
    config = SurfaceConfig(1, np.arange(12) % 2, np.ones(12, bool))
    drv._send = lambda wire: None
    body = p.LatchAck(True, 8, p.image_crc(config)).pack()
    body = body[:cut] if cut < 0 else body + b"\x00"
    drv._read_some = lambda deadline: p.encode(p.MsgType.ACK, drv._seq, bytes([p.MsgType.SET_CONFIG]) + body)
    with pytest.raises(ApplyError, match="malformed ACK"):
        drv.apply(config)
    assert drv._latch_id == 7  # nothing taken as latched


def test_emulator_wire_clock_starts_when_the_host_wrote(monkeypatch):
    """Over TCP the modelled wire time runs from the kernel's arrival stamp of the bytes, not
    from when the emulator woke up to read them: a 5 ms late wake-up of the emulator process
    must not lengthen the modelled exchange (a real board's UART does not wait for a host CPU)."""
    import select as select_module
    import socket

    import drivers.emulator as emulator_module

    real_select = select_module.select

    def late_select(*args, **kwargs):
        ready = real_select(*args, **kwargs)
        if ready[0]:
            time.sleep(0.005)       # the emulator's process is scheduled 5 ms after the bytes came
        return ready

    monkeypatch.setattr(emulator_module.select, "select", late_select)
    baud = 9600
    with BoardEmulator(16, (1, 2), baud=baud, tcp_port=0) as emu:
        with socket.create_connection(("127.0.0.1", emu.port)) as host:
            host.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            time.sleep(0.1)                                   # accepted (and its late wake-up done)
            frame = p.encode_frame(p.Frame(p.MsgType.INFO, 1, b""))
            t0 = time.monotonic()
            host.sendall(frame)
            host.settimeout(2.0)
            reply = host.recv(1000)
            elapsed = time.monotonic() - t0
    wire_request = p.wire_seconds(len(frame), baud)
    assert reply
    assert emu._rx_free - t0 < wire_request + 0.002            # 5 ms late would be + 0.005
    assert elapsed >= p.wire_seconds(len(frame) + len(reply), baud)   # never faster than the wire


def test_emulator_handles_a_request_only_near_its_last_byte():
    """A board's MCU decodes a request as its bytes come off the line: nothing of it is handled
    while most of it is still on the wire (the emulator waits until ~1 ms before the last byte
    crosses, which also keeps its decode away from the moment its host is busiest), and the
    reply still comes at the modelled time."""
    import socket

    baud = 1200   # a 12-byte request occupies the line ~0.1 s
    with BoardEmulator(16, (1, 2), baud=baud, tcp_port=0) as emu:
        with socket.create_connection(("127.0.0.1", emu.port)) as host:
            host.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            time.sleep(0.1)
            frame = p.encode_frame(p.Frame(p.MsgType.INFO, 1, b""))
            t0 = time.monotonic()
            host.sendall(frame)
            time.sleep(0.03)
            handled_early = emu.frames_seen
            host.settimeout(5.0)
            reply = host.recv(1000)
            elapsed = time.monotonic() - t0
    assert p.wire_seconds(len(frame), baud) > 0.09
    assert handled_early == 0 and emu.frames_seen == 1
    assert reply and elapsed >= p.wire_seconds(len(frame) + len(reply), baud)
