"""ZeroMQ transport: a brokerless XSUB/XPUB forwarder (the hub) plus PUB/SUB clients.

The hub is two sockets and ``zmq.proxy`` in a background thread (C code, no GIL), hosted by
the twin server or run on its own. Every client connects one PUB to the hub's XSUB port and
one SUB to its XPUB port, so any process can publish to and subscribe from any other with
one well-known address, like the MQTT broker. The hub subscribes upstream to everything,
so publishers never filter on a subscription they have not heard of yet; the only filter
is at the XPUB side, and a client's probe round trip (own subscription, own publish, own
receive) proves that all of its earlier subscriptions reached it: subscriptions of one
socket travel in order. That closes the slow-joiner window before the first slot.

CURVE: with keys configured, both hub sockets are CURVE servers and a ZAP handler accepts
only the client public keys found in ``curve_allowed_dir``; refused handshakes are counted.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import uuid
from pathlib import Path

import zmq
import zmq.asyncio

from twin.errors import TransportError

from controller.messages import MAX_MESSAGE_BYTES
from controller.security import check_bus_security, load_curve_keypair, load_curve_public
from controller.transports import BusConfig, BusUnreachable, Transport, validate_topic

PROBE = "_probe"
HUB_MAX_FRAME = 4 * MAX_MESSAGE_BYTES   # hub hard limit; clients drop anything over MAX_MESSAGE_BYTES


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

    def __init__(self, cfg: BusConfig) -> None:
        check_bus_security(cfg, hub=True)
        self.cfg = cfg
        self.ctx = zmq.Context()
        self.pub_port = cfg.pub_port
        self.sub_port = cfg.sub_port
        self.handshake_failures = 0
        self._keyring: _KeyRing | None = None
        self._auth = None
        self._threads: list[threading.Thread] = []
        self._ctl_name = f"inproc://hub-ctl-{uuid.uuid4().hex}"
        self._stop_monitor = threading.Event()

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
            self._keyring = _KeyRing(allowed)
            self._auth = ThreadAuthenticator(self.ctx)
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
        except zmq.ZMQError as exc:
            front.close(0)
            back.close(0)
            self.close()
            raise TransportError(f"transport: hub cannot bind on {host} ({exc}); is another hub running?") from None
        front.send(b"\x01")  # subscribe upstream to everything (see module docstring)
        mons = [front.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                         | zmq.EVENT_HANDSHAKE_FAILED_AUTH),
                back.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                        | zmq.EVENT_HANDSHAKE_FAILED_AUTH)]
        ctl_a = self.ctx.socket(zmq.PAIR)
        ctl_a.bind(self._ctl_name)
        self._ctl = self.ctx.socket(zmq.PAIR)
        self._ctl.connect(self._ctl_name)

        def run_proxy() -> None:
            try:
                zmq.proxy_steerable(front, back, None, ctl_a)
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

        self._threads = [threading.Thread(target=run_proxy, name="ristwin-hub", daemon=True),
                         threading.Thread(target=run_monitor, name="ristwin-hub-monitor", daemon=True)]
        for t in self._threads:
            t.start()
        return self

    @staticmethod
    def _bind(sock: zmq.Socket, host: str, port: int) -> int:
        if port == 0:
            return sock.bind_to_random_port(f"tcp://{host}")
        sock.bind(f"tcp://{host}:{port}")
        return port

    def close(self) -> None:
        if self._threads:
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
    def __init__(self, cfg: BusConfig, client_id: str) -> None:
        super().__init__()
        self.cfg = cfg
        self.client_id = f"{client_id}-{uuid.uuid4().hex[:8]}"
        self.ctx = zmq.asyncio.Context()
        self._pub: zmq.asyncio.Socket | None = None
        self._sub: zmq.asyncio.Socket | None = None
        self._reader: asyncio.Task | None = None
        self._probe_seq = itertools.count()
        self._probe_waiters: dict[str, asyncio.Future] = {}
        self._closed = False

    def _secure(self, sock: zmq.Socket) -> None:
        cfg = self.cfg
        if cfg.curve_server_public:
            if not cfg.curve_client_secret:
                raise TransportError("transport.curve_client_secret: needed with curve_server_public")
            public, secret = load_curve_keypair(cfg.curve_client_secret, "transport.curve_client_secret")
            sock.curve_serverkey = load_curve_public(cfg.curve_server_public, "transport.curve_server_public")
            sock.curve_publickey = public
            sock.curve_secretkey = secret

    async def start(self) -> None:
        host = self.cfg.host
        self._pub = self.ctx.socket(zmq.PUB)
        self._sub = self.ctx.socket(zmq.SUB)
        for s in (self._pub, self._sub):
            s.setsockopt(zmq.LINGER, 200)
            s.setsockopt(zmq.RECONNECT_IVL, 50)
            s.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
            s.setsockopt(zmq.SNDHWM, 10_000)
            s.setsockopt(zmq.RCVHWM, 10_000)
            self._secure(s)
        self._pub.connect(f"tcp://{host}:{self.cfg.pub_port}")
        self._sub.connect(f"tcp://{host}:{self.cfg.sub_port}")
        self._reader = asyncio.ensure_future(self._read_loop())
        # One probe proves both links (our PUB to the hub and the hub to our SUB) are up.
        await self._probe(timeout=10.0)

    async def _read_loop(self) -> None:
        assert self._sub is not None
        while not self._closed:
            try:
                frames = await self._sub.recv_multipart(copy=True)
            except (zmq.ZMQError, asyncio.CancelledError):
                return
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

    async def _probe(self, timeout: float) -> None:
        """Round-trip a private message through the hub: our subscriptions so far are live."""
        assert self._pub is not None and self._sub is not None
        topic = f"{PROBE}/{self.client_id}/{next(self._probe_seq)}"
        fut = asyncio.get_running_loop().create_future()
        self._probe_waiters[topic] = fut
        self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode())
        try:
            deadline = asyncio.get_running_loop().time() + timeout
            while not fut.done():
                await self._pub.send_multipart([topic.encode(), b""])
                try:
                    await asyncio.wait_for(asyncio.shield(fut), 0.02)
                except asyncio.TimeoutError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise BusUnreachable(
                            f"transport: no ZeroMQ hub answered at {self.cfg.host}:{self.cfg.pub_port}/"
                            f"{self.cfg.sub_port} within {timeout:.0f} s (is the twin server / hub running, "
                            f"and do the CURVE keys match?)"
                        ) from None
        finally:
            self._probe_waiters.pop(topic, None)
            self._sub.setsockopt(zmq.UNSUBSCRIBE, topic.encode())

    async def publish(self, topic: str, payload: bytes) -> None:
        validate_topic(topic)
        if self._pub is None or self._closed:
            raise TransportError("transport: publish on a closed ZeroMQ transport")
        await self._pub.send_multipart([topic.encode("ascii"), payload])
        self.stats.published += 1

    async def _subscribe_remote(self, prefix: str) -> None:
        if self._sub is None:
            raise TransportError("transport: subscribe before start()")
        self._sub.setsockopt(zmq.SUBSCRIBE, prefix.encode("ascii"))
        await self._probe(timeout=10.0)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_subs()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
        for s in (self._pub, self._sub):
            if s is not None:
                s.close(linger=0 if s is self._sub else 200)
        self.ctx.term()


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
