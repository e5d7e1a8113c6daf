"""The emulator's firmware logic (BoardCore): atomic latching, idempotence, garbage never latches."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import protocol as p
from drivers.emulator import BoardCore, EnergyModel, _frame_crc
from twin.surface_config import SurfaceConfig

N = 40


def send(core, frame, now=0.0):
    return core.handle(frame, _frame_crc(frame), now)


def body(reply):
    assert reply.type == p.MsgType.ACK, p.Nack.unpack(reply.payload)
    return p.split_ack(reply)[1]


def cfg(bits=2, seed=0, n=N):
    rng = np.random.default_rng(seed)
    return SurfaceConfig(bits, rng.integers(0, 1 << bits, n), rng.random(n) < 0.6)


def set_frames(config, seq0, txn=1, max_payload=p.MAX_PAYLOAD):
    payloads, flags = p.chunk_image(config, txn, max_payload)
    return [p.Frame(p.MsgType.SET_CONFIG, seq0 + i, pl, flags) for i, pl in enumerate(payloads)]


def test_chunks_stage_and_latch_only_on_the_last():
    core = BoardCore(N, (1, 2))
    before = core.latched
    frames = set_frames(cfg(), 10, max_payload=13)
    assert len(frames) > 2
    for f in frames[:-1]:
        ack = p.LatchAck.unpack(body(send(core, f)[0]))
        assert not ack.latched and core.latched == before  # nothing visible until the last chunk
    ack = p.LatchAck.unpack(body(send(core, frames[-1])[0]))
    assert ack.latched and core.latched == cfg()
    assert ack.readback_crc == p.image_crc(cfg())


def test_interrupted_transfer_keeps_previous_state_and_out_of_order_is_refused():
    core = BoardCore(N, (1, 2))
    first = set_frames(cfg(seed=1), 1)
    send(core, first[0])
    old = core.latched
    frames = set_frames(cfg(seed=2), 20, txn=5, max_payload=13)
    send(core, frames[0])
    reply = send(core, frames[2])[0]  # chunk 1 lost for good
    assert reply.type == p.MsgType.NACK and p.Nack.unpack(reply.payload).code == p.ErrorCode.CHUNK
    assert core.latched == old
    # a chunk of another transaction cannot complete this one
    other = set_frames(cfg(seed=3), 40, txn=6, max_payload=13)
    send(core, frames[0])
    reply = send(core, other[1])[0]
    assert p.Nack.unpack(reply.payload).code == p.ErrorCode.CHUNK and core.latched == old


def test_retransmission_is_not_applied_twice():
    core = BoardCore(N, (1, 2))
    f = set_frames(cfg(seed=4), 77)[0]
    r1 = send(core, f)
    count = core.latch_count
    r2 = send(core, f)  # same seq and bytes: answered from the cache
    assert r1 == r2 and core.latch_count == count and core.counters["duplicates"] == 1
    g = p.Frame(f.type, f.seq + 1, f.payload, f.flags)  # a new seq is a new request
    send(core, g)
    assert core.latch_count == count + 1


@given(st.binary(max_size=400))
@settings(max_examples=150, deadline=None)
def test_garbage_never_latches(data):
    core = BoardCore(N, (1, 2))
    before, latches = core.latched, core.latch_count
    dec = p.StreamDecoder()
    for item in dec.feed(data + b"\x00"):
        if isinstance(item, p.Frame):
            send(core, item)
        else:
            core.bad_frame()
    assert core.latch_count == latches and core.latched == before


def test_validation_nacks():
    core = BoardCore(N, (1, 2))
    def code(frame):
        r = send(core, frame)[0]
        assert r.type == p.MsgType.NACK
        return p.Nack.unpack(r.payload).code
    assert code(p.Frame(p.MsgType.INFO, 1, version=9)) == p.ErrorCode.VERSION
    assert code(p.Frame(0x42, 2)) == p.ErrorCode.TYPE
    assert code(set_frames(cfg(bits=3), 3)[0]) == p.ErrorCode.RESOLUTION
    assert code(set_frames(cfg(n=N + 1), 4)[0]) == p.ErrorCode.ELEMENTS
    assert code(p.Frame(p.MsgType.SET_CONFIG, 5, b"\x01")) == p.ErrorCode.LENGTH
    assert code(p.Frame(p.MsgType.CODEBOOK_APPLY, 6, b"\x03")) == p.ErrorCode.EMPTY_SLOT
    assert code(p.Frame(p.MsgType.WATCHDOG, 7, p.WatchdogRequest(10, 99).pack())) == p.ErrorCode.SLOT
    # nonzero padding bits in the image are refused, not silently masked
    payloads, flags = p.chunk_image(SurfaceConfig(1, np.zeros(N - 1, int), np.zeros(N - 1, bool)), 1)
    c = p.ConfigChunk.unpack(payloads[0])
    core2 = BoardCore(N - 1, (1,))
    bad = p.ConfigChunk(c.bits, c.n_elements, c.txn, 0, c.total, c.data[:-1] + b"\x80")
    r = core2.handle(p.Frame(p.MsgType.SET_CONFIG, 8, bad.pack(), flags), 1, 0.0)[0]
    assert p.Nack.unpack(r.payload).code == p.ErrorCode.VALUE


def test_watchdog_latches_safe_pattern_once_until_fed():
    core = BoardCore(N, (1, 2))
    send(core, set_frames(cfg(), 1)[0], now=0.0)
    send(core, p.Frame(p.MsgType.WATCHDOG, 2, p.WatchdogRequest(100).pack()), now=0.0)
    assert not core.tick(0.05) and core.latched == cfg()
    assert core.tick(0.2) and core.latched == SurfaceConfig.safe(N, 2) and core.safe_active
    assert not core.tick(0.5) and core.counters["watchdog_trips"] == 1


def test_energy_buffer_refuses_unaffordable_switching():
    core = BoardCore(N, (1,), energy=EnergyModel(capacity_uj=1.0, harvest_uw=0.0, switch_nj=100.0))
    full_on = SurfaceConfig(1, np.ones(N, int), np.ones(N, bool))  # 40 elements * 0.1 uJ = 4 uJ
    r = send(core, set_frames(full_on, 1)[0])[0]
    assert p.Nack.unpack(r.payload).code == p.ErrorCode.ENERGY and core.latch_count == 0
    few = SurfaceConfig(1, np.zeros(N, int), np.arange(N) < 5)  # 5 switches = 0.5 uJ
    assert p.LatchAck.unpack(body(send(core, set_frames(few, 2)[0])[0])).latched
    status = p.StatusReply.unpack(body(send(core, p.Frame(p.MsgType.STATUS, 3))[0]))
    assert status.energy_uj == 0  # 1.0 - 0.5 uJ, reported in whole uJ


@given(st.data())
@settings(max_examples=120, deadline=None)
def test_board_only_ever_latches_whole_transfers(data):
    """Any interleaving of whole, cut-short, gapped and repeated transfers and reboots: the
    latched state is always the last *completely* transferred configuration (or the boot one)."""
    core = BoardCore(N, (1, 2))
    expected, seq, last = core.latched, 0, None
    for _ in range(data.draw(st.integers(1, 25))):
        action = data.draw(st.sampled_from(["whole", "cut", "gap", "dup", "reboot"]))
        if action == "reboot":
            core.reboot(p.BootReason.FAULT, 0.0)
            expected = SurfaceConfig.safe(N, 1)
        elif action == "dup" and last is not None:
            send(core, last)  # a retransmission: never acts twice, never completes anything
        elif action in ("whole", "cut", "gap"):
            config = cfg(bits=data.draw(st.sampled_from([1, 2])), seed=data.draw(st.integers(0, 10**6)))
            # a fresh txn per transfer, as the host guarantees (it increments txn, mod 2^16)
            frames = set_frames(config, seq, txn=seq & 0xFFFF, max_payload=13)
            seq += len(frames)
            if action == "cut":
                frames = frames[: data.draw(st.integers(0, len(frames) - 1))]
            elif action == "gap":
                del frames[data.draw(st.integers(0, len(frames) - 2))]
            for f in frames:
                replies = send(core, f)
                last = f
            if action == "whole":
                assert p.LatchAck.unpack(body(replies[0])).latched
                expected = config
        assert core.latched == expected
