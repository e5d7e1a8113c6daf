"""The pyserial driver: protocol v1 over a serial port or a TCP bridge (pyserial URL handlers).

URLs: ``serial:///dev/ttyUSB0?baud=921600`` and ``socket://host:port``, with optional
``timeout_ms`` (reply timeout on top of the wire time, default 50: covers the 16 ms FTDI
latency timer), ``retries`` (retransmissions per frame, default 8), ``reconnect_ms`` (how
long to try reopening a lost port, default 1000) and ``verify`` (``crc``: trust the board's
read-back CRC in the ACK and fetch the full readback only when it differs; ``full``: always
fetch the readback).

Defensive by construction: every read and write is bounded by a timeout; retransmissions
reuse the sequence number so the board never applies a request twice; any garbage or
partial frame is dropped by the decoder at the next delimiter; a lost port (EIO on Linux
after an unplug) is reopened within ``reconnect_ms``; and an apply that did not latch, or
latched something else, always surfaces as an exception that carries what the board holds.
"""

from __future__ import annotations

import binascii
import collections
import functools
import logging
import math
import os
import select
import socket
import threading
import time

import numpy as np
import serial

from drivers import protocol as p
from drivers.base import (
    ApplyError,
    ApplyRecord,
    BoardInfo,
    BoardStatus,
    LinkError,
    NackError,
    ReadbackMismatch,
    SurfaceDriver,
    check_config,
    finish_apply,
    param,
    reject_unknown,
    split_url,
)
from twin.errors import ConfigError, DriverError
from twin.surface_config import SurfaceConfig

_NONE = np.zeros(0, np.int64)  # "no mismatched element", shared by every verified apply
_NONE.flags.writeable = False
_LATCH_ACK = p.LatchAck._ST
_log = logging.getLogger("drivers.serial")  # DEBUG: every frame in hex, for bring-up of new firmware
_KNOWN = {"baud", "timeout_ms", "retries", "reconnect_ms", "verify"}
_T = p.MsgType


def _locked(method):
    """Serialize public calls: one request in flight per board (stop-and-wait)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


class _Rebooted(Exception):
    """Internal: the board announced a reboot (its RAM state, staging included, is gone)."""


class SerialDriver(SurfaceDriver):
    def __init__(
        self,
        port_url: str,
        *,
        baud: int = 115200,
        timeout_s: float = 0.05,
        retries: int = 8,
        reconnect_s: float = 1.0,
        verify: str = "crc",
        url: str = "",
    ) -> None:
        if verify not in ("crc", "full"):
            raise ConfigError(f"verify: {verify!r} is not 'crc' or 'full'")
        if retries < 0:
            raise ConfigError(f"retries: must be >= 0, got {retries}")
        if timeout_s <= 0:
            raise ConfigError(f"timeout_ms: must be > 0, got {timeout_s * 1000:g}")
        if baud <= 0:
            raise ConfigError(f"baud: must be > 0, got {baud}")
        self.port_url = port_url
        self.baud = baud
        self.timeout_s = timeout_s
        self.retries = retries
        self.reconnect_s = reconnect_s
        self.verify = verify
        self.url = url or port_url
        self.connected = False
        self.low_latency = False  # the port accepted ASYNC_LOW_LATENCY (see _open_port)
        self._lock = threading.RLock()
        self._port: serial.SerialBase | None = None
        self._fd: int | None = None
        self._sock: socket.socket | None = None
        self._poll = None
        self._decoder = p.StreamDecoder()
        self._backlog: collections.deque = collections.deque()
        self._seq = int.from_bytes(os.urandom(2), "little")  # fresh start: no clash with a stale cache
        self._txn = int.from_bytes(os.urandom(2), "little")
        self._info: BoardInfo | None = None
        self._needs_handshake = True
        self._watchdog_cfg: tuple[float, SurfaceConfig | None] | None = None
        self._rearm = False
        self._latch_id: int | None = None  # the board's latch counter as last seen
        self._last_apply = ApplyRecord()
        self.stats = dict(
            requests=0, retries=0, timeouts=0, rx_errors=0, nack_crc=0, stale=0,
            reconnects=0, reboots=0, restarts=0, predicted=0,
        )

    @classmethod
    def from_url(cls, url: str) -> "SerialDriver":
        scheme, location, params = split_url(url)
        reject_unknown(params, _KNOWN, url)
        if scheme == "serial":
            if not location:
                raise ConfigError(f"url: {url!r} names no device; use serial:///dev/ttyUSB0?baud=115200")
            port_url = location
        elif scheme == "socket":
            port_url = f"socket://{location}"
        else:
            raise ConfigError(f"url: SerialDriver handles serial:// and socket://, not {scheme}://")
        return cls(
            port_url,
            baud=param(params, "baud", int, 115200, url),
            timeout_s=param(params, "timeout_ms", float, 50.0, url) / 1000.0,
            retries=param(params, "retries", int, 8, url),
            reconnect_s=param(params, "reconnect_ms", float, 1000.0, url) / 1000.0,
            verify=params.get("verify", "crc"),
            url=url,
        )

    # ------------------------------------------------------------------ port

    def _open_port(self) -> None:
        try:
            port = serial.serial_for_url(self.port_url, do_not_open=True)
            port.baudrate = self.baud
            # Reads wait in short slices so a deadline is never overshot by more than one.
            port.timeout = min(0.01, self.timeout_s / 4)
            port.write_timeout = 0.5 + p.wire_seconds(p.MAX_ENCODED, self.baud)
            if isinstance(port, serial.Serial):
                port.exclusive = True  # two daemons on one board is a wiring bug; fail loudly
            port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"port: cannot open {self.port_url}: {exc}") from None
        if isinstance(port, serial.Serial):
            # USB-serial adapters hold received bytes up to their latency timer (16 ms on
            # FTDI) before passing them on; ASYNC_LOW_LATENCY cuts that to ~1 ms. Best
            # effort: a pty or an adapter without the flag simply keeps its setting.
            try:
                port.set_low_latency_mode(True)
                self.low_latency = True
            except (ValueError, NotImplementedError, OSError, AttributeError):
                self.low_latency = False
        sock = getattr(port, "_socket", None)
        self._sock = sock if isinstance(sock, socket.socket) else None
        if self._sock is not None:  # TCP bridge: do not let Nagle hold small frames
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # A POSIX serial port is read with poll + os.read: no per-call polling overhead.
        self._fd = port.fileno() if isinstance(port, serial.Serial) and hasattr(port, "fd") else None
        # A poll object registered once: no fd lists built and checked on every wait.
        self._poll = None
        if self._fd is not None or self._sock is not None:
            self._poll = select.poll()
            self._poll.register(self._fd if self._fd is not None else self._sock, select.POLLIN)
        self._port = port
        self._decoder.reset()
        self._backlog.clear()

    def _close_port(self) -> None:
        self._fd = self._sock = self._poll = None
        if self._port is not None:
            try:
                self._port.close()
            except (serial.SerialException, OSError):
                pass
        self._port = None

    def _reopen(self, why: str) -> None:
        """Reopen a lost port within reconnect_s (a replugged board, a restarted bridge)."""
        self._close_port()
        deadline = time.monotonic() + self.reconnect_s
        delay = 0.01
        while True:
            try:
                self._open_port()
                break
            except LinkError as exc:
                if time.monotonic() + delay > deadline:
                    self.connected = False
                    raise LinkError(
                        f"link: {why}; could not reopen {self.port_url} within "
                        f"{self.reconnect_s * 1000:.0f} ms ({exc}); check the cable, or call "
                        "reconnect(new_url) if the board came back under another device name"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        self.stats["reconnects"] += 1
        self._latch_id = None
        self._needs_handshake = True  # a replugged board may have rebooted or be another board

    def _send(self, wire: bytes) -> None:
        """Write a whole frame, normally in one syscall (pyserial's write adds a select and a
        timer object to every call); partial writes wait for room up to ``write_timeout``."""
        if self._fd is None and self._sock is None:
            try:
                self._port.write(wire)
            except serial.SerialTimeoutException:
                raise  # handled as a timeout by the caller
            except (serial.SerialException, OSError) as exc:
                raise ConnectionError(str(exc)) from None
            return
        try:  # the whole frame in one call, the normal case
            n = os.write(self._fd, wire) if self._fd is not None else self._sock.send(wire)
        except BlockingIOError:
            n = 0
        except (OSError, ValueError) as exc:  # EIO after an unplug, a closed fd or socket
            raise ConnectionError(str(exc) or type(exc).__name__) from None
        if n == len(wire):
            return
        # A partial write: wait for room, bounded by write_timeout, and send the rest.
        view, deadline = memoryview(wire)[n:], time.monotonic() + self._port.write_timeout
        target = self._fd if self._fd is not None else self._sock
        while view:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([], [target], [], left)[1]:
                raise serial.SerialTimeoutException("write timeout: the port accepts no more bytes")
            try:
                n = os.write(self._fd, view) if self._fd is not None else self._sock.send(view)
            except BlockingIOError:
                n = 0
            except (OSError, ValueError) as exc:  # EIO after an unplug, a closed fd or socket
                raise ConnectionError(str(exc) or type(exc).__name__) from None
            view = view[n:]

    def _read_some(self, deadline: float) -> bytes:
        """Bytes that arrive before ``deadline`` (b"" on timeout). One poll + one read per
        burst on POSIX ports and sockets; pyserial's polling read elsewhere."""
        if self._poll is not None:
            try:
                # poll() takes whole milliseconds: round up so the deadline is never cut short.
                if not self._poll.poll(max(0, math.ceil((deadline - time.monotonic()) * 1000.0))):
                    return b""
                data = os.read(self._fd, 65536) if self._fd is not None else self._sock.recv(65536)
            except (OSError, ValueError) as exc:  # EIO after an unplug on Linux, a closed fd
                raise ConnectionError(str(exc) or type(exc).__name__) from None
            if not data:
                raise ConnectionError("device reports readiness to read but returned no data (unplugged?)")
            return data
        port = self._port
        while True:
            try:
                data = port.read(max(1, port.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                raise ConnectionError(str(exc) or type(exc).__name__) from None
            if data or time.monotonic() >= deadline:
                return data

    # ------------------------------------------------------------------ exchange

    def _await(self, seq: int, deadline: float, expect: bytes | None = None) -> tuple[str, p.Frame | None]:
        """Wait for the reply to ``seq``: ('reply', frame) | ('expected', None) | ('boot', None)
        | ('corrupt' | 'nack_crc' | 'timeout', None). Items after the reply stay queued.

        ``expect``: the exact wire bytes of the reply the driver predicts (delimiters, CRC
        and all). A read that returns exactly those bytes, with nothing queued or half
        decoded before them, is that reply ('expected'): one comparison instead of a decode.
        Anything else goes through the decoder as usual.
        """
        problem = None
        while True:
            while self._backlog:
                item = self._backlog.popleft()
                if isinstance(item, p.DecodeError):
                    self.stats["rx_errors"] += 1
                    problem = problem or "corrupt"
                elif item.type == _T.EVENT_BOOT:
                    self.stats["reboots"] += 1
                    self._latch_id = None
                    self._rearm = self._watchdog_cfg is not None
                    return "boot", None
                elif item.type in (_T.ACK, _T.NACK):
                    if item.flags & p.Flag.SEQ_UNKNOWN:
                        self.stats["nack_crc"] += 1
                        problem = problem or "nack_crc"
                    elif item.seq == seq:
                        return "reply", item
                    else:
                        self.stats["stale"] += 1  # a late duplicate of an earlier reply
            if problem is not None:
                return problem, None
            data = self._read_some(deadline)
            if data:
                if data == expect and self._decoder.idle():
                    self._decoder.stats.frames += 1
                    return "expected", None
                self._backlog.extend(self._decoder.feed(data))
            if not self._backlog and time.monotonic() >= deadline:
                return "timeout", None  # also ends a slow trickle of bytes that never forms a frame

    def _request(
        self, mtype: int, payload: bytes = b"", flags: int = 0, reply_bytes: int = 32,
        expect_body: bytes | None = None,
    ) -> bytes:
        """Send one request until its reply arrives; return the ACK body.

        Retransmissions carry the same seq and bytes, so a board that already acted on the
        request answers from its cache instead of acting twice. ``expect_body``: the ACK
        body the driver predicts; its wire bytes are built while the request is on the
        wire, and a reply equal to them byte for byte skips the decoder (any other reply,
        e.g. a different read-back CRC, takes the normal path).
        """
        if self._port is None:
            self._reopen("port closed")
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        wire = p.encode(mtype, seq, payload, flags)
        wait = self.timeout_s + p.wire_seconds(len(wire) + reply_bytes, self.baud)
        trace = _log.isEnabledFor(logging.DEBUG)
        self.stats["requests"] += 1
        problem = "no reply"
        expect = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            if trace:
                _log.debug("tx %s seq=%d attempt=%d %s", _T(mtype).name, seq, attempt, wire.hex(" "))
            try:
                self._send(wire)
                deadline = time.monotonic() + wait
                if expect_body is not None and expect is None:  # built while the bytes travel
                    expect = p.encode(_T.ACK, seq, bytes((mtype,)) + expect_body)
                kind, frame = self._await(seq, deadline, expect)
            except serial.SerialTimeoutException:
                kind, frame = "timeout", None
            except ConnectionError as exc:
                self._reopen(f"lost {self.port_url} ({exc})")
                problem = "link lost and reopened"
                continue
            if kind == "expected":
                self.stats["predicted"] += 1
                if trace:
                    _log.debug("rx expected seq=%d %s", seq, expect.hex(" "))
                return expect_body
            if trace:
                _log.debug("rx %s seq=%d %s", kind, seq, frame.payload.hex(" ") if frame is not None else "")
            if kind == "reply":
                if frame.type == _T.NACK:
                    try:
                        nack = p.Nack.unpack(frame.payload)
                    except p.PayloadError:
                        problem = "malformed NACK"
                        continue
                    name = _error_name(nack.code)
                    raise NackError(
                        f"{_T(mtype).name}: board refused the request ({name}, detail {nack.detail})",
                        nack.code, nack.detail,
                    )
                try:
                    rtype, body = p.split_ack(frame)
                except p.PayloadError:
                    problem = "malformed ACK"
                    continue
                if rtype != mtype:
                    problem = "ACK for another request type"
                    continue
                return body
            if kind == "boot":
                raise _Rebooted()
            if kind == "timeout":
                self.stats["timeouts"] += 1
            problem = kind
        raise LinkError(
            f"{_T(mtype).name}: no valid reply after {self.retries + 1} attempts (last: {problem}); "
            f"check the cable, the baud rate ({self.baud}) and that the board speaks protocol "
            f"v{p.PROTOCOL_VERSION}, or raise retries / timeout_ms in the URL"
        )

    def _call(self, mtype: int, payload: bytes = b"", reply_bytes: int = 32) -> bytes:
        """A self-contained request: after a board reboot it is simply sent again."""
        for _ in range(3):
            try:
                return self._request(mtype, payload, reply_bytes=reply_bytes)
            except _Rebooted:
                continue
        raise LinkError(f"{_T(mtype).name}: the board keeps rebooting; check its supply")

    # ------------------------------------------------------------------ session

    @_locked
    def connect(self) -> BoardInfo:
        if self._port is None:
            self._open_port()
        self.connected = True
        self._needs_handshake = True
        return self._ensure()

    @_locked
    def reconnect(self, url: str | None = None) -> BoardInfo:
        """Reopen the link, optionally at a new URL (a board that came back as another device)."""
        if url is not None:
            fresh = SerialDriver.from_url(url)
            self.port_url, self.baud, self.url = fresh.port_url, fresh.baud, fresh.url
        self._close_port()
        self._reopen("reconnect requested")
        self.connected = True
        return self._ensure()

    def _ensure(self) -> BoardInfo:
        if not self.connected:
            raise DriverError(f"driver for {self.url} is closed; call connect() first")
        if self._needs_handshake or self._info is None:
            self._needs_handshake = False
            try:
                info = p.InfoReply.unpack(self._call(_T.INFO, reply_bytes=64))
            except (LinkError, NackError, p.PayloadError):
                self._needs_handshake = True
                raise
            if info.protocol_version != p.PROTOCOL_VERSION:
                raise DriverError(
                    f"protocol: board speaks v{info.protocol_version}, this driver v{p.PROTOCOL_VERSION}; "
                    "update the firmware or ristwin"
                )
            fresh = BoardInfo(
                info.n_elements, info.resolutions, info.max_baud, ".".join(map(str, info.firmware)),
                info.protocol_version, min(info.max_payload, p.MAX_PAYLOAD), info.codebook_slots, info.name,
            )
            if self._info is not None and fresh.n_elements != self._info.n_elements:
                raise DriverError(
                    f"board: the board on {self.url} now reports {fresh.n_elements} elements, was "
                    f"{self._info.n_elements}; a different board was plugged in"
                )
            self._info = fresh
            self._rearm = self._rearm or self._watchdog_cfg is not None
        if self._rearm:
            self._rearm = False
            self._arm_watchdog(*self._watchdog_cfg)
        return self._info

    @_locked
    def info(self) -> BoardInfo:
        return self._ensure()

    @_locked
    def close(self) -> None:
        self._close_port()
        self.connected = False

    # ------------------------------------------------------------------ surface

    @_locked
    def apply(self, config: SurfaceConfig, *, on_mismatch: str = "raise") -> SurfaceConfig:
        t0, c0, r0 = time.perf_counter(), time.thread_time(), self.stats["retries"]
        info = self._ensure()
        check_config(config, info)
        if on_mismatch not in ("raise", "return"):
            raise ConfigError(f"on_mismatch: {on_mismatch!r} is not 'raise' or 'return'")
        image = p.pack_image(config)
        expected = binascii.crc32(image)
        latch = self._transfer(_T.SET_CONFIG, config, b"", image, expected)
        if not latch.latched:
            raise ApplyError("SET_CONFIG: board acknowledged the last chunk without latching", config, None)
        if self.verify == "crc" and latch.readback_crc == expected:
            applied, mism = config, _NONE  # the board's read-back of its drivers hashes to our image
        else:
            applied, mism = finish_apply(config, self._readback_or_report(config), "return")
        self._last_apply = (  # an ApplyRecord's fields; last_apply builds it when asked
            mism.size == 0, mism, self.stats["retries"] - r0, time.perf_counter() - t0,
            time.thread_time() - c0,
        )
        if mism.size and on_mismatch == "raise":
            raise ReadbackMismatch(config, applied, mism)
        return applied

    @property
    def last_apply(self) -> ApplyRecord:
        record = self._last_apply
        if type(record) is tuple:  # stored raw by apply(): no dataclass built per apply
            record = self._last_apply = ApplyRecord(*record)
        return record

    def _transfer(
        self, mtype: int, config: SurfaceConfig, prefix: bytes, image: bytes | None = None,
        image_crc: int | None = None,
    ) -> p.LatchAck:
        """Send a whole image (chunked, staged, latched on the last chunk) and return its ACK.

        With ``image_crc`` and a known latch counter, each chunk's ACK is predicted (protocol
        §4: staged chunks answer ``latched=0, latch_id``; the last answers ``latched=1,
        latch_id + 1`` and the read-back CRC) so the driver can match the reply bytes
        directly; a reply that differs is decoded and judged as usual.
        """
        info = self._info
        known = self._latch_id  # the board's latch counter before this transfer, if known
        for attempt in range(3):
            if attempt:
                self.stats["restarts"] += 1
                self._ensure()
            self._txn = (self._txn + 1) & 0xFFFF
            payloads, flags = p.chunk_image(config, self._txn, info.max_payload, prefix, image)
            i = 0
            last = len(payloads) - 1
            try:
                for i, payload in enumerate(payloads):
                    lid = self._latch_id  # None after a reboot or reconnect: nothing to predict
                    if image_crc is None or lid is None:
                        expect = None
                    elif i < last:
                        expect = _LATCH_ACK.pack(0, lid, 0)
                    else:
                        expect = _LATCH_ACK.pack(1, (lid + 1) & 0xFFFFFFFF, image_crc)
                    body = self._request(mtype, payload, flags, expect_body=expect)
                ack = p.LatchAck.unpack(body)
                if ack.latched and mtype == _T.SET_CONFIG:
                    self._latch_id = ack.latch_id
                return ack
            except _Rebooted:
                known = None
                continue  # staging is gone: restart the transaction from chunk 0
            except NackError as exc:
                if exc.code == p.ErrorCode.CHUNK:
                    continue
                raise ApplyError(
                    f"{exc}; nothing was latched, the board keeps its previous configuration",
                    config, None,
                ) from None
            except p.PayloadError as exc:
                raise ApplyError(f"{_T(mtype).name}: malformed ACK ({exc})", config, None) from None
            except LinkError as exc:
                if mtype != _T.SET_CONFIG:
                    raise
                return self._settle(config, known, f"{exc} (chunk {i + 1}/{len(payloads)})")
        return self._settle(config, known, f"{_T(mtype).name}: transfer restarted 3 times (board rebooting?)")

    def _settle(self, config: SurfaceConfig, known: int | None, why: str) -> p.LatchAck:
        """After a failed transfer, find out from a readback whether the board latched.

        Latched (its latch counter moved, or it holds exactly the request): return an ACK
        built from the readback, so apply() verifies it like any other. Not latched: raise
        ApplyError carrying the state the board keeps. Link dead: raise, state UNKNOWN.
        """
        try:
            latched = self.readback()
        except DriverError:
            raise ApplyError(f"{why}; the board's latched state is UNKNOWN (no readback possible)", config, None) from None
        if latched == config or (known is not None and self._latch_id != known):
            return p.LatchAck(True, self._latch_id or 0, p.image_crc(latched))
        raise ApplyError(
            f"{why}; readback shows the board does not hold the request (latch counter "
            f"{'unchanged' if known is not None else 'unknown after a reboot'}); .latched is what it holds",
            config, latched,
        )

    def _readback_or_report(self, config: SurfaceConfig) -> SurfaceConfig:
        try:
            return self.readback()
        except DriverError as exc:
            raise ApplyError(f"latched, but readback failed ({exc}); the latched state is unverified", config, None) from None

    @_locked
    def readback(self) -> SurfaceConfig:
        self._ensure()
        room = self._info.max_payload - 1 - p.ReadbackReply._ST.size
        for _ in range(3):
            image, first, offset, total = bytearray(), None, 0, None
            while total is None or offset < total:
                body = self._call(_T.READBACK, p.ReadbackRequest(offset, room).pack(), reply_bytes=room + 32)
                part = p.ReadbackReply.unpack(body)
                if first is None:
                    first = part
                elif (part.latch_id, part.boot_count, part.bits) != (first.latch_id, first.boot_count, first.bits):
                    break  # the latch changed between slices (watchdog?): read again
                if part.offset != offset or not part.data and part.total > offset:
                    raise LinkError("READBACK: board returned a slice at the wrong offset")
                image += part.data
                offset, total = offset + len(part.data), part.total
            else:
                try:
                    config = p.unpack_image(bytes(image), first.bits, first.n_elements)
                except Exception as exc:  # malformed image from a buggy board
                    raise DriverError(f"READBACK: image does not decode ({exc})") from None
                self._latch_id = first.latch_id
                return config
        raise LinkError("READBACK: the latched state kept changing while it was read")

    @_locked
    def status(self) -> BoardStatus:
        self._ensure()
        s = p.StatusReply.unpack(self._call(_T.STATUS, reply_bytes=64))
        return BoardStatus(
            s.uptime_ms / 1000.0, s.supply_mv / 1000.0,
            None if s.energy_uj == p.NO_ENERGY_BUFFER else s.energy_uj * 1e-6,
            s.boot_count, s.latch_count, s.watchdog_ms / 1000.0, s.safe_active,
            dict(rx_frames=s.rx_frames, crc_errors=s.crc_errors, nacks=s.nacks,
                 duplicates=s.duplicates, watchdog_trips=s.watchdog_trips),
        )

    @_locked
    def codebook_store(self, slot: int, config: SurfaceConfig) -> None:
        info = self._ensure()
        check_config(config, info)
        if not 0 <= slot < info.codebook_slots:
            raise ConfigError(f"slot: {slot} is outside the board's codebook 0..{info.codebook_slots - 1}")
        ack = self._transfer(_T.CODEBOOK_STORE, config, bytes([slot]))
        if ack.readback_crc != p.image_crc(config):
            raise DriverError(f"CODEBOOK_STORE: slot {slot} holds a different image than sent")

    @_locked
    def codebook_apply(self, slot: int) -> SurfaceConfig:
        """Latch a stored codebook entry (one small frame); returns the read-back state."""
        self._ensure()
        self._latch_id = p.LatchAck.unpack(self._call(_T.CODEBOOK_APPLY, bytes([slot]))).latch_id
        return self.readback()

    @_locked
    def watchdog(self, timeout_s: float, safe: SurfaceConfig | None = None) -> None:
        if timeout_s < 0:
            raise ConfigError("timeout_s: must be >= 0 (0 disarms the watchdog)")
        self._ensure()
        self._arm_watchdog(timeout_s, safe)
        self._watchdog_cfg = (timeout_s, safe) if timeout_s > 0 else None

    def _arm_watchdog(self, timeout_s: float, safe: SurfaceConfig | None) -> None:
        slot = p.BUILTIN_SAFE_SLOT
        if safe is not None and timeout_s > 0:
            if not self._info.codebook_slots:
                raise ConfigError("safe: this board has no codebook to hold a custom safe pattern")
            slot = self._info.codebook_slots - 1  # the last slot is reserved for the safe pattern
            self.codebook_store(slot, safe)
        self._call(_T.WATCHDOG, p.WatchdogRequest(int(round(timeout_s * 1000)), slot).pack())

    @_locked
    def reset(self) -> None:
        """Reboot the board (latched state returns to all OFF)."""
        self._ensure()
        try:
            self._request(_T.RESET)
        except _Rebooted:
            pass
        self._needs_handshake = True


def _error_name(code: int) -> str:
    try:
        return p.ErrorCode(code).name
    except ValueError:
        return f"error {code}"
