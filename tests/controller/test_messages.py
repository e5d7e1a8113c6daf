"""Wire codec: property-based round trips, and fuzzing that only ever yields MessageError."""

from __future__ import annotations

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

agent_ids = st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
slots = st.integers(0, 2**40)
numeric_dtypes = st.sampled_from(["bool", "int8", "int64", "uint8", "float32", "float64", "complex64"])


@st.composite
def arrays(draw, max_dims=3):
    dtype = draw(numeric_dtypes)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=6))
    return draw(hnp.arrays(dtype, shape))


@st.composite
def surface_configs(draw):
    n = draw(st.integers(1, 64))
    bits = draw(st.integers(1, 3))
    idx = draw(hnp.arrays("int64", n, elements=st.integers(0, (1 << bits) - 1)))
    on = draw(hnp.arrays("bool", n))
    return SurfaceConfig(bits=bits, phase_idx=idx, on=on)


def same_array(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(slot=slots, agent=agent_ids, obs=hnp.arrays("float32", st.integers(0, 32)), deadline=finite, sent=finite)
def test_observation_round_trip(slot, agent, obs, deadline, sent):
    out = m.decode(m.encode(m.Observation(slot, agent, obs, deadline, sent)))
    assert isinstance(out, m.Observation)
    assert (out.slot, out.agent, out.deadline, out.sent_at) == (slot, agent, deadline, sent)
    assert same_array(out.obs, obs)


@settings(max_examples=60, deadline=None)
@given(slot=slots, agent=agent_ids, action=st.dictionaries(agent_ids, arrays(), max_size=4),
       applied=st.none() | surface_configs(), timing=st.dictionaries(agent_ids, finite, max_size=4))
def test_action_round_trip(slot, agent, action, applied, timing):
    out = m.decode(m.encode(m.Action(slot, agent, action, applied, timing)))
    assert isinstance(out, m.Action)
    assert (out.slot, out.agent, out.timing) == (slot, agent, timing)
    assert out.action.keys() == action.keys()
    assert all(same_array(out.action[k], action[k]) for k in action)
    assert out.applied == applied


@settings(max_examples=40, deadline=None)
@given(msg=st.one_of(
    st.builds(m.Heartbeat, agent=agent_ids, seq=st.integers(0, 2**31), time=finite,
              status=st.sampled_from(["ok", "safe", "late"]), last_slot=st.integers(-1, 10**6)),
    st.builds(m.Hello, agent=agent_ids, role=agent_ids, pid=st.integers(1, 2**22),
              bundle_hash=st.text("0123456789abcdef", max_size=64), incarnation=st.text("abc", max_size=8)),
    st.builds(m.Welcome, agent=agent_ids, incarnation=st.text("abc", max_size=8), next_slot=slots),
    st.builds(m.Control, command=st.sampled_from(m.CONTROL_COMMANDS), target=agent_ids, arg=st.text(max_size=50)),
))
def test_small_messages_round_trip(msg):
    assert m.decode(m.encode(msg)) == msg


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=512))
def test_fuzz_random_bytes_only_message_error(data):
    try:
        m.decode(data)
    except MessageError:
        pass


def _valid_action_bytes() -> bytes:
    cfg = SurfaceConfig(2, np.arange(8) % 4, np.ones(8, bool))
    return m.encode(m.Action(7, "irs0", {"phase_idx": np.arange(8) % 4, "bits": np.array(2)}, cfg, {"decide_s": 1e-4}))


def _mangled_action(cut: int, flips) -> bytes:
    """A valid action's bytes with (position, value) overwrites, then cut after ``cut`` bytes."""
    data = bytearray(_valid_action_bytes())
    for pos, val in flips:
        if pos < len(data):
            data[pos] = val
    return bytes(data[:cut])


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 400), flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4))
def test_fuzz_truncated_and_corrupted_only_message_error(cut, flips):
    try:
        m.decode(_mangled_action(cut, flips))
    except MessageError:
        pass


@settings(max_examples=200, deadline=None)
@given(body=st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | finite | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20))
def test_fuzz_wrong_shaped_maps_only_message_error(body):
    # Well-formed msgpack with the right header but arbitrary fields.
    for kind in ("obs", "act", "hb", "hello", "welcome", "ctl"):
        payload = {"v": m.SCHEMA_VERSION, "type": kind}
        if isinstance(body, dict):
            payload.update(body)
        else:
            payload["obs"] = payload["action"] = payload["agent"] = body
        try:
            m.decode(msgpack.packb(payload, use_bin_type=True))
        except MessageError:
            pass


def test_specific_rejections_name_the_field():
    good = m.encode(m.Observation(1, "irs0", np.zeros(3, np.float32), 1.0))
    body = msgpack.unpackb(good, raw=False, ext_hook=lambda c, d: msgpack.ExtType(c, d))
    cases = {
        "v": ({**body, "v": 99}, "schema version"),
        "type": ({**body, "type": "pickle"}, "type"),
        "slot": ({**body, "slot": -1}, "obs.slot"),
        "agent": ({**body, "agent": "a b"}, "obs.agent"),
        "deadline": ({**body, "deadline": "soon"}, "obs.deadline"),
        "missing": ({k: v for k, v in body.items() if k != "deadline"}, "obs.deadline: missing"),
    }
    for name, (payload, text) in cases.items():
        with pytest.raises(MessageError, match=text):
            m.decode(msgpack.packb(payload, use_bin_type=True))


def test_object_dtypes_and_foreign_ext_refused():
    with pytest.raises(MessageError, match="dtype"):
        m.encode(m.Observation(1, "a", np.array([object()], dtype=object), 1.0))
    with pytest.raises(MessageError):
        m.encode(m.Action(1, "a", {"x": np.array(["s"])}, None))
    bad_dtype = msgpack.ExtType(m.ARRAY_EXT, msgpack.packb(["|O", [1], b"\0" * 8], use_bin_type=True))
    foreign = msgpack.ExtType(7, b"anything")
    mismatch = msgpack.ExtType(m.ARRAY_EXT, msgpack.packb(["<f4", [4], b"\0" * 8], use_bin_type=True))
    for ext, text in ((bad_dtype, "not allowed"), (foreign, "unknown msgpack ext"), (mismatch, "do not match")):
        payload = msgpack.packb({"v": 1, "type": "obs", "slot": 0, "agent": "a", "obs": ext,
                                 "deadline": 0.0, "sent_at": 0.0}, use_bin_type=True)
        with pytest.raises(MessageError, match=text):
            m.decode(payload)


def test_oversized_refused_both_ways():
    with pytest.raises(MessageError, match="MAX"):
        m.encode(m.Observation(1, "a", np.zeros(m.MAX_ARRAY_ELEMENTS + 1, np.float32), 1.0))
    with pytest.raises(MessageError, match="MAX_MESSAGE_BYTES"):
        m.decode(b"\x80" * (m.MAX_MESSAGE_BYTES + 1))
    # A huge declared shape with a tiny buffer must not allocate.
    ext = msgpack.ExtType(m.ARRAY_EXT, msgpack.packb(["<f8", [2**17, 2**17], b""], use_bin_type=True))
    payload = msgpack.packb({"v": 1, "type": "obs", "slot": 0, "agent": "a", "obs": ext, "deadline": 0.0,
                             "sent_at": 0.0}, use_bin_type=True)
    with pytest.raises(MessageError):
        m.decode(payload)


def test_applied_config_validated():
    payload = msgpack.packb({"v": 1, "type": "act", "slot": 0, "agent": "irs0", "action": {},
                             "applied": {"bits": 1, "phase_idx": m._pack_array(np.array([0, 5])),
                                         "on": m._pack_array(np.array([True, True]))},
                             "timing": {}}, use_bin_type=True)
    with pytest.raises(MessageError, match="act.applied"):
        m.decode(payload)


@settings(max_examples=80, deadline=None)
@given(arr=arrays(max_dims=4))
def test_array_wire_bytes_are_the_plain_triple(arr):
    """The encoder caches each (dtype, shape)'s header; the bytes on the wire must stay exactly
    msgpack's packing of ``[dtype, shape, raw]`` (the documented format), the first time and
    again once the header is cached."""
    le = np.asarray(arr, dtype=arr.dtype.newbyteorder("<"))
    expected = msgpack.packb([le.dtype.str, list(le.shape), le.tobytes()], use_bin_type=True)
    for _ in range(2):
        ext = m._pack_array(arr)
        assert ext.code == m.ARRAY_EXT and ext.data == expected


def test_encode_from_many_threads_keeps_messages_apart():
    """Each thread packs with its own packer: concurrent encodes never mix their bytes."""
    errors: list[str] = []

    def worker(k: int) -> None:
        obs = np.full(7 + k, k, dtype=np.float32)
        for slot in range(300):
            out = m.decode(m.encode(m.Observation(slot, f"a{k}", obs, 1.0, 0.0)))
            if out.agent != f"a{k}" or out.slot != slot or not np.array_equal(out.obs, obs):
                errors.append(f"thread {k} slot {slot}")
                return

    run_in_threads(worker, 4)
    assert errors == []


@settings(max_examples=80, deadline=None)
@given(slot=slots, agent=agent_ids, obs=arrays(max_dims=2), deadline=st.floats(width=64), sent=finite)
def test_observation_bytes_are_the_packed_map(slot, agent, obs, deadline, sent):
    """Observations are assembled from pieces cached per (agent, dtype, shape): the bytes must
    be exactly msgpack's packing of the message's map, the first time and once cached."""
    msg = m.Observation(slot, agent, obs, deadline, sent)
    for _ in range(2):
        assert m.encode(msg) == m._encode_map("obs", msg)
    # the twin server encodes the head at the end of the slot before, the times when it starts
    assert m.observation_with_times(m.observation_head(slot, agent, obs), deadline, sent) == m.encode(msg)


@settings(max_examples=80, deadline=None)
@given(slot=slots, agent=agent_ids, action=st.dictionaries(agent_ids, arrays(), max_size=3),
       applied=st.none() | surface_configs())
def test_peek_action_reads_slot_and_agent_of_what_encode_writes(slot, agent, action, applied):
    data = m.encode(m.Action(slot, agent, action, applied, {"decide_s": 1e-4}))
    assert m.peek_action(data) == (slot, agent)
    long_id = agent + "x" * 40                       # str 8 instead of fixstr
    assert m.peek_action(m.encode(m.Action(slot, long_id, action, applied))) == (slot, long_id)


def test_peek_action_is_none_for_other_layouts():
    obs = m.encode(m.Observation(3, "irs0", np.zeros(2, np.float32), 1.0))
    act = m.encode(m.Action(3, "irs0", {}, None))
    body = msgpack.unpackb(act, raw=False)
    reordered = msgpack.packb({"agent": "irs0", **body}, use_bin_type=True)   # same content, other order
    assert m.decode(reordered).agent == "irs0"
    for data in (obs, reordered, b"", act[:20], act[:len(m._ACT_HEAD) + 3], bytearray(act),
                 m.encode(m.Heartbeat("irs0", 1, 0.0))):
        assert m.peek_action(data) is None


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, 400), flips=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)), max_size=3))
def test_fuzz_peek_never_raises_and_agrees_with_decode(cut, flips):
    data = _mangled_action(cut, flips)
    peek = m.peek_action(data)
    try:
        msg = m.decode(data)
    except MessageError:
        return
    if peek is not None and isinstance(msg, m.Action):
        assert peek == (msg.slot, msg.agent)   # whenever both read it, they read the same


def test_array_fast_path_only_takes_exact_canonical_bytes():
    """A decoded array's (dtype, shape) header is remembered; later payloads with exactly that
    header parse without the full check, anything else still gets it."""
    arr = np.arange(6, dtype=np.int16).reshape(2, 3)
    data = m.encode(m.Action(1, "irs0", {"a": arr}, None))
    for _ in range(2):                                     # full check, then the remembered header
        out = m.decode(data).action["a"]
        assert out.dtype == np.int16 and out.shape == (2, 3) and np.array_equal(out, arr)
        assert out.flags.writeable
    # the same array with its shape packed non-canonically (uint16 instead of fixint): full check
    odd = msgpack.ExtType(m.ARRAY_EXT, b"\x93\xa3<i2\x92\xcd\x00\x02\xcd\x00\x03\xc4\x0c" + arr.tobytes())
    payload = msgpack.packb({"v": 1, "type": "act", "slot": 1, "agent": "irs0", "action": {"a": odd},
                             "applied": None, "timing": {}}, use_bin_type=True)
    assert np.array_equal(m.decode(payload).action["a"], arr)
    # a remembered header with one byte too few or too many of data is refused, not mis-read
    good = m._pack_array(arr).data
    for bad in (good[:-1], good + b"\0"):
        payload = msgpack.packb({"v": 1, "type": "act", "slot": 1, "agent": "irs0",
                                 "action": {"a": msgpack.ExtType(m.ARRAY_EXT, bad)}, "applied": None,
                                 "timing": {}}, use_bin_type=True)
        with pytest.raises(MessageError, match="do not match|undecodable"):
            m.decode(payload)
