"""Action fast paths: encode must give exactly the packed map's bytes (or its exact error), and
decode must give exactly what the full decode gives (the same Action, or MessageError)."""

from __future__ import annotations

import random

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from controller import messages as m
from tests.controller.conftest import run_in_threads
from twin.errors import MessageError
from twin.surface_config import SurfaceConfig

# msgpack switches integer encodings at these values (fixint / uint 8 / 16 / 32 / 64)
SLOT_EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**62 - 1, 2**62, 2**64 - 1]
slots = st.sampled_from(SLOT_EDGES) | st.integers(0, 2**63)
keys = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True) | st.text(min_size=1, max_size=40)
agent_ids = st.from_regex(r"[a-z][a-z0-9_.-]{0,10}", fullmatch=True) | st.just("x" * 40) | st.just("a b")
dtypes = st.sampled_from(["bool", "int8", "uint8", "<i2", ">i2", "<i4", ">i8", "<u8", "<f2", "<f4", ">f8",
                          "<c8", ">c16"])


@st.composite
def arrays(draw):
    """Arrays as agents make them, and ones that need converting (big-endian, strided,
    Fortran order), and values that are not arrays at all."""
    dtype = draw(dtypes)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    arr = draw(hnp.arrays(dtype, shape))
    how = draw(st.sampled_from(["plain", "plain", "strided", "fortran", "list", "scalar"]))
    if how == "strided" and arr.ndim:
        return np.repeat(arr, 2, axis=0)[::2]
    if how == "fortran":
        return np.asfortranarray(arr)
    if how == "list":
        return arr.tolist()
    if how == "scalar" and arr.size:
        return arr.reshape(-1)[0]          # a numpy scalar
    return arr


@st.composite
def configs(draw):
    n = draw(st.integers(0, 40))
    bits = draw(st.integers(1, 8))
    idx = draw(hnp.arrays("int64", n, elements=st.integers(0, (1 << bits) - 1)))
    cfg = SurfaceConfig(bits=bits, phase_idx=idx, on=draw(hnp.arrays("bool", n)))
    odd = draw(st.sampled_from(["as made", "as made", "int64 indices", "numpy bits", "strided"]))
    # what a SurfaceConfig holds after mutation behind its back: the map packer still packs it
    if odd == "int64 indices":
        object.__setattr__(cfg, "phase_idx", cfg.phase_idx.astype(np.int64))
    elif odd == "numpy bits":
        object.__setattr__(cfg, "bits", np.int64(cfg.bits))
    elif odd == "strided" and n:
        object.__setattr__(cfg, "on", np.repeat(cfg.on, 2)[::2])
    return cfg


timing_values = st.floats(width=64) | st.integers(-2**40, 2**40) | st.floats(width=32).map(np.float32)
actions = st.builds(m.Action, slot=slots, agent=agent_ids,
                    action=st.dictionaries(keys, arrays(), max_size=4),
                    applied=st.none() | configs(),
                    timing=st.dictionaries(keys, timing_values, max_size=6))


def outcome(f):
    try:
        return ("ok", f())
    except Exception as exc:   # the exact error counts too
        return ("error", type(exc), str(exc))


def decoded_fields(msg):
    """An Action's content, comparable with ==, including dtypes, shapes and writability."""
    def arr(a):
        return (type(a), a.dtype, a.dtype.byteorder, a.shape, a.tobytes(), a.flags.writeable)

    applied = None if msg.applied is None else (type(msg.applied.bits), msg.applied.bits,
                                                arr(msg.applied.phase_idx), arr(msg.applied.on))
    return (type(msg), msg.slot, msg.agent, [(k, arr(v)) for k, v in msg.action.items()], applied,
            [(k, type(v), v) for k, v in msg.timing.items()])


def full_decode(data: bytes):
    """The full path only: decode takes the fast path for ``bytes`` only."""
    return decoded_fields(m.decode(bytearray(data)))


def either_decode(data: bytes):
    return outcome(lambda: decoded_fields(m.decode(data)))


@settings(max_examples=300, deadline=None)
@given(msg=actions)
def test_encode_is_the_packed_map_or_its_error(msg):
    """Byte for byte what the map packer writes, the first time (layout built) and once cached;
    and whatever the map packer refuses, refused with the same error."""
    expected = outcome(lambda: m._encode_map("act", msg))
    for _ in range(2):
        assert outcome(lambda: m.encode(msg)) == expected


@pytest.mark.parametrize("slot", SLOT_EDGES + [2**64, -1, -129, True])
def test_encode_slot_encodings(slot):
    msg = m.Action(slot, "irs0", {"phase_idx": np.arange(4)}, SurfaceConfig(2, np.arange(4), np.ones(4, bool)),
                   {"decide_s": 1e-4})
    assert outcome(lambda: m.encode(msg)) == outcome(lambda: m._encode_map("act", msg))


def test_encode_refusals_unchanged():
    for value in (np.array([object()]), np.array(["s"]), np.zeros(m.MAX_ARRAY_ELEMENTS + 1, np.uint8),
                  np.zeros(2, [("a", "<i4")]), object()):
        msg = m.Action(1, "irs0", {"x": value}, None, {})
        expected = outcome(lambda: m._encode_map("act", msg))
        assert expected[0] == "error" and outcome(lambda: m.encode(msg)) == expected
    # too big as a whole: 5 arrays of 2**18 bytes
    big = {f"k{i}": np.zeros(m.MAX_ARRAY_ELEMENTS, np.uint8) for i in range(5)}
    msg = m.Action(1, "irs0", big, None, {})
    assert outcome(lambda: m.encode(msg)) == outcome(lambda: m._encode_map("act", msg))
    assert "MAX_MESSAGE_BYTES" in outcome(lambda: m.encode(msg))[2]


@settings(max_examples=200, deadline=None)
@given(msg=actions)
def test_decode_agrees_with_the_full_decode(msg):
    """A valid answer decodes the same through the full path (which remembers its layout) and
    then through the fast one; and the fast path is taken for the layouts daemons send."""
    # Each example starts with room in the caches: hypothesis shrinks through many agents of one
    # length, which can fill that length's bucket (a full cache only costs speed, see the bounds test).
    m._ACT_SEEN.clear()
    m._ACT_LAYOUTS.clear()
    try:
        data = m.encode(msg)
    except Exception:
        return
    expected = outcome(lambda: full_decode(data))
    for _ in range(2):
        assert either_decode(data) == expected
    if expected[0] == "ok" and type(data) is bytes:
        out = m.decode(data)
        canonical = (msg.applied is None or (type(msg.applied.bits) is int and msg.applied.phase_idx.dtype == np.uint8
                                             and msg.applied.on.flags.c_contiguous))
        if canonical and type(msg.slot) is int:
            assert m._decode_action_fast(data) is not None
            assert decoded_fields(m._decode_action_fast(data)) == decoded_fields(out)


def _answer(slot=7, bits=2, n=8, agent="irs0", timing=None):
    cfg = SurfaceConfig(bits, np.arange(n) % (1 << bits), np.arange(n) % 3 > 0)
    action = {"bits": np.array(bits), "phase_idx": np.arange(n) % (1 << bits), "on": cfg.on.copy()}
    return m.encode(m.Action(slot, agent, action, cfg, timing if timing is not None else
                             {"decide_s": 1e-4, "apply_s": 2e-5, "recv_lag_s": 1e-5, "cpu_s": 1e-4, "wall_s": 2e-4}))


def _mangle(data: bytes, rnd: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 3)):
        op = rnd.choice(["flip", "set", "insert", "delete", "truncate", "swap"])
        pos = rnd.randrange(len(b) + 1) if b else 0
        if op == "flip" and pos < len(b):
            b[pos] ^= 1 << rnd.randrange(8)
        elif op == "set" and pos < len(b):
            b[pos] = rnd.choice([0, 1, 2, 3, 4, 8, 9, 0x7F, 0x80, 0xC0, 0xCB, 0xCC, 0xD3, 0xFF, rnd.randrange(256)])
        elif op == "insert":
            b[pos:pos] = bytes([rnd.randrange(256)])
        elif op == "delete" and pos < len(b):
            del b[pos]
        elif op == "truncate":
            del b[pos:]
        elif op == "swap" and len(b) > 1:
            q = rnd.randrange(len(b))
            b[pos % len(b)], b[q] = b[q], b[pos % len(b)]
    return bytes(b)


def test_mangled_answers_decode_as_the_full_decode_does():
    """Flipped, replaced, inserted, deleted, swapped bytes and cuts of remembered layouts: the
    fast path must agree with the full decode on every one (same Action, or both refuse)."""
    rnd = random.Random(9)
    valid = [_answer(), _answer(slot=300, bits=1, n=3), _answer(slot=2**40, bits=3, n=16, agent="irs1"),
             _answer(timing={}), m.encode(m.Action(128, "bs0", {"x": np.arange(3.0)}, None, {"t": 1.0}))]
    for data in valid:
        m.decode(data)                                  # the full decode remembers the layout
        assert m._decode_action_fast(data) is not None  # the fast path now takes it
    agreed_ok = 0
    for _ in range(6000):
        data = _mangle(rnd.choice(valid), rnd)
        expected = outcome(lambda: full_decode(data))
        got = either_decode(data)
        assert got == expected or (got[0] == expected[0] == "error" and got[1] is expected[1] is MessageError)
        assert got[0] == "ok" or got[1] is MessageError
        agreed_ok += got[0] == "ok"
    assert agreed_ok > 100      # many mangles hit only values: the fast path's value checks ran


@pytest.mark.parametrize("what", ["bits", "index", "time", "slot"])
def test_fast_path_still_checks_values(what):
    """Values inside a remembered layout that the full decode refuses are refused."""
    data = bytearray(_answer(bits=2, n=8))
    m.decode(bytes(data))
    start = len(m._ACT_HEAD) + 1
    # (other tests may have remembered other layouts of the same length)
    layout = next(lay for lay in m._ACT_SEEN[len(data) - start]
                  if lay.consts.unpack_from(data, start) == lay.const_values)
    idx_at = start + layout.arrays[3][0]                 # action bits, phase_idx, on; then applied
    # the resolution follows the three action arrays and the constant pieces before it
    bits_at = start + sum(len(p) for p in layout.pieces[:4]) + sum(a[2] * a[1].itemsize for a in layout.arrays[:3])
    assert data[bits_at] == 2
    if what == "bits":
        for v in (0, 9, 0x7F):
            d = bytearray(data)
            d[bits_at] = v
            with pytest.raises(MessageError, match="act.applied"):
                m.decode(bytes(d))
        d = bytearray(data)
        d[bits_at] = 1                  # indices up to 3 no longer fit 1 bit
        with pytest.raises(MessageError, match="phase_idx"):
            m.decode(bytes(d))
        return
    if what == "index":
        d = bytearray(data)
        d[idx_at + 5] = 4               # bits = 2: indices must stay below 4
        with pytest.raises(MessageError, match="phase_idx"):
            m.decode(bytes(d))
        d[idx_at + 5] = 3
        assert m.decode(bytes(d)).applied.phase_idx[5] == 3
        return
    if what == "time":
        d = bytearray(data)
        d[-8:] = b"\x7f\xf8" + bytes(6)   # NaN as the last time
        with pytest.raises(MessageError, match="timing"):
            m.decode(bytes(d))
        return
    d = bytearray(data)
    d[start - 1:start] = b"\xcf" + (2**62).to_bytes(8, "big")
    with pytest.raises(MessageError, match="slot"):
        m.decode(bytes(d))
    d[start:start + 8] = (2**62 - 1).to_bytes(8, "big")
    assert m.decode(bytes(d)).slot == 2**62 - 1


def test_only_what_the_full_decode_accepted_is_remembered(monkeypatch):
    monkeypatch.setattr(m, "_ACT_SEEN", {})
    bad_agent = m.encode(m.Action(1, "a b", {}, None, {}))
    for _ in range(2):
        with pytest.raises(MessageError, match="agent"):
            m.decode(bad_agent)
    assert m._ACT_SEEN == {}
    # a valid answer whose configuration travels as int64 (not as encode writes a SurfaceConfig):
    # decoded correctly every time, never remembered
    odd = msgpack.packb({"v": 1, "type": "act", "slot": 3, "agent": "irs0", "action": {},
                         "applied": {"bits": 1, "phase_idx": m._pack_array(np.array([0, 1])),
                                     "on": m._pack_array(np.array([True, False]))}, "timing": {}},
                        use_bin_type=True)
    for _ in range(2):
        out = m.decode(odd)
        assert out.applied == SurfaceConfig(1, np.array([0, 1]), np.array([True, False]))
    assert m._ACT_SEEN == {}


def test_caches_stay_bounded(monkeypatch):
    monkeypatch.setattr(m, "_ACT_LAYOUTS", {})
    monkeypatch.setattr(m, "_ACT_SEEN", {})
    for i in range(m._ACT_LAYOUTS_MAX + 50):
        # one tail length for many layouts, then many tail lengths
        agent = f"a{i:04d}" if i < 40 else "a" * (1 + i % 200)
        data = m.encode(m.Action(i, agent, {"x": np.zeros(i % 7)}, None, {"t": float(i)}))
        assert m.decode(data).agent == agent
        assert m.decode(data).slot == i
    assert len(m._ACT_LAYOUTS) <= m._ACT_LAYOUTS_MAX
    assert len(m._ACT_SEEN) <= m._ACT_LAYOUTS_MAX
    assert all(len(v) <= m._ACT_SEEN_PER_LEN for v in m._ACT_SEEN.values())


def test_fast_paths_from_many_threads(monkeypatch):
    """Threads encoding and decoding their own answers while the caches fill: every message
    comes back as sent (the caches only ever gain whole, finished layouts)."""
    monkeypatch.setattr(m, "_ACT_LAYOUTS", {})
    monkeypatch.setattr(m, "_ACT_SEEN", {})
    errors: list[str] = []

    def worker(k: int) -> None:
        rng = np.random.default_rng(k)
        for slot in range(300):
            n = 4 + (slot + k) % 5                       # a few layouts per thread
            cfg = SurfaceConfig(2, rng.integers(0, 4, n), rng.random(n) > 0.5)
            msg = m.Action(slot, f"irs{k}", {"phase_idx": cfg.phase_idx.astype(np.int64)}, cfg,
                           {"decide_s": float(slot)})
            data = m.encode(msg)
            out = m.decode(data)
            if (data != m._encode_map("act", msg) or out.slot != slot or out.agent != f"irs{k}"
                    or out.applied != cfg or out.timing != {"decide_s": float(slot)}
                    or not np.array_equal(out.action["phase_idx"], cfg.phase_idx)):
                errors.append(f"thread {k} slot {slot}")
                return

    run_in_threads(worker, 4)
    assert errors == []
    assert len(m._ACT_SEEN) > 0


def test_fast_decoded_arrays_are_writable_and_independent():
    """The fast path's arrays are views of one private copy of the message: writing one changes
    neither another array, nor the input, nor a later decode of the same bytes."""
    data = _answer(bits=2, n=8)
    m.decode(data)
    first, second = m._decode_action_fast(data), m.decode(data)
    assert first is not None
    for arr in first.action.values():
        assert arr.flags.writeable and arr.flags.c_contiguous and arr.dtype.isnative
        arr[...] = 0
    assert first.applied == second.applied and first.applied.on.sum() > 0   # the configuration untouched
    first.applied.on[...] = False
    assert second.applied.on.sum() > 0 and m.decode(data).applied == second.applied
    assert decoded_fields(second) == full_decode(data)
