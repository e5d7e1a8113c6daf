"""Wire messages of the runtime: msgpack maps with a schema version, validated on decode.

Every message is a msgpack map ``{"v": SCHEMA_VERSION, "type": <kind>, ...fields}``. Numpy
arrays travel as a msgpack ext type (code ``ARRAY_EXT``) whose payload is itself a msgpack
array ``[dtype string, shape list, raw bytes]``; only plain numeric / bool dtypes are
accepted, so nothing on the wire can make the receiver run code (no pickle anywhere).

``decode`` never raises anything but :class:`twin.errors.MessageError`, whose message names
the offending field; the daemons count and drop such input instead of crashing.
"""

from __future__ import annotations

import math
import struct
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, MutableMapping, Union

import msgpack
import numpy as np

from twin.errors import MessageError
from twin.surface_config import SurfaceConfig

SCHEMA_VERSION = 1
ARRAY_EXT = 42
MAX_MESSAGE_BYTES = 1 << 20          # 1 MiB: a P1 observation is < 1 KiB, a 4096-element config < 16 KiB
MAX_ARRAY_ELEMENTS = 1 << 18
MAX_ARRAY_NDIM = 8
MAX_STR = 256
MAX_MAP_ITEMS = 64

# Little-endian plain dtypes only; anything else (objects, structured, datetimes) is refused.
_ALLOWED_DTYPES = {
    np.dtype(t).str: np.dtype(t)
    for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
              "float16", "float32", "float64", "complex64", "complex128")
}
_ALLOWED_DTYPES = {k.replace(">", "<"): v.newbyteorder("<") for k, v in _ALLOWED_DTYPES.items()}
# numpy's own dtype instances (np.dtype(np.float32) itself, not an equal copy): a receiver's
# ``np.asarray(x, dtype=np.float32)`` then returns the decoded array as is instead of a view.
_NATIVE = {k: np.dtype(v.type) for k, v in _ALLOWED_DTYPES.items()}
_LITTLE = sys.byteorder == "little"

CONTROL_COMMANDS = ("start", "stop", "safe", "reload")


# ---------------------------------------------------------------------------------------------
# Message types


@dataclass(frozen=True, eq=False)
class Observation:
    """Twin server -> agent (topic ``obs/<agent>``), and agent -> peers (``share/<agent>``)."""

    slot: int
    agent: str
    obs: np.ndarray                   # (obs_dim,) float32, the agent's local observation
    deadline: float                   # wall-clock time (time.time()) by which the action is due
    sent_at: float = 0.0

    kind = "obs"


@dataclass(frozen=True, eq=False)
class Action:
    """Agent -> twin server and allowed peers (topic ``act/<agent>``)."""

    slot: int
    agent: str
    action: dict[str, np.ndarray]     # the env's action dict for this agent, B = 1 squeezed
    applied: SurfaceConfig | None     # what the board reports as latched (None for a BS)
    timing: dict[str, float] = field(default_factory=dict)  # decide_s, apply_s, ...

    kind = "act"


@dataclass(frozen=True)
class Heartbeat:
    agent: str
    seq: int
    time: float
    status: str = "ok"
    last_slot: int = -1

    kind = "hb"


@dataclass(frozen=True)
class Hello:
    """Agent -> server on start (and after a restart): who I am and what I run."""

    agent: str
    role: str
    pid: int
    bundle_hash: str = ""
    incarnation: str = ""            # random per process start, so a restart is recognisable

    kind = "hello"


@dataclass(frozen=True)
class Welcome:
    """Server -> agent: your hello arrived, so your subscriptions are live; next slot number."""

    agent: str
    incarnation: str
    next_slot: int

    kind = "welcome"


@dataclass(frozen=True)
class Control:
    """Operator / server -> agents (topic ``ctl/<agent>`` or ``ctl/all``)."""

    command: str                      # one of CONTROL_COMMANDS
    target: str = "all"
    arg: str = ""                     # e.g. the bundle path for "reload"

    kind = "ctl"


Message = Union[Observation, Action, Heartbeat, Hello, Welcome, Control]
_KINDS: dict[str, type] = {c.kind: c for c in (Observation, Action, Heartbeat, Hello, Welcome, Control)}


# ---------------------------------------------------------------------------------------------
# Arrays as ext types


# (dtype string, shape) -> the msgpack bytes of ``[dtype, shape, bin header]`` that precede an
# array's raw data: identical to packing the triple each time, minus the packer per array.
_ARRAY_PREFIX: dict[tuple[str, tuple[int, ...]], bytes] = {}
_ARRAY_PREFIX_MAX = 256


def _array_prefix(dtype_str: str, shape: tuple[int, ...], nbytes: int) -> bytes:
    key = (dtype_str, shape)
    prefix = _ARRAY_PREFIX.get(key)
    if prefix is None:
        packed = msgpack.packb([dtype_str, list(shape), bytes(nbytes)], use_bin_type=True)
        prefix = packed[:len(packed) - nbytes]
        if len(_ARRAY_PREFIX) < _ARRAY_PREFIX_MAX:
            _ARRAY_PREFIX[key] = prefix
    return prefix


def _array_wire(arr: Any) -> tuple[np.ndarray, bytes]:
    """(the array as it travels: little-endian, C order; its raw bytes), or MessageError."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "biufc" or arr.dtype.fields is not None:
        raise MessageError(f"array dtype {arr.dtype} cannot travel on the wire; use a numeric or bool array")
    arr = np.asarray(arr, dtype=arr.dtype.newbyteorder("<"), order="C")  # ascontiguousarray would make 0-d 1-d
    if arr.size > MAX_ARRAY_ELEMENTS:
        raise MessageError(f"array of {arr.size} elements exceeds MAX_ARRAY_ELEMENTS={MAX_ARRAY_ELEMENTS}")
    return arr, arr.tobytes()


# dtype -> its string, for the dtypes that travel as they are (little-endian plain ones): a dict
# lookup is several times cheaper than ``dtype.str``, which builds the string on every call.
# Equal dtypes share that verdict and string (only the byte order '<' / '=' may differ).
_AS_IS_DTYPES: dict[np.dtype, str] = {}


def _wire_parts(arr: np.ndarray) -> tuple[str, tuple[int, ...], bytes]:
    """(dtype string, shape, raw bytes) of an array as it travels, or MessageError."""
    dtype = arr.dtype
    dtype_str = _AS_IS_DTYPES.get(dtype)
    if dtype_str is None and dtype.kind in "biufc" and (dtype.byteorder in "<|"
                                                        or (_LITTLE and dtype.byteorder == "=")):
        dtype_str = dtype.str
        if len(_AS_IS_DTYPES) < _ARRAY_PREFIX_MAX:
            _AS_IS_DTYPES[dtype] = dtype_str
    if dtype_str is not None and arr.flags.c_contiguous and arr.size <= MAX_ARRAY_ELEMENTS:
        # already as it travels (a little-endian plain dtype, C order): no conversion to make
        return dtype_str, arr.shape, arr.tobytes()
    arr, raw = _array_wire(arr)
    return arr.dtype.str, arr.shape, raw


def _pack_array(arr: np.ndarray) -> msgpack.ExtType:
    dtype_str, shape, raw = _wire_parts(arr)
    return msgpack.ExtType(ARRAY_EXT, _array_prefix(dtype_str, shape, len(raw)) + raw)


def _default(obj: Any) -> Any:
    if type(obj) is np.ndarray:
        return _pack_array(obj)
    if isinstance(obj, np.ndarray):
        return _pack_array(np.asarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    raise MessageError(f"value of type {type(obj).__name__} cannot travel on the wire")


# Array payloads already seen, by length: (canonical prefix, dtype, shape, native dtype). A payload
# that is exactly a canonical prefix plus the right number of data bytes parses as that
# (dtype, shape) without unpacking the triple again: its bytes are what the full check below
# accepted before, so the check's result is known. Anything else takes the full check.
_ARRAY_SEEN: dict[int, tuple[tuple[bytes, np.dtype, tuple[int, ...], np.dtype], ...]] = {}
_ARRAY_SEEN_MAX = 256


def _ext_hook(code: int, data: bytes) -> Any:
    if code != ARRAY_EXT:
        raise MessageError(f"unknown msgpack ext type {code}")
    for prefix, dtype, shape, native in _ARRAY_SEEN.get(len(data), ()):
        if data.startswith(prefix):
            # a writable array in native byte order (a copy: frombuffer over bytes is read-only)
            return np.frombuffer(data, dtype, offset=len(prefix)).reshape(shape).astype(native)
    try:
        parts = msgpack.unpackb(data, raw=False, strict_map_key=True, max_bin_len=len(data),
                                max_str_len=64, max_array_len=MAX_ARRAY_NDIM + 2, max_map_len=0)
    except Exception as exc:  # msgpack raises a zoo of ValueError subclasses
        raise MessageError(f"array ext: undecodable payload ({type(exc).__name__})") from None
    if not (isinstance(parts, list) and len(parts) == 3):
        raise MessageError("array ext: expected [dtype, shape, bytes]")
    dtype_str, shape, raw = parts
    if not isinstance(dtype_str, str) or dtype_str not in _ALLOWED_DTYPES:
        raise MessageError(f"array ext: dtype {dtype_str!r} is not allowed")
    if (not isinstance(shape, list) or len(shape) > MAX_ARRAY_NDIM
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_ARRAY_ELEMENTS for s in shape)):
        raise MessageError(f"array ext: bad shape {shape!r}")
    if not isinstance(raw, bytes):
        raise MessageError("array ext: data must be bytes")
    dtype = _ALLOWED_DTYPES[dtype_str]
    n = math.prod(shape)
    if n > MAX_ARRAY_ELEMENTS or n * dtype.itemsize != len(raw):
        raise MessageError(f"array ext: {len(raw)} bytes do not match shape {shape} of {dtype_str}")
    shape = tuple(shape)
    prefix = _array_prefix(dtype_str, shape, len(raw))
    if len(prefix) + len(raw) == len(data) and data.startswith(prefix) and len(_ARRAY_SEEN) < _ARRAY_SEEN_MAX:
        seen = _ARRAY_SEEN.get(len(data), ())
        if all(p != prefix for p, *_ in seen):   # (a dict update is atomic: threads may race here)
            _ARRAY_SEEN[len(data)] = seen + ((prefix, dtype, shape, _NATIVE[dtype_str]),)
    # A writable array in native byte order (a copy: frombuffer over bytes is read-only).
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(_NATIVE[dtype_str])


# ---------------------------------------------------------------------------------------------
# Encode


# One packer per thread, reused for every message (autoreset: each pack returns only its own
# bytes). Not shared across threads: ``default`` runs Python code mid-pack, so another thread
# could interleave into a shared packer's buffer.
_PACKERS = threading.local()


def _packer() -> msgpack.Packer:
    packer = getattr(_PACKERS, "packer", None)
    if packer is None:
        packer = _PACKERS.packer = msgpack.Packer(default=_default, use_bin_type=True)
    return packer


# An observation is the same map every slot but for the slot number, the array's bytes and the
# two times: its bytes are assembled from pieces packed once per (agent, dtype, shape) instead of
# packing the map (byte for byte what packing the map gives; tests/controller/test_messages.py).
_OBS_HEAD = msgpack.packb({"v": SCHEMA_VERSION, "type": "obs", "slot": 0})[:-1]   # ... "slot" key, no value
_OBS_HEAD = b"\x87" + _OBS_HEAD[1:]                                               # a map of 7 entries
_OBS_DEADLINE = msgpack.packb("deadline") + b"\xcb"                              # key, then a float 64
_OBS_SENT_AT = msgpack.packb("sent_at") + b"\xcb"
_F64 = struct.Struct(">d")
_OBS_MID: dict[tuple[str, str, tuple[int, ...]], bytes] = {}


def observation_head(slot: int, agent: str, obs: np.ndarray) -> bytes:
    """An observation's bytes up to its two times (slot, agent, array): what a sender can
    encode before it knows the deadline; :func:`observation_with_times` completes it."""
    if type(agent) is not str:
        raise MessageError(f"obs.agent: expected str, got {type(agent).__name__}")
    arr, raw = _array_wire(obs)
    key = (agent, arr.dtype.str, arr.shape)
    mid = _OBS_MID.get(key)
    if mid is None:
        ext = msgpack.ExtType(ARRAY_EXT, _array_prefix(arr.dtype.str, arr.shape, len(raw)) + raw)
        packed = msgpack.packb({"agent": agent, "obs": ext}, use_bin_type=True)
        mid = packed[1:len(packed) - len(raw)]   # without the map header and the array's bytes
        if len(_OBS_MID) < _ARRAY_PREFIX_MAX:
            _OBS_MID[key] = mid
    return b"".join((_OBS_HEAD, _packer().pack(slot), mid, raw))


def observation_with_times(head: bytes, deadline: float, sent_at: float) -> bytes:
    """The whole observation from :func:`observation_head`'s bytes: exactly ``encode`` of it."""
    data = b"".join((head, _OBS_DEADLINE, _F64.pack(float(deadline)), _OBS_SENT_AT, _F64.pack(float(sent_at))))
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {len(data)} bytes exceeds MAX_MESSAGE_BYTES={MAX_MESSAGE_BYTES}")
    return data


def _encode_observation(msg: Observation) -> bytes:
    return observation_with_times(observation_head(msg.slot, msg.agent, msg.obs), msg.deadline, msg.sent_at)


def encode(msg: Message) -> bytes:
    """Serialize one message (raises MessageError for values that cannot travel or are too big)."""
    kind = getattr(type(msg), "kind", None)
    if kind not in _KINDS:
        raise MessageError(f"type: {type(msg).__name__} is not a wire message")
    if kind == "obs" and type(msg.agent) is str:
        return _encode_observation(msg)
    if kind == "act":
        data = _encode_action_fast(msg)
        if data is not None:
            return data
    return _encode_map(kind, msg)


def _encode_map(kind: str, msg: Message) -> bytes:
    """Any message as its map, packed field by field (what :func:`_encode_observation` shortcuts)."""
    body: dict[str, Any] = {"v": SCHEMA_VERSION, "type": kind}
    if isinstance(msg, Observation):
        body.update(slot=msg.slot, agent=msg.agent, obs=np.asarray(msg.obs), deadline=float(msg.deadline),
                    sent_at=float(msg.sent_at))
    elif isinstance(msg, Action):
        body.update(slot=msg.slot, agent=msg.agent,
                    action={k: np.asarray(v) for k, v in msg.action.items()},
                    applied=None if msg.applied is None else
                    {"bits": msg.applied.bits, "phase_idx": msg.applied.phase_idx, "on": msg.applied.on},
                    timing={k: float(v) for k, v in msg.timing.items()})
    else:
        body.update({k: getattr(msg, k) for k in msg.__dataclass_fields__})
    data = _packer().pack(body)
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message of {len(data)} bytes exceeds MAX_MESSAGE_BYTES={MAX_MESSAGE_BYTES}")
    return data


# ---------------------------------------------------------------------------------------------
# Decode + validate


def _get(body: dict, name: str, types: tuple[type, ...], kind: str) -> Any:
    if name not in body:
        raise MessageError(f"{kind}.{name}: missing")
    value = body[name]
    if isinstance(value, bool) and bool not in types:
        raise MessageError(f"{kind}.{name}: expected {'/'.join(t.__name__ for t in types)}, got bool")
    if not isinstance(value, types):
        raise MessageError(f"{kind}.{name}: expected {'/'.join(t.__name__ for t in types)}, got {type(value).__name__}")
    if isinstance(value, str) and len(value) > MAX_STR:
        raise MessageError(f"{kind}.{name}: string longer than {MAX_STR}")
    if isinstance(value, float) and not math.isfinite(value):
        raise MessageError(f"{kind}.{name}: must be finite")
    return value


def _slot(body: dict, kind: str) -> int:
    slot = _get(body, "slot", (int,), kind)
    if not 0 <= slot < 2**62:
        raise MessageError(f"{kind}.slot: {slot} out of range")
    return slot


_VALID_IDS: set[str] = set()     # agent ids that passed the check below (a run has a handful)
_VALID_IDS_MAX = 1024


def _agent(body: dict, kind: str, name: str = "agent") -> str:
    agent = body.get(name)
    if type(agent) is str and agent in _VALID_IDS:
        return agent
    agent = _get(body, name, (str,), kind)
    if not agent or not all(c.isalnum() or c in "_-." for c in agent):
        raise MessageError(f"{kind}.{name}: {agent!r} is not a valid agent id (letters, digits, _ - .)")
    if len(_VALID_IDS) < _VALID_IDS_MAX:
        _VALID_IDS.add(agent)
    return agent


def _array(value: Any, where: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise MessageError(f"{where}: expected an array, got {type(value).__name__}")
    return value


def _float_map(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict) or len(value) > MAX_MAP_ITEMS:
        raise MessageError(f"{where}: expected a map of at most {MAX_MAP_ITEMS} numbers")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise MessageError(f"{where}.{k}: expected a finite number")
        out[k] = float(v)
    return out


def _decode_body(kind: str, body: dict) -> Message:
    if kind == "obs":
        obs = _array(body.get("obs"), "obs.obs")
        if obs.ndim != 1 or obs.dtype.kind not in "fiub":
            raise MessageError(f"obs.obs: expected a 1-D numeric array, got shape {obs.shape} dtype {obs.dtype}")
        return Observation(slot=_slot(body, kind), agent=_agent(body, kind), obs=obs,
                           deadline=float(_get(body, "deadline", (int, float), kind)),
                           sent_at=float(_get(body, "sent_at", (int, float), kind)))
    if kind == "act":
        raw_action = body.get("action")
        if not isinstance(raw_action, dict) or len(raw_action) > MAX_MAP_ITEMS:
            raise MessageError("act.action: expected a map of arrays")
        action = {}
        for k, v in raw_action.items():
            if not isinstance(k, str):
                raise MessageError("act.action: keys must be strings")
            action[k] = _array(v, f"act.action.{k}")
        applied_raw = body.get("applied", "missing")
        if applied_raw == "missing":
            raise MessageError("act.applied: missing")
        applied = None
        if applied_raw is not None:
            if not isinstance(applied_raw, dict):
                raise MessageError("act.applied: expected a map {bits, phase_idx, on} or nil")
            bits = _get(applied_raw, "bits", (int,), "act.applied")
            idx = _array(applied_raw.get("phase_idx"), "act.applied.phase_idx")
            on = _array(applied_raw.get("on"), "act.applied.on")
            try:
                applied = SurfaceConfig(bits=bits, phase_idx=idx, on=on)
            except Exception as exc:
                raise MessageError(f"act.applied: {exc}") from None
        return Action(slot=_slot(body, kind), agent=_agent(body, kind), action=action, applied=applied,
                      timing=_float_map(body.get("timing", {}), "act.timing"))
    if kind == "hb":
        return Heartbeat(agent=_agent(body, kind), seq=_get(body, "seq", (int,), kind),
                         time=float(_get(body, "time", (int, float), kind)),
                         status=_get(body, "status", (str,), kind),
                         last_slot=_get(body, "last_slot", (int,), kind))
    if kind == "hello":
        return Hello(agent=_agent(body, kind), role=_get(body, "role", (str,), kind),
                     pid=_get(body, "pid", (int,), kind), bundle_hash=_get(body, "bundle_hash", (str,), kind),
                     incarnation=_get(body, "incarnation", (str,), kind))
    if kind == "welcome":
        return Welcome(agent=_agent(body, kind), incarnation=_get(body, "incarnation", (str,), kind),
                       next_slot=_slot({"slot": _get(body, "next_slot", (int,), kind)}, kind))
    # ctl
    command = _get(body, "command", (str,), kind)
    if command not in CONTROL_COMMANDS:
        raise MessageError(f"ctl.command: {command!r} is not one of {', '.join(CONTROL_COMMANDS)}")
    return Control(command=command, target=_get(body, "target", (str,), kind), arg=_get(body, "arg", (str,), kind))


def decode(data: bytes) -> Message:
    """Parse and validate one wire message; any problem raises MessageError naming the field."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MessageError(f"message: expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageError(f"message: {len(data)} bytes exceeds MAX_MESSAGE_BYTES={MAX_MESSAGE_BYTES}")
    if type(data) is bytes:
        if data.startswith(_OBS_HEAD):
            msg = _decode_observation_fast(data)
            if msg is not None:
                return msg
        elif data.startswith(_ACT_HEAD):
            msg = _decode_action_fast(data)
            if msg is not None:
                return msg
    try:
        body = msgpack.unpackb(data if type(data) is bytes else bytes(data), raw=False, ext_hook=_ext_hook, strict_map_key=True,
                               max_map_len=MAX_MAP_ITEMS, max_array_len=MAX_ARRAY_ELEMENTS,
                               max_str_len=MAX_MESSAGE_BYTES, max_bin_len=MAX_MESSAGE_BYTES,
                               max_ext_len=MAX_MESSAGE_BYTES)
    except MessageError:
        raise
    except RecursionError:
        raise MessageError("message: nested too deeply") from None
    except Exception as exc:  # ExtraData, FormatError, StackError, ValueError, TypeError...
        raise MessageError(f"message: not valid msgpack ({type(exc).__name__})") from None
    if not isinstance(body, dict):
        raise MessageError(f"message: expected a map, got {type(body).__name__}")
    version = body.get("v")
    if version != SCHEMA_VERSION:
        raise MessageError(f"v: schema version {version!r} is not supported (expected {SCHEMA_VERSION})")
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in _KINDS:
        raise MessageError(f"type: {kind!r} is not one of {', '.join(_KINDS)}")
    try:
        msg = _decode_body(kind, body)
    except MessageError:
        raise
    except Exception as exc:  # defensive: validation must never leak another exception type
        raise MessageError(f"{kind}: invalid ({type(exc).__name__}: {exc})") from None
    if kind == "act" and type(data) is bytes:
        _remember_action_layout(data, msg)
    elif kind == "obs" and type(data) is bytes:
        _remember_observation_layout(data, msg)
    return msg


_ACT_HEAD = msgpack.packb({"v": SCHEMA_VERSION, "type": "act", "slot": 0})[:-1]   # ... "slot" key, no value
_ACT_HEAD = b"\x87" + _ACT_HEAD[1:]                                                # a map of 7 entries
_AGENT_KEY = msgpack.packb("agent")
_UINT_SIZE = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}


# ---------------------------------------------------------------------------------------------
# Action fast paths
#
# An agent's answer has the same layout every slot (its id; the action's keys, dtypes and shapes;
# whether it reports a configuration, and that one's dtypes and shapes; the timing keys): only the
# slot, the arrays' bytes, the reported resolution and the times change. A layout's constant
# bytes are packed once. Encode joins them with the values: byte for byte what packing the map
# gives (tests/controller/test_messages_fastpath.py). Decode, for bytes whose constant parts
# equal those of a layout a full decode accepted before, reads the values at their known offsets:
# the structural checks' outcome is that earlier one, and every check that depends on a value
# (slot range, finite times, the configuration's resolution and indices) is still made; anything
# else takes the full decode.


@dataclass(frozen=True, eq=False)
class _ActionLayout:
    key: tuple                        # what the encoder looks it up by
    agent: str
    action_keys: tuple[str, ...]
    timing_keys: tuple[str, ...]
    with_applied: bool
    pieces: tuple[bytes, ...]         # the constant bytes before each value, after the slot
    last: bytes                       # ... and after the last value
    tail_len: int                     # bytes after the slot
    consts: struct.Struct             # unpacks the constant pieces (the values skipped)
    const_values: tuple[bytes, ...]   # ... which must read exactly these
    scalars: struct.Struct            # unpacks (bits if with_applied, *times)
    # (offset after the slot, wire dtype, count, shape, native dtype) per array, action's first;
    # None when a dtype is one decode refuses (such a layout is only ever encoded)
    arrays: tuple[tuple[int, np.dtype, int, tuple[int, ...], np.dtype], ...] | None


_ACT_LAYOUTS: dict[tuple, _ActionLayout] = {}                 # the encoder's, by layout key
_ACT_SEEN: dict[int, tuple[_ActionLayout, ...]] = {}          # the decoder's, by tail length
_ACT_LAYOUTS_MAX = 256
_ACT_SEEN_PER_LEN = 16
_SMALL_UINT = tuple(bytes((i,)) for i in range(0x80))         # positive fixints


def _ext_header(n: int) -> bytes:
    return msgpack.packb(msgpack.ExtType(ARRAY_EXT, bytes(n)))[:-n]


def _build_action_layout(key: tuple) -> _ActionLayout:
    agent, action_key, applied_key, timing_keys = key
    pieces: list[bytes] = []
    values: list[tuple[str, int]] = []            # (kind: a(rray) / b(its) / f(loat), size)
    arrays: list[tuple[str, tuple[int, ...], int]] = []
    cur = [msgpack.packb("agent"), msgpack.packb(agent), msgpack.packb("action"),
           msgpack.Packer().pack_map_header(len(action_key))]

    def value(kind: str, size: int) -> None:
        pieces.append(b"".join(cur))
        cur.clear()
        values.append((kind, size))

    def array(name: str, dtype_str: str, shape: tuple[int, ...]) -> None:
        nbytes = math.prod(shape) * np.dtype(dtype_str).itemsize
        prefix = _array_prefix(dtype_str, shape, nbytes)
        cur.extend((msgpack.packb(name), _ext_header(len(prefix) + nbytes), prefix))
        value("a", nbytes)
        arrays.append((dtype_str, shape, nbytes))

    for name, dtype_str, shape in action_key:
        array(name, dtype_str, shape)
    cur.append(msgpack.packb("applied"))
    if applied_key is None:
        cur.append(msgpack.packb(None))
    else:
        cur.extend((msgpack.Packer().pack_map_header(3), msgpack.packb("bits")))
        value("b", 1)
        array("phase_idx", applied_key[0], applied_key[1])
        array("on", applied_key[2], applied_key[3])
    cur.extend((msgpack.packb("timing"), msgpack.Packer().pack_map_header(len(timing_keys))))
    for name in timing_keys:
        cur.extend((msgpack.packb(name), b"\xcb"))   # a float 64
        value("f", 8)
    last = b"".join(cur)

    offsets, offset = [], 0
    for piece, (kind, size) in zip(pieces, values):
        offset += len(piece)
        if kind == "a":
            offsets.append(offset)
        offset += size
    decodable = all(d in _ALLOWED_DTYPES for d, _, _ in arrays)
    return _ActionLayout(
        key=key, agent=agent, action_keys=tuple(k for k, _, _ in action_key), timing_keys=timing_keys,
        with_applied=applied_key is not None,
        pieces=tuple(pieces), last=last, tail_len=offset + len(last),
        consts=struct.Struct(">" + "".join(f"{len(p)}s{size}x" for p, (_, size) in zip(pieces, values))
                             + f"{len(last)}s"),
        const_values=(*pieces, last),
        scalars=struct.Struct(">" + "".join(f"{len(p)}x" + {"a": f"{size}x", "b": "B", "f": "d"}[kind]
                                            for p, (kind, size) in zip(pieces, values))),
        arrays=tuple((off, _ALLOWED_DTYPES[d], n // _ALLOWED_DTYPES[d].itemsize, shape, _NATIVE[d])
                     for off, (d, shape, n) in zip(offsets, arrays)) if decodable else None)


def _action_parts(msg: Action) -> tuple[_ActionLayout, list[bytes]] | None:
    """(layout, values) of an Action laid out the common way, or None: the map is packed instead.
    Raises whatever converting a value raises (the caller then leaves it to the map packer)."""
    agent, action, applied, timing = msg.agent, msg.action, msg.applied, msg.timing
    if type(agent) is not str or type(msg.slot) is not int or type(action) is not dict or type(timing) is not dict:
        return None
    values: list[bytes] = []
    action_key = []
    for name, v in action.items():
        if type(name) is not str:
            return None
        dtype_str, shape, raw = _wire_parts(np.asarray(v))   # as the map packer's default does
        action_key.append((name, dtype_str, shape))
        values.append(raw)
    applied_key = None
    if applied is not None:
        if type(applied) is not SurfaceConfig:
            return None
        bits, idx, on = applied.bits, applied.phase_idx, applied.on
        if type(bits) is not int or not 0 <= bits < 0x80 or type(idx) is not np.ndarray or type(on) is not np.ndarray:
            return None
        idx_dtype, idx_shape, idx_raw = _wire_parts(idx)
        on_dtype, on_shape, on_raw = _wire_parts(on)
        applied_key = (idx_dtype, idx_shape, on_dtype, on_shape)
        values += (_SMALL_UINT[bits], idx_raw, on_raw)
    for name, v in timing.items():
        if type(name) is not str:
            return None
        values.append(_F64.pack(float(v)))
    key = (agent, tuple(action_key), applied_key, tuple(timing))
    layout = _ACT_LAYOUTS.get(key)
    if layout is None:
        layout = _build_action_layout(key)
        if len(_ACT_LAYOUTS) < _ACT_LAYOUTS_MAX:
            _ACT_LAYOUTS[key] = layout
    return layout, values


def _encode_action_fast(msg: Action) -> bytes | None:
    """``_encode_map("act", msg)``'s bytes from the layout's pieces, or None for anything unusual
    (including anything that would raise: the map packer then raises exactly its own error)."""
    try:
        parts = _action_parts(msg)
        if parts is None:
            return None
        layout, values = parts
        n = len(values)
        out: list[bytes] = [_ACT_HEAD, _packer().pack(msg.slot), *layout.pieces, *values, layout.last]
        out[2:2 + 2 * n:2] = layout.pieces      # interleave: piece, value, piece, value, ..., last
        out[3:3 + 2 * n:2] = values
    except Exception:
        return None
    data = b"".join(out)
    return data if len(data) <= MAX_MESSAGE_BYTES else None


def _slot_after_head(data: bytes) -> tuple[int, int] | None:
    """(slot, offset after it) of bytes that start with ``_ACT_HEAD`` or ``_OBS_HEAD`` (as
    long), the slot packed as an unsigned integer the way ``encode`` packs it; None for
    anything else."""
    i = len(_ACT_HEAD)
    if len(data) <= i:
        return None
    tag = data[i]
    if tag < 0x80:                      # positive fixint
        return tag, i + 1
    n = _UINT_SIZE.get(tag)
    if n is None or len(data) < i + 1 + n:
        return None
    return int.from_bytes(data[i + 1:i + 1 + n], "big"), i + 1 + n


def _decode_action_fast(data: bytes) -> Action | None:
    """The Action in ``data`` (which starts with ``_ACT_HEAD``) if its constant bytes are those
    of a layout a full decode accepted and its values pass their checks; None otherwise."""
    head = _slot_after_head(data)
    if head is None:
        return None
    slot, i = head
    for layout in _ACT_SEEN.get(len(data) - i, ()):
        if data.startswith(layout.pieces[0] if layout.pieces else layout.last, i) \
                and layout.consts.unpack_from(data, i) == layout.const_values:
            break
    else:
        return None
    if slot >= 2**62:
        return None
    scalars = layout.scalars.unpack_from(data, i)
    times = scalars[1:] if layout.with_applied else scalars
    if not all(map(math.isfinite, times)):
        return None
    if _LITTLE:
        # writable native-order arrays: views of one copy of the message (the wire is little-endian)
        buf = bytearray(data)
        arrays = [np.frombuffer(buf, native, count, i + offset) if len(shape) == 1 else
                  np.frombuffer(buf, native, count, i + offset).reshape(shape)
                  for offset, _, count, shape, native in layout.arrays]
    else:
        arrays = [np.frombuffer(data, dtype, count, i + offset).reshape(shape).astype(native)
                  for offset, dtype, count, shape, native in layout.arrays]
    applied = None
    if layout.with_applied:
        n = len(layout.action_keys)
        idx, on = arrays[n], arrays[n + 1]
        bits = scalars[0]
        if bits >= 0x80:
            return None          # not a positive fixint: other msgpack, for the full decode
        try:
            # (uint8 indices and a bool mask, the common layout, skip the constructor's numpy
            # conversions and reductions, which cost more than the rest of this decode)
            applied = SurfaceConfig.of_uint8(bits, idx, on)
        except Exception:
            return None          # the full decode refuses it, naming the field
    return Action(slot, layout.agent, dict(zip(layout.action_keys, arrays)), applied,
                  dict(zip(layout.timing_keys, times)))


def _remember_action_layout(data: bytes, msg: Action) -> None:
    """After a full decode accepted ``data``: if it is exactly what ``encode`` writes for ``msg``,
    its layout's constant bytes are known good, and later bytes with them take the fast path."""
    seen = _ACT_SEEN.get(len(data) - len(_ACT_HEAD) - len(_packer().pack(msg.slot)), ())
    if len(seen) >= _ACT_SEEN_PER_LEN or (not seen and len(_ACT_SEEN) >= _ACT_LAYOUTS_MAX):
        return
    try:
        parts = _action_parts(msg)
    except Exception:
        return
    if parts is None or parts[0].arrays is None or any(s.key == parts[0].key for s in seen):
        return
    if _encode_action_fast(msg) == data:   # (a dict update is atomic: threads may race here)
        _ACT_SEEN[parts[0].tail_len] = seen + (parts[0],)


# Observations: what follows the slot is (agent key and id, the array's ext header) + the array's
# bytes + the two times, always packed as float 64 (``observation_with_times``). A full decode that
# accepted bytes laid out exactly so remembers the constant middle part, keyed by the length of
# middle + array bytes; bytes with that middle then decode without msgpack: only the slot, the
# array's bytes and the times vary, and those are checked here as the full decode checks them.
_OBS_TAIL = len(_OBS_DEADLINE) + 8 + len(_OBS_SENT_AT) + 8
_OBS_SEEN: dict[int, tuple[tuple[bytes, str, np.dtype, np.dtype], ...]] = {}
_OBS_SEEN_MAX = 256       # lengths
_OBS_SEEN_PER_LEN = 16    # layouts of one length
assert len(_OBS_HEAD) == len(_ACT_HEAD)   # _slot_after_head reads the slot of either


def _decode_observation_fast(data: bytes) -> Observation | None:
    """The Observation in ``data`` (which starts with ``_OBS_HEAD``) if its constant bytes are
    those of a layout a full decode accepted and its values pass their checks; else None."""
    head = _slot_after_head(data)
    if head is None:
        return None
    slot, i = head
    end = len(data) - _OBS_TAIL
    for mid, agent, dtype, native in _OBS_SEEN.get(end - i, ()):
        if data.startswith(mid, i):
            break
    else:
        return None
    at = end + len(_OBS_DEADLINE)
    if (slot >= 2**62 or not data.startswith(_OBS_DEADLINE, end)
            or not data.startswith(_OBS_SENT_AT, at + 8)):
        return None
    deadline = _F64.unpack_from(data, at)[0]
    sent_at = _F64.unpack_from(data, at + 8 + len(_OBS_SENT_AT))[0]
    if not (math.isfinite(deadline) and math.isfinite(sent_at)):
        return None          # the full decode refuses it, naming the field
    # a writable array in native byte order, as the full decode gives (a copy of the bytes)
    raw = data[i + len(mid):end]
    obs = np.frombuffer(bytearray(raw), native) if _LITTLE else np.frombuffer(raw, dtype).astype(native)
    return Observation(slot, agent, obs, deadline, sent_at)


def _remember_observation_layout(data: bytes, msg: Observation) -> None:
    """After a full decode accepted ``data``: if it is exactly what ``encode`` writes for ``msg``,
    its middle part is known good, and later bytes with it take the fast path."""
    slot_end = _slot_after_head(data) if data.startswith(_OBS_HEAD) else None
    if slot_end is None or type(msg.slot) is not int or type(msg.agent) is not str:
        return
    key = len(data) - slot_end[1] - _OBS_TAIL      # the middle + array bytes, as the fast path keys them
    seen = _OBS_SEEN.get(key, ())
    if len(seen) >= _OBS_SEEN_PER_LEN or (not seen and len(_OBS_SEEN) >= _OBS_SEEN_MAX):
        return               # full: checked before re-encoding, so a full cache costs no encode
    try:
        head = observation_head(msg.slot, msg.agent, msg.obs)
    except MessageError:
        return
    if data != observation_with_times(head, msg.deadline, msg.sent_at):
        return               # another layout of the same message (e.g. keys in another order)
    mid = head[slot_end[1]:len(head) - msg.obs.size * msg.obs.dtype.itemsize]
    if any(entry[0] == mid for entry in seen):
        return
    wire = msg.obs.dtype.newbyteorder("<") if msg.obs.dtype.byteorder != "|" else msg.obs.dtype
    _OBS_SEEN[key] = seen + ((mid, msg.agent, wire, msg.obs.dtype),)   # (a dict update is atomic)


def peek_action(data: bytes) -> tuple[int, str] | None:
    """(slot, agent) of an action laid out as :func:`encode` writes it, read from its first
    bytes without decoding the rest; None for anything laid out otherwise.

    Not a validation: it lets a receiver decide cheaply whether a message is an answer it is
    waiting for, and :func:`decode` must still check the whole message before anything uses
    it (the twin server does so once the slot's answers are in)."""
    if type(data) is not bytes or not data.startswith(_ACT_HEAD) or len(data) > MAX_MESSAGE_BYTES:
        return None
    head = _slot_after_head(data)
    if head is None:
        return None
    slot, i = head
    try:
        if data[i:i + len(_AGENT_KEY)] != _AGENT_KEY:
            return None
        i += len(_AGENT_KEY)
        tag = data[i]
        if 0xA0 <= tag <= 0xBF:             # fixstr
            n, i = tag - 0xA0, i + 1
        elif tag == 0xD9:                   # str 8
            n, i = data[i + 1], i + 2
        else:
            return None
        raw = data[i:i + n]
        if len(raw) != n:
            return None
        return slot, raw.decode("utf-8")
    except (IndexError, UnicodeDecodeError):
        return None


def decode_or_count(data: bytes, counters: MutableMapping[str, int]) -> Message | None:
    """Decode for a receiver that must never crash on bad input: a malformed message is
    dropped and counted under ``counters["malformed"]``, and None is returned."""
    try:
        return decode(data)
    except MessageError:
        counters["malformed"] += 1
        return None
