"""The Observation fast decode: it must give exactly what the full decode gives (the same
Observation, or MessageError) for every input, and be taken for what the twin server sends."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from controller import messages as m
from tests.controller.conftest import run_in_threads
from tests.controller.test_messages_fastpath import SLOT_EDGES, _mangle, agent_ids, outcome
from twin.errors import MessageError

obs_dtypes = st.sampled_from(["<f4", ">f4", "<f8", ">f8", "<f2", "bool", "uint8", "int8", "<i4", ">i8", "<u2",
                              "<c8"])   # complex travels but is no observation: refused by both paths
times = st.floats(width=64) | st.integers(-2**40, 2**40)


@st.composite
def observations(draw):
    dtype = draw(obs_dtypes)
    shape = draw(st.sampled_from([(draw(st.integers(0, 40)),)] * 4 + [(), (2, 3)]))   # mostly 1-D
    return m.Observation(draw(st.sampled_from(SLOT_EDGES) | st.integers(0, 2**63)), draw(agent_ids),
                         draw(hnp.arrays(dtype, shape)), draw(times), draw(times))


def fields(msg):
    """An Observation's content, comparable with ==: types, dtype, byte order, writability."""
    o = msg.obs
    return (type(msg), type(msg.slot), msg.slot, msg.agent, type(o), o.dtype, o.dtype.byteorder, o.shape,
            o.tobytes(), o.flags.writeable, o.flags.owndata or o.base is not None, type(msg.deadline),
            repr(msg.deadline), type(msg.sent_at), repr(msg.sent_at))


def full(data: bytes):
    return outcome(lambda: fields(m.decode(bytearray(data))))   # a bytearray never takes the fast path


def either(data: bytes):
    return outcome(lambda: fields(m.decode(data)))


def _obs(slot=7, agent="irs0", n=5, dtype=np.float32, deadline=1.7e9, sent_at=1.7e9 - 0.5):
    return m.encode(m.Observation(slot, agent, (np.arange(n) / 3).astype(dtype), deadline, sent_at))


@settings(max_examples=300, deadline=None)
@given(msg=observations())
def test_decode_agrees_with_the_full_decode(msg):
    """Any observation: the full decode (which remembers the layout), then the fast one, agree;
    a valid one as ``encode`` writes it is then taken by the fast path."""
    m._OBS_SEEN.clear()   # each example starts with room in the cache (see test_caches_stay_bounded)
    try:
        data = m.encode(msg)
    except Exception:
        return
    expected = full(data)
    for _ in range(2):
        assert either(data) == expected
    if expected[0] == "ok" and type(msg.slot) is int and msg.slot < 2**62:
        fast = m._decode_observation_fast(data)
        assert fast is not None and fields(fast) == expected[1]


def test_the_twin_servers_observations_take_the_fast_path():
    head = m.observation_head(12, "irs3", np.linspace(0, 1, 9, dtype=np.float32))
    data = m.observation_with_times(head, 1.7e9 + 0.05, 1.7e9)
    first = m.decode(data)
    fast = m._decode_observation_fast(data)
    assert fast is not None and fields(fast) == fields(first)
    # the next slot: another slot number (another msgpack int size), other values and times
    data2 = m.observation_with_times(m.observation_head(300, "irs3", np.full(9, 2.5, np.float32)), 5.0, 4.0)
    fast2 = m._decode_observation_fast(data2)
    assert fast2 is not None and (fast2.slot, fast2.deadline, fast2.sent_at) == (300, 5.0, 4.0)
    assert fast2.obs.tolist() == [2.5] * 9


def test_mangled_observations_decode_as_the_full_decode_does():
    rnd = random.Random(5)
    valid = [_obs(), _obs(slot=300, n=1), _obs(slot=2**40, agent="bs0", n=16, dtype=np.float64),
             _obs(n=0), _obs(slot=128, dtype=np.uint8), _obs(slot=3, dtype=np.bool_)]
    for data in valid:
        m.decode(data)
        assert m._decode_observation_fast(data) is not None
    agreed_ok = 0
    for _ in range(6000):
        data = _mangle(rnd.choice(valid), rnd)
        expected = full(data)
        got = either(data)
        assert got == expected or (got[0] == expected[0] == "error" and got[1] is expected[1] is MessageError)
        assert got[0] == "ok" or got[1] is MessageError
        agreed_ok += got[0] == "ok"
    assert agreed_ok > 100      # many mangles hit only values: the fast path's checks ran


@pytest.mark.parametrize("what", ["deadline", "sent_at", "slot"])
def test_fast_path_still_checks_values(what):
    data = bytearray(_obs())
    m.decode(bytes(data))
    if what == "slot":
        start = len(m._OBS_HEAD)
        d = data[:start] + b"\xcf" + (2**62).to_bytes(8, "big") + data[start + 1:]
        with pytest.raises(MessageError, match="obs.slot"):
            m.decode(bytes(d))
        d = data[:start] + b"\xcf" + (2**62 - 1).to_bytes(8, "big") + data[start + 1:]
        assert m.decode(bytes(d)).slot == 2**62 - 1
        return
    at = len(data) - 8 if what == "sent_at" else len(data) - 8 - len(m._OBS_SENT_AT) - 8
    for bad in (b"\x7f\xf8" + bytes(6), b"\x7f\xf0" + bytes(6)):   # NaN, +inf
        d = bytearray(data)
        d[at:at + 8] = bad
        with pytest.raises(MessageError, match=f"obs.{what}"):
            m.decode(bytes(d))


def test_only_what_the_full_decode_accepted_is_remembered(monkeypatch):
    monkeypatch.setattr(m, "_OBS_SEEN", {})
    for bad in (m.encode(m.Observation(1, "a b", np.zeros(3, np.float32), 1.0, 1.0)),
                m.encode(m.Observation(1, "irs0", np.zeros((2, 2), np.float32), 1.0, 1.0))):
        for _ in range(2):
            with pytest.raises(MessageError):
                m.decode(bad)
    assert m._OBS_SEEN == {}


def test_caches_stay_bounded(monkeypatch):
    monkeypatch.setattr(m, "_OBS_SEEN", {})
    for i in range(m._OBS_SEEN_MAX * 2):
        agent = f"a{i:04d}" if i < 40 else "a" * (1 + i % 250)   # ids up to 256 characters
        data = _obs(slot=i, agent=agent, n=i % 7)
        out = m.decode(data)
        assert (out.slot, out.agent, out.obs.size) == (i, agent, i % 7)
    assert len(m._OBS_SEEN) <= m._OBS_SEEN_MAX
    assert all(len(v) <= m._OBS_SEEN_PER_LEN for v in m._OBS_SEEN.values())


def test_fast_decoded_arrays_are_writable_and_independent():
    data = _obs()
    m.decode(data)
    a, b = m.decode(data), m.decode(data)
    a.obs[:] = -1
    assert b.obs.tolist() == (np.arange(5) / 3).astype(np.float32).tolist()
    assert m.decode(data).obs.tolist() == b.obs.tolist()


def test_fast_path_from_many_threads(monkeypatch):
    monkeypatch.setattr(m, "_OBS_SEEN", {})
    errors: list[str] = []

    def worker(k: int) -> None:
        rng = np.random.default_rng(k)
        for slot in range(300):
            obs = rng.standard_normal(3 + (slot + k) % 4).astype(np.float32)
            out = m.decode(m.encode(m.Observation(slot, f"irs{k}", obs, 2.0, 1.0)))
            if out.slot != slot or out.agent != f"irs{k}" or not np.array_equal(out.obs, obs):
                errors.append(f"thread {k} slot {slot}")
                return

    run_in_threads(worker, 4)
    assert errors == []
    assert len(m._OBS_SEEN) > 0
