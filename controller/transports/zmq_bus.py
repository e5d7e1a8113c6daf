"""ZeroMQ transport: a brokerless XSUB/XPUB forwarder (the hub) plus PUB/SUB clients.

The hub is two sockets and ``zmq.proxy`` in a background thread (C code, no GIL), hosted by
the twin server or run on its own. Every client connects one PUB to the hub's XSUB port and
one SUB to its XPUB port, so any process can publish to and subscribe from any other with
one well-known address, like the MQTT broker.

Subscriptions travel upstream, as in any XSUB/XPUB proxy: the hub subscribes to what its
subscribers and its own process want, and every publisher's PUB socket filters on that, so
a report nobody listens to (e.g. ``share/`` in a P1 run without a monitor) is dropped in the
publisher's own thread instead of crossing two I/O threads, the hub and the twin server's
latency window. A client's probe round trip (own subscription, own publish, own receive)
proves that all of its earlier subscriptions reached the hub, and its own PUB: subscriptions
of one socket travel in order, and the hub passes them on in order. That closes the
slow-joiner window before the first slot for everything the twin server subscribes to
(``act/``, ``hb/``, ``hello/``: every publisher has those from its first connection on); a
subscriber that joins a stream nobody else wanted (a monitor of ``share/``) may miss what
other publishers send while its subscription is on its way to them, well under a slot.

CURVE: with keys configured, both hub sockets are CURVE servers and a ZAP handler accepts
only the client public keys found in ``curve_allowed_dir``; refused handshakes are counted.

Identity binding (``agent_keys``: agent id -> its public key file, from the deployment): ZAP
gives each connection a User-Id (the agent id its key is bound to, ``@hub`` for the hub's
own key, ``@client`` for other allowed keys), and the forwarder becomes a Python loop that
checks every publish against it (:func:`may_publish`): ``act/irs1`` is accepted only from
irs1's key, ``obs/`` and ``welcome/`` only from the twin server. Anything else is dropped and
counted per sender in ``ZmqHub.impostors``; the run goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Mapping

import zmq
import zmq.utils.z85 as z85

from twin.errors import TransportError

from controller.messages import MAX_MESSAGE_BYTES
from controller.security import check_bus_security, load_curve_keypair, load_curve_public
from controller.transports import BusConfig, BusUnreachable, Transport, validate_topic

PROBE = "_probe"
HUB_MAX_FRAME = 4 * MAX_MESSAGE_BYTES    # hub hard limit; clients drop anything over MAX_MESSAGE_BYTES
# Flags as plain ints: pyzmq's enum flags make every ``&`` / ``|`` a Python enum operation.
_NOBLOCK = int(zmq.NOBLOCK)
_SEND_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_RCVMORE = int(zmq.RCVMORE)


def recv_frames(sock: zmq.Socket) -> list[bytes]:
    """One queued message's frames (what ``recv_multipart(NOBLOCK)`` returns, with integer flags)."""
    frames = [sock.recv(_NOBLOCK)]
    while sock.getsockopt(_RCVMORE):
        frames.append(sock.recv(_NOBLOCK))
    return frames


# Agents' per-slot reports to their peers: what a hub owner may hold back while a slot is open
# (HubTransport.hold); every daemon reads them only after its own answer (controller.daemon).
PARKED_FAMILIES = (b"act/", b"share/")

HUB_USER = "@hub"         # User-Id of the hub's own key (the twin server)
CLIENT_USER = "@client"   # User-Id of an allowed key bound to no agent (an operator's tools)
# Topic families an agent publishes under its own id (``<family>/<agent>``): only that agent may.
AGENT_FAMILIES = frozenset({b"act", b"share", b"hb", b"hello"})
SERVER_FAMILIES = frozenset({b"obs", b"welcome"})   # only the twin server speaks for the twin


def may_publish(user: str, topic: bytes) -> bool:
    """The identity rule of a hub that binds agent ids to keys."""
    family, _, rest = topic.partition(b"/")
    if family == PROBE.encode():
        return True                           # a client's own round trip (see ZmqTransport._probe)
    if family in AGENT_FAMILIES:
        return rest.split(b"/", 1)[0] == user.encode()
    if family in SERVER_FAMILIES:
        return user == HUB_USER
    return user in (HUB_USER, CLIENT_USER)    # ctl/ and anything else: the server or an operator


class _KeyRing:
    """ZAP credentials callback: accept allowed client keys, count the rest."""

    def __init__(self, allowed: set[bytes]) -> None:
        self.allowed = allowed
        self.denied = 0

    def callback(self, domain: str, key: bytes) -> bool:
        import zmq.utils.z85 as z85

        ok = z85.encode(key) in self.allowed if len(key) == 32 else key in self.allowed
        if not ok:
            self.denied += 1
        return ok


class ZmqHub:
    """The forwarder. ``start()`` binds (port 0 = pick a free one, see ``pub_port`` / ``sub_port``)."""

    def __init__(self, cfg: BusConfig, agent_keys: Mapping[str, str] | None = None, *, threaded: bool = True) -> None:
        check_bus_security(cfg, hub=True)
        self.cfg = cfg
        # threaded: the forwarder runs in its own thread (a standalone hub, the tests' bus). Not
        # threaded: the owner's event loop forwards (:class:`HubTransport`, the twin server), one
        # thread hop and wake-up less for every message (no proxy thread, no inproc pipe).
        self.threaded = threaded
        self.front: zmq.Socket | None = None
        self.back: zmq.Socket | None = None
        # agent id -> file with that agent's CURVE public key: binds the id to the key (see IdentityRule)
        self.agent_keys = dict(agent_keys or {})
        if self.agent_keys and not cfg.curve_server_secret:
            raise TransportError("agent.curve_public_key: binding agent ids to keys needs CURVE; set "
                                 "transport.curve_server_secret (keys from `ristwin keys`)")
        self.impostors: Counter[str] = Counter()   # dropped publishes, by the sender's User-Id
        self.ctx = zmq.Context()
        self.pub_port = cfg.pub_port
        self.sub_port = cfg.sub_port
        self.handshake_failures = 0
        self._keyring: _KeyRing | None = None
        self._auth = None
        self._threads: list[threading.Thread] = []
        self._ctl_name = f"inproc://hub-ctl-{uuid.uuid4().hex}"
        self._stop_monitor = threading.Event()
        tag = uuid.uuid4().hex
        self.inproc = (f"inproc://hub-pub-{tag}", f"inproc://hub-sub-{tag}")

    @property
    def auth_denied(self) -> int:
        return self._keyring.denied if self._keyring else 0

    def start(self) -> "ZmqHub":
        cfg = self.cfg
        front = self.ctx.socket(zmq.XSUB)   # publishers connect here
        back = self.ctx.socket(zmq.XPUB)    # subscribers connect here
        for s in (front, back):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.MAXMSGSIZE, HUB_MAX_FRAME)
            s.setsockopt(zmq.SNDHWM, 100_000)
            s.setsockopt(zmq.RCVHWM, 100_000)
        if cfg.curve_server_secret:
            from zmq.auth.thread import ThreadAuthenticator

            public, secret = load_curve_keypair(cfg.curve_server_secret, "transport.curve_server_secret")
            allowed: set[bytes] = {public}   # the hub host's own processes (the twin server)
            if cfg.curve_allowed_dir:
                for f in sorted(Path(cfg.curve_allowed_dir).expanduser().glob("*.key")):
                    allowed.add(load_curve_public(f, f"transport.curve_allowed_dir/{f.name}"))
            user_of: dict[bytes, str] = {public: HUB_USER}
            for agent, f in self.agent_keys.items():
                key = load_curve_public(f, f"agent {agent}: curve_public_key")
                if key in user_of:
                    raise TransportError(f"agent {agent}: curve_public_key {f} is already bound to "
                                         f"{user_of[key]!r}; every agent needs its own key pair")
                user_of[key] = agent
                allowed.add(key)
            self._keyring = _KeyRing(allowed)
            self._auth = ThreadAuthenticator(self.ctx)
            # ZAP tells libzmq a User-Id per connection; every message it receives carries it.
            self._auth.curve_user_id = lambda raw: user_of.get(z85.encode(raw), CLIENT_USER)
            self._auth.start()
            self._auth.configure_curve_callback("*", credentials_provider=self._keyring)
            for s in (front, back):
                s.curve_server = True
                s.curve_secretkey = secret
                s.curve_publickey = public
        host = cfg.host
        try:
            self.pub_port = self._bind(front, host, cfg.pub_port)
            self.sub_port = self._bind(back, host, cfg.sub_port)
            # The hub's own process (the twin server) connects in-process: no I/O thread, no TCP.
            for sock, ep in zip((front, back), self.inproc if self.threaded else ()):
                sock.bind(ep)
            if cfg.ipc_dir:   # same-host clients may use unix sockets instead of loopback TCP
                Path(cfg.ipc_dir).expanduser().mkdir(parents=True, exist_ok=True)
                for sock, ep in zip((front, back), hub_ipc_endpoints(cfg)):
                    sock.bind(ep)
        except zmq.ZMQError as exc:
            front.close(0)
            back.close(0)
            self.close()
            raise TransportError(f"transport: hub cannot bind on {host} ({exc}); is another hub running?") from None
        mons = [front.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                         | zmq.EVENT_HANDSHAKE_FAILED_AUTH),
                back.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                        | zmq.EVENT_HANDSHAKE_FAILED_AUTH)]
        ctl_a = self.ctx.socket(zmq.PAIR)
        ctl_a.bind(self._ctl_name)
        self._ctl = self.ctx.socket(zmq.PAIR)
        self._ctl.connect(self._ctl_name)
        if not self.threaded:
            self.front, self.back = front, back

        def run_proxy() -> None:
            try:
                if self.agent_keys:
                    self._checked_proxy(front, back, ctl_a)
                else:
                    zmq.proxy_steerable(front, back, None, ctl_a)   # C loop, no GIL
            except zmq.ZMQError:
                pass
            finally:
                for s in (front, back, ctl_a):
                    s.close(0)

        def run_monitor() -> None:
            poller = zmq.Poller()
            for m in mons:
                poller.register(m, zmq.POLLIN)
            while not self._stop_monitor.is_set():
                for sock, _ in poller.poll(100):
                    try:
                        sock.recv_multipart(zmq.NOBLOCK)
                        self.handshake_failures += 1
                    except zmq.ZMQError:
                        pass
            for m in mons:
                m.close(0)

        self._threads = [threading.Thread(target=run_monitor, name="ristwin-hub-monitor", daemon=True)]
        if self.threaded:
            self._threads.append(threading.Thread(target=run_proxy, name="ristwin-hub", daemon=True))
        else:
            ctl_a.close(0)
        for t in self._threads:
            t.start()
        return self

    def _checked_proxy(self, front: zmq.Socket, back: zmq.Socket, ctl: zmq.Socket) -> None:
        """The forwarder with identity binding: every publish is checked against the User-Id
        ZAP gave its connection (:func:`may_publish`); an impostor's message is dropped and
        counted in ``impostors``, everything else goes on as with ``zmq.proxy``."""
        poller = zmq.Poller()
        for sock in (front, back, ctl):
            poller.register(sock, zmq.POLLIN)
        while True:
            ready = dict(poller.poll())
            if ctl in ready and ctl.recv() == b"TERMINATE":
                return
            # Drain while ZMQ_EVENTS says so (cheaper than receiving until zmq.Again, see _drain).
            try:
                if back in ready:   # subscriptions travel upstream as with zmq.proxy
                    while back.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                        front.send_multipart(back.recv_multipart(zmq.NOBLOCK, copy=False), copy=False)
                if front in ready:
                    while front.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                        self._forward_checked(front.recv_multipart(zmq.NOBLOCK, copy=False), back)
            except zmq.Again:
                pass   # nothing after all: poll again

    def _forward_checked(self, frames: list, back: zmq.Socket) -> bool:
        if self._allowed(frames[0]):
            back.send_multipart(frames, copy=False)
            return True
        return False

    def _allowed(self, head: zmq.Frame) -> bool:
        """The identity rule for one publish (its first frame); an impostor's is counted."""
        try:
            user = head.get("User-Id")
        except zmq.ZMQError:
            user = HUB_USER   # inproc: only the hub's own process can connect in-process
        if may_publish(user, head.bytes):
            return True
        self.impostors[user] += 1
        return False

    def pump(self, deliver, wanted: tuple[bytes, ...] | None = None, park: list | None = None) -> None:
        """Not threaded: forward everything queued now, as the proxy thread would (subscriptions
        upstream, publishes downstream, identity-checked when agent ids are bound to keys), and
        hand each forwarded publish to ``deliver(topic bytes, payload bytes)``: the owner's own
        subscriptions. With ``wanted``, only publishes whose topic starts with one of those
        prefixes are handed on (the rest is forwarded as raw frames, never copied or parsed);
        a publish of other than two frames is forwarded but never handed on. With ``park`` (a
        list), a two-frame publish in one of :data:`PARKED_FAMILIES` is appended there instead
        of being forwarded; :meth:`send_parked` forwards them later, in their order.

        The slot path: per message two receives and two sends of frames, the frame's own
        ``more`` flag instead of a ZMQ_RCVMORE query, plain integer flags (pyzmq's enum flags
        cost a Python enum operation each), no ``*_multipart`` list building."""
        front, back = self.front, self.back
        checked = bool(self.agent_keys)
        try:
            while True:
                busy = False
                while back.getsockopt(_EVENTS) & _POLLIN:   # (un)subscriptions: keep XPUB's queue empty
                    front.send_multipart(back.recv_multipart(_NOBLOCK, copy=False), copy=False)
                    busy = True
                while front.getsockopt(_EVENTS) & _POLLIN:
                    busy = True
                    head = front.recv(_NOBLOCK, copy=False)
                    if not head.more:                    # a lone frame: forward it, nobody here reads it
                        if checked:
                            self._forward_checked([head], back)
                        else:
                            back.send(head, _NOBLOCK, copy=False)
                        continue
                    body = front.recv(_NOBLOCK, copy=False)
                    if body.more:                        # three or more frames: the generic way
                        frames = [head, body]
                        while frames[-1].more:
                            frames.append(front.recv(_NOBLOCK, copy=False))
                        if not checked:
                            back.send_multipart(frames, copy=False)
                        else:
                            self._forward_checked(frames, back)
                        continue
                    if checked and not self._allowed(head):
                        continue
                    topic = head.bytes
                    if park is not None and topic.startswith(PARKED_FAMILIES):
                        park.append((head, body))
                    else:
                        back.send(head, _SEND_MORE, copy=False)
                        back.send(body, _NOBLOCK, copy=False)
                    if wanted is None or topic.startswith(wanted):
                        deliver(topic, body.bytes)
                if not busy:
                    return
        except zmq.Again:
            pass   # nothing after all: the next readiness edge calls again

    def send_parked(self, parked: list) -> None:
        """Forward what :meth:`pump` parked (identity-checked already), oldest first."""
        back = self.back
        try:
            for head, body in parked:
                back.send(head, _SEND_MORE, copy=False)
                back.send(body, _NOBLOCK, copy=False)
        except zmq.Again:
            pass   # XPUB never blocks; at its high-water mark libzmq drops, as for any publish
        parked.clear()

    def local_transport(self, client_id: str) -> "Transport":
        """A client for this hub's own process (not yet started): over inproc:// for a threaded
        hub; the forwarder itself (:class:`HubTransport`) when the owner's loop forwards."""
        if not self.threaded:
            return HubTransport(self)
        return ZmqTransport(self.cfg, client_id, context=self.ctx, endpoints=self.inproc)

    @staticmethod
    def _bind(sock: zmq.Socket, host: str, port: int) -> int:
        if port == 0:
            return sock.bind_to_random_port(f"tcp://{host}")
        sock.bind(f"tcp://{host}:{port}")
        return port

    def close(self) -> None:
        if not self.threaded and self.front is not None:
            for sock in (self.front, self.back):
                sock.close(0)
            self.front = self.back = None
        if self._threads:
            if self.threaded:
                self._ctl.send(b"TERMINATE")
            self._stop_monitor.set()
            for t in self._threads:
                t.join(timeout=2)
            self._ctl.close(0)
            self._threads = []
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self.ctx.term()

    def __enter__(self) -> "ZmqHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class ZmqTransport(Transport):
    """PUB + SUB client of the hub, driven by one permanent event-loop reader.

    The per-slot path is kept lean: the SUB socket's ZMQ_FD stays registered with the loop
    and is drained with non-blocking receives (no future or epoll_ctl per message, as
    ``zmq.asyncio`` needs), and a publish is one non-blocking send (a PUB socket never
    blocks; at the high-water mark libzmq drops). ``endpoints`` / ``context`` let the hub's own
    process connect over ``inproc://`` (no I/O thread or TCP hop, see :meth:`ZmqHub.local_transport`).
    """

    def __init__(self, cfg: BusConfig, client_id: str, *, context: zmq.Context | None = None,
                 endpoints: tuple[str, str] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.client_id = f"{client_id}-{uuid.uuid4().hex[:8]}"
        self._own_ctx = context is None
        self.ctx = context if context is not None else zmq.Context()
        self.endpoints = endpoints or client_endpoints(cfg)
        self._pub: zmq.Socket | None = None
        self._sub: zmq.Socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._drain_scheduled = False
        self._probe_seq = itertools.count()
        self._probe_waiters: dict[str, asyncio.Future] = {}
        self._closed = False

    def _secure(self, sock: zmq.Socket) -> None:
        secure_client_socket(sock, self.cfg, self.endpoints)

    async def start(self) -> None:
        self._pub = self.ctx.socket(zmq.PUB)
        self._sub = self.ctx.socket(zmq.SUB)
        for s in (self._pub, self._sub):
            s.setsockopt(zmq.LINGER, 200)
            s.setsockopt(zmq.RECONNECT_IVL, 50)
            s.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
            s.setsockopt(zmq.SNDHWM, 10_000)
            s.setsockopt(zmq.RCVHWM, 10_000)
            self._secure(s)
        self._pub.connect(self.endpoints[0])
        self._sub.connect(self.endpoints[1])
        self._loop = asyncio.get_running_loop()
        self._fd = self._sub.getsockopt(zmq.FD)
        self._loop.add_reader(self._fd, self._drain)
        self._schedule_drain()
        # One probe proves both links (our PUB to the hub and the hub to our SUB) are up.
        await self._probe(timeout=10.0)

    def _schedule_drain(self) -> None:
        """ZMQ_FD is edge-triggered: anything that touches the socket (setsockopt, a full batch)
        may consume the edge, so look again on the next loop turn."""
        if not self._drain_scheduled and self._loop is not None and not self._closed:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        sub = self._sub
        if sub is None or self._closed:
            return
        batch = []
        try:
            # Ask ZMQ_EVENTS before each receive instead of receiving until zmq.Again: raising
            # and catching Again costs far more than the receive itself (tens of us in pyzmq),
            # and reading ZMQ_EVENTS is also what re-arms the edge-triggered ZMQ_FD.
            while sub.getsockopt(_EVENTS) & _POLLIN:
                if len(batch) >= 256:
                    self._schedule_drain()   # more is waiting: let other callbacks run first
                    break
                batch.append(recv_frames(sub))
        except zmq.Again:
            pass
        except zmq.ZMQError:
            return
        # Deliver a whole batch at once, so a consumer sees every queued message (and can skip
        # to the newest) before it runs.
        for frames in batch:
            if len(frames) != 2:
                self.stats.dropped_malformed += 1
                continue
            try:
                topic = frames[0].decode("ascii")
            except UnicodeDecodeError:
                self.stats.dropped_malformed += 1
                continue
            if topic.startswith(PROBE + "/"):
                fut = self._probe_waiters.pop(topic, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
                continue
            self._dispatch(topic, frames[1])

    def _send(self, topic: bytes, payload: bytes) -> None:
        assert self._pub is not None
        try:
            # What send_multipart does, minus its per-call list walk and frame type checks.
            self._pub.send(topic, _SEND_MORE)
            self._pub.send(payload, _NOBLOCK)
        except zmq.Again:
            self.stats.dropped_disconnected += 1
            return
        self.stats.published += 1

    async def _probe(self, timeout: float) -> None:
        """Round-trip a private message through the hub: our subscriptions so far are live."""
        assert self._pub is not None and self._sub is not None
        topic = f"{PROBE}/{self.client_id}/{next(self._probe_seq)}"
        fut = asyncio.get_running_loop().create_future()
        self._probe_waiters[topic] = fut
        self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._schedule_drain()
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while not fut.done():
                try:
                    self._pub.send_multipart([topic.encode(), b""], zmq.NOBLOCK)
                except zmq.Again:
                    pass
                try:
                    await asyncio.wait_for(asyncio.shield(fut), 0.02)
                except asyncio.TimeoutError:
                    self._drain()   # belt and braces: look even if no readiness edge was seen
                    if fut.done():
                        break
                    if asyncio.get_running_loop().time() > deadline:
                        raise BusUnreachable(
                            f"transport: no ZeroMQ hub answered at {self.endpoints[0]} / {self.endpoints[1]} "
                            f"within {timeout:.0f} s (is the twin server / hub running, and do the CURVE keys "
                            f"match?)"
                        ) from None
        finally:
            self._probe_waiters.pop(topic, None)
            if not self._closed:
                self._sub.setsockopt(zmq.UNSUBSCRIBE, topic.encode())
                self._schedule_drain()

    async def publish(self, topic: str, payload: bytes) -> None:
        validate_topic(topic)
        if self._pub is None or self._closed:
            raise TransportError("transport: publish on a closed ZeroMQ transport")
        self._send(topic.encode("ascii"), payload)

    async def _subscribe_remote(self, prefix: str) -> None:
        if self._sub is None:
            raise TransportError("transport: subscribe before start()")
        self._sub.setsockopt(zmq.SUBSCRIBE, prefix.encode("ascii"))
        self._schedule_drain()
        await self._probe(timeout=10.0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_subs()
        if self._loop is not None and self._fd is not None:
            try:
                self._loop.remove_reader(self._fd)
            except (RuntimeError, ValueError, OSError):
                pass   # the loop is already closing
            self._fd = None
        for s in (self._pub, self._sub):
            if s is not None:
                s.close(linger=0 if s is self._sub else 200)
        if self._own_ctx:
            self.ctx.term()


class HubTransport(Transport):
    """The hub owner's own transport when its event loop forwards (``ZmqHub(threaded=False)``).

    Publishing is a send on the hub's XPUB socket (filtered by the subscribers' subscriptions
    like any publish); every message a client publishes passes through :meth:`ZmqHub.pump`
    here, which forwards it and dispatches it to this process's subscriptions. So the owner
    sees the bus without a second socket pair, the inproc pipes and the proxy thread: an
    answer reaches the twin server in the same wake-up that forwards it. The owner's own
    publishes are not echoed back to it. :meth:`wait` blocks on the hub's sockets (a blocking
    slot collect); otherwise the loop's readers pump.
    """

    def __init__(self, hub: ZmqHub) -> None:
        super().__init__()
        if hub.threaded or hub.front is None:
            raise TransportError("transport: HubTransport needs a started ZmqHub(threaded=False)")
        self.hub = hub
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fds = (hub.front.getsockopt(zmq.FD), hub.back.getsockopt(zmq.FD))
        self._poll = None
        self._pump_scheduled = False
        self._closed = False
        self._families: tuple[bytes, ...] = ()   # topic prefixes some subscription here may match
        self._parked: list | None = None         # while held: peers' reports not yet forwarded

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for fd in self._fds:
            self._loop.add_reader(fd, self.pump)
        self._schedule_pump()

    def _schedule_pump(self) -> None:
        # ZMQ_FD is edge-triggered and a send may consume the edge: look again on the next turn.
        if not self._pump_scheduled and self._loop is not None and not self._closed:
            self._pump_scheduled = True
            self._loop.call_soon(self.pump)

    def pump(self) -> None:
        self._pump_scheduled = False
        if not self._closed:
            # only what a subscription here may match is copied out (share/, a client's probe,
            # ...: forwarded as frames only)
            self.hub.pump(self._deliver, self._families, self._parked)

    def hold(self) -> None:
        """From now on, park the agents' reports to each other (``act/``, ``share/``: they are
        still delivered here at once) instead of forwarding them, until :meth:`release`. The
        twin server holds while a slot's answers come in: the peers (a BS) read them only after
        their own answer anyway, and forwarding them mid-slot wakes the peers' I/O threads while
        the two cores are busiest."""
        if self._parked is None:
            self._parked = []

    def release(self) -> None:
        """Forward everything parked since :meth:`hold`, in order, and stop parking."""
        parked, self._parked = self._parked, None
        if parked and not self._closed:
            self.hub.send_parked(parked)

    def _deliver(self, raw: bytes, payload: bytes) -> None:
        try:
            topic = raw.decode("ascii")
        except UnicodeDecodeError:
            self.stats.dropped_malformed += 1
            return
        self._dispatch(topic, payload)

    def wait(self, timeout: float) -> None:
        """Forward and dispatch what is queued; only if that delivered nothing here, block up to
        ``timeout`` s for client traffic and do it again (what the loop's readers do, without an
        event-loop turn). The caller re-checks its condition after every return."""
        import select

        if self._poll is None:
            self._poll = select.poll()
            for fd in self._fds:
                self._poll.register(fd, select.POLLIN)
        received = self.stats.received
        self.pump()   # reading ZMQ_EVENTS also re-arms the edge-triggered fds before sleeping on them
        if self.stats.received != received:
            return    # the caller's condition may hold now: never sleep past a delivered answer
        self._poll.poll(max(0, int(timeout * 1000 + 0.999)))
        self.pump()

    async def publish(self, topic: str, payload: bytes) -> None:
        validate_topic(topic)
        if self._closed:
            raise TransportError("transport: publish on a closed hub transport")
        back = self.hub.back
        try:
            back.send(topic.encode("ascii"), _SEND_MORE)
            back.send(payload, _NOBLOCK)
        except zmq.Again:
            self.stats.dropped_disconnected += 1
            return
        self.stats.published += 1
        self._schedule_pump()

    async def _subscribe_remote(self, prefix: str) -> None:
        # Every publish passes through this process: a subscription is live once the publishers
        # send the prefix, i.e. once the hub subscribes to it upstream (see the module docstring).
        # Publishers that connect later get it from libzmq with the hub's other subscriptions.
        raw = prefix.encode("ascii")
        if raw not in self._families:
            self.hub.front.send(b"\x01" + raw)
        self._families = tuple(sorted({sub.prefix.encode("ascii") for sub in self._subs}))

    async def close(self) -> None:
        if self._closed:
            return
        self.release()   # nothing parked is lost
        self._closed = True
        self._close_subs()
        if self._loop is not None:
            for fd in self._fds:
                try:
                    self._loop.remove_reader(fd)
                except (RuntimeError, ValueError, OSError):
                    pass


def secure_client_socket(sock: zmq.Socket, cfg: BusConfig, endpoints: tuple[str, str]) -> None:
    """CURVE client keys on a socket when the deployment gives the hub's public key (not over
    inproc://, which only the hub's own process can reach)."""
    if cfg.curve_server_public and not endpoints[0].startswith("inproc://"):
        if not cfg.curve_client_secret:
            raise TransportError("transport.curve_client_secret: needed with curve_server_public")
        public, secret = load_curve_keypair(cfg.curve_client_secret, "transport.curve_client_secret")
        sock.curve_serverkey = load_curve_public(cfg.curve_server_public, "transport.curve_server_public")
        sock.curve_publickey = public
        sock.curve_secretkey = secret


def client_endpoints(cfg: BusConfig) -> tuple[str, str]:
    """(pub, sub) addresses a client connects to: the hub's unix sockets when ``ipc_dir`` is set
    (same host only), else TCP."""
    if cfg.ipc_dir:
        return hub_ipc_endpoints(cfg)
    return f"tcp://{cfg.host}:{cfg.pub_port}", f"tcp://{cfg.host}:{cfg.sub_port}"


def hub_ipc_endpoints(cfg: BusConfig) -> tuple[str, str]:
    base = Path(cfg.ipc_dir).expanduser()
    return f"ipc://{base}/{cfg.deployment}-pub.sock", f"ipc://{base}/{cfg.deployment}-sub.sock"


def run_hub_forever(cfg: BusConfig) -> None:
    """Run a standalone hub until SIGTERM / Ctrl-C (used by deployments without a twin server)."""
    import signal

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ZmqHub(cfg):
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    os._exit(0)
