"""A board emulator that speaks protocol v1 on a pseudo-terminal or a loopback TCP socket.

Two layers: ``BoardCore`` is the firmware's state machine (frames in, frames out, time
passed in explicitly, no I/O), ``BoardEmulator`` adds the link: a pty or TCP server, a
wire-time model at the configured baud (10 bits per byte, both directions), a latch time,
and seeded fault injection (dropped / corrupted bytes, stuck elements, reboots, slow
responses). It shares only the codec (``drivers.protocol``) with the driver, so a bug in
the driver cannot hide in the emulator.
"""

from __future__ import annotations

import binascii
import os
import pty
import select
import socket
import struct
import threading
import time
import tty
from dataclasses import dataclass, field

import numpy as np

from drivers import protocol as p
from twin.surface_config import SurfaceConfig

FIRMWARE = (1, 0, 0)


@dataclass(frozen=True)
class Faults:
    """Injected faults. Byte faults hit both directions, independently per byte, seeded."""

    drop: float = 0.0  # probability a byte vanishes on the wire
    corrupt: float = 0.0  # probability a byte is XORed with a random nonzero value
    stuck: tuple[int, ...] = ()  # elements stuck at phase 0, ON, whatever is commanded
    slow_ms: float = 0.0  # extra delay before every response
    reboot_every: int = 0  # reboot on every N-th received frame (0 = never); that frame is lost
    seed: int = 0


@dataclass(frozen=True)
class EnergyModel:
    """Optional harvested-energy buffer: switching costs energy, harvesting refills it.

    The values are emulator defaults, not from a paper: a small supercap-backed board.
    """

    capacity_uj: float = 5000.0
    harvest_uw: float = 2000.0
    switch_nj: float = 50.0  # per element whose state changes at a latch


@dataclass
class _Staging:
    kind: int
    slot: int
    bits: int
    flags: int
    txn: int
    total: int
    buf: bytearray = field(default_factory=bytearray)


class BoardCore:
    """The firmware logic of a PIN-diode board: no I/O, time passed in as ``now`` (seconds)."""

    def __init__(
        self,
        n_elements: int,
        resolutions: tuple[int, ...] = (1, 2, 3),
        *,
        max_baud: int = 921600,
        max_payload: int = p.MAX_PAYLOAD,
        codebook_slots: int = 8,
        stuck: tuple[int, ...] = (),
        energy: EnergyModel | None = None,
        supply_mv: int = 5000,
        boot_watchdog_ms: int = 0,
        now: float = 0.0,
    ) -> None:
        if not 1 <= n_elements <= p.MAX_ELEMENTS:
            raise ValueError(f"n_elements must be in 1..{p.MAX_ELEMENTS}")
        self.n = n_elements
        self.resolutions = tuple(sorted(set(resolutions)))
        self.max_baud = max_baud
        self.max_payload = max_payload
        self.codebook_slots = codebook_slots
        self.stuck = np.array(sorted(set(stuck)), dtype=np.int64)
        if self.stuck.size and (self.stuck.min() < 0 or self.stuck.max() >= n_elements):
            raise ValueError(f"stuck elements must lie in 0..{n_elements - 1}")
        self.energy = energy
        self.supply_mv = supply_mv
        self.boot_watchdog_ms = boot_watchdog_ms  # armed from power-on (built-in safe pattern)
        self.boot_count = 0  # non-volatile: survives reboots
        self.reboot(p.BootReason.POWER_ON, now)

    # -- state ---------------------------------------------------------------
    def reboot(self, reason: int, now: float) -> p.Frame:
        """Power-cycle: RAM state is lost (latched -> all OFF, codebook, watchdog, staging)."""
        self.boot_count += 1
        self.boot_time = now
        self.counters = dict(rx_frames=0, crc_errors=0, nacks=0, duplicates=0, watchdog_trips=0)
        self.latched = self._effective(SurfaceConfig.safe(self.n, self.resolutions[0]))
        self.latch_id = 0
        self.latch_count = 0
        self.codebook: dict[int, SurfaceConfig] = {}
        self.staging: _Staging | None = None
        self.watchdog_ms = self.boot_watchdog_ms
        self.safe_slot = p.BUILTIN_SAFE_SLOT
        self.last_pet = now
        self.wd_tripped = False
        self.safe_active = False
        self.last_key: tuple[int, int] | None = None
        self.last_response: list[p.Frame] = []
        if self.energy is not None:
            self.energy_uj = self.energy.capacity_uj
            self.energy_t = now
        return p.Frame(p.MsgType.EVENT_BOOT, 0, p.BootEvent(self.boot_count, reason).pack())

    def _effective(self, config: SurfaceConfig) -> SurfaceConfig:
        if not self.stuck.size:
            return config
        idx = config.phase_idx.copy()
        on = config.on.copy()
        idx[self.stuck] = 0
        on[self.stuck] = True
        return SurfaceConfig(config.bits, idx, on)

    def _harvest(self, now: float) -> None:
        if self.energy is None:
            return
        dt = max(0.0, now - self.energy_t)
        self.energy_uj = min(self.energy.capacity_uj, self.energy_uj + self.energy.harvest_uw * dt)
        self.energy_t = now

    def _latch(self, config: SurfaceConfig, now: float, *, free: bool = False) -> bool:
        """Shift the configuration out and latch it; False when the energy buffer is too low."""
        new = self._effective(config)
        if self.energy is not None and not free:
            self._harvest(now)
            if new.bits == self.latched.bits:
                changed = int(new.mismatched_elements(self.latched).size)
            else:
                changed = self.n
            cost = changed * self.energy.switch_nj / 1000.0
            if cost > self.energy_uj:
                return False
            self.energy_uj -= cost
        self.latched = new
        self.latch_id = (self.latch_id + 1) & 0xFFFFFFFF
        self.latch_count += 1
        self.safe_active = False
        return True

    def readback_crc(self) -> int:
        return binascii.crc32(p.pack_image(self.latched))

    # -- time ----------------------------------------------------------------
    def watchdog_deadline(self) -> float | None:
        if self.watchdog_ms and not self.wd_tripped:
            return self.last_pet + self.watchdog_ms / 1000.0
        return None

    def tick(self, now: float) -> bool:
        """Advance time; True when the watchdog fired and the safe pattern was latched."""
        deadline = self.watchdog_deadline()
        if deadline is None or now < deadline:
            return False
        safe = self.codebook.get(self.safe_slot) or SurfaceConfig.safe(self.n, self.latched.bits)
        self._latch(safe, now, free=True)  # the fallback must not depend on the energy buffer
        self.safe_active = True
        self.wd_tripped = True
        self.counters["watchdog_trips"] += 1
        self.staging = None
        self.last_key = None  # a retransmission after the trip must act again
        return True

    # -- frames --------------------------------------------------------------
    def bad_frame(self) -> p.Frame:
        self.counters["crc_errors"] += 1
        self.counters["nacks"] += 1
        return p.nack_unparsed()

    def handle(self, frame: p.Frame, crc: int, now: float) -> list[p.Frame]:
        """One valid (CRC-checked) frame -> response frames. Retransmissions get the cached reply."""
        self.tick(now)
        self.counters["rx_frames"] += 1
        self.last_pet = now
        self.wd_tripped = False
        if frame.version != p.PROTOCOL_VERSION:
            return [self._nack(frame, p.ErrorCode.VERSION, p.PROTOCOL_VERSION)]
        if frame.type not in p.REQUEST_TYPES:
            return [self._nack(frame, p.ErrorCode.TYPE)]
        key = (frame.seq, crc)
        if key == self.last_key:
            self.counters["duplicates"] += 1
            return list(self.last_response)
        try:
            out = self._dispatch(frame, now)
        except p.PayloadError:
            out = [self._nack(frame, p.ErrorCode.LENGTH)]
        self.last_key, self.last_response = key, out
        return out

    def _nack(self, frame: p.Frame, code: p.ErrorCode, detail: int = 0) -> p.Frame:
        self.counters["nacks"] += 1
        return p.nack(frame, code, detail)

    def _dispatch(self, f: p.Frame, now: float) -> list[p.Frame]:
        t = f.type
        if t == p.MsgType.INFO:
            info = p.InfoReply(
                self.n, self.resolutions, self.max_baud, FIRMWARE, p.PROTOCOL_VERSION,
                self.max_payload, self.codebook_slots, "ristwin-emulator",
            )
            return [p.ack(f, info.pack())]
        if t == p.MsgType.SET_CONFIG:
            return [self._chunk(f, p.MsgType.SET_CONFIG, 0, f.payload, now)]
        if t == p.MsgType.CODEBOOK_STORE:
            if not f.payload:
                raise p.PayloadError("slot byte missing")
            slot = f.payload[0]
            if slot >= self.codebook_slots:
                return [self._nack(f, p.ErrorCode.SLOT, self.codebook_slots)]
            return [self._chunk(f, p.MsgType.CODEBOOK_STORE, slot, f.payload[1:], now)]
        if t == p.MsgType.CODEBOOK_APPLY:
            if len(f.payload) != 1:
                raise p.PayloadError("expected the slot byte")
            slot = f.payload[0]
            if slot >= self.codebook_slots:
                return [self._nack(f, p.ErrorCode.SLOT, self.codebook_slots)]
            if slot not in self.codebook:
                return [self._nack(f, p.ErrorCode.EMPTY_SLOT, slot)]
            if not self._latch(self.codebook[slot], now):
                return [self._nack(f, p.ErrorCode.ENERGY)]
            return [p.ack(f, p.LatchAck(True, self.latch_id, self.readback_crc()).pack())]
        if t == p.MsgType.READBACK:
            req = p.ReadbackRequest.unpack(f.payload)
            image = p.pack_image(self.latched)
            room = min(req.max_len, self.max_payload - 1 - p.ReadbackReply._ST.size)
            if req.offset > len(image) or room <= 0:
                return [self._nack(f, p.ErrorCode.VALUE)]
            reply = p.ReadbackReply(
                self.latched.bits, self.n, self.latch_id, self.boot_count, self.safe_active,
                req.offset, len(image), image[req.offset : req.offset + room],
            )
            return [p.ack(f, reply.pack())]
        if t == p.MsgType.STATUS:
            if f.payload:
                raise p.PayloadError("STATUS takes no payload")
            self._harvest(now)
            energy = p.NO_ENERGY_BUFFER if self.energy is None else int(self.energy_uj)
            c = self.counters
            reply = p.StatusReply(
                int((now - self.boot_time) * 1000), self.supply_mv, energy, self.boot_count,
                self.latch_count, self.watchdog_ms, self.safe_active, c["rx_frames"],
                c["crc_errors"], c["nacks"], c["duplicates"], c["watchdog_trips"],
            )
            return [p.ack(f, reply.pack())]
        if t == p.MsgType.WATCHDOG:
            req = p.WatchdogRequest.unpack(f.payload)
            if req.safe_slot != p.BUILTIN_SAFE_SLOT:
                if req.safe_slot >= self.codebook_slots:
                    return [self._nack(f, p.ErrorCode.SLOT, self.codebook_slots)]
                if req.safe_slot not in self.codebook:
                    return [self._nack(f, p.ErrorCode.EMPTY_SLOT, req.safe_slot)]
            self.watchdog_ms, self.safe_slot = req.timeout_ms, req.safe_slot
            return [p.ack(f)]
        if t == p.MsgType.RESET:
            if f.payload:
                raise p.PayloadError("RESET takes no payload")
            return [p.ack(f), self.reboot(p.BootReason.RESET_COMMAND, now)]
        return [self._nack(f, p.ErrorCode.TYPE)]

    def _chunk(self, f: p.Frame, kind: int, slot: int, payload: bytes, now: float) -> p.Frame:
        c = p.ConfigChunk.unpack(payload)
        if c.bits not in self.resolutions:
            self.staging = None
            return self._nack(f, p.ErrorCode.RESOLUTION, p.bits_mask(self.resolutions))
        if c.n_elements != self.n:
            self.staging = None
            return self._nack(f, p.ErrorCode.ELEMENTS, self.n)
        all_on = bool(f.flags & p.Flag.MASK_ALL_ON)
        expected = p.phase_bytes(self.n, c.bits) + (0 if all_on else p.mask_bytes(self.n))
        if c.total != expected or c.offset + len(c.data) > c.total:
            self.staging = None
            return self._nack(f, p.ErrorCode.LENGTH, expected)
        st = self.staging
        if c.offset == 0:
            st = self.staging = _Staging(kind, slot, c.bits, f.flags, c.txn, c.total)
        elif st is None or (st.kind, st.slot, st.bits, st.flags, st.txn, st.total, len(st.buf)) != (
            kind, slot, c.bits, f.flags, c.txn, c.total, c.offset
        ):
            self.staging = None
            return self._nack(f, p.ErrorCode.CHUNK)
        st.buf += c.data
        if len(st.buf) < st.total:
            return p.ack(f, p.LatchAck(False, self.latch_id, 0).pack())
        self.staging = None
        data = bytes(st.buf)
        if not p.image_padding_ok(data, st.bits, self.n):
            return self._nack(f, p.ErrorCode.VALUE)
        if all_on:
            data += p.pack_mask(np.ones(self.n, bool))
        config = p.unpack_image(data, st.bits, self.n)
        if kind == p.MsgType.CODEBOOK_STORE:
            self.codebook[slot] = config
            return p.ack(f, p.LatchAck(True, self.latch_id, binascii.crc32(data)).pack())
        if not self._latch(config, now):
            return self._nack(f, p.ErrorCode.ENERGY)
        return p.ack(f, p.LatchAck(True, self.latch_id, self.readback_crc()).pack())


# ------------------------------------------------------------------------------ the link

_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)   # Linux (also SCM_TIMESTAMPNS, the ancillary type)
_TIMESPEC = struct.Struct("@qq")
_STAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0


def _fine_timer_slack() -> None:
    """Ask Linux to wake this thread's sleeps within 1 us of their deadline (the default
    timer slack of 50 us would make every modelled reply up to 50 us late)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK, ns
    except (OSError, AttributeError):
        pass  # not Linux: the spin margin below absorbs the coarser wake-ups


class _Pacer:
    """Waits until a monotonic deadline: sleeps, then spins only the last stretch.

    The spin covers how late the OS wakes a sleeper here: the 4th-largest lateness of the
    last 16 sleeps plus 20 us, within 30..200 us. Wake-ups later than that are preemptions
    on a loaded machine, which a spinning thread suffers too. A fixed 0.4 ms spin held a
    core for most of every sub-millisecond reply, which on a shared machine slowed the very
    processes the emulated link was timing.
    """

    def __init__(self) -> None:
        self.margin = 0.0004  # until the first measurements
        self._late: list[float] = []

    def until(self, t: float) -> None:
        wake = t - self.margin
        dt = wake - time.monotonic()
        if dt > 0:
            time.sleep(dt)
            late = self._late
            late.append(max(0.0, time.monotonic() - wake))
            if len(late) > 16:
                del late[0]
            self.margin = min(0.0002, max(0.00003, sorted(late)[-4 if len(late) >= 4 else -1] + 0.00002))
        while time.monotonic() < t:
            pass


class _Mangler:
    def __init__(self, faults: Faults, stream: int) -> None:
        self.f = faults
        self.rng = np.random.default_rng([faults.seed, stream])
        self.dropped = 0
        self.corrupted = 0

    def __call__(self, data: bytes) -> bytes:
        if not data or (self.f.drop <= 0 and self.f.corrupt <= 0):
            return data
        arr = np.frombuffer(data, np.uint8).copy()
        hit = self.rng.random(arr.size) < self.f.corrupt
        if hit.any():
            arr[hit] ^= self.rng.integers(1, 256, int(hit.sum()), dtype=np.uint8)
            self.corrupted += int(hit.sum())
        keep = self.rng.random(arr.size) >= self.f.drop
        self.dropped += int(arr.size - keep.sum())
        return arr[keep].tobytes()


class BoardEmulator:
    """Serve a ``BoardCore`` on a pty (default) or on 127.0.0.1:``tcp_port``.

    ``start()`` runs it in a daemon thread and returns the URL a driver opens;
    ``serve_forever()`` runs it in the calling thread until ``stop()``.
    """

    def __init__(
        self,
        n_elements: int = 64,
        resolutions: tuple[int, ...] = (1, 2, 3),
        *,
        baud: int = 115200,
        model_wire: bool = True,
        latch_us: float = 100.0,
        faults: Faults = Faults(),
        energy: EnergyModel | None = None,
        tcp_port: int | None = None,
        codebook_slots: int = 8,
        boot_watchdog_ms: int = 0,
    ) -> None:
        self.baud = baud
        self.model_wire = model_wire
        self.latch_s = latch_us / 1e6
        self.faults = faults
        self.core = BoardCore(
            n_elements, resolutions, max_baud=max(baud, 921600), codebook_slots=codebook_slots,
            stuck=faults.stuck, energy=energy, boot_watchdog_ms=boot_watchdog_ms, now=time.monotonic(),
        )
        self.lock = threading.Lock()
        self._rx_mangle = _Mangler(faults, 1)
        self._tx_mangle = _Mangler(faults, 2)
        self._decoder = p.StreamDecoder()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rx_free = 0.0
        self._tx_free = 0.0
        self._pacer = _Pacer()
        self.frames_seen = 0
        self.reboots = 0
        self._tcp_port = tcp_port
        self._listener: socket.socket | None = None
        self._client: socket.socket | None = None
        self._master = self._slave = -1
        if tcp_port is None:
            self._master, self._slave = pty.openpty()
            tty.setraw(self._slave)  # no echo, no line discipline: a raw byte pipe
            tty.setraw(self._master)
            self.path = os.ttyname(self._slave)
            self.url = f"serial://{self.path}?baud={baud}"
        else:
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(("127.0.0.1", tcp_port))  # loopback only, never a public address
            self._listener.listen(2)
            self.port = self._listener.getsockname()[1]
            self.path = f"127.0.0.1:{self.port}"
            self.url = f"socket://127.0.0.1:{self.port}?baud={baud}"

    # -- inspection (thread-safe) -------------------------------------------
    @property
    def latched(self) -> SurfaceConfig:
        with self.lock:
            return self.core.latched

    def wire_seconds(self, n_bytes: int) -> float:
        return p.wire_seconds(n_bytes, self.baud) if self.model_wire else 0.0

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> str:
        self._thread = threading.Thread(target=self.serve_forever, name="board-emulator", daemon=True)
        self._thread.start()
        return self.url

    def request_stop(self) -> None:
        """Ask serve_forever to return (safe from a signal handler)."""
        self._stop.set()

    def stop(self) -> None:
        """Stop serving and close the device: to a driver this looks like an unplugged cable."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        for fd in (self._master, self._slave):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = -1
        for s in (self._client, self._listener):
            if s is not None:
                s.close()
        self._client = self._listener = None

    def __enter__(self) -> "BoardEmulator":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- loop -------------------------------------------------------------------
    def serve_forever(self) -> None:
        _fine_timer_slack()
        while not self._stop.is_set():
            fds = self._fds()
            with self.lock:
                deadline = self.core.watchdog_deadline()
            timeout = 0.05 if deadline is None else min(0.05, max(0.0, deadline - time.monotonic()))
            try:
                ready, _, _ = select.select(fds, [], [], timeout)
            except (OSError, ValueError):
                if self._stop.is_set():
                    return
                raise
            now = time.monotonic()
            with self.lock:
                self.core.tick(now)
            for fd in ready:
                if self._listener is not None and fd is self._listener:
                    self._accept()
                else:
                    self._receive(now)

    def _fds(self) -> list:
        if self._listener is None:
            return [self._master]
        return [self._listener] + ([self._client] if self._client is not None else [])

    def _accept(self) -> None:
        conn, _ = self._listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:   # the kernel stamps each segment's arrival: the wire clock starts then (see _read)
            conn.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except (OSError, TypeError):
            pass   # no receive timestamps here: the wire clock starts when the bytes are read
        if self._client is not None:  # a re-plugged host replaces the old connection
            self._client.close()
        self._client = conn
        self._decoder.reset()

    def _read(self) -> tuple[bytes, float | None]:
        """The bytes waiting and, over TCP, when the kernel received them (monotonic clock).

        That moment is when the host wrote them, and so when they started to occupy the
        line: counting the wire time from it, rather than from when this process got round
        to reading them, keeps the emulator's own wake-up latency out of the modelled link
        (four emulators and their hosts share two cores in the control-loop bench; a real
        board's MCU does not wait for a host CPU)."""
        stamp = None
        try:
            if self._listener is None:
                return os.read(self._master, 65536), None
            data, ancillary, _, _ = self._client.recvmsg(65536, _STAMP_SPACE)
            for level, kind, raw in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(raw) >= 16:
                    sec, nsec = _TIMESPEC.unpack_from(raw)
                    stamp = sec + nsec * 1e-9 - (time.time() - time.monotonic())
        except OSError:
            data = b""
        if not data and self._client is not None:
            self._client.close()
            self._client = None
        return data, stamp

    def _write(self, data: bytes) -> None:
        try:
            if self._listener is None:
                os.write(self._master, data)
            elif self._client is not None:
                self._client.sendall(data)
        except OSError:
            pass  # the host went away; like a UART, the board does not notice

    def _receive(self, now: float) -> None:
        data, arrived = self._read()
        if not data:
            return
        if arrived is not None and arrived < now:
            now = arrived
        # The bytes occupy the line for their wire time even if a fault then drops them.
        self._rx_free = max(self._rx_free, now) + self.wire_seconds(len(data))
        # A board's MCU decodes a request as its bytes come off the line, so nothing it does
        # is visible before the last byte crosses it: decoding here early and then waiting
        # models the same board. Waiting first, until shortly before that last byte, keeps this
        # process's decode out of the moment its host and the other hosts are being handed
        # their slot's observations (four emulators and five daemons share two cores in the
        # control-loop bench; a real board's MCU takes no host CPU at all).
        defer = self._rx_free - _DECODE_LEAD_S - time.monotonic()
        if defer > 0:
            time.sleep(defer)
        for item in self._decoder.feed(self._rx_mangle(data)):
            with self.lock:
                if isinstance(item, p.DecodeError):
                    out = [self.core.bad_frame()]
                else:
                    self.frames_seen += 1
                    if self.faults.reboot_every and self.frames_seen % self.faults.reboot_every == 0:
                        self.reboots += 1
                        out = [self.core.reboot(p.BootReason.FAULT, time.monotonic())]
                        self._decoder.reset()
                    else:
                        out = self.core.handle(item, _frame_crc(item), time.monotonic())
            self._respond(out)

    def _respond(self, frames: list[p.Frame]) -> None:
        ready = self._rx_free + self.latch_s + self.faults.slow_ms / 1000.0
        for frame in frames:
            wire = p.encode_frame(frame)
            start = max(ready, self._tx_free, time.monotonic())
            self._tx_free = start + self.wire_seconds(len(wire))
            if self.model_wire or self.faults.slow_ms:
                self._pacer.until(self._tx_free if self.model_wire else start)
            self._write(self._tx_mangle(wire))


_DECODE_LEAD_S = 0.001   # decode this long before a request's modelled last byte: >> its decode time


def _frame_crc(frame: p.Frame) -> int:
    """Recompute a decoded frame's CRC (the key a board uses to recognise retransmissions)."""
    body = p.HEADER.pack(frame.version, frame.type, frame.seq, frame.flags, len(frame.payload)) + frame.payload
    return binascii.crc32(body)


def parse_bits(text: str) -> tuple[int, ...]:
    try:
        bits = tuple(sorted({int(b) for b in text.split(",") if b.strip()}))
    except ValueError:
        bits = ()
    if not bits or any(not 1 <= b <= 8 for b in bits):
        raise ValueError(f"bits: {text!r} is not a comma-separated list of resolutions in 1..8, e.g. 1,2,3")
    return bits

