"""The message bus behind one interface: publish, subscribe, close (asyncio, one loop per daemon).

Topics are ``/``-separated levels of ``[A-Za-z0-9_.-]`` (e.g. ``obs/irs0``). A subscription
prefix is either ``""`` (everything), a whole topic (``act/irs0`` receives ``act/irs0`` and
``act/irs0/...``), or ends with ``/`` (``act/`` receives every ``act/<x>``). Both transports
match exactly this way (MQTT filters only cut at level boundaries, so ZeroMQ's byte prefix
match is narrowed client-side), which is what lets one test suite cover both.

``subscribe`` returns only once the subscription is live on the bus (ZeroMQ: a probe round
trip through the hub; MQTT: the broker's SUBACK), so a daemon that has subscribed and then
said hello cannot lose the first slot to the slow-joiner effect. (ZeroMQ publishers filter
on the hub's upstream subscriptions: a prefix that neither the twin server nor any earlier
subscriber wanted reaches the other publishers just after the probe, see ``zmq_bus``.)
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from twin.errors import TransportError

from controller.messages import MAX_MESSAGE_BYTES

Callback = Callable[[str, bytes], "Awaitable[None] | None"]
QUEUE_DEPTH = 1024


class BusUnreachable(TransportError):
    """No hub / broker answered in time (it may not be up yet): worth retrying, unlike bad keys."""


_VALID_TOPICS: set[str] = set()   # whole topics that passed the check below (a run has a few dozen)
_VALID_TOPICS_MAX = 4096


def validate_topic(topic: str, *, prefix: bool = False) -> str:
    if type(topic) is str and topic in _VALID_TOPICS:
        return topic   # a whole topic that passed is also a valid prefix
    if not isinstance(topic, str) or len(topic) > 200:
        raise TransportError(f"topic: {topic!r} must be a string of at most 200 characters")
    if prefix and topic == "":
        return topic
    body = topic[:-1] if (prefix and topic.endswith("/")) else topic
    levels = body.split("/")
    if not all(lv and all(c.isalnum() or c in "_.-" for c in lv) for lv in levels):
        raise TransportError(
            f"topic: {topic!r} must be '/'-separated levels of letters, digits, '_', '.', '-'"
        )
    if body is topic and type(topic) is str and len(_VALID_TOPICS) < _VALID_TOPICS_MAX:
        _VALID_TOPICS.add(topic)
    return topic


def topic_matches(prefix: str, topic: str) -> bool:
    """The one matching rule both transports implement (see module docstring)."""
    if prefix == "" or topic == prefix:
        return True
    if prefix.endswith("/"):
        return topic.startswith(prefix)
    return topic.startswith(prefix + "/")


@dataclass
class TransportStats:
    published: int = 0
    received: int = 0
    dropped_oversized: int = 0        # frames larger than MAX_MESSAGE_BYTES (never handed on)
    dropped_malformed: int = 0        # frames without a valid topic
    dropped_queue_full: int = 0       # a slow consumer's queue overflowed (oldest dropped)
    dropped_disconnected: int = 0     # publish while the link was down
    reconnects: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        d.update(self.extra)
        return d


class Subscription:
    """Messages for one prefix: an async iterator of (topic, payload), or a callback."""

    def __init__(self, transport: "Transport", prefix: str, callback: Callback | None) -> None:
        self.transport = transport
        self.prefix = prefix
        self.callback = callback
        self.queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(QUEUE_DEPTH)
        self.closed = False

    def _deliver(self, topic: str, payload: bytes) -> None:
        if self.closed:
            return
        if self.callback is not None:
            result = self.callback(topic, payload)
            if asyncio.iscoroutine(result):
                asyncio.ensure_future(result)
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.transport.stats.dropped_queue_full += 1
        self.queue.put_nowait((topic, payload))

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> tuple[str, bytes]:
        if self.closed and self.queue.empty():
            raise StopAsyncIteration
        item = await self.queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    async def get(self, timeout: float | None = None) -> tuple[str, bytes]:
        """Next message, or asyncio.TimeoutError after ``timeout`` seconds."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport._subs.discard(self)
            try:
                self.queue.put_nowait(None)
            except asyncio.QueueFull:
                pass


class Transport(ABC):
    """publish / subscribe / close over one bus connection; create with :func:`connect`."""

    def __init__(self) -> None:
        self.stats = TransportStats()
        self._subs: set[Subscription] = set()

    @abstractmethod
    async def start(self) -> None:
        """Connect; returns when the link can publish."""

    @abstractmethod
    async def publish(self, topic: str, payload: bytes) -> None: ...

    @abstractmethod
    async def _subscribe_remote(self, prefix: str) -> None:
        """Make the prefix live on the bus; return only once it is."""

    @abstractmethod
    async def close(self) -> None: ...

    async def subscribe(self, prefix: str, callback: Callback | None = None) -> Subscription:
        validate_topic(prefix, prefix=True)
        sub = Subscription(self, prefix, callback)
        self._subs.add(sub)
        await self._subscribe_remote(prefix)
        return sub

    def _dispatch(self, topic: str, payload: bytes) -> None:
        if len(payload) > MAX_MESSAGE_BYTES:
            self.stats.dropped_oversized += 1
            return
        self.stats.received += 1
        for sub in list(self._subs):
            if topic_matches(sub.prefix, topic):
                sub._deliver(topic, payload)

    def _close_subs(self) -> None:
        for sub in list(self._subs):
            sub.close()

    async def __aenter__(self) -> "Transport":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


@dataclass(frozen=True)
class BusConfig:
    """Where the bus is and how to secure it (the [transport] table of a deployment file)."""

    kind: str = "zmq"                     # "zmq" | "mqtt"
    deployment: str = "default"
    host: str = "127.0.0.1"
    # ZeroMQ hub: publishers connect to pub_port (XSUB), subscribers to sub_port (XPUB).
    pub_port: int = 5601
    sub_port: int = 5602
    curve_server_public: str = ""         # file with the hub's public key (z85)
    curve_server_secret: str = ""         # hub only: its key-pair file (owner-only)
    curve_client_secret: str = ""         # clients: own key-pair file (owner-only)
    curve_allowed_dir: str = ""           # hub only: directory of accepted client *.key files
    # Same-host deployments: the hub also binds unix sockets in this directory and clients that
    # set it connect there instead of loopback TCP (less kernel work per message). Empty = TCP only.
    ipc_dir: str = ""
    # MQTT broker
    mqtt_port: int = 1883
    username: str = ""
    password_file: str = ""               # owner-only file holding the password
    tls_ca: str = ""                      # CA file; enables TLS when set
    insecure: bool = False                # allow a non-loopback address without auth (explicit opt-in)

    def __post_init__(self) -> None:
        if self.kind not in ("zmq", "mqtt"):
            from twin.errors import ConfigError

            raise ConfigError(f"transport.kind: {self.kind!r} is unknown; use 'zmq' or 'mqtt'")


def make_transport(cfg: BusConfig, client_id: str) -> Transport:
    """The transport a BusConfig names (not yet started)."""
    from controller.security import check_bus_security

    check_bus_security(cfg)
    if cfg.kind == "zmq":
        from controller.transports.zmq_bus import ZmqTransport

        return ZmqTransport(cfg, client_id)
    from controller.transports.mqtt_bus import MqttTransport

    return MqttTransport(cfg, client_id)


async def connect(cfg: BusConfig, client_id: str) -> Transport:
    transport = make_transport(cfg, client_id)
    try:
        await transport.start()
    except BaseException:
        await transport.close()
        raise
    return transport


__all__ = ["BusConfig", "BusUnreachable", "Subscription", "Transport", "TransportError", "TransportStats",
           "connect", "make_transport", "topic_matches", "validate_topic"]
