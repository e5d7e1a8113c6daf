"""The ristwin board protocol, version 1: a pure codec (bytes in, messages out).

Knows nothing about ports, threads or time; the serial driver and the board emulator both
build on it. The normative description is ``docs/PROTOCOL.md``; this module is its
reference implementation.

Frame before stuffing (little-endian)::

    version u8 | type u8 | seq u16 | flags u8 | length u16 | payload[length] | crc32 u32

``crc32`` is ``binascii.crc32`` (IEEE 802.3, reflected 0xEDB88320) over everything before
it. The frame is COBS-encoded and sent between two 0x00 delimiters (a leading delimiter
flushes any partial frame a receiver holds after line noise).
"""

from __future__ import annotations

import binascii
import enum
import functools
import struct
from dataclasses import dataclass, field

import numpy as np
from cobs import cobs

from twin.surface_config import MAX_PHASE_BITS, SurfaceConfig

PROTOCOL_VERSION = 1
DELIMITER = b"\x00"
MAX_PAYLOAD = 1024  # bytes of payload per frame; a board may advertise less in INFO
HEADER = struct.Struct("<BBHBH")
CRC = struct.Struct("<I")
OVERHEAD = HEADER.size + CRC.size  # 11 bytes around the payload, before COBS
MAX_FRAME = OVERHEAD + MAX_PAYLOAD
# COBS adds 1 byte plus 1 per 254; anything longer between delimiters is garbage.
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 2
MAX_ELEMENTS = 0xFFFF
MAX_IMAGE = 0xFFFF  # bytes of one packed configuration image (phases + mask)
BUILTIN_SAFE_SLOT = 0xFF  # WATCHDOG safe_slot meaning "every element OFF at phase 0"
NO_ENERGY_BUFFER = 0xFFFFFFFF


class MsgType(enum.IntEnum):
    INFO = 0x01
    SET_CONFIG = 0x02
    READBACK = 0x03
    STATUS = 0x04
    CODEBOOK_STORE = 0x05
    CODEBOOK_APPLY = 0x06
    WATCHDOG = 0x07
    RESET = 0x08
    ACK = 0x80
    NACK = 0x81
    EVENT_BOOT = 0x82


REQUEST_TYPES = frozenset(t for t in MsgType if t < 0x80)


class Flag(enum.IntFlag):
    NONE = 0
    MASK_ALL_ON = 0x01  # SET_CONFIG / CODEBOOK_STORE: the ON/OFF mask is omitted, all ON
    SEQ_UNKNOWN = 0x02  # NACK for a frame the board could not parse (seq field meaningless)


class ErrorCode(enum.IntEnum):
    CRC = 1  # frame failed COBS or CRC; sent with SEQ_UNKNOWN
    VERSION = 2  # unsupported protocol version; detail = the board's version
    TYPE = 3  # unknown message type
    LENGTH = 4  # length field or payload size wrong for the type
    RESOLUTION = 5  # bits not supported by this board
    ELEMENTS = 6  # element count differs from the board's
    CHUNK = 7  # chunk out of order / unknown transaction; restart at offset 0
    SLOT = 8  # codebook slot out of range
    EMPTY_SLOT = 9  # codebook slot holds nothing
    ENERGY = 10  # energy buffer too low to switch; nothing latched
    BUSY = 11  # board cannot take the command now; retry later
    VALUE = 12  # a field value is out of range (e.g. nonzero padding, image too long)


class BootReason(enum.IntEnum):
    POWER_ON = 0
    RESET_COMMAND = 1
    FAULT = 2


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    flags: int = 0
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class DecodeError:
    """A frame that failed to decode; returned as a value, never raised."""

    kind: str  # "cobs" | "short" | "crc" | "length" | "overflow"
    size: int


@dataclass
class DecoderStats:
    frames: int = 0
    cobs_errors: int = 0
    crc_errors: int = 0
    length_errors: int = 0
    short_frames: int = 0
    overflows: int = 0
    bytes_discarded: int = 0

    def errors(self) -> int:
        return self.cobs_errors + self.crc_errors + self.length_errors + self.short_frames + self.overflows


# --------------------------------------------------------------------------- framing


def encode_frame(frame: Frame) -> bytes:
    """Frame -> wire bytes, delimiters included."""
    return encode(frame.type, frame.seq, frame.payload, frame.flags, frame.version)


def encode(mtype: int, seq: int, payload: bytes = b"", flags: int = 0, version: int = PROTOCOL_VERSION) -> bytes:
    """The fields of a frame -> wire bytes, delimiters included (``encode_frame`` without
    building a ``Frame`` first; the driver's per-apply path uses it)."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    body = HEADER.pack(version, mtype, seq & 0xFFFF, flags, len(payload)) + payload
    return b"\x00" + cobs.encode(body + CRC.pack(binascii.crc32(body))) + b"\x00"


def decode_body(encoded: bytes) -> Frame | DecodeError:
    """One COBS block (no delimiters) -> Frame, or a DecodeError value."""
    if len(encoded) > MAX_ENCODED:
        return DecodeError("overflow", len(encoded))
    try:
        body = cobs.decode(encoded)
    except cobs.DecodeError:
        return DecodeError("cobs", len(encoded))
    if len(body) < OVERHEAD:
        return DecodeError("short", len(encoded))
    (crc,) = CRC.unpack_from(body, len(body) - CRC.size)
    if binascii.crc32(body[: -CRC.size]) != crc:
        return DecodeError("crc", len(encoded))
    version, mtype, seq, flags, length = HEADER.unpack_from(body)
    if length != len(body) - OVERHEAD:
        return DecodeError("length", len(encoded))
    return Frame(mtype, seq, bytes(body[HEADER.size : -CRC.size]), flags, version)


class StreamDecoder:
    """Splits a byte stream on 0x00 and decodes each block.

    Never raises on input: garbage, truncated and corrupted frames come back as
    ``DecodeError`` values and are counted; a block longer than any legal frame is
    discarded without being buffered, so memory stays bounded. Resynchronises at the
    next delimiter.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._overflowing = False
        self.stats = DecoderStats()

    def reset(self) -> None:
        self._buf.clear()
        self._overflowing = False

    def idle(self) -> bool:
        """True when no partial block is held (the next byte starts a fresh frame)."""
        return not self._buf and not self._overflowing

    def feed(self, data: bytes) -> list[Frame | DecodeError]:
        out: list[Frame | DecodeError] = []
        if not data:
            return out
        parts = bytes(data).split(DELIMITER)
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if self._overflowing:
                self.stats.bytes_discarded += len(part)
                if not last:  # the delimiter ends the oversized block
                    self._overflowing = False
                continue
            self._buf += part
            if len(self._buf) > MAX_ENCODED:
                self.stats.overflows += 1
                self.stats.bytes_discarded += len(self._buf)
                out.append(DecodeError("overflow", len(self._buf)))
                self._buf.clear()
                self._overflowing = last
                continue
            if last or not self._buf:
                continue
            result = decode_body(bytes(self._buf))
            self._buf.clear()
            self._count(result)
            out.append(result)
        return out

    def _count(self, result: Frame | DecodeError) -> None:
        s = self.stats
        if isinstance(result, Frame):
            s.frames += 1
            return
        s.bytes_discarded += result.size
        if result.kind == "crc":
            s.crc_errors += 1
        elif result.kind == "cobs":
            s.cobs_errors += 1
        elif result.kind == "length":
            s.length_errors += 1
        elif result.kind == "short":
            s.short_frames += 1


# --------------------------------------------------------------------------- bit packing


_packbits = np.packbits
_SHIFTS = {b: np.arange(b, dtype=np.uint8) for b in range(1, MAX_PHASE_BITS + 1)}


def phase_bytes(n_elements: int, bits: int) -> int:
    return (n_elements * bits + 7) // 8


def mask_bytes(n_elements: int) -> int:
    return (n_elements + 7) // 8


def pack_phases(phase_idx: np.ndarray, bits: int) -> bytes:
    """Element n's b-bit index at bit offset n*b, least significant bit first; pad bits zero."""
    idx = np.asarray(phase_idx, dtype=np.uint8)
    if bits == 8:
        return idx.tobytes()
    if bits == 1:
        return np.packbits(idx, bitorder="little").tobytes()
    planes = (idx[:, None] >> _SHIFTS[bits]) & 1
    return np.packbits(planes.ravel(), bitorder="little").tobytes()


def unpack_phases(data: bytes, bits: int, n_elements: int) -> np.ndarray:
    need = phase_bytes(n_elements, bits)
    raw = np.frombuffer(data, dtype=np.uint8, count=need)
    if bits == 8:
        return raw.copy()
    flat = np.unpackbits(raw, bitorder="little", count=n_elements * bits)
    if bits == 1:
        return flat
    return (flat.reshape(n_elements, bits) << _SHIFTS[bits]).sum(axis=1, dtype=np.uint8)


def pack_mask(on: np.ndarray) -> bytes:
    on = np.asarray(on)
    if on.dtype != np.bool_ and on.dtype != np.uint8:
        on = on.astype(np.uint8)
    return np.packbits(on, bitorder="little").tobytes()  # nonzero packs as 1


@functools.lru_cache(maxsize=64)
def full_mask(n_elements: int) -> bytes:
    """The packed ON mask with every element ON (pad bits zero)."""
    return pack_mask(np.ones(n_elements, bool))


def unpack_mask(data: bytes, n_elements: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8, count=mask_bytes(n_elements))
    return np.unpackbits(raw, bitorder="little", count=n_elements).astype(bool)


def pack_image(config: SurfaceConfig) -> bytes:
    """Canonical image: packed phases then packed ON mask (readback CRCs are over this)."""
    if config.bits == 1:  # the common PIN-diode board: both halves are one packbits each
        return _packbits(config.phase_idx, bitorder="little").tobytes() + _packbits(config.on, bitorder="little").tobytes()
    return pack_phases(config.phase_idx, config.bits) + pack_mask(config.on)


def unpack_image(data: bytes, bits: int, n_elements: int) -> SurfaceConfig:
    p = phase_bytes(n_elements, bits)
    return SurfaceConfig(bits, unpack_phases(data[:p], bits, n_elements), unpack_mask(data[p:], n_elements))


def image_padding_ok(data: bytes, bits: int, n_elements: int) -> bool:
    """True when the unused high bits of the last phase and mask bytes are zero."""
    p = phase_bytes(n_elements, bits)
    ok = True
    if (n_elements * bits) % 8:
        ok &= data[p - 1] >> ((n_elements * bits) % 8) == 0
    if n_elements % 8 and len(data) > p:
        ok &= data[-1] >> (n_elements % 8) == 0
    return bool(ok)


def image_crc(config: SurfaceConfig) -> int:
    return binascii.crc32(pack_image(config))


def bits_mask(resolutions: tuple[int, ...]) -> int:
    return sum(1 << (b - 1) for b in resolutions)


def resolutions_from_mask(mask: int) -> tuple[int, ...]:
    return tuple(b for b in range(1, MAX_PHASE_BITS + 1) if mask >> (b - 1) & 1)


# --------------------------------------------------------------------------- payloads


class PayloadError(ValueError):
    """A payload does not match its message type (used by boards to NACK with LENGTH)."""


def _unpack(st: struct.Struct, payload: bytes, exact: bool = True) -> tuple:
    if len(payload) < st.size or (exact and len(payload) != st.size):
        raise PayloadError(f"expected {st.size} bytes, got {len(payload)}")
    return st.unpack_from(payload)


@dataclass(frozen=True)
class InfoReply:
    n_elements: int
    resolutions: tuple[int, ...]
    max_baud: int
    firmware: tuple[int, int, int]
    protocol_version: int = PROTOCOL_VERSION
    max_payload: int = MAX_PAYLOAD
    codebook_slots: int = 0
    name: str = ""

    _ST = struct.Struct("<BBBBHBIHB")

    def pack(self) -> bytes:
        return self._ST.pack(
            self.protocol_version, *self.firmware, self.n_elements, bits_mask(self.resolutions),
            self.max_baud, self.max_payload, self.codebook_slots,
        ) + self.name.encode("utf-8")[:32]

    @classmethod
    def unpack(cls, payload: bytes) -> "InfoReply":
        pv, f0, f1, f2, n, bm, baud, mp, slots = _unpack(cls._ST, payload, exact=False)
        name = payload[cls._ST.size :].decode("utf-8", errors="replace")
        return cls(n, resolutions_from_mask(bm), baud, (f0, f1, f2), pv, mp, slots, name)


@dataclass(frozen=True)
class ConfigChunk:
    """One chunk of a configuration image (SET_CONFIG, or CODEBOOK_STORE after its slot byte).

    Chunks of one transaction share ``txn`` and arrive in order (offset = bytes so far);
    the board stages them and latches only when ``offset + len(data) == total``.
    """

    bits: int
    n_elements: int
    txn: int
    offset: int
    total: int
    data: bytes

    _ST = struct.Struct("<BHHHH")
    HEADER_SIZE = 9

    def pack(self) -> bytes:
        return self._ST.pack(self.bits, self.n_elements, self.txn, self.offset, self.total) + self.data

    @classmethod
    def unpack(cls, payload: bytes) -> "ConfigChunk":
        bits, n, txn, off, total = _unpack(cls._ST, payload, exact=False)
        return cls(bits, n, txn, off, total, bytes(payload[cls._ST.size :]))


def chunk_image(
    config: SurfaceConfig, txn: int, max_payload: int = MAX_PAYLOAD, prefix: bytes = b"",
    image: bytes | None = None,
) -> tuple[list[bytes], int]:
    """Split a configuration into SET_CONFIG (or, with a slot prefix, CODEBOOK_STORE) payloads.

    Returns (payloads, flags). When every element is ON the mask is omitted (MASK_ALL_ON).
    ``image`` may pass ``pack_image(config)`` when the caller already has it.
    """
    n, bits = config.n_elements, config.bits
    if image is None:
        image = pack_image(config)
    phases = phase_bytes(n, bits)
    all_on = image[phases:] == full_mask(n)
    data = image[:phases] if all_on else image
    total = len(data)
    if total > MAX_IMAGE:
        raise ValueError(f"image of {total} bytes exceeds MAX_IMAGE={MAX_IMAGE}")
    room = min(max_payload, MAX_PAYLOAD) - ConfigChunk.HEADER_SIZE - len(prefix)
    head, txn = ConfigChunk._ST.pack, txn & 0xFFFF  # = ConfigChunk(...).pack(), without the object
    flags = Flag.MASK_ALL_ON if all_on else Flag.NONE
    if total <= room:  # one chunk: the common case of every board up to 1024 x 7 bits
        return [prefix + head(bits, n, txn, 0, total) + data], flags
    payloads = [prefix + head(bits, n, txn, off, total) + data[off : off + room] for off in range(0, max(total, 1), room)]
    return payloads, flags


@dataclass(frozen=True)
class LatchAck:
    """ACK body of SET_CONFIG / CODEBOOK_APPLY (and CODEBOOK_STORE, latched meaning stored).

    readback_crc: CRC-32 of the canonical image the board reads back from its drivers
    after latching; equal to the host's image CRC means the requested state is latched.
    """

    latched: bool
    latch_id: int
    readback_crc: int

    _ST = struct.Struct("<BII")

    def pack(self) -> bytes:
        return self._ST.pack(int(self.latched), self.latch_id & 0xFFFFFFFF, self.readback_crc)

    @classmethod
    def unpack(cls, body: bytes) -> "LatchAck":
        latched, lid, crc = _unpack(cls._ST, body)
        return cls(bool(latched), lid, crc)


@dataclass(frozen=True)
class ReadbackRequest:
    offset: int
    max_len: int

    _ST = struct.Struct("<HH")

    def pack(self) -> bytes:
        return self._ST.pack(self.offset, self.max_len)

    @classmethod
    def unpack(cls, payload: bytes) -> "ReadbackRequest":
        return cls(*_unpack(cls._ST, payload))


@dataclass(frozen=True)
class ReadbackReply:
    """A slice of the canonical latched image (phases then full mask) as read back."""

    bits: int
    n_elements: int
    latch_id: int
    boot_count: int
    safe_active: bool
    offset: int
    total: int
    data: bytes

    _ST = struct.Struct("<BHIHBHH")

    def pack(self) -> bytes:
        return self._ST.pack(
            self.bits, self.n_elements, self.latch_id & 0xFFFFFFFF, self.boot_count & 0xFFFF,
            int(self.safe_active), self.offset, self.total,
        ) + self.data

    @classmethod
    def unpack(cls, body: bytes) -> "ReadbackReply":
        bits, n, lid, boots, safe, off, total = _unpack(cls._ST, body, exact=False)
        return cls(bits, n, lid, boots, bool(safe), off, total, bytes(body[cls._ST.size :]))


@dataclass(frozen=True)
class StatusReply:
    uptime_ms: int
    supply_mv: int
    energy_uj: int  # NO_ENERGY_BUFFER when the board has no harvested-energy buffer
    boot_count: int
    latch_count: int
    watchdog_ms: int  # 0 = disarmed
    safe_active: bool
    rx_frames: int
    crc_errors: int
    nacks: int
    duplicates: int
    watchdog_trips: int

    _ST = struct.Struct("<IHIHIIBIIIII")

    def pack(self) -> bytes:
        m = 0xFFFFFFFF
        return self._ST.pack(
            self.uptime_ms & m, self.supply_mv, self.energy_uj & m, self.boot_count & 0xFFFF,
            self.latch_count & m, self.watchdog_ms & m, int(self.safe_active), self.rx_frames & m,
            self.crc_errors & m, self.nacks & m, self.duplicates & m, self.watchdog_trips & m,
        )

    @classmethod
    def unpack(cls, body: bytes) -> "StatusReply":
        v = list(_unpack(cls._ST, body))
        v[6] = bool(v[6])
        return cls(*v)


@dataclass(frozen=True)
class WatchdogRequest:
    timeout_ms: int  # 0 disarms
    safe_slot: int = BUILTIN_SAFE_SLOT

    _ST = struct.Struct("<IB")

    def pack(self) -> bytes:
        return self._ST.pack(self.timeout_ms, self.safe_slot)

    @classmethod
    def unpack(cls, payload: bytes) -> "WatchdogRequest":
        return cls(*_unpack(cls._ST, payload))


@dataclass(frozen=True)
class Nack:
    request_type: int
    code: int
    detail: int = 0

    _ST = struct.Struct("<BBH")

    def pack(self) -> bytes:
        return self._ST.pack(self.request_type, self.code, self.detail & 0xFFFF)

    @classmethod
    def unpack(cls, payload: bytes) -> "Nack":
        return cls(*_unpack(cls._ST, payload))


@dataclass(frozen=True)
class BootEvent:
    boot_count: int
    reason: int

    _ST = struct.Struct("<HB")

    def pack(self) -> bytes:
        return self._ST.pack(self.boot_count & 0xFFFF, self.reason)

    @classmethod
    def unpack(cls, payload: bytes) -> "BootEvent":
        return cls(*_unpack(cls._ST, payload))


def ack(request: Frame, body: bytes = b"") -> Frame:
    """ACK frame answering ``request``: payload = request type byte + body."""
    return Frame(MsgType.ACK, request.seq, bytes([request.type]) + body)


def nack(request: Frame, code: ErrorCode, detail: int = 0) -> Frame:
    return Frame(MsgType.NACK, request.seq, Nack(request.type, code, detail).pack())


def nack_unparsed() -> Frame:
    """NACK for a frame that failed COBS / CRC: the host should retransmit at once."""
    return Frame(MsgType.NACK, 0, Nack(0, ErrorCode.CRC).pack(), Flag.SEQ_UNKNOWN)


def split_ack(frame: Frame) -> tuple[int, bytes]:
    """ACK payload -> (request type, body)."""
    if not frame.payload:
        raise PayloadError("ACK without the request type byte")
    return frame.payload[0], frame.payload[1:]


@dataclass
class Exchange:
    """Wire-size bookkeeping of one request/response exchange (for benches and wire_ms)."""

    request_bytes: int = 0
    response_bytes: int = 0
    frames: list[int] = field(default_factory=list)


def wire_seconds(n_bytes: int, baud: int) -> float:
    """UART time: 10 bits per byte (start + 8 data + stop)."""
    return n_bytes * 10.0 / baud


def set_exchange_bytes(config: SurfaceConfig, max_payload: int = MAX_PAYLOAD) -> Exchange:
    """Bytes on the wire for one SET_CONFIG transaction and its ACKs."""
    payloads, flags = chunk_image(config, 0, max_payload)
    ex = Exchange()
    ack_len = len(encode_frame(Frame(MsgType.ACK, 0, bytes([MsgType.SET_CONFIG]) + LatchAck(True, 0, 0).pack())))
    for p in payloads:
        n = len(encode_frame(Frame(MsgType.SET_CONFIG, 0xFFFF, p, flags)))
        ex.request_bytes += n
        ex.response_bytes += ack_len
        ex.frames.append(n)
    return ex
