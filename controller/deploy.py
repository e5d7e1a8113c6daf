"""Deployment files (TOML) and the local supervisor behind ``ristwin deploy``.

A deployment names the bus, the bundle, and every agent with its host and driver URL::

    [deployment]
    name = "lab"              # MQTT topics live under ristwin/<name>/
    bundle = "runs/p1/bundle"
    seed = 0
    slots = 100               # 0 = run until stopped
    deadline_ms = 50          # answer window per slot
    period_ms = 0             # slot period; 0 = as fast as the agents answer
    runlog = "runs/p1/deploy.jsonl"
    on_sigterm = "hold"       # or "safe": what a stopped surface daemon leaves latched
    cpu_latency_us = 0        # optional: hold this CPU wake-up latency bound (PM QoS) in the
                              # twin server and every daemon (controller/cpu_latency.py)

    [transport]               # every field of controller.transports.BusConfig
    kind = "zmq"              # or "mqtt" (broker = true: `ristwin deploy` starts mosquitto)

    [twin]
    host = "127.0.0.1"        # where the twin server (and the ZeroMQ hub) runs

    [[agent]]
    id = "irs0"
    host = "127.0.0.1"
    driver = "socket://127.0.0.1:7701"
    [agent.emulate]           # `ristwin deploy` starts `ristwin board emulate --tcp 7701 ...`
    elements = 10
    bits = "1,2,3"

Relative paths are resolved against the file's directory.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twin.errors import ConfigError

from controller.security import is_loopback
from controller.transports import BusConfig

if TYPE_CHECKING:
    from controller.daemon import DaemonConfig
    from controller.twin_server import ServerConfig

_PATH_FIELDS = ("curve_server_public", "curve_server_secret", "curve_client_secret", "curve_allowed_dir",
                "password_file", "tls_ca", "ipc_dir")
_EMULATE_KEYS = {"elements", "bits", "baud", "no_wire", "latch_us", "drop", "corrupt", "stuck", "slow_ms",
                 "reboot_every", "watchdog_ms", "energy", "seed"}


@dataclass(frozen=True)
class AgentSpec:
    id: str
    host: str = "127.0.0.1"
    driver: str = ""
    emulate: dict[str, Any] = field(default_factory=dict)
    watchdog_ms: float = 0.0
    delay_ms: float = 0.0                 # fault injection (tests, benches)
    curve_client_secret: str = ""         # per-agent key pair (overrides the transport's)
    curve_public_key: str = ""            # hub side: this agent's public key; binds the id to the key
    username: str = ""                    # MQTT: this agent's own user (overrides the transport's) ...
    password_file: str = ""               # ... and its owner-only password file; with broker = true the
                                          # started broker gets an ACL limiting the user to this agent's topics
    on_sigterm: str = ""                  # per-agent override of deployment.on_sigterm


@dataclass(frozen=True)
class Deployment:
    path: Path
    name: str
    bundle: str
    bus: BusConfig
    agents: tuple[AgentSpec, ...]
    seed: int = 0
    slots: int = 100
    deadline_s: float = 0.05
    period_s: float = 0.0
    runlog: str = ""
    on_sigterm: str = "hold"
    heartbeat_s: float = 0.5
    twin_host: str = "127.0.0.1"
    twin_overrides: dict[str, Any] = field(default_factory=dict)
    broker: bool = False
    cpu_latency_us: int | None = None     # PM QoS bound each process holds (None: none)

    def agent(self, agent_id: str) -> AgentSpec:
        for a in self.agents:
            if a.id == agent_id:
                return a
        raise ConfigError(f"--id: no agent {agent_id!r} in {self.path}; it lists {[a.id for a in self.agents]}")

    def server_config(self) -> "ServerConfig":
        from controller.twin_server import ServerConfig

        return ServerConfig(bus=self.bus, agents=tuple(a.id for a in self.agents), runlog=self.runlog,
                            bundle=self.bundle, scenario_overrides=dict(self.twin_overrides), seed=self.seed,
                            slots=self.slots, deadline_s=self.deadline_s, period_s=self.period_s,
                            agent_keys={a.id: a.curve_public_key for a in self.agents if a.curve_public_key},
                            cpu_latency_us=self.cpu_latency_us)

    def daemon_config(self, agent_id: str) -> "DaemonConfig":
        from controller.daemon import DaemonConfig

        spec = self.agent(agent_id)
        bus = self.bus
        if spec.curve_client_secret:
            bus = dataclasses.replace(bus, curve_client_secret=spec.curve_client_secret)
        if spec.username:
            bus = dataclasses.replace(bus, username=spec.username, password_file=spec.password_file)
        if bus.ipc_dir and spec.host != self.twin_host and not (is_loopback(spec.host) and is_loopback(self.twin_host)):
            bus = dataclasses.replace(bus, ipc_dir="")   # unix sockets only reach the hub's own host
        return DaemonConfig(bus=bus, agent=spec.id, bundle=self.bundle, driver_url=spec.driver,
                            on_sigterm=spec.on_sigterm or self.on_sigterm, heartbeat_s=self.heartbeat_s,
                            watchdog_s=spec.watchdog_ms / 1000.0, delay_s=spec.delay_ms / 1000.0,
                            cpu_latency_us=self.cpu_latency_us)


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(allowed)}")


def _resolve(base: Path, value: str) -> str:
    if not value:
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p))


def load_deployment(path: str | os.PathLike) -> Deployment:
    """Parse and validate a deployment TOML file (ConfigError naming the key on any problem)."""
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    base = path.parent
    _check_keys(raw, {"deployment", "transport", "twin", "agent"}, str(path))
    dep = dict(raw.get("deployment", {}))
    _check_keys(dep, {"name", "bundle", "seed", "slots", "deadline_ms", "period_ms", "runlog", "on_sigterm",
                      "heartbeat_ms", "cpu_latency_us"}, "deployment")
    if "bundle" not in dep:
        raise ConfigError("deployment.bundle: missing; point it at a trained actor bundle (RUN/bundle)")
    name = str(dep.get("name", path.stem))

    tr = dict(raw.get("transport", {}))
    bus_fields = {f.name for f in dataclasses.fields(BusConfig)}
    _check_keys(tr, bus_fields | {"broker"} - {"deployment"}, "transport")
    broker = bool(tr.pop("broker", False))
    for key in _PATH_FIELDS:
        if key in tr:
            tr[key] = _resolve(base, str(tr[key]))
    try:
        bus = BusConfig(deployment=name, **tr)
    except TypeError as exc:
        raise ConfigError(f"transport: {exc}") from None

    twin = dict(raw.get("twin", {}))
    _check_keys(twin, {"host", "overrides"}, "twin")
    twin_host = str(twin.get("host", bus.host))

    agents_raw = raw.get("agent", [])
    if not isinstance(agents_raw, list) or not agents_raw:
        raise ConfigError("agent: list every agent as an [[agent]] table with at least an id")
    agents = []
    for i, a in enumerate(agents_raw):
        _check_keys(a, {f.name for f in dataclasses.fields(AgentSpec)}, f"agent[{i}]")
        if "id" not in a:
            raise ConfigError(f"agent[{i}].id: missing")
        emulate = dict(a.get("emulate", {}))
        _check_keys(emulate, _EMULATE_KEYS, f"agent[{i}].emulate")
        if emulate and not re.fullmatch(r"socket://(127\.0\.0\.1|localhost):\d+(\?.*)?", str(a.get("driver", ""))):
            raise ConfigError(f"agent[{i}].driver: an emulated board is reached at socket://127.0.0.1:PORT")
        spec = AgentSpec(**{**a, "emulate": emulate,
                            "curve_client_secret": _resolve(base, a.get("curve_client_secret", "")),
                            "curve_public_key": _resolve(base, a.get("curve_public_key", "")),
                            "password_file": _resolve(base, a.get("password_file", ""))})
        agents.append(spec)
    ids = [a.id for a in agents]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"agent: duplicate ids in {ids}")

    d = Deployment(
        path=path, name=name, bundle=_resolve(base, str(dep["bundle"])), bus=bus, agents=tuple(agents),
        seed=_number(dep, "seed", 0, int), slots=_number(dep, "slots", 100, int),
        deadline_s=_number(dep, "deadline_ms", 50, float) / 1000.0, period_s=_number(dep, "period_ms", 0, float) / 1000.0,
        runlog=_resolve(base, str(dep.get("runlog", f"{name}-run.jsonl"))),
        on_sigterm=str(dep.get("on_sigterm", "hold")), heartbeat_s=_number(dep, "heartbeat_ms", 500, float) / 1000.0,
        twin_host=twin_host, twin_overrides=dict(twin.get("overrides", {})), broker=broker,
        cpu_latency_us=_cpu_latency(dep),
    )
    if d.deadline_s <= 0:
        raise ConfigError("deployment.deadline_ms: must be positive")
    if d.slots < 0 or d.period_s < 0 or d.heartbeat_s <= 0:
        bad = "slots" if d.slots < 0 else "period_ms" if d.period_s < 0 else "heartbeat_ms"
        raise ConfigError(f"deployment.{bad}: must be {'positive' if bad == 'heartbeat_ms' else '>= 0'}")
    if d.on_sigterm not in ("hold", "safe"):
        raise ConfigError(f"deployment.on_sigterm: {d.on_sigterm!r} must be 'hold' or 'safe'")
    bound = [a.id for a in d.agents if a.curve_public_key]
    if bound and len(bound) != len(d.agents):
        raise ConfigError(f"agent: curve_public_key binds {bound} to their keys but not "
                          f"{[a.id for a in d.agents if not a.curve_public_key]}; bind every agent or none "
                          f"(an unbound agent could not publish its answers)")
    if bound and (d.bus.kind != "zmq" or not d.bus.curve_server_secret):
        raise ConfigError("agent.curve_public_key: binding agent ids to keys needs kind = \"zmq\" with "
                          "transport.curve_server_secret (keys from `ristwin keys`)")
    for a in d.agents:
        if a.username and (d.bus.kind != "mqtt" or not a.password_file):
            raise ConfigError(f"agent {a.id}: username needs kind = \"mqtt\" and the agent's password_file")
        if a.username and not d.bus.username:
            raise ConfigError(f"agent {a.id}: a per-agent username needs transport.username (and password_file) "
                              f"for the twin server too")
        if a.on_sigterm not in ("", "hold", "safe"):
            raise ConfigError(f"agent {a.id}: on_sigterm {a.on_sigterm!r} must be 'hold' or 'safe'")
    return d


def _cpu_latency(table: dict[str, Any]) -> int | None:
    from controller.cpu_latency import MAX_US, valid_us

    if "cpu_latency_us" not in table:
        return None
    value = table["cpu_latency_us"]
    if not valid_us(value):
        raise ConfigError(f"deployment.cpu_latency_us: expected whole microseconds in 0..{MAX_US} (0: the CPUs "
                          f"never sleep deeper than polling), got {value!r}; or leave it out for no bound")
    return value


def _number(table: dict[str, Any], key: str, default: float, kind: type) -> Any:
    """A finite number of the deployment table (a TOML string or nan would only fail later)."""
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
        raise ConfigError(f"deployment.{key}: expected {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"deployment.{key}: must be finite, got {value}")
    return kind(value)


def check_security(dep: Deployment) -> None:
    """Refuse an unauthenticated non-loopback bus before anything heavy is loaded."""
    from controller.security import check_bus_security

    check_bus_security(dep.bus)


# ---------------------------------------------------------------------------------------------
# Commands of the processes a deployment consists of


def ristwin_argv() -> list[str]:
    return [sys.executable, "-m", "controller"]


def _emulator_argv(spec: AgentSpec) -> list[str]:
    port = spec.driver.rsplit(":", 1)[-1].split("?")[0]
    argv = ristwin_argv() + ["board", "emulate", "--tcp", port]
    for key, value in spec.emulate.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if value:
                argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


def _is_local(host: str) -> bool:
    return is_loopback(host) or host in (socket.gethostname(), socket.getfqdn())


def process_plan(dep: Deployment, broker_conf: str = "") -> list[tuple[str, list[str]]]:
    """(name, argv) of every process `ristwin deploy` starts on this host, in start order."""
    plan: list[tuple[str, list[str]]] = []
    if dep.bus.kind == "mqtt" and dep.broker:
        broker = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not os.path.exists(broker):
            raise ConfigError("transport.broker: mosquitto is not installed (apt-get install mosquitto), "
                              "or set broker = false and point mqtt_port at a running broker")
        plan.append(("broker", [broker, "-c", broker_conf]))
    for a in dep.agents:
        if a.emulate and _is_local(a.host):
            plan.append((f"board-{a.id}", _emulator_argv(a)))
    if _is_local(dep.twin_host):
        plan.append(("twin", ristwin_argv() + ["twin-server", str(dep.path)]))
    for a in dep.agents:
        if _is_local(a.host):
            plan.append((a.id, ristwin_argv() + ["agent", str(dep.path), "--id", a.id]))
    return plan


def broker_config_text(dep: Deployment, workdir: str | os.PathLike | None = None) -> str:
    """mosquitto.conf for a broker the deployment starts. With transport.username, ``workdir``
    receives the broker's password file (hashed by mosquitto_passwd) and its ACL."""
    lines = [f"listener {dep.bus.mqtt_port} {dep.bus.host}", "set_tcp_nodelay true", "persistence false"]
    lines.append("allow_anonymous true" if not dep.bus.username else "allow_anonymous false")
    if dep.bus.username and workdir is not None:
        passwd, acl = write_broker_auth(dep, workdir)
        lines += [f"password_file {passwd}", f"acl_file {acl}"]
    if os.geteuid() == 0:
        lines.append("user root")
    return "\n".join(lines) + "\n"


def broker_acl_text(dep: Deployment) -> str:
    """Mosquitto ACL: the twin server's user may use the whole deployment; an agent with its own
    username may publish only under its own id and read only what its paper lets it see."""
    from controller.daemon import _peer_prefixes

    root = f"ristwin/{dep.name}/"
    lines = ["# written by ristwin deploy", f"user {dep.bus.username}", f"topic readwrite {root}#"]
    scenario = _bundle_scenario(dep.bundle)
    for a in dep.agents:
        if not a.username or a.username == dep.bus.username:
            continue
        lines += ["", f"user {a.username}"]
        lines += [f"topic write {root}{family}/{a.id}" for family in ("act", "share", "hb", "hello")]
        lines += [f"topic read {root}{family}/{a.id}/#" for family in ("obs", "welcome")]
        lines.append(f"topic read {root}ctl/#")
        lines += [f"topic read {root}{prefix.rstrip('/')}/#" for prefix in _peer_prefixes(scenario, a.id)]
    lines += ["", f"pattern readwrite {root}live/%c"]   # each client's own liveness (last will)
    return "\n".join(lines) + "\n"


def _bundle_scenario(bundle: str) -> str:
    import json

    try:
        return str(json.loads((Path(bundle) / "manifest.json").read_text())["scenario"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""   # unknown: no peer topics granted


def write_broker_auth(dep: Deployment, workdir: str | os.PathLike) -> tuple[Path, Path]:
    """The broker's password file (from the users' owner-only password files, hashed in place by
    ``mosquitto_passwd -U``: no password on a command line) and ACL file, both mode 600."""
    from controller.security import read_secret_file

    users = {dep.bus.username: dep.bus.password_file}
    users.update({a.username: a.password_file for a in dep.agents if a.username})
    entries = []
    for user, pw_file in users.items():
        if not pw_file:
            raise ConfigError(f"user {user}: needs a password_file for the broker")
        password = read_secret_file(pw_file, f"password_file of {user}").strip()
        if ":" in user or "\n" in password:
            raise ConfigError(f"user {user}: usernames cannot contain ':' and passwords are one line")
        entries.append(f"{user}:{password}")
    work = Path(workdir)
    passwd, acl = work / "mosquitto.passwd", work / "mosquitto.acl"
    for path, text in ((passwd, "\n".join(entries) + "\n"), (acl, broker_acl_text(dep))):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    try:
        subprocess.run([tool, "-U", str(passwd)], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ConfigError(f"transport.username: cannot hash the broker's password file with {tool} ({exc})") from None
    return passwd, acl


def write_systemd_units(dep: Deployment, out_dir: str | os.PathLike) -> list[Path]:
    """One unit per process of this host's part of the deployment (broker: use the system's)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, argv in process_plan(dep):
        if name == "broker":
            continue
        unit = out / f"ristwin-{dep.name}-{name}.service"
        agent = name not in ("twin",) and not name.startswith("board-")
        after = [f"ristwin-{dep.name}-twin.service"] if agent else []
        if agent and dep.agent(name).emulate:
            after.append(f"ristwin-{dep.name}-board-{name}.service")
        text = "\n".join([
            "[Unit]",
            f"Description=ristwin {dep.name}: {name}",
            "After=network-online.target " + " ".join(after),
            "",
            "[Service]",
            f"WorkingDirectory={dep.path.parent}",
            "Environment=PYTHONUNBUFFERED=1",
            "ExecStart=" + " ".join(shlex.quote(x) for x in argv),
            f"Restart={'always' if agent or name.startswith('board-') else 'on-failure'}",
            "RestartSec=1",
            "KillSignal=SIGTERM",
            "TimeoutStopSec=5",
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ])
        unit.write_text(text)
        written.append(unit)
    return written


# ---------------------------------------------------------------------------------------------
# The supervisor


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def rate_text(metrics: dict[str, Any]) -> str:
    """The slot's sum rate in the unit its scenario reports: bit/s/Hz (P1, P2, P4) or, for P3's
    100 MHz band, Mbit/s; "-" before the first slot."""
    if metrics.get("sum_rate") is not None:
        return f"{metrics['sum_rate']:7.3f} bit/s/Hz"
    if metrics.get("sum_rate_bps") is not None:
        return f"{metrics['sum_rate_bps'] / 1e6:7.2f} Mbit/s"
    return "-"


class Supervisor:
    """Start this host's processes, restart crashed agents, show a live status line."""

    def __init__(self, dep: Deployment, print_slots: bool = False, restart_agents: bool = True) -> None:
        self.dep = dep
        self.print_slots = print_slots
        self.restart_agents = restart_agents
        self.procs: dict[str, subprocess.Popen] = {}
        self.argv: dict[str, list[str]] = {}
        self.restarts: dict[str, int] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="ristwin-deploy-")
        self.logdir = Path(self._tmp.name)
        self.spare: subprocess.Popen | None = None
        self._spares = 0
        self._logs: dict[int, Path] = {}  # pid -> its log file (a promoted spare keeps its own)
        self._told: set[tuple[str, str]] = set()
        self.agent_ids = {a.id for a in dep.agents}

    def _spawn(self, name: str) -> None:
        log = open(self.logdir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(self.argv[name], stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self._logs[self.procs[name].pid] = Path(log.name)

    def _spawn_spare(self) -> None:
        """The warm standby that replaces the next crashed agent (see controller.daemon.standby)."""
        self._spares += 1
        log = open(self.logdir / f"spare-{self._spares}.log", "ab")
        self.spare = subprocess.Popen(ristwin_argv() + ["agent", str(self.dep.path), "--standby"], stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.PIPE, start_new_session=True)
        log.close()
        self._logs[self.spare.pid] = Path(log.name)

    def _replace(self, name: str) -> None:
        """Bring a dead agent back: promote the warm spare if it is alive, else start cold."""
        self.restarts[name] += 1
        spare = self.spare
        if name in self.agent_ids and spare is not None and spare.poll() is None:
            try:
                spare.stdin.write(f"{name}\n".encode())
                spare.stdin.flush()
                spare.stdin.close()
                self.procs[name] = spare
                self._spawn_spare()
                return
            except OSError:
                pass
        self._spawn(name)

    def _wait_port(self, name: str, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise ConfigError(f"{name}: exited at start; its log says: {self.tail(name)}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise ConfigError(f"{name}: did not listen on port {port} within {timeout:.0f} s")

    def _tell_exit(self, name: str, proc: subprocess.Popen) -> None:
        """Print once per distinct reason why an agent or board died: its log (deleted at the end)
        is otherwise the only place that says, e.g., the board has the wrong element count."""
        try:
            lines = self._logs[proc.pid].read_text(errors="replace").strip().splitlines()
        except (KeyError, OSError):
            lines = []
        why = next((ln for ln in reversed(lines) if ln.startswith("ristwin: error:")), lines[-1] if lines else "")
        if (name, why) not in self._told:
            self._told.add((name, why))
            sys.stderr.write(f"{name} exited with status {proc.returncode}: {why or '(no output)'}\n")

    def tail(self, name: str, n: int = 400) -> str:
        try:
            return (self.logdir / f"{name}.log").read_text(errors="replace")[-n:].strip().replace("\n", " | ")
        except OSError:
            return ""

    def start(self) -> None:
        broker_conf = self.logdir / "mosquitto.conf"
        if self.dep.bus.kind == "mqtt" and self.dep.broker:
            broker_conf.write_text(broker_config_text(self.dep, self.logdir))
        if os.path.exists(self.dep.runlog):
            os.replace(self.dep.runlog, self.dep.runlog + ".prev")
        for name, argv in process_plan(self.dep, str(broker_conf)):
            self.argv[name] = argv
            self.restarts[name] = 0
            port = (self.dep.bus.mqtt_port if name == "broker" else
                    int(self.dep.agent(name[len("board-"):]).driver.rsplit(":", 1)[-1].split("?")[0])
                    if name.startswith("board-") else None)
            if port is not None and _accepts(port):
                # Someone else (another deployment?) already answers there: _wait_port would
                # take it for ours and the agent would talk to a stranger.
                raise ConfigError(f"{name}: port 127.0.0.1:{port} is already in use (another deployment "
                                  "running?); stop it or choose another port in the deployment file")
            self._spawn(name)
            if name == "broker":
                self._wait_port(name, self.dep.bus.mqtt_port)
            elif name.startswith("board-"):
                spec = self.dep.agent(name[len("board-"):])
                self._wait_port(name, int(spec.driver.rsplit(":", 1)[-1].split("?")[0]))
        if self.restart_agents and any(n in self.agent_ids for n in self.procs):
            self._spawn_spare()

    def stop(self) -> None:
        if self.spare is not None and self.spare.poll() is None:
            self.spare.kill()   # still waiting on stdin: nothing to shut down cleanly
            self.spare.wait()
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._tmp.cleanup()

    def run(self) -> int:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        from controller.runlog import RunLogTail

        console = Console(stderr=False)
        slots = RunLogTail(self.dep.runlog, "slot")   # each line read once, however long the run
        seen = 0
        last: dict[str, Any] = {}
        rc = 0
        # `kill` / systemd stop (SIGTERM) ends the run like Ctrl-C, so the children are stopped
        # instead of orphaned; a failed start stops what already started.
        previous = signal.signal(signal.SIGTERM, _interrupt)
        if self.dep.cpu_latency_us is not None:
            from controller.cpu_latency import CpuLatencyHold

            # Each process holds the bound itself (their logs are files); say once here whether
            # this host lets it be held (if not, the check itself warns, naming the fix).
            with CpuLatencyHold(self.dep.cpu_latency_us) as probe:
                if probe.held:
                    console.print(f"cpu_latency_us = {self.dep.cpu_latency_us}: held by the twin server and "
                                  f"every daemon of this host")
        try:
            self.start()
            with Live(console=console, refresh_per_second=8, transient=True) as live:
                while True:
                    twin = self.procs.get("twin")
                    twin_running = twin is None or twin.poll() is None
                    for name, p in list(self.procs.items()):
                        # A crashed agent or board comes back; the others never wait for it.
                        if (p.poll() is not None and name not in ("twin", "broker") and self.restart_agents
                                and twin_running):
                            self._tell_exit(name, self.procs[name])
                            self._replace(name)
                    done = twin is not None and twin.poll() is not None   # before reading: the
                    for rec in slots.poll():                              # last slots come too
                        last = rec
                        seen += 1
                        if self.print_slots:
                            live.console.print(Text(self._slot_line(rec)), soft_wrap=True)
                    live.update(Text(self._status(seen, last)))
                    if done:
                        rc = twin.returncode
                        break
                    time.sleep(0.1)
        except KeyboardInterrupt:
            rc = 130
        finally:
            signal.signal(signal.SIGTERM, previous)
            twin_tail = self.tail("twin") if rc not in (0, 130) else ""
            self.stop()
        if rc not in (0, 130):
            raise ConfigError(f"twin server exited with {rc}: {twin_tail}")
        console.print(Text(self._status(seen, last, final=True)), soft_wrap=True)
        return rc

    def _slot_line(self, rec: dict[str, Any]) -> str:
        metrics = rec.get("metrics", {})
        missed = ",".join(rec.get("missed", [])) or "-"
        lat = rec.get("latency_s")
        lat_txt = f"{1e3 * lat:6.2f} ms" if lat is not None else "  (miss)"
        return (f"slot {rec['slot']:4d}  sum rate {rate_text(metrics)}  "
                f"reward {rec.get('reward', float('nan')):7.3f}  {lat_txt}  missed {missed}")

    def _status(self, seen: int, last: dict[str, Any], final: bool = False) -> str:
        up = sum(1 for n, p in self.procs.items() if p.poll() is None and n not in ("twin", "broker")
                 and not n.startswith("board-"))
        n_agents = sum(1 for a in self.dep.agents if _is_local(a.host))
        total = f"/{self.dep.slots}" if self.dep.slots else ""
        rate_txt = rate_text(last.get("metrics", {}))
        restarts = sum(self.restarts.values())
        head = "done" if final else "running"
        text = (f"{head} {self.dep.name}: slot {seen}{total}  sum rate {rate_txt}  "
                f"agents up {n_agents if final else up}/{n_agents}  restarts {restarts}  {self.dep.bus.kind}")
        return text + (f"\nrun log: {self.dep.runlog}" if final else "")
