"""The twin server: the environment process and the slot clock (hardware in the loop).

Per slot t:
1. publish each agent's local observation on ``obs/<agent>`` with a wall-clock deadline;
2. collect ``act/<agent>`` answers for slot t until every agent answered or the deadline
   passed; answers for older slots are late and only counted;
3. step the twin with what the boards *report as applied* (a surface agent's ``applied``
   configuration, not its request). A missing / late / invalid agent never stalls the slot:
   its surface holds the last applied configuration (or the safe pattern if it announced
   safe mode or never applied anything), the BS holds its last beamformers, and the miss is
   counted;
4. append the slot (actions, applied configurations, misses, metrics) to the run log.

Before slot 0 every expected agent must have said hello (and got a welcome): a hello is sent
only after the daemon's subscriptions are live, so no agent can miss the first observation.
A daemon that restarts mid-run says hello again and is welcomed back at the current slot.

Hosting the ZeroMQ hub, the server's own loop forwards the hub's traffic (``HubTransport``:
no proxy thread, answers arrive in the wake-up that forwards them), and run as a process of
its own (``serve``) it collects a slot by blocking on the hub's sockets. Observations go out
longest job first (by each agent's last decide + apply time).

Inside the latency window (observations out -> last answer in) the server does as little as
it can, since it shares two cores with the agents still deciding: each observation was
encoded, but for its two times, when the slot before ended; an arriving answer is only peeked
at (slot and agent) and parked, and every parked answer is decoded and validated once all are
in (an invalid one is counted and its agent awaited again); with ``blocking_collect`` the hub
holds the agents' reports to their peers until the slot closes (``park_peer_reports``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from twin.errors import ActionError, ConfigError, TransportError
from twin.surface_config import SurfaceConfig

from controller import messages as m
from controller.latency_stats import LogHistogram
from controller.runlog import RunLog
from controller.transports import BusConfig, Transport, connect


@dataclass
class ServerConfig:
    bus: BusConfig
    agents: tuple[str, ...]               # agent ids expected on the bus
    runlog: str
    bundle: str = ""                      # the scenario (and its config) come from the bundle
    scenario: str = "p1"
    scenario_overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    slots: int = 100                      # 0 = run until stopped
    deadline_s: float = 0.05              # answer window after the observations go out
    period_s: float = 0.0                 # slot period; 0 = next slot as soon as this one closes
    host_hub: bool = True                 # ZeroMQ: this process hosts the hub
    join_timeout_s: float = 60.0
    stop_agents: bool = False             # send ctl stop to every agent at the end
    agent_keys: dict[str, str] = field(default_factory=dict)   # ZeroMQ hub: agent id -> its CURVE public key file
    # Hosting the ZeroMQ hub, collect a slot's answers by blocking on the hub's sockets instead
    # of an event-loop turn per arrival. Only for a process whose loop runs nothing else during
    # a slot (``serve``, the bench); in-process tests run daemons in the same loop and keep False.
    blocking_collect: bool = False
    # With blocking_collect: while a slot's answers come in, the hub parks the agents' reports to
    # each other (act/, share/) and forwards them when the slot closes (HubTransport.hold). Every
    # daemon reads its peers' reports only after its own answer, so none is read later than
    # before; forwarding them mid-slot woke the peers' ZeroMQ I/O threads (4 per slot for a P1
    # BS) while the two cores were busiest.
    park_peer_reports: bool = True
    # An agent with far less to do per slot than the slowest one gets its observation later, by
    # half its slack (TwinServer._later): a BS no longer decides while the surfaces start their
    # serial board exchanges on the same cores. False: every observation goes out at once.
    release_by_slack: bool = True
    # Hold this CPU wake-up latency bound (Linux PM QoS, controller/cpu_latency.py) while running;
    # None: no bound. Its status goes into the run log's start record.
    cpu_latency_us: int | None = None


def build_env(cfg: ServerConfig) -> tuple[Any, dict[str, torch.Tensor], str]:
    """(environment with B = 1, its first observations after reset(seed), bundle hash or '')."""
    from agents import registry
    from twin.envs import ENVS

    scenario, scenario_cfg, bundle_hash = cfg.scenario, None, ""
    if cfg.bundle:
        from agents.bundle import load_bundle

        bundle = load_bundle(cfg.bundle)
        scenario, bundle_hash = bundle.scenario_name, bundle.content_hash
        saved = dict(bundle.scenario_config)
        saved.update(cfg.scenario_overrides)
        scenario_cfg = registry.rebuild_scenario(scenario, saved)
    elif cfg.scenario_overrides:
        from twin.scenarios import get_scenario

        scenario_cfg = get_scenario(scenario, **cfg.scenario_overrides)
    if scenario not in ENVS:
        raise ConfigError(f"twin.scenario: no runtime environment for {scenario!r}; choose one of {list(ENVS)}")
    env = ENVS[scenario](num_envs=1, cfg=scenario_cfg, seed=cfg.seed)
    missing = sorted(set(env.agent_ids) - set(cfg.agents))
    extra = sorted(set(cfg.agents) - set(env.agent_ids))
    if missing or extra:
        raise ConfigError(
            f"agent: the deployment must list exactly the scenario's agents {list(env.agent_ids)}"
            + (f"; missing {missing}" if missing else "") + (f"; unknown {extra}" if extra else "")
        )
    obs = env.reset(seed=cfg.seed)
    return env, obs, bundle_hash


def _batched_action(agent: str, action: dict[str, np.ndarray], space: Any) -> Any:
    """A daemon's action (numpy, B = 1 squeezed) as the env's batched action for B = 1.

    ``Bundle.decide`` wraps a plain-tensor action as {"action": array}; dict actions keep
    their keys, which must be the action space's."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        if set(action) != set(space.spaces):
            raise ActionError(f"{agent}: action keys {sorted(action)} != {sorted(space.spaces)}")
        return {k: torch.from_numpy(np.array(v, order="C")).unsqueeze(0) for k, v in action.items()}
    if set(action) != {"action"}:
        raise ActionError(f"{agent}: expected one 'action' array, got keys {sorted(action)}")
    return torch.from_numpy(np.array(action["action"], order="C")).unsqueeze(0)


def _neutral_action(space: Any) -> Any:
    """The action of an agent that never answered: zeros inside the box, the first discrete choice."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        return {k: _neutral_action(s) for k, s in space.spaces.items()}
    if isinstance(space, gym.spaces.Discrete):
        return torch.tensor([int(space.start)], dtype=torch.long)
    if isinstance(space, gym.spaces.Box):
        zero = np.clip(np.zeros(space.shape, dtype=space.dtype), space.low, space.high)
        return torch.from_numpy(zero).unsqueeze(0)
    raise ConfigError(f"action space {space}: no neutral action for a silent agent")


MAX_PENDING_PER_AGENT = 4   # parked answers per agent and slot; more is a flood (counted as duplicates)


LATER_MIN_SLACK_S = 0.002   # below this, publishing an observation later gains less than a wake-up costs


class TwinServer:
    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.env, self.first_obs, self.bundle_hash = build_env(cfg)
        # Surfaces whose boards report what they latched (hardware in the loop): an env with
        # ``surface_action_from_configs`` (P3, P4) or P1's ``irs_action_from_configs``. A scenario
        # without surface agents (P2: the BSs choose the phases) runs its actions through unchanged.
        self._generic_hil = hasattr(self.env, "surface_action_from_configs")
        if self._generic_hil:
            self.surface_ids = tuple(self.env.surface_ids)
        elif hasattr(self.env, "irs_action_from_configs"):
            self.surface_ids = tuple(getattr(self.env, "irs_ids", ()))
        else:
            self.surface_ids = ()
        self.slot = 0
        self.joined: dict[str, str] = {}          # agent -> incarnation
        self.rejoins = Counter()
        self.missed = Counter()
        self.late = Counter()
        self.invalid = Counter()
        self.counters = Counter()                 # malformed, unexpected, spoofed
        self.status: dict[str, str] = {}
        self.last_seen: dict[str, float] = {}
        self.latencies = LogHistogram()            # constant memory however long the run
        self.slot_wall_s = 0.0                     # sum of the slots' walls ...
        self.slot_count = 0                        # ... and their number (slots per second)
        self.last_action: dict[str, Any] = {}
        self.last_applied: dict[str, SurfaceConfig] = {}
        self.transport: Transport | None = None
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.hub = None
        self._agent_set = frozenset(cfg.agents)
        self._open_slot = -1                       # the slot whose answers are being collected
        self._got: dict[str, m.Action] = {}      # validated answers of the open slot
        self._pending: dict[str, list[bytes | m.Action]] = {}   # parked answers, validated by _settle
        self._answered: set[str] = set()           # agents with a parked or validated answer
        self._arrived: dict[str, float] = {}       # agent -> when its first answer to the open slot came
        self._act_topic = {a: f"act/{a}" for a in cfg.agents}
        self._obs_topic = {a: f"obs/{a}" for a in cfg.agents}
        self._all_in_at: float | None = None
        self._all_in_cpu: float | None = None
        self._all_in: asyncio.Future | None = None
        self._blocking_wait = None                 # HubTransport.wait when cfg.blocking_collect applies
        self._hold = None                          # HubTransport that parks peers' reports during a slot
        self._heads: tuple[int, Any, dict[str, bytes]] | None = None   # next slot's encoded observations
        self._fanout = tuple(cfg.agents)           # order the observations go out in (see _run_slot)
        self._work_s: dict[str, float] = {}        # each agent's last decide + apply time

    # ---- bus callbacks --------------------------------------------------------------------

    def _on_hello(self, topic: str, payload: bytes) -> None:
        msg = m.decode_or_count(payload, self.counters)
        if not isinstance(msg, m.Hello) or topic != f"hello/{msg.agent}" or msg.agent not in self.cfg.agents:
            self.counters["unexpected"] += msg is not None
            return
        previous = self.joined.get(msg.agent)
        if previous is not None and previous != msg.incarnation:
            self.rejoins[msg.agent] += 1
        self.joined[msg.agent] = msg.incarnation
        self.last_seen[msg.agent] = time.time()
        self.status[msg.agent] = "ok"
        welcome = m.encode(m.Welcome(msg.agent, msg.incarnation, self.slot))
        task = asyncio.ensure_future(self._publish(f"welcome/{msg.agent}", welcome))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_heartbeat(self, topic: str, payload: bytes) -> None:
        msg = m.decode_or_count(payload, self.counters)
        if not isinstance(msg, m.Heartbeat) or topic != f"hb/{msg.agent}" or msg.agent not in self.cfg.agents:
            self.counters["unexpected"] += msg is not None
            return
        self.last_seen[msg.agent] = time.time()
        self.status[msg.agent] = msg.status

    async def _publish(self, topic: str, payload: bytes) -> None:
        assert self.transport is not None
        try:
            await self.transport.publish(topic, payload)
        except TransportError:
            self.counters["publish_failed"] += 1

    # ---- the slot -------------------------------------------------------------------------

    def _from_configs(self, agent: str, configs: list[SurfaceConfig], requested: Any = None) -> Any:
        """The env's action for a surface from what its board latched (hardware in the loop)."""
        if self._generic_hil:
            return self.env.surface_action_from_configs(agent, configs, requested)
        return self.env.irs_action_from_configs(configs)       # P1: the config is the whole action

    def _fallback_config(self, agent: str) -> tuple[SurfaceConfig, str]:
        """What a silent surface's board holds: its last applied config, or the safe pattern."""
        if self.status.get(agent) == "safe" or agent not in self.last_applied:
            bits = self.env.surface_bits if self._generic_hil else self.env.bit_choices[0]
            return SurfaceConfig.safe(self.env.N, bits=bits), "safe"
        return self.last_applied[agent], "hold"

    def _fallback(self, agent: str) -> tuple[Any, str]:
        """What a silent agent's device does this slot: (env action, 'hold' | 'safe')."""
        if agent in self.surface_ids:
            cfg, mode = self._fallback_config(agent)
            return self._from_configs(agent, [cfg]), mode      # no request: the surface holds
        if agent in self.last_action:
            return self.last_action[agent], "hold"
        return _neutral_action(self.env.action_spaces[agent]), "safe"

    def _env_action(self, msg: m.Action) -> Any:
        if msg.agent in self.surface_ids:
            if msg.applied is None:
                raise ActionError(f"{msg.agent}: no applied configuration reported")
            requested = None
            if self._generic_hil:   # P3 keeps the board-less parts of the request (beta_R, sign)
                requested = _batched_action(msg.agent, msg.action, self.env.action_spaces[msg.agent])
            return self._from_configs(msg.agent, [msg.applied], requested)   # hardware in the loop
        return _batched_action(msg.agent, msg.action, self.env.action_spaces[msg.agent])

    def _on_action(self, topic: str, payload: bytes) -> None:
        """Every ``act/`` message as it arrives (no task wakeup per answer). An answer to the open
        slot, from the agent its topic names and laid out as the daemons encode it, is only
        *peeked at* here (slot and agent, :func:`messages.peek_action`) and parked: the whole
        message is decoded and validated once every agent has answered (:meth:`_settle`), after
        the latency window, so the server's decoding no longer competes with the agents that are
        still deciding. Anything else is decoded at once, as before. The moment the last
        expected answer arrives is the slot's latency."""
        peek = m.peek_action(payload)
        if peek is not None:
            slot, agent = peek
            if slot == self._open_slot and agent in self._agent_set and topic == self._act_topic[agent]:
                if agent not in self._got:
                    pending = self._pending.setdefault(agent, [])
                    pending.append(payload)
                    if len(pending) >= MAX_PENDING_PER_AGENT:
                        self._settle_agent(agent)   # a flood: validate now, never hold more than a few
                    if agent in self._got or agent in self._pending:
                        self._answered_one(agent)
                    return
        msg = m.decode_or_count(payload, self.counters)
        if msg is None:
            return
        if not isinstance(msg, m.Action) or msg.agent not in self._agent_set:
            self.counters["unexpected"] += 1
            return
        if topic != f"act/{msg.agent}":
            self.counters["spoofed"] += 1
            return
        if msg.slot != self._open_slot:
            self.late[msg.agent] += 1
            return
        if msg.agent in self._got:
            self.counters["duplicate"] += 1
            return
        self._pending.setdefault(msg.agent, []).append(msg)   # decoded already; kept in arrival order
        self._answered_one(msg.agent)

    def _answered_one(self, agent: str) -> None:
        self._answered.add(agent)
        if agent not in self._arrived:
            self._arrived[agent] = time.time()
        if self._all_in_at is None and len(self._answered) == len(self._agent_set):
            self._all_in_at = time.time()
            self._all_in_cpu = time.thread_time()   # the server's CPU inside the latency window ends here
            if self._all_in is not None and not self._all_in.done():
                self._all_in.set_result(None)

    def _settle(self) -> bool:
        """Decode and validate the parked answers, in arrival order: each agent's first valid
        one counts, a later valid one is a duplicate, an invalid one is dropped and counted as
        malformed (as it would have been on arrival). True if every agent has a valid answer."""
        for agent in list(self._pending):
            self._settle_agent(agent)
        if len(self._got) == len(self._agent_set):
            return True
        self._answered = set(self._got)   # an answer failed validation: wait for that agent again
        self._all_in_at = None
        return False

    def _settle_agent(self, agent: str) -> None:
        for item in self._pending.pop(agent, ()):
            msg = item if isinstance(item, m.Action) else m.decode_or_count(item, self.counters)
            if msg is None:
                continue
            if not isinstance(msg, m.Action) or msg.agent != agent or msg.slot != self._open_slot:
                self.counters["unexpected"] += 1   # cannot happen for the bytes peek_action read
                continue
            if agent in self._got:
                self.counters["duplicate"] += 1
                continue
            self._got[agent] = msg
        if agent not in self._got:
            self._answered.discard(agent)

    def _later(self) -> tuple[float, list[str]] | None:
        """Agents whose observation can go out later than the others', and how much later (s).

        A slot lasts as long as its slowest agent. An agent whose last decide + apply took far
        less than the slowest one's (a BS deciding in ~0.1 ms while the surfaces' serial boards
        take ~10 ms) gets its observation half its slack later: it still answers well before the
        slowest agent, and its wake-ups and decision no longer take CPU from the agents starting
        their board exchanges at the slot's start (on a shared host). Off until every agent has
        answered once, and for slack under ``LATER_MIN_SLACK_S``: then all go out at once."""
        if not self.cfg.release_by_slack or len(self._work_s) < len(self._fanout):
            return None
        longest = max(self._work_s.values())
        delay = {a: min((longest - w) / 2, self.cfg.deadline_s / 4) for a, w in self._work_s.items()
                 if longest - w >= LATER_MIN_SLACK_S}
        if not delay:
            return None
        return min(delay.values()), [a for a in self._fanout if a in delay]

    async def _collect(self, slot: int, deadline: float,
                       release: tuple[float, list[tuple[str, bytes]]] | None = None) -> tuple[dict[str, m.Action], float | None]:
        """Wait until every agent answered slot ``slot`` (opened by _run_slot) or the deadline;
        ``release`` = (when, [(topic, observation)]) still to publish at ``when`` (see _later)."""
        wait = self._blocking_wait
        if release is not None:
            when, held = release
            while self._all_in_at is None and (left := when - time.time()) > 0:
                if wait is not None:
                    wait(left)
                else:
                    try:
                        await asyncio.wait_for(asyncio.shield(self._all_in), left)
                    except asyncio.TimeoutError:
                        pass
            for topic, body in held:
                await self._publish(topic, body)
        while True:
            if wait is not None:
                # The hub's own transport forwards and dispatches in this thread (HubTransport.wait).
                while self._all_in_at is None and (left := deadline - time.time()) > 0:
                    wait(left)
            elif self._all_in_at is None:
                try:
                    await asyncio.wait_for(self._all_in, max(0.0, deadline - time.time()))
                except asyncio.TimeoutError:
                    pass
            if self._settle() or time.time() >= deadline:
                break
            if wait is None:
                self._all_in = asyncio.get_running_loop().create_future()
        self._open_slot = -1         # from here on, an answer to this slot is late
        if wait is not None:
            await asyncio.sleep(0)   # one loop turn per slot: tasks (a welcome, a stop) still run
        return self._got, self._all_in_at

    async def _run_slot(self, obs: dict[str, torch.Tensor], log: RunLog) -> dict[str, torch.Tensor]:
        slot = self.slot
        t0 = time.time()
        cpu0 = time.thread_time()
        deadline = t0 + self.cfg.deadline_s
        self._open_slot, self._got, self._all_in_at, self._all_in_cpu = slot, {}, None, None
        self._pending, self._answered, self._arrived = {}, set(), {}
        self._all_in = None if self._blocking_wait else asyncio.get_running_loop().create_future()
        # Each observation goes out as soon as it is encoded, longest job first (``_fanout``): the
        # agent with the most to do starts ~10 us per agent earlier than if all were encoded
        # first. Neither transport suspends on a per-slot publish (ZeroMQ: a non-blocking send;
        # MQTT QoS 0: written at once), so answers are only read once this loop is done.
        if self._hold is not None:
            self._hold.hold()
        heads = self._obs_heads(slot, obs)
        later = self._later()
        held = later[1] if later is not None else ()
        for a in self._fanout:
            if a not in held:
                await self._publish(self._obs_topic[a], m.observation_with_times(heads[a], deadline, t0))
        release = None
        if later is not None:
            release = (t0 + later[0], [(self._obs_topic[a], m.observation_with_times(heads[a], deadline, t0))
                                       for a in held])
        got, all_in_at = await self._collect(slot, deadline, release)
        if self._hold is not None:
            self._hold.release()

        # Each answer as the env's action (hardware in the loop: the applied config for a surface).
        proposed: dict[str, Any] = {}
        entries: dict[str, dict[str, Any]] = {}
        for agent in self.env.agent_ids:
            msg = got.get(agent)
            entries[agent] = {"answered": msg is not None}
            if msg is not None:
                try:
                    proposed[agent] = self._env_action(msg)
                except ActionError as exc:
                    self.invalid[agent] += 1
                    entries[agent]["invalid"] = str(exc)
        actions = {a: proposed[a] if a in proposed else self._fallback(a)[0] for a in self.env.agent_ids}
        # Every env's step checks the whole slot (decode_actions) before it touches any state, so
        # the common case steps straight away (one check per slot, not two); an invalid answer
        # leaves the env as it was, and the slot is stepped once the culprit(s) are set aside.
        result = None
        try:
            result = self.env.step(actions)
        except ActionError:
            for agent in list(proposed):            # isolate the culprit(s); everyone else stands
                try:
                    self._check_one(agent, proposed[agent])
                except ActionError as exc:
                    self.invalid[agent] += 1
                    entries[agent]["invalid"] = str(exc)
                    del proposed[agent]
        for agent in self.env.agent_ids:
            entry, msg = entries[agent], got.get(agent)
            if agent in proposed:
                action = proposed[agent]
                entry["timing"] = msg.timing
                arrived = self._arrived.get(agent)
                if arrived is not None:
                    entry["arrived_s"] = arrived - t0   # where in the latency window this answer came
                self._work_s[agent] = msg.timing.get("decide_s", 0.0) + msg.timing.get("apply_s", 0.0)
                self.last_action[agent] = action
                if msg.applied is not None:
                    self.last_applied[agent] = msg.applied
            else:
                self.missed[agent] += 1
                action, entry["fallback"] = self._fallback(agent)
            actions[agent] = action
            if agent in self.surface_ids and not self._generic_hil:      # P1: the action is the config
                entry["action"] = {} if msg is None else dict(msg.action)
                entry["applied"] = {k: v[0] for k, v in action.items()}
            elif agent in self.surface_ids:
                entry["action"] = {} if msg is None else dict(msg.action)
                config = msg.applied if agent in proposed else self._fallback_config(agent)[0]
                entry["applied"] = config.to_dict()
            else:
                entry["action"] = {k: v[0] for k, v in action.items()} if isinstance(action, dict) \
                    else {"action": action[0]}

        if result is None:
            result = self.env.step(actions)
        # Next slot, the observations go out longest job first: an agent whose answer waits on
        # a serial board exchange starts it while the quick ones (a BS) decide on the other core.
        self._fanout = sorted(self.cfg.agents, key=lambda a: -self._work_s.get(a, 0.0))
        t_done = time.time()
        if all_in_at is not None:
            self.latencies.add(all_in_at - t0)
        self.slot_wall_s += t_done - t0
        self.slot_count += 1
        info = result.info
        record = {
            "type": "slot", "slot": slot, "t": t0,
            "latency_s": None if all_in_at is None else all_in_at - t0,
            "server_cpu_s": time.thread_time() - cpu0,   # publish, collect, validate, twin step
            # of which inside the latency window (encode, publish, hub forwarding, until the last answer)
            "server_window_cpu_s": None if self._all_in_cpu is None else self._all_in_cpu - cpu0,
            "missed": sorted(a for a, e in entries.items() if "fallback" in e),
            "reward": float(result.rewards[self.env.agent_ids[0]][0]),
            "rewards": {a: float(r[0]) for a, r in result.rewards.items()},
            "metrics": {k: v[0] for k, v in info.items() if isinstance(v, torch.Tensor) and not v.is_complex()},
            "agents": entries,
        }
        log.append(record)
        self.last_record = record
        self.slot += 1
        next_obs = result.obs
        if bool((result.truncated | result.terminated).all()):
            next_obs = self.env.reset()      # the next episode continues the seeded generator stream
        # The next slot's observations are known now: encode them (all but the two times) before
        # its clock starts, not inside its latency window.
        self._heads = (self.slot, next_obs, {a: m.observation_head(self.slot, a, next_obs[a][0].numpy())
                                             for a in self.cfg.agents})
        return next_obs

    def _obs_heads(self, slot: int, obs: dict[str, torch.Tensor]) -> dict[str, bytes]:
        """Each agent's observation of ``slot`` up to its times, as encoded at the end of the slot
        before (or now, for the first slot or observations from elsewhere)."""
        if self._heads is not None and self._heads[0] == slot and self._heads[1] is obs:
            return self._heads[2]
        return {a: m.observation_head(slot, a, obs[a][0].numpy()) for a in self.cfg.agents}

    def _check_one(self, agent: str, action: Any) -> None:
        """Validate one agent's action against the env's checks, others held at known-good values."""
        trial = {a: (action if a == agent else self._fallback(a)[0]) for a in self.env.agent_ids}
        self.env.decode_actions(trial)

    # ---- main -----------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        from controller.cpu_latency import CpuLatencyHold

        with CpuLatencyHold(self.cfg.cpu_latency_us) as latency:
            return await self._run(latency.status)

    async def _run(self, cpu_latency: str) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.bus.kind == "zmq" and cfg.host_hub:
            from controller.transports.zmq_bus import ZmqHub

            # This loop forwards the hub's traffic itself (no proxy thread; see HubTransport).
            self.hub = ZmqHub(cfg.bus, agent_keys=cfg.agent_keys, threaded=False).start()
        try:
            bus = cfg.bus
            if bus.kind == "zmq" and bus.curve_server_secret:
                # On the hub host the server authenticates with the hub's own key pair.
                bus = dataclasses.replace(bus, curve_client_secret=bus.curve_server_secret)
            if self.hub is not None:
                self.transport = self.hub.local_transport("twin")   # the hub itself: no hop to reach it
                await self.transport.start()
            else:
                self.transport = await connect(bus, "twin")
            if cfg.blocking_collect and self.hub is not None:
                self._blocking_wait = self.transport.wait   # the hub's own transport (HubTransport)
                if cfg.park_peer_reports:
                    self._hold = self.transport          # peers' reports wait for the slot's end
            await self.transport.subscribe("act/", callback=self._on_action)
            await self.transport.subscribe("hello/", callback=self._on_hello)
            await self.transport.subscribe("hb/", callback=self._on_heartbeat)
            await self._wait_for_agents()
            obs = self.first_obs
            with RunLog(cfg.runlog) as log:
                log.append({"type": "start", "t": time.time(), "deployment": cfg.bus.deployment,
                            "transport": cfg.bus.kind, "bundle_hash": self.bundle_hash, "seed": cfg.seed,
                            "agents": list(cfg.agents), "deadline_s": cfg.deadline_s, "pid": os.getpid(),
                            "cpu_latency": cpu_latency})
                next_start = time.monotonic()
                while not self._stop.is_set() and (cfg.slots == 0 or self.slot < cfg.slots):
                    obs = await self._run_slot(obs, log)
                    if cfg.period_s > 0:
                        next_start += cfg.period_s
                        await asyncio.sleep(max(0.0, next_start - time.monotonic()))
                summary = self.summary()
                log.append({"type": "stop", "t": time.time(), **summary})
            if cfg.stop_agents:
                await self._publish("ctl/all", m.encode(m.Control("stop")))
            return summary
        finally:
            if self.transport is not None:
                await asyncio.sleep(0.05)   # let the last publishes leave
                await self.transport.close()
            if self.hub is not None:
                self.hub.close()

    async def _wait_for_agents(self) -> None:
        deadline = time.monotonic() + self.cfg.join_timeout_s
        next_call = 0.0
        while set(self.joined) != set(self.cfg.agents):
            if time.monotonic() >= next_call:
                # Daemons that outlived a previous server say hello again on "start".
                await self._publish("ctl/all", m.encode(m.Control("start")))
                next_call = time.monotonic() + 1.0
            if time.monotonic() > deadline or self._stop.is_set():
                missing = sorted(set(self.cfg.agents) - set(self.joined))
                raise TransportError(
                    f"agents: {missing} did not say hello within {self.cfg.join_timeout_s:.0f} s; "
                    f"are their daemons running and pointed at the same {self.cfg.bus.kind} bus?"
                )
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()

    def _dropped(self) -> dict[str, int]:
        dropped = dict(self.counters)
        if self.hub is not None and self.hub.impostors:   # publishes under another agent's id
            dropped["impostor"] = sum(self.hub.impostors.values())
        return dropped

    def summary(self) -> dict[str, Any]:
        t = self.transport.stats.as_dict() if self.transport else {}
        return {
            "slots": self.slot,
            "missed": dict(self.missed), "late": dict(self.late), "invalid": dict(self.invalid),
            "rejoins": dict(self.rejoins), "dropped": self._dropped(),
            "latency_p50_ms": 1e3 * self.latencies.percentile(50),   # within 0.5% (LogHistogram)
            "latency_p99_ms": 1e3 * self.latencies.percentile(99),
            "full_slots": self.latencies.total,
            "slots_per_s": self.slot_count / self.slot_wall_s if self.slot_count and self.cfg.period_s == 0 else None,
            "transport": t,
        }


def serve(cfg: ServerConfig) -> dict[str, Any]:
    """Run a server until its slots are done or SIGTERM / SIGINT; return the summary."""
    import signal

    torch.set_num_threads(1)  # B = 1 physics: threads only add jitter on a shared machine

    async def main() -> dict[str, Any]:
        from controller.daemon import freeze_startup_objects

        server = TwinServer(dataclasses.replace(cfg, blocking_collect=True))   # nothing else runs in this loop
        freeze_startup_objects()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop)
        return await server.run()

    return asyncio.run(main())
