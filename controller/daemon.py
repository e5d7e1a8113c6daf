"""The agent daemon: one process per base station or surface.

It loads its role's actor from a bundle, drives its surface through a driver URL, and per
slot: receives its local observation (``obs/<agent>``), decides, latches the configuration
on the board, and publishes the action with the configuration the board reports as applied
(``act/<agent>``) plus its own local observation for peers (``share/<agent>``).

What each agent may see of the others follows its paper (``PEER_VIEW``): in P1 the BS
collects the surfaces' reported states (it subscribes to ``act/``); a surface sees only its
own observation. An observation field the board itself reports (the energy buffer) is
taken from the board, not from the twin.

Robustness: undecodable or foreign messages are dropped and counted; an observation that
arrives after its deadline is skipped (the server already moved on), and when several are
queued only the newest is answered; heartbeats every ``heartbeat_s``; SIGTERM either holds
the board's configuration or latches the safe pattern (``on_sigterm``); the transport
reconnects by itself, and a restarted daemon says hello again and rejoins at the current slot.

Two drivers of the same daemon: ``run`` (asyncio; MQTT, and in-process tests) and, on a
ZeroMQ bus, ``run_sync`` (what ``ristwin agent`` runs): one thread blocking in ``poll`` on the
SUB socket, no event loop on the slot path.

Debugging and tuning switches (environment, off by default): ``RISTWIN_DAEMON_PROFILE=DIR``
profiles the steady-state slot loop (:class:`_SteadyProfile`); ``RISTWIN_DAEMON_PIN=auto``
pins each daemon to one CPU (:func:`pin_from_env`).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from twin.errors import ActionError, BundleError, ConfigError, DriverError, MessageError, TransportError
from twin.hil import CONFIG_FROM_ACTION
from twin.surface_config import SurfaceConfig

from controller import messages as m
from controller.transports import BusConfig, BusUnreachable, Transport, connect

# scenario -> agent id prefix -> bus prefixes that agent may read besides its own observation
PEER_VIEW: dict[str, dict[str, tuple[str, ...]]] = {
    "p1": {"bs": ("act/",), "irs": ()},   # P1: the BS collects the surfaces' states
    "p2": {"bs": ("act/",)},              # P2 (MDLBI): a BS overhears the other BSs' IRS claims
    "p3": {"bs": ("act/",), "star": ()},  # P3 (MAGAR): the global agent sees the STAR agents' moves
    "p4": {},                             # P4: each agent acts on its own statistics only
}


@dataclass
class DaemonConfig:
    bus: BusConfig
    agent: str
    bundle: str
    driver_url: str = ""                  # empty for an agent without a surface (the BS)
    on_sigterm: str = "hold"              # "hold" the board's configuration or latch "safe"
    heartbeat_s: float = 0.5
    watchdog_s: float = 0.0               # >0 arms the board's host-loss watchdog
    use_board_energy: bool = True         # observation's energy entry from the board's report
    delay_s: float = 0.0                  # fault injection: answer this much later (tests, benches)
    cpu_latency_us: int | None = None     # PM QoS bound the daemon's process holds (controller/cpu_latency.py)

    def __post_init__(self) -> None:
        if self.on_sigterm not in ("hold", "safe"):
            from twin.errors import ConfigError

            raise ConfigError(f"on_sigterm: {self.on_sigterm!r} must be 'hold' or 'safe'")


def load_agent_bundle(path: str) -> Any:
    """The bundle a daemon decides with: the torch-free numpy runtime (``agents.runtime``), which
    imports torch only for a role it cannot describe; the torch loader if the runtime is absent.
    Without torch a (re)started daemon is up in well under a second instead of seconds."""
    try:
        from agents.runtime import load_runtime
    except ImportError:
        from agents.bundle import load_bundle

        return load_bundle(path)
    return load_runtime(path)


def _limit_torch_threads() -> None:
    """A small actor gains nothing from threads, they only add jitter; only if torch is in use."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")    # for a torch imported later (a torch-backed role)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _peer_prefixes(scenario: str, agent: str) -> tuple[str, ...]:
    view = PEER_VIEW.get(scenario, {})
    for prefix, topics in view.items():
        if agent.startswith(prefix) and agent[len(prefix):].isdigit():
            return topics
    return ()


class AgentDaemon:
    def __init__(self, cfg: DaemonConfig, bundle: Any = None) -> None:
        self.cfg = cfg
        self.agent = cfg.agent
        self._use_bundle(bundle if bundle is not None else load_agent_bundle(cfg.bundle))
        self.incarnation = uuid.uuid4().hex[:12]
        self.counters: Counter[str] = Counter()
        self.status = "ok"
        self.last_slot = -1
        self.peers: dict[str, Any] = {}          # what this agent has seen of its allowed peers
        self._peer_raw: list[tuple[str, bytes]] = []
        self._own_act = self._act_topic = f"act/{cfg.agent}"
        self._share_topic = f"share/{cfg.agent}"
        self.driver = None
        self.board_resolutions: tuple[int, ...] = ()
        self.safe_config: SurfaceConfig | None = None
        self.energy_unit_j = float(self.bundle.scenario_config.get("energy_unit_j", 0.0) or 0.0)
        self._board_energy = False
        self.transport: Transport | None = None
        self._stop = asyncio.Event()
        self._welcomed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self._signal: str | None = None
        self._sync: _SyncState | None = None     # set while run_sync runs
        self._profile: _SteadyProfile | None = None
        if cfg.driver_url:
            self._open_driver()

    def _use_bundle(self, bundle: Any) -> None:
        bundle.role_of(self.agent)              # BundleError unless the bundle serves this agent
        self.bundle = bundle
        # looked up once per bundle, not per slot: the scenario's action -> SurfaceConfig mapping
        self._to_config = CONFIG_FROM_ACTION.get(bundle.scenario_name)
        self._scenario_config = bundle.scenario_config

    # ---- the board ------------------------------------------------------------------------

    def _open_driver(self) -> None:
        import drivers

        self.driver = drivers.open(self.cfg.driver_url)
        info = self.driver.info()
        self.board_resolutions = tuple(info.resolutions)
        self.safe_config = SurfaceConfig.safe(info.n_elements, bits=min(info.resolutions))
        if self.cfg.watchdog_s > 0:
            self.driver.watchdog(self.cfg.watchdog_s, self.safe_config)
        if self.cfg.use_board_energy and self.energy_unit_j > 0:
            try:
                self._board_energy = self.driver.status().energy_j is not None
            except DriverError:
                self._board_energy = False

    def _apply(self, action: dict[str, np.ndarray], obs: np.ndarray | None = None) -> SurfaceConfig | None:
        """Latch the action's configuration (``twin.hil`` maps it per scenario; a scenario without
        surface agents, P2, has no mapping) and return what the board reports as applied."""
        to_config = self._to_config
        if self.driver is None or to_config is None:
            return None
        try:
            requested = to_config(action, obs, self._scenario_config, self.board_resolutions)
        except (ActionError, ConfigError):
            self.counters["unmappable_action"] += 1
            return None
        if requested is None:
            return None
        try:
            return self.driver.apply(requested, on_mismatch="return")
        except DriverError as exc:
            self.counters["apply_failed"] += 1
            latched = getattr(exc, "latched", None)
            return latched  # None: the board's state is unknown, the server holds the last report

    def _safe(self) -> None:
        if self.driver is not None and self.safe_config is not None:
            try:
                self.driver.apply(self.safe_config, on_mismatch="return")
            except DriverError:
                self.counters["apply_failed"] += 1
        self.status = "safe"

    # ---- bus ------------------------------------------------------------------------------

    async def _publish(self, topic: str, msg: m.Message) -> None:
        await self._send(topic, self._encode(msg))

    def _encode(self, msg: m.Message) -> bytes | None:
        try:
            return m.encode(msg)
        except MessageError:
            return None

    async def _send(self, topic: str, body: bytes | None) -> None:
        assert self.transport is not None
        if body is None:
            self.counters["publish_failed"] += 1
            return
        try:
            await self.transport.publish(topic, body)
        except (TransportError, MessageError):
            self.counters["publish_failed"] += 1

    def _on_welcome(self, topic: str, payload: bytes) -> None:
        msg = m.decode_or_count(payload, self.counters)
        if isinstance(msg, m.Welcome) and msg.agent == self.agent and msg.incarnation == self.incarnation:
            self._welcomed.set()

    def _on_control(self, topic: str, payload: bytes) -> None:
        msg = m.decode_or_count(payload, self.counters)
        if not isinstance(msg, m.Control) or msg.target not in ("all", self.agent):
            self.counters["unexpected"] += msg is not None
            return
        self.counters[f"ctl_{msg.command}"] += 1
        if msg.command == "stop":
            self._stop.set()
        elif msg.command == "safe":
            self._safe()
        elif msg.command == "start":
            # A (re)started twin server asks everyone to say hello again.
            self.status = "ok"
            if self._welcomed.is_set():
                self._welcomed.clear()
                if self._sync is not None:
                    self._sync.hello_due = 0.0     # run_sync's loop says hello again now
                else:
                    task = asyncio.ensure_future(self._hello())
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        elif msg.command == "reload":
            try:
                self._use_bundle(load_agent_bundle(msg.arg or self.cfg.bundle))   # role_of checks it
            except BundleError:
                self.counters["reload_failed"] += 1

    def _on_peer(self, topic: str, payload: bytes) -> None:
        # Peers' reports arrive while every daemon is answering the same slot: park them and
        # decode after this daemon's own answer is out (_absorb_peers), not on the critical path.
        if topic != self._own_act:
            self._peer_raw.append((topic, payload))

    def _absorb_peers(self) -> None:
        if not self._peer_raw:
            return
        raw, self._peer_raw = self._peer_raw, []
        for topic, payload in raw:
            msg = m.decode_or_count(payload, self.counters)
            if isinstance(msg, m.Action) and msg.agent != self.agent and topic == f"act/{msg.agent}":
                self.peers[msg.agent] = msg.applied
                self.counters["peer_msgs"] += 1
            elif msg is not None:
                self.counters["unexpected"] += 1

    async def _hello(self) -> None:
        role = self.bundle.role_of(self.agent)
        hello = m.Hello(self.agent, role, os.getpid(), self.bundle.content_hash, self.incarnation)
        while not self._welcomed.is_set() and not self._stop.is_set():
            await self._publish(f"hello/{self.agent}", hello)
            try:
                await asyncio.wait_for(self._welcomed.wait(), 0.25)
            except asyncio.TimeoutError:
                pass

    async def _heartbeats(self) -> None:
        seq = 0
        while not self._stop.is_set():
            self._absorb_peers()   # also between runs, so parked reports never pile up
            await self._publish(f"hb/{self.agent}", m.Heartbeat(self.agent, seq, time.time(), self.status, self.last_slot))
            seq += 1
            try:
                await asyncio.wait_for(self._stop.wait(), self.cfg.heartbeat_s)
            except asyncio.TimeoutError:
                pass

    # ---- the slot -------------------------------------------------------------------------

    def _local_obs(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32)   # a decoded float32 array comes back as is
        if self._board_energy:
            try:
                energy_j = self.driver.status().energy_j
                if energy_j is not None:
                    obs = obs.copy()
                    obs[-1] = np.float32(energy_j / self.energy_unit_j)  # P1 eq. 11: last entry is E_l
            except DriverError:
                self.counters["status_failed"] += 1
        return obs

    def _decide(self, msg: m.Observation) -> tuple | None:
        """The slot's first half: local observation (the board's energy report) and decision."""
        recv_lag = max(0.0, time.time() - msg.sent_at)   # bus delay (same-host clocks; NTP across hosts)
        t0 = time.perf_counter()
        obs = self._local_obs(msg.obs)
        try:
            action = self.bundle.decide(self.agent, obs)
        except BundleError:
            self.counters["bad_observation"] += 1
            return None
        return obs, action, recv_lag, t0, time.perf_counter()

    def _apply_and_report(self, msg: m.Observation, decided: tuple, cpu0: float) -> bytes | None:
        """The slot's second half: latch on the board, then the answer carrying what it applied."""
        obs, action, recv_lag, t0, t1 = decided
        t_apply = time.perf_counter()
        applied = self._apply(action, obs) if self.status != "safe" else self.safe_config
        t2 = time.perf_counter()
        timing = {"decide_s": t1 - t0, "apply_s": t2 - t_apply, "recv_lag_s": recv_lag,
                  "cpu_s": time.thread_time() - cpu0,   # decode + decide + share + apply, this thread's CPU
                  "wall_s": time.perf_counter() - t0}   # local observation to answer: on-CPU and not
        return self._encode(m.Action(msg.slot, self.agent, action, applied, timing))

    def _share_body(self, msg: m.Observation, obs: np.ndarray, received: bytes | None = None) -> bytes | None:
        """This agent's local observation for its peers. When it is the observation as received
        (no board report replaced an entry), the received bytes are that message already: they
        decoded, validated, to exactly these fields, so they go out again without a re-encode."""
        if received is not None and obs is msg.obs:
            return received
        return self._encode(m.Observation(msg.slot, self.agent, obs, msg.deadline, msg.sent_at))

    def _answered(self, msg: m.Observation, absorb: bool = True) -> None:
        self.last_slot = msg.slot
        self.counters["answered"] += 1
        if absorb:
            self._absorb_peers()

    async def _answer(self, msg: m.Observation, cpu0: float, received: bytes | None = None) -> None:
        decided = self._decide(msg)
        if decided is None:
            return
        if self.cfg.delay_s > 0:
            await asyncio.sleep(self.cfg.delay_s)
        act_body = self._apply_and_report(msg, decided, cpu0)
        # The share is encoded before the answer goes out (a few us) so that the two sends follow
        # each other directly: the bus's I/O thread then usually carries both in one wake-up. It
        # goes after the answer even with a serial board: sent before the exchange, the bus work
        # it causes (hub, broker, I/O threads) competed with the emulated boards for the cores and
        # made slots slower (docs/BENCHMARKS.md, control loop).
        share_body = self._share_body(msg, decided[0], received)
        await self._send(self._act_topic, act_body)
        await self._send(self._share_topic, share_body)   # after the answer: not on its path
        self._answered(msg)

    def _observation_for_me(self, payload: bytes) -> m.Observation | None:
        """The decoded observation if it is this agent's and still answerable; otherwise count
        why not (malformed, unexpected, late) and return None."""
        msg = m.decode_or_count(payload, self.counters)
        if not isinstance(msg, m.Observation) or msg.agent != self.agent:
            self.counters["unexpected"] += msg is not None
            return None
        if time.time() > msg.deadline:
            self.counters["late_observation"] += 1
            return None
        return msg

    async def _serve(self, sub) -> None:
        while not self._stop.is_set():
            queue = sub.queue
            item = queue.get_nowait() if not queue.empty() else await queue.get()
            if item is None:
                return
            topic, payload = item
            # Several queued observations (we were slow): only the newest still matters.
            while not queue.empty():
                item = queue.get_nowait()
                if item is None:
                    return
                self.counters["skipped_stale"] += 1
                topic, payload = item
            cpu0 = time.thread_time()
            msg = self._observation_for_me(payload)
            if msg is not None:
                await self._answer(msg, cpu0, payload)

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
            try:
                loop.add_signal_handler(sig, self._on_signal, name)
            except (NotImplementedError, RuntimeError):
                pass  # not the main thread (in-process tests)
        self.transport = await self._connect()
        if self.transport is None:
            return {"agent": self.agent, **self.counters}
        tasks: list[asyncio.Task] = []
        try:
            obs_sub = await self.transport.subscribe(f"obs/{self.agent}")
            await self.transport.subscribe(f"welcome/{self.agent}", callback=self._on_welcome)
            await self.transport.subscribe("ctl/", callback=self._on_control)
            for prefix in _peer_prefixes(self.bundle.scenario_name, self.agent):
                # One subscription per peer rather than the whole family: the bus never echoes
                # this daemon's own messages back to it (one delivery less per slot).
                peers = [a for a in getattr(self.bundle, "agent_ids", ()) if a != self.agent]
                for topic in [prefix + a for a in peers] if prefix.endswith("/") and peers else [prefix]:
                    await self.transport.subscribe(topic, callback=self._on_peer)
            await self._hello()
            tasks = [asyncio.ensure_future(self._serve(obs_sub)), asyncio.ensure_future(self._heartbeats())]
            stop = asyncio.ensure_future(self._stop.wait())
            done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and t.exception() is not None:
                    raise t.exception()
        finally:
            for t in tasks:
                t.cancel()
            self._absorb_peers()
            if self._signal is not None and self.cfg.on_sigterm == "safe":
                self._safe()
            await self.transport.close()
            if self.driver is not None:
                self.driver.close()
        return {"agent": self.agent, **self.counters, "transport": self.transport.stats.as_dict()}

    async def _connect(self) -> Transport | None:
        """Connect, waiting for a hub / broker that is not up yet (a daemon may start first)."""
        while not self._stop.is_set():
            try:
                return await connect(self.cfg.bus, self.agent)
            except BusUnreachable:
                self.counters["connect_retries"] += 1
                try:
                    await asyncio.wait_for(self._stop.wait(), 1.0)
                except asyncio.TimeoutError:
                    pass
        return None

    def _on_signal(self, name: str) -> None:
        self._signal = name
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._sync is not None:
            self._sync.wake()

    # ---- the synchronous fast path (ZeroMQ) -----------------------------------------------

    def run_sync(self) -> dict[str, Any]:
        """The daemon without an event loop, for ZeroMQ: one thread blocks in ``poll`` on the SUB
        socket (and a wake-up pipe for signals and :meth:`stop`), then per observation decodes,
        decides, latches and sends straight away. Heartbeats, hello / welcome, control, peers,
        reconnects (libzmq's), SIGTERM hold / safe and the counters are those of :meth:`run`;
        what goes is the event loop's per-slot cost (selector, handles, futures, the running-loop
        checks) and its extra system calls. The MQTT transport is asyncio only (aiomqtt)."""
        from controller.transports.zmq_sync import ZmqSyncClient

        if self.cfg.bus.kind != "zmq":
            raise ConfigError(f"transport.kind: run_sync needs 'zmq', not {self.cfg.bus.kind!r}; use run()")
        state = self._sync = _SyncState()
        restore = state.install_signals(self._on_signal)
        client: ZmqSyncClient | None = None
        self._profile = _SteadyProfile.from_env(self.agent)
        try:
            client = self._connect_sync(state)
            if client is None:
                return {"agent": self.agent, **self.counters}
            self._sync_loop(client, state)
        finally:
            if self._profile is not None:
                self._profile.finish(self.counters["answered"])
            if client is not None:
                self._peer_raw.extend(client.drain_quiet())
            self._absorb_peers()
            if self._signal is not None and self.cfg.on_sigterm == "safe":
                self._safe()
            if client is not None:
                client.close()
            if self.driver is not None:
                self.driver.close()
            restore()
            state.close()
            self._sync = None
        return {"agent": self.agent, **self.counters, "transport": client.stats.as_dict()}

    def _connect_sync(self, state: "_SyncState"):
        from controller.transports.zmq_sync import ZmqSyncClient

        while not self._stop.is_set():
            client = ZmqSyncClient(self.cfg.bus, self.agent)
            try:
                client.watch_fd(state.read_fd)
                client.start()
                client.subscribe(f"obs/{self.agent}", f"welcome/{self.agent}", "ctl/")
                peers = [a for a in getattr(self.bundle, "agent_ids", ()) if a != self.agent]
                topics = []
                for prefix in _peer_prefixes(self.bundle.scenario_name, self.agent):
                    # one subscription per peer (no echo of this daemon's own answers), as run() does
                    topics += [prefix + a for a in peers] if prefix.endswith("/") and peers else [prefix]
                if topics:
                    # Peers' reports go to their own socket: they never wake this thread mid-slot,
                    # only once its answer is out and the socket armed (_answer_now).
                    client.subscribe_quiet(*topics)
                return client
            except BusUnreachable:
                client.close()
                self.counters["connect_retries"] += 1
                state.sleep(1.0)
            except BaseException:
                client.close()
                raise
        return None

    def _sync_loop(self, client, state: "_SyncState") -> None:
        obs_topic = f"obs/{self.agent}"
        role = self.bundle.role_of(self.agent)
        hello = self._encode(m.Hello(self.agent, role, os.getpid(), self.bundle.content_hash, self.incarnation))
        serving = False                      # observations count only after the first welcome
        hb_seq = 0
        next_hb = time.monotonic()
        state.hello_due = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if not self._welcomed.is_set() and now >= state.hello_due:
                self._send_now(client, f"hello/{self.agent}", hello)
                state.hello_due = now + 0.25
            if now >= next_hb:
                self._peer_raw.extend(client.drain_quiet())
                self._absorb_peers()   # also between runs, so parked reports never pile up
                self._send_now(client, f"hb/{self.agent}", self._encode(
                    m.Heartbeat(self.agent, hb_seq, time.time(), self.status, self.last_slot)))
                hb_seq += 1
                next_hb = now + self.cfg.heartbeat_s
            wake_at = next_hb if self._welcomed.is_set() else min(next_hb, state.hello_due)
            if not client.wait(wake_at - time.monotonic()):
                state.drain()
                if client.quiet_pending():   # the peers' reports of the slot just closed
                    # The socket stays armed: the hub may hand a slot's reports over in more than
                    # one batch, and a socket disarmed after the first would leave the rest for the
                    # next slot's answer to find pending, i.e. inside that slot's window, and the
                    # slot after that too (seen in a sched trace: the BS spent ~0.4 ms per slot
                    # there). Its reports come at slot close, so being armed never wakes it mid-slot.
                    self._peer_raw.extend(client.drain_quiet())
                    self._absorb_peers()
                continue
            newest: bytes | None = None
            for topic, payload in client.drain():
                if topic == obs_topic:
                    if newest is not None:   # several queued (we were slow): only the newest matters
                        self.counters["skipped_stale"] += 1
                    newest = payload
                elif topic.startswith("welcome/"):
                    self._on_welcome(topic, payload)
                elif topic.startswith("ctl/"):
                    self._on_control(topic, payload)
                else:
                    self._on_peer(topic, payload)
            serving = serving or self._welcomed.is_set()
            if newest is None or not serving or self._stop.is_set():
                continue
            if self._profile is not None:
                self._profile.tick(self.counters["answered"])
            cpu0 = time.thread_time()
            msg = self._observation_for_me(newest)
            if msg is not None:
                self._answer_now(client, msg, cpu0, newest)

    def _answer_now(self, client, msg: m.Observation, cpu0: float, received: bytes | None = None) -> None:
        """:meth:`_answer` without the event loop: the same order of sends."""
        decided = self._decide(msg)
        if decided is None:
            return
        if self.cfg.delay_s > 0:
            time.sleep(self.cfg.delay_s)
        act_body = self._apply_and_report(msg, decided, cpu0)
        share_body = self._share_body(msg, decided[0], received)
        self._send_now(client, self._act_topic, act_body)
        self._send_now(client, self._share_topic, share_body)
        # The peers' reports of this slot come when it closes (the server's hub holds them till
        # then): they wake this thread between slots (_sync_loop), so decoding them stays out of
        # every latency window; the other daemons may still be answering now.
        client.arm_quiet()
        self._answered(msg, absorb=False)

    def _send_now(self, client, topic: str, body: bytes | None) -> None:
        if body is None:
            self.counters["publish_failed"] += 1
            return
        try:
            client.publish(topic, body)
        except (TransportError, MessageError):
            self.counters["publish_failed"] += 1


class _SteadyProfile:
    """``RISTWIN_DAEMON_PROFILE=DIR``: cProfile and this thread's user / system CPU of the slot loop
    from the ``RISTWIN_DAEMON_PROFILE_AFTER``-th answered slot (default 20) on, i.e. without the
    start-up imports, the bundle load and the warm-up; written at exit to ``DIR/<agent>.prof``
    and ``DIR/<agent>.json`` (slots, utime_s, stime_s). A debugging aid, off by default."""

    def __init__(self, out_dir: str, agent: str) -> None:
        self.out = out_dir
        self.agent = agent
        self.after = int(os.environ.get("RISTWIN_DAEMON_PROFILE_AFTER", "20"))
        self.profiler = None
        self.start: tuple[int, float, float] | None = None

    @classmethod
    def from_env(cls, agent: str) -> "_SteadyProfile | None":
        out = os.environ.get("RISTWIN_DAEMON_PROFILE", "")
        return cls(out, agent) if out else None

    def tick(self, answered: int) -> None:
        if self.start is None and answered >= self.after:
            import cProfile
            import resource

            ru = resource.getrusage(resource.RUSAGE_THREAD)
            self.start = (answered, ru.ru_utime, ru.ru_stime)
            # this thread's CPU time, not the wall clock: a wall-clock profile of a process sharing
            # 2 cores with five others charges its preemptions to whatever it was running
            self.profiler = cProfile.Profile(time.thread_time_ns, 1e-9)
            self.profiler.enable()

    def finish(self, answered: int) -> None:
        if self.start is None or self.profiler is None:
            return
        import json
        import resource

        self.profiler.disable()
        ru = resource.getrusage(resource.RUSAGE_THREAD)
        os.makedirs(self.out, exist_ok=True)
        self.profiler.dump_stats(os.path.join(self.out, f"{self.agent}.prof"))
        slots = answered - self.start[0]
        with open(os.path.join(self.out, f"{self.agent}.json"), "w") as f:
            json.dump({"slots": slots, "utime_s": ru.ru_utime - self.start[1],
                       "stime_s": ru.ru_stime - self.start[2]}, f)


class _SyncState:
    """run_sync's wake-up pipe (written by signals through ``signal.set_wakeup_fd`` and by
    ``stop()`` from any thread) and the time the next hello is due."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self.hello_due = 0.0

    def install_signals(self, on_signal) -> Any:
        """SIGTERM / SIGINT set the stop flag and wake the poll (main thread only; elsewhere,
        e.g. in-process tests, the caller stops the daemon with ``stop()``)."""
        import threading

        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        old = {sig: signal.signal(sig, lambda _n, _f, name=name: on_signal(name))
               for sig, name in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT"))}
        old_fd = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)

        def restore() -> None:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in old.items():
                signal.signal(sig, handler)
        return restore

    def wake(self) -> None:
        try:
            os.write(self.write_fd, b"\0")
        except (BlockingIOError, OSError):
            pass   # the pipe is full or closed: the loop is awake or gone anyway

    def drain(self) -> None:
        try:
            while os.read(self.read_fd, 512):
                pass
        except (BlockingIOError, OSError):
            pass

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` unless woken (stop / signal)."""
        import select

        select.select([self.read_fd], [], [], seconds)
        self.drain()

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


PIN_ENV = "RISTWIN_DAEMON_PIN"


def pinned_cpu(agent: str, agent_ids: Sequence[str], cpus: Sequence[int]) -> int | None:
    """The CPU for ``agent`` under ``RISTWIN_DAEMON_PIN=auto``: the bundle's agents round robin
    over the CPUs the process may use (bs0 -> the first, irs0 -> the second, ...); None for an
    agent the bundle does not list or a single CPU (nothing to choose)."""
    ids = list(agent_ids)
    if agent not in ids or len(cpus) < 2:
        return None
    return sorted(cpus)[ids.index(agent) % len(cpus)]


def pin_from_env(agent: str, agent_ids: Sequence[str]) -> int | None:
    """``RISTWIN_DAEMON_PIN=auto`` pins the calling thread, and so the threads it starts later
    (ZeroMQ's I/O thread), to :func:`pinned_cpu`; returns the CPU, None when not pinned.

    Off by default. Pinned, a daemon's thread and its I/O thread hand each message over on one
    CPU, and the five daemons stay spread over the cores: on the 2-core machine the contended
    p50 dropped by ~0.3 ms (docs/BENCHMARKS.md, control loop, fourth session). The cost: a
    pinned daemon cannot move away from a CPU that a real-time or busy process holds."""
    mode = os.environ.get(PIN_ENV, "").strip().lower()
    if mode in ("", "0", "off"):
        return None
    if mode != "auto":
        raise ConfigError(f"{PIN_ENV}: {mode!r} is not 'auto' or 'off'")
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = pinned_cpu(agent, agent_ids, sorted(os.sched_getaffinity(0)))
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    return cpu


def run_daemon(cfg: DaemonConfig, bundle: Any = None) -> dict[str, Any]:
    from controller.cpu_latency import CpuLatencyHold

    with CpuLatencyHold(cfg.cpu_latency_us) as latency:
        return {**_run_daemon(cfg, bundle), "cpu_latency": latency.status}


def _run_daemon(cfg: DaemonConfig, bundle: Any = None) -> dict[str, Any]:
    _limit_torch_threads()
    daemon = AgentDaemon(cfg, bundle)
    pin_from_env(cfg.agent, getattr(daemon.bundle, "agent_ids", ()))   # before the bus starts its threads
    _limit_torch_threads()
    freeze_startup_objects()
    if cfg.bus.kind == "zmq":
        return daemon.run_sync()       # the slot path without an event loop
    return asyncio.run(daemon.run())


def freeze_startup_objects() -> None:
    """Move everything loaded so far (torch, the bundle, the env) out of the collector's view:
    a full collection would otherwise walk it mid-run, a pause of milliseconds. Only for a
    process entry point (a frozen object is never collected)."""
    gc.collect()
    gc.freeze()


def standby(configs: dict[str, DaemonConfig], bundle_path: str, stdin=None) -> dict[str, Any]:
    """A warm spare: import everything and load the bundle now, then become the agent whose id
    arrives on stdin. A supervisor keeps one spare per host, so a crashed daemon is replaced
    by a process that skips the seconds of torch import and bundle loading."""
    import sys

    import drivers.serial_driver  # noqa: F401 - the point is to pay for the imports before they are needed
    import drivers.sim_driver  # noqa: F401

    bundle = load_agent_bundle(bundle_path)   # imports torch too if a role needs it
    line = (stdin or sys.stdin).readline().strip()
    if not line:
        return {"agent": None, "standby": "released"}
    if line not in configs:
        from twin.errors import ConfigError

        raise ConfigError(f"standby: asked to become {line!r}, which this deployment does not list")
    return run_daemon(configs[line], bundle)
