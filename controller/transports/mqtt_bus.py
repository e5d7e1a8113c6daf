"""MQTT transport through aiomqtt against a Mosquitto broker.

Topics live under ``ristwin/<deployment>/``. QoS by message family: per-slot traffic
(``obs``, ``act``, ``share``, ``hb``) is QoS 0, because a retransmitted observation after
its deadline is worth nothing and QoS 1 costs a round trip; ``hello``, ``welcome`` and
``ctl`` are QoS 1 (rare, must arrive). A retained last will on ``live/<client>`` reports
``offline`` when a daemon dies without saying goodbye.

The link reconnects by itself (broker restart): subscriptions are renewed before
``connected`` is set again, and a publish waits up to ``publish_wait_s`` for the link
before it is dropped and counted. TCP_NODELAY is set on the client socket; start the broker
with ``set_tcp_nodelay true`` too (Nagle adds ~40 ms per hop otherwise, see DESIGN.md).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import uuid

import aiomqtt

from twin.errors import TransportError

from controller.security import read_secret_file
from controller.transports import BusConfig, BusUnreachable, Transport, validate_topic

QOS_BY_FAMILY = {"obs": 0, "act": 0, "share": 0, "hb": 0, "hello": 1, "welcome": 1, "ctl": 1}


class MqttTransport(Transport):
    def __init__(self, cfg: BusConfig, client_id: str, publish_wait_s: float = 2.0) -> None:
        super().__init__()
        self.cfg = cfg
        # Unique per connection: two clients with one MQTT id would keep kicking each other off.
        self.client_id = f"{client_id}-{uuid.uuid4().hex[:8]}"
        self.root = f"ristwin/{cfg.deployment}/"
        validate_topic(self.root, prefix=True)
        self.publish_wait_s = publish_wait_s
        self.connect_timeout_s = 10.0          # start(): how long to retry an unreachable broker
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._filters: set[str] = set()
        self._runner: asyncio.Task | None = None
        self._closed = False
        self._first_error: BaseException | None = None
        self._password = None
        if cfg.password_file:
            self._password = read_secret_file(cfg.password_file, "transport.password_file").strip()

    def _make_client(self) -> aiomqtt.Client:
        cfg = self.cfg
        tls_context = None
        if cfg.tls_ca:
            tls_context = ssl.create_default_context(cafile=cfg.tls_ca)
        return aiomqtt.Client(
            cfg.host, cfg.mqtt_port, identifier=self.client_id,
            username=cfg.username or None, password=self._password,
            will=aiomqtt.Will(f"{self.root}live/{self.client_id}", b"offline", qos=1, retain=True),
            tls_context=tls_context, keepalive=5, timeout=1.5,  # bounds how long a dead link goes unnoticed
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            max_queued_incoming_messages=10_000,
        )

    async def start(self) -> None:
        self._runner = asyncio.ensure_future(self._run())
        waiter = asyncio.ensure_future(self._connected.wait())
        done, _ = await asyncio.wait({waiter, self._runner}, timeout=self.connect_timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            err = self._first_error
            text = str(err or "").lower()
            kind = TransportError if ("authori" in text or "password" in text or "bad user" in text) else BusUnreachable
            raise kind(
                f"transport: cannot reach the MQTT broker at {self.cfg.host}:{self.cfg.mqtt_port} "
                f"({err or 'timeout'}); is mosquitto running?"
            )

    async def _run(self) -> None:
        backoff = 0.05
        first = True
        while not self._closed:
            try:
                async with self._make_client() as client:
                    self._client = client
                    await client.publish(f"{self.root}live/{self.client_id}", b"online", qos=1, retain=True)
                    for flt in sorted(self._filters):
                        await client.subscribe(flt, qos=1)
                    if not first:
                        self.stats.reconnects += 1
                    first = False
                    backoff = 0.05
                    paho = getattr(client, "_client", None)
                    if paho is not None:
                        # Deliver straight from paho's read callback: aiomqtt's iterator costs a
                        # queue, a task and an asyncio.wait per message.
                        paho.on_message = self._on_paho_message
                        self._direct_writes(client, paho)
                    self._connected.set()
                    async for message in client.messages:   # idle with the direct path; ends on disconnect
                        self._deliver(str(message.topic), message.payload)
            except aiomqtt.MqttError as exc:
                self._first_error = self._first_error or exc
                text = str(exc).lower()
                if first and ("authori" in text or "bad user" in text or "password" in text):
                    break  # credentials will not get better by retrying; start() reports it
            except asyncio.CancelledError:
                break
            finally:
                self._connected.clear()
                self._client = None
            if self._closed:
                break
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 0.5)

    def _direct_writes(self, client: aiomqtt.Client, paho) -> None:
        """Register paho's socket for writing straight away when asked from this loop's thread.
        aiomqtt always goes through ``call_soon_threadsafe`` (paho may ask from its connect
        thread): a self-pipe write and one more loop wake-up per publish burst. Off the loop's
        thread, aiomqtt's own callback still does it."""
        loop = asyncio.get_running_loop()
        threadsafe = paho.on_socket_register_write

        def write_ready() -> None:
            try:
                paho.loop_write()
            except Exception as exc:   # a broken pipe: let aiomqtt see the disconnect, as it would
                fut = getattr(client, "_disconnected", None)
                if fut is not None and not fut.done():
                    fut.set_exception(exc)

        def register_write(paho_client, userdata, sock) -> None:
            if asyncio._get_running_loop() is loop:
                loop.add_writer(sock.fileno(), write_ready)
            elif threadsafe is not None:
                threadsafe(paho_client, userdata, sock)

        paho.on_socket_register_write = register_write

    def _on_paho_message(self, _client, _userdata, message) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            self.stats.dropped_malformed += 1
            return
        self._deliver(topic, message.payload)

    def _deliver(self, topic: str, payload) -> None:
        if not topic.startswith(self.root) or not isinstance(payload, (bytes, bytearray)):
            self.stats.dropped_malformed += 1
            return
        self._dispatch(topic[len(self.root):], bytes(payload))

    async def _wait_link(self) -> aiomqtt.Client | None:
        if not self._connected.is_set():
            try:
                await asyncio.wait_for(self._connected.wait(), self.publish_wait_s)
            except asyncio.TimeoutError:
                return None
        return self._client

    async def publish(self, topic: str, payload: bytes) -> None:
        validate_topic(topic)
        if self._closed:
            raise TransportError("transport: publish on a closed MQTT transport")
        client = await self._wait_link()
        qos = QOS_BY_FAMILY.get(topic.split("/", 1)[0], 0)
        try:
            if client is None:
                raise aiomqtt.MqttError("not connected")
            paho = getattr(client, "_client", None)
            if qos == 0 and paho is not None:
                # QoS 0 has nothing to confirm: queue the packet on paho directly (the loop's writer
                # callback sends it) instead of aiomqtt's publish, which parks a task on an Event
                # until paho's on_publish fires; that cost one extra wakeup per per-slot message.
                info = paho.publish(self.root + topic, payload, qos=0)
                if info.rc != 0:
                    raise aiomqtt.MqttError(f"publish failed (rc {info.rc})")
                # Write it now rather than on the loop's next turn (the registered writer takes
                # over if the socket is full). Not from inside a paho callback: paho holds a
                # non-reentrant lock there that loop_write takes too.
                lock = getattr(paho, "_in_callback_mutex", None)
                if lock is not None and lock.acquire(False):
                    lock.release()
                    try:
                        paho.loop_write()
                    except OSError:
                        pass   # the disconnect surfaces through aiomqtt's reader
            else:
                await client.publish(self.root + topic, payload, qos=qos)
            self.stats.published += 1
        except aiomqtt.MqttError:
            self.stats.dropped_disconnected += 1

    def _filter_for(self, prefix: str) -> str:
        if prefix == "":
            return self.root + "#"
        return self.root + prefix.rstrip("/") + "/#"   # "a/#" also matches "a" itself (MQTT 4.7.1.2)

    async def _subscribe_remote(self, prefix: str) -> None:
        flt = self._filter_for(prefix)
        covered = any(flt.startswith(f[:-1]) for f in self._filters)
        if covered:
            return
        # A broader filter replaces the narrower ones, so the broker never sends two copies.
        narrower = {f for f in self._filters if f.startswith(flt[:-1])}
        self._filters -= narrower
        self._filters.add(flt)
        client = await self._wait_link()
        if client is None:
            return  # renewed on reconnect
        try:
            await client.subscribe(flt, qos=1)   # returns after the SUBACK: the filter is live
            for f in narrower:
                await client.unsubscribe(f)
        except aiomqtt.MqttError:
            pass  # renewed on reconnect

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        client = self._client
        if client is not None:
            try:
                await client.publish(f"{self.root}live/{self.client_id}", b"offline", qos=1, retain=True)
            except aiomqtt.MqttError:
                pass
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except (asyncio.CancelledError, Exception):
                pass
        self._close_subs()
