"""A blocking ZeroMQ client of the hub for a process's slot fast path (no event loop).

The same PUB + SUB pair, hub, topics, size limit, CURVE setup and probe handshake as
:class:`controller.transports.zmq_bus.ZmqTransport`, driven by the caller's own loop
instead of asyncio: :meth:`wait` blocks in one ``poll`` on the SUB socket's ZMQ_FD (plus
any extra file descriptors, e.g. a signal wake-up pipe) and :meth:`drain` takes every
queued message at once. Per slot that is one poll, the receives and the non-blocking
sends: no event-loop iteration, selector, handle or future, and no thread besides
libzmq's one I/O thread. The agent daemon's ``run_sync`` uses it (``controller.daemon``).
"""

from __future__ import annotations

import select
import time
import uuid

import zmq

from twin.errors import TransportError

from controller.messages import MAX_MESSAGE_BYTES
from controller.transports import BusConfig, BusUnreachable, TransportStats, topic_matches, validate_topic
from controller.transports.zmq_bus import (
    _EVENTS, _NOBLOCK, _POLLIN, _SEND_MORE, PROBE, client_endpoints, recv_frames, secure_client_socket,
)

_PROBE_PREFIX = PROBE.encode() + b"/"


class ZmqSyncClient:
    """PUB + SUB client of the hub for one thread; ``start`` connects and proves the link."""

    def __init__(self, cfg: BusConfig, client_id: str, *, context: zmq.Context | None = None,
                 endpoints: tuple[str, str] | None = None) -> None:
        self.cfg = cfg
        self.client_id = f"{client_id}-{uuid.uuid4().hex[:8]}"
        self.stats = TransportStats()
        self.endpoints = endpoints or client_endpoints(cfg)
        self._own_ctx = context is None
        self.ctx = context if context is not None else zmq.Context(io_threads=1)
        self._pub: zmq.Socket | None = None
        self._sub: zmq.Socket | None = None
        self._poll = select.poll()
        self._sub_fd = -1
        self._prefixes: list[str] = []
        self._topics_ok: set[str] = set()          # topics already validated (publish)
        self._pending: list[tuple[str, bytes]] = []   # delivered while a probe was waited for
        self._quiet: zmq.Socket | None = None
        self._quiet_fd = -1
        self._quiet_armed = False                   # the quiet socket also ends wait() (arm_quiet)
        self._quiet_prefixes: list[str] = []
        self._quiet_queue: list[tuple[str, bytes]] = []
        self._probe_seq = 0
        self._closed = False
        self._matched: dict[str, bool] = {}         # topic -> matches a prefix of the SUB socket
        self._quiet_matched: dict[str, bool] = {}   # the same for the quiet socket

    # ---- setup ----------------------------------------------------------------------------

    def _socket(self, kind: int) -> zmq.Socket:
        sock = self.ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 200)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        sock.setsockopt(zmq.RCVHWM, 10_000)
        secure_client_socket(sock, self.cfg, self.endpoints)
        return sock

    def start(self, timeout: float = 10.0) -> "ZmqSyncClient":
        self._pub = self._socket(zmq.PUB)
        self._sub = self._socket(zmq.SUB)
        self._pub.connect(self.endpoints[0])
        self._sub.connect(self.endpoints[1])
        self._sub_fd = self._sub.getsockopt(zmq.FD)
        self._poll.register(self._sub_fd, select.POLLIN)
        self._probe(timeout, self._sub, self._sub_fd)
        return self

    def watch_fd(self, fd: int) -> None:
        """Also end :meth:`wait` when ``fd`` becomes readable (a signal / stop wake-up pipe)."""
        self._poll.register(fd, select.POLLIN)

    def subscribe(self, *prefixes: str, timeout: float = 10.0) -> None:
        """Subscribe to every prefix, then one probe round trip proves they are all live at the
        hub (a socket's subscriptions travel in order), as ``Transport.subscribe`` promises."""
        if self._sub is None:
            raise TransportError("transport: subscribe before start()")
        for prefix in prefixes:
            validate_topic(prefix, prefix=True)
            self._prefixes.append(prefix)
            self._sub.setsockopt(zmq.SUBSCRIBE, prefix.encode("ascii"))
        self._matched.clear()
        self._probe(timeout, self._sub, self._sub_fd)

    def subscribe_quiet(self, *prefixes: str, timeout: float = 10.0) -> None:
        """Prefixes on a second SUB socket that never ends :meth:`wait`: its messages queue in
        libzmq until :meth:`drain_quiet`. For what a daemon reads only after its own answer (a
        BS's peers' reports), so their arrival does not wake its thread mid-slot."""
        if self._pub is None:
            raise TransportError("transport: subscribe before start()")
        if self._quiet is None:
            self._quiet = self._socket(zmq.SUB)
            self._quiet.connect(self.endpoints[1])
            self._quiet_fd = self._quiet.getsockopt(zmq.FD)
        for prefix in prefixes:
            validate_topic(prefix, prefix=True)
            self._quiet_prefixes.append(prefix)
            self._quiet.setsockopt(zmq.SUBSCRIBE, prefix.encode("ascii"))
        self._quiet_matched.clear()
        self._probe(timeout, self._quiet, self._quiet_fd)

    def arm_quiet(self, armed: bool = True) -> None:
        """While armed, a message on the quiet socket also ends :meth:`wait` (which then returns
        False with :meth:`quiet_pending` True). A daemon arms it once its answer is out, so the
        peers' reports wake it when they come, between slots, and disarms it when it has read
        them: they are then absorbed outside the next slot's latency window, not inside it."""
        if self._quiet is None or self._closed or armed == self._quiet_armed:
            return
        if armed:
            self._poll.register(self._quiet_fd, select.POLLIN)
        else:
            self._poll.unregister(self._quiet_fd)
        self._quiet_armed = armed

    def quiet_pending(self) -> bool:
        """The quiet socket is armed and has a message queued (reading ZMQ_EVENTS re-arms its fd)."""
        return self._quiet_armed and (bool(self._quiet_queue) or bool(self._quiet.getsockopt(_EVENTS) & _POLLIN))

    def _probe(self, timeout: float, sock: zmq.Socket, fd: int) -> None:
        """Round-trip a private message through the hub to ``sock`` (see ``ZmqTransport._probe``)."""
        assert self._pub is not None
        topic = f"{PROBE}/{self.client_id}/{self._probe_seq}".encode()
        self._probe_seq += 1
        sock.setsockopt(zmq.SUBSCRIBE, topic)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        quiet = sock is not self._sub
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    self._pub.send_multipart([topic, b""], zmq.NOBLOCK)
                except zmq.Again:
                    pass
                resend = time.monotonic() + 0.02
                while time.monotonic() < resend:
                    if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                        poller.poll(max(1, int((resend - time.monotonic()) * 1000 + 0.999)))
                    if self._take(sock, self._quiet_queue if quiet else self._pending, probe=topic):
                        return
                if time.monotonic() > deadline:
                    raise BusUnreachable(
                        f"transport: no ZeroMQ hub answered at {self.endpoints[0]} / {self.endpoints[1]} "
                        f"within {timeout:.0f} s (is the twin server / hub running, and do the CURVE keys "
                        f"match?)")
        finally:
            if not self._closed:
                sock.setsockopt(zmq.UNSUBSCRIBE, topic)

    # ---- per slot -------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes) -> None:
        """One non-blocking send (a PUB never blocks; at the high-water mark or without a link
        libzmq drops, counted in ``dropped_disconnected``)."""
        if topic not in self._topics_ok:
            validate_topic(topic)
            self._topics_ok.add(topic)
        if self._pub is None or self._closed:
            raise TransportError("transport: publish on a closed ZeroMQ client")
        try:
            self._pub.send(topic.encode("ascii"), _SEND_MORE)
            self._pub.send(payload, _NOBLOCK)
        except zmq.Again:
            self.stats.dropped_disconnected += 1
            return
        self.stats.published += 1

    def readable(self) -> bool:
        """A message is queued (reading ZMQ_EVENTS also re-arms the edge-triggered ZMQ_FD)."""
        return bool(self._pending) or bool(self._sub.getsockopt(_EVENTS) & _POLLIN)

    def wait(self, timeout: float) -> bool:
        """Block until a message is queued, a watched fd is readable, an armed quiet socket has a
        message, or ``timeout`` seconds passed; True when a message is queued on the SUB socket
        (it comes first). One ``poll`` system call per wake-up."""
        end = time.monotonic() + max(0.0, timeout)
        while True:
            if self.readable():
                return True
            if self.quiet_pending():
                return False
            left = end - time.monotonic()
            if left <= 0:
                return False
            events = self._poll.poll(max(1, int(left * 1000 + 0.999)))
            if any(fd != self._sub_fd and fd != self._quiet_fd for fd, _ in events):
                return self.readable()   # a watched fd: let the caller look (stop, signal)

    def drain(self) -> list[tuple[str, bytes]]:
        """Every message queued now, oldest first, filtered to the subscribed prefixes."""
        out, self._pending = self._pending, []
        self._take(self._sub, out)
        return out

    def drain_quiet(self) -> list[tuple[str, bytes]]:
        """Every message queued on the quiet socket (:meth:`subscribe_quiet`), oldest first."""
        out, self._quiet_queue = self._quiet_queue, []
        if self._quiet is not None and not self._closed:
            self._take(self._quiet, out)
        return out

    def _take(self, sock: zmq.Socket, out: list, probe: bytes | None = None) -> bool:
        """Receive what ``sock`` has queued: probe replies are consumed (True if ``probe`` came
        back), everything else is checked and appended to ``out``."""
        prefixes = self._prefixes if sock is self._sub else self._quiet_prefixes
        matched = self._matched if sock is self._sub else self._quiet_matched
        seen = False
        try:
            # ZMQ_EVENTS before each receive: cheaper than raising zmq.Again (see zmq_bus._drain).
            while sock.getsockopt(_EVENTS) & _POLLIN:
                frames = recv_frames(sock)
                if len(frames) != 2:
                    self.stats.dropped_malformed += 1
                    continue
                raw_topic, payload = frames
                if raw_topic.startswith(_PROBE_PREFIX):
                    seen = seen or raw_topic == probe
                    continue
                try:
                    topic = raw_topic.decode("ascii")
                except UnicodeDecodeError:
                    self.stats.dropped_malformed += 1
                    continue
                if len(payload) > MAX_MESSAGE_BYTES:
                    self.stats.dropped_oversized += 1
                    continue
                # ZeroMQ filters by byte prefix; narrow to the shared rule (obs/irs1 is not obs/irs10),
                # remembered per topic (a daemon sees a handful; cleared when the prefixes change).
                ok = matched.get(topic)
                if ok is None:
                    ok = any(topic_matches(p, topic) for p in prefixes)
                    if len(matched) < 1024:
                        matched[topic] = ok
                if not ok:
                    continue
                self.stats.received += 1
                out.append((topic, payload))
        except zmq.Again:
            pass
        return seen

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for s in (self._pub, self._sub, self._quiet):
            if s is not None:
                s.close(linger=200 if s is self._pub else 0)
        if self._own_ctx:
            self.ctx.term()


__all__ = ["ZmqSyncClient"]
