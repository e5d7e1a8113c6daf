"""Control-loop latency: 1 BS + 4 surface agent processes on loopback, ZeroMQ and MQTT.

Each configuration starts the bus (the twin server hosts the ZeroMQ hub; Mosquitto with
``set_tcp_nodelay true`` for MQTT), optionally one emulated board per surface
(``ristwin board emulate --tcp``, wire-time model on), five ``ristwin agent`` processes,
and runs the twin server in this process back to back (period 0; ``--period-ms`` paces it like a
deployment's slot clock). Slot latency = from the
server publishing the observations to the last action arriving (what the slot clock
waits for); slots/s includes the twin's physics step and the run log.

With emulated boards the ratio column compares each slot's latency with the slowest
surface's driver apply time that slot (the serial exchange: wire time + board latch), i.e.
how much the runtime adds on top of the serial link. "agents CPU" = the five daemons' thread
CPU per slot (decode + decide + apply, summed), "server CPU" = the server's thread CPU per
slot (encode, collect, validate, twin step): what the slot costs regardless of scheduling;
"window/after/loop" splits the server thread's CPU per slot (medians) at the last answer:
inside the latency window (encode + publish the observations, forward the hub's traffic,
decode and validate the answers), after it (twin step, run log, metrics), and between
slots (the event loop's turn). ``--profile-steady DIR`` profiles the server's thread CPU over
the measured slots only (and the daemons', through ``RISTWIN_DAEMON_PROFILE``).
"proc CPU" = every thread of the processes (from /proc/<pid>/task/*/schedstat) per slot:
the daemons, the server (with the hub's forwarder and ZeroMQ I/O threads), and the others
(broker, board emulators); this is what the 2 cores must fit. "switches/slot" = context
switches of those threads per slot (voluntary + involuntary): the wake-ups the 2 cores must
schedule, a count the machine's load changes less than the latency.

Transports: ``zmq`` (clients on loopback TCP; the server reaches its own hub in-process),
``zmq-ipc`` (the same over unix sockets, ``ipc_dir``), ``mqtt``. ``--rejoin N`` then kills a
surface daemon with -9 N times, restarts it cold (no warm spare) and times kill -> first slot
it answers. ``--profile DIR`` writes cProfile stats of every process.

    /work/venv/bin/python bench/control_loop.py --slots 400
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def thread_cpu_ns(pid: int) -> dict[str, int]:
    """CPU ns per thread name of a process (schedstat), e.g. the Python thread vs ZeroMQ's I/O thread."""
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            out[name] = out.get(name, 0) + int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def proc_cpu_ns(pid: int) -> int:
    """CPU time of every thread of a process (ns, from schedstat): includes ZeroMQ I/O threads,
    the hub and the broker, which the per-message thread_time in the run log does not see."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def proc_switches(pid: int) -> int:
    """Context switches of every thread of a process (voluntary + involuntary): how often its
    threads went to sleep and woke (or were preempted), a load-independent count of wake-ups."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.endswith("ctxt_switches:") or "ctxt_switches:" in line:
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return total


def make_bundle(out: Path, algo: str, n_irs: int, n_elements: int = 10, bits: str = "1,2,3") -> Path:
    import torch

    from agents import registry
    from agents.bundle import export_bundle
    from twin.scenarios import get_scenario

    torch.manual_seed(0)
    cfg = get_scenario("p1", n_irs=n_irs, n_elements=n_elements,
                       resolutions=tuple(int(b) for b in bits.split(",")))
    env = registry.make_env("p1", cfg, 1)
    cls, ccls = registry.algorithm(algo)
    a = cls(env, ccls(), 0)
    return export_bundle(out, algo, "p1", cfg, a.actors(), {x: a.role_of(x) for x in env.agent_ids},
                         env.observation_spaces, env.action_spaces)


def window_path(records: list[dict]) -> dict[str, float]:
    """Where each slot's latency went, along the path of its last answer (medians, ms): "out" =
    the server's clock start to that daemon decoding its observation (publish, hub, both
    ZeroMQ I/O threads, the wake-up), "work" = its local observation to its answer (decide,
    apply: the serial exchange with a board), "back" = its answer to the server seeing it
    (encode, send, both I/O threads, the server's wake-up). Out and back are the bus: with the
    scheduler's queueing on a loaded machine, not just the wire."""
    out, work, back = [], [], []
    for r in records:
        answered = [e for e in r["agents"].values() if "arrived_s" in e and "wall_s" in e.get("timing", {})]
        if len(answered) != len(r["agents"]):
            continue
        last = max(answered, key=lambda e: e["arrived_s"])
        t = last["timing"]
        out.append(t["recv_lag_s"])
        work.append(t["wall_s"])
        back.append(last["arrived_s"] - t["recv_lag_s"] - t["wall_s"])
    med = (lambda v: float(np.median(v)) * 1e3 if v else float("nan"))
    return {"out": med(out), "work": med(work), "back": med(back)}


def run_config(kind: str, driver: str, bundle: Path, slots: int, n_irs: int, baud: int, work: Path,
               profile: Path | None = None, show_threads: bool = False, steady: Path | None = None,
               park: bool = True, board: tuple[int, str] = (10, "1,2,3"), period_ms: float = 0.0,
               by_slack: bool = True, cpu_latency_us: int | None = None) -> dict:
    from controller.deploy import load_deployment
    from drivers import protocol
    from twin.surface_config import SurfaceConfig
    from controller.daemon import freeze_startup_objects
    from controller.runlog import read_runlog
    from controller.twin_server import TwinServer

    procs: list[subprocess.Popen] = []
    log = open(work / f"{kind}-{driver}.log", "wb")
    agents = ["bs0"] + [f"irs{i}" for i in range(n_irs)]
    lines = [
        "[deployment]", f'name = "bench"', f'bundle = "{bundle}"', "seed = 1", f"slots = {slots}",
        "deadline_ms = 500", f"period_ms = {period_ms:g}", f'runlog = "{work}/{kind}-{driver}.jsonl"',
        *([f"cpu_latency_us = {cpu_latency_us}"] if cpu_latency_us is not None else []), "",
        "[transport]", f'kind = "{"mqtt" if kind == "mqtt" else "zmq"}"',
    ]
    try:
        if kind.startswith("zmq"):
            lines += [f"pub_port = {free_port()}", f"sub_port = {free_port()}"]
            if kind == "zmq-ipc":   # same-host clients over unix sockets instead of loopback TCP
                lines += [f'ipc_dir = "{work}/ipc"']
        else:
            port = free_port()
            conf = work / "mosquitto.conf"
            conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
                            f"persistence false\nlog_dest none\n" + ("user root\n" if os.geteuid() == 0 else ""))
            procs.append(subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(conf)],
                                          stdout=log, stderr=subprocess.STDOUT))
            wait_port(port)
            lines += [f"mqtt_port = {port}"]
        for a in agents:
            lines += ["", "[[agent]]", f'id = "{a}"']
            if a == "bs0":
                continue
            if driver == "sim":
                lines += [f'driver = "sim://?elements={board[0]}&bits={board[1]}"']
            else:
                port = free_port()
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "controller", "board", "emulate", "--tcp", str(port), "--elements", str(board[0]),
                     "--bits", board[1], "--baud", str(baud)], stdout=log, stderr=subprocess.STDOUT))
                wait_port(port)
                lines += [f'driver = "socket://127.0.0.1:{port}?baud={baud}"']
        toml = work / f"{kind}-{driver}.toml"
        toml.write_text("\n".join(lines) + "\n")
        dep = load_deployment(toml)
        agent_procs = {}
        for a in agents:
            prof = ["-m", "cProfile", "-o", str(profile / f"{kind}-{driver}-{a}.prof")] if profile else []
            env = dict(os.environ)
            if steady is not None:
                steady.mkdir(parents=True, exist_ok=True)
                env["RISTWIN_DAEMON_PROFILE"] = str(steady / f"{kind}-{driver}")   # the daemons' own switch
            agent_procs[a] = subprocess.Popen([sys.executable, *prof, "-m", "controller", "agent", str(toml), "--id", a],
                                              stdout=log, stderr=subprocess.STDOUT, env=env)
        procs += agent_procs.values()
        warm = min(20, slots // 10)
        groups = {"agents": [p.pid for p in agent_procs.values()], "server": [os.getpid()],
                  "others": [p.pid for p in procs if p not in agent_procs.values()]}
        cpu: dict[str, list[int]] = {}
        switches: dict[str, list[int]] = {}
        threads: dict[str, list[dict[str, int]]] = {}
        steady_prof = []
        split: list[tuple[float, float, float]] = []   # thread CPU at slot start, last answer, slot end

        class Server(TwinServer):
            # Sample every process's CPU after the warm-up slots and after the last slot.
            async def _run_slot(self, *args):
                if steady is not None and self.slot in (warm, slots - 1):
                    # --profile-steady: the server thread's CPU (not wall clock: this process shares
                    # 2 cores with five others) over the measured slots only, without start-up
                    import cProfile

                    if self.slot == warm:
                        steady_prof.append(cProfile.Profile(time.thread_time_ns, 1e-9))
                        steady_prof[0].enable()
                    else:
                        steady_prof[0].disable()
                        steady_prof[0].dump_stats(steady / f"{kind}-{driver}-server-steady.prof")
                if self.slot in (warm, slots - 1):
                    for g, pids in groups.items():
                        cpu.setdefault(g, []).append(sum(proc_cpu_ns(p) for p in pids))
                        switches.setdefault(g, []).append(sum(proc_switches(p) for p in pids))
                    for name, pid in [("server", os.getpid())] + [(a, p.pid) for a, p in agent_procs.items()]:
                        threads.setdefault(name, []).append(thread_cpu_ns(pid))
                c0 = time.thread_time()
                obs = await super()._run_slot(*args)
                split.append((c0, self._window_end, time.thread_time()))
                return obs

            async def _collect(self, *args):
                got = await super()._collect(*args)
                # the last answer is in (or the deadline passed); a tree before server_window_cpu_s:
                # when _collect returns (its answers were all decoded on arrival)
                self._window_end = getattr(self, "_all_in_cpu", None) or time.thread_time()
                return got

        # as `ristwin twin-server` runs it (blocking_collect: nothing else runs in this loop); the
        # check lets the same script time a tree from before these options
        fields = {f.name for f in dataclasses.fields(dep.server_config())}
        wanted = {"blocking_collect": True, "park_peer_reports": park, "release_by_slack": by_slack}
        extra = {k: v for k, v in wanted.items() if k in fields}
        server = Server(dataclasses.replace(dep.server_config(), join_timeout_s=120, **extra))
        freeze_startup_objects()   # as `ristwin twin-server` does
        t0 = time.perf_counter()
        if profile:
            import cProfile

            with cProfile.Profile() as pr:
                summary = asyncio.run(server.run())
            pr.dump_stats(profile / f"{kind}-{driver}-server.prof")
        else:
            summary = asyncio.run(server.run())
        wall = time.perf_counter() - t0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
    if show_threads:
        n = max(1, slots - 1 - warm)
        for name, (a, b) in threads.items():
            print(name, {k: round((b.get(k, 0) - a.get(k, 0)) / 1e6 / n, 3) for k in b}, file=sys.stderr)
    records = read_runlog(dep.runlog, "slot")[min(20, slots // 10):]   # drop the warm-up slots
    lat = np.array([r["latency_s"] for r in records if r["latency_s"] is not None]) * 1e3
    walls = np.diff([r["t"] for r in records])
    apply_ms = np.array([max(r["agents"][a]["timing"]["apply_s"] for a in agents[1:]) for r in records
                         if not r["missed"]]) * 1e3
    ratio = np.array([r["latency_s"] / max(r["agents"][a]["timing"]["apply_s"] for a in agents[1:])
                      for r in records if not r["missed"] and r["latency_s"] is not None])
    agent_cpu = np.array([sum(r["agents"][a]["timing"]["cpu_s"] for a in agents) for r in records
                          if not r["missed"]]) * 1e3

    def wire_s(applied: dict) -> float:   # UART time of this configuration's set + ACK exchange
        ex = protocol.set_exchange_bytes(SurfaceConfig.from_dict(applied))
        return protocol.wire_seconds(ex.request_bytes + ex.response_bytes, baud)

    # the yardstick: slot latency over the slowest surface's modelled wire time (no latch,
    # no host work), next to the ratio over the measured apply
    wire_ratio = np.array([r["latency_s"] / max(wire_s(r["agents"][a]["applied"]) for a in agents[1:])
                           for r in records if not r["missed"] and r["latency_s"] is not None]) \
        if driver == "emu" else np.array([])
    server_cpu = np.array([r["server_cpu_s"] for r in records]) * 1e3
    path = window_path(records)
    # The server thread's CPU per slot split at the last answer: inside the latency window (encode,
    # publish, hub forwarding, decode + validation of the answers) and after it (twin step, run
    # log, metrics); "between" = from one slot's end to the next one's start (the event loop).
    sp = np.array(split[min(20, slots // 10):]) * 1e3
    win_cpu = float(np.median(sp[:, 1] - sp[:, 0])) if len(sp) else float("nan")
    after_cpu = float(np.median(sp[:, 2] - sp[:, 1])) if len(sp) else float("nan")
    between_cpu = float(np.median(sp[1:, 0] - sp[:-1, 2])) if len(sp) > 1 else float("nan")
    start = read_runlog(dep.runlog, "start")
    return {
        "transport": kind, "driver": driver, "slots": len(records),
        "cpu_latency": start[0].get("cpu_latency", "off") if start else "?",
        "agent_cpu": float(np.median(agent_cpu)), "server_cpu": float(np.median(server_cpu)),
        "win_cpu": win_cpu, "after_cpu": after_cpu, "between_cpu": between_cpu,
        "p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
        "slots_per_s": float(1.0 / np.mean(walls)) if len(walls) else float("nan"),
        "missed": sum(len(r["missed"]) for r in records),
        "apply_p50": float(np.median(apply_ms)), "ratio_p50": float(np.median(ratio)) if driver == "emu" else None,
        "wire_ratio_p50": float(np.median(wire_ratio)) if len(wire_ratio) else None,
        "wall_s": wall, "path": path,
        # whole-process CPU per slot (all threads), over the measured slots
        **{f"proc_{g}": (v[1] - v[0]) / 1e6 / max(1, slots - 1 - warm) if len(v) == 2 else float("nan")
           for g, v in cpu.items()},
        # context switches per slot (all threads): the wake-ups the two cores must schedule
        **{f"csw_{g}": (v[1] - v[0]) / max(1, slots - 1 - warm) if len(v) == 2 else float("nan")
           for g, v in switches.items()},
    }


def measure_cold_rejoin(bundle: Path, n_irs: int, work: Path, repeats: int,
                        board: tuple[int, str] = (10, "1,2,3")) -> list[tuple[float, float | None]]:
    """kill -9 of one surface daemon mid-run, restarted cold (no warm spare): seconds from the
    kill to the first slot the new process answers (and to its hello reaching the server: the
    process start, imports and bundle load). ZeroMQ, sim drivers, one slot every 20 ms."""
    from controller.deploy import load_deployment
    from controller.twin_server import TwinServer

    agents = ["bs0"] + [f"irs{i}" for i in range(n_irs)]
    lines = ["[deployment]", 'name = "rejoin"', f'bundle = "{bundle}"', "slots = 0", "deadline_ms = 500",
             "period_ms = 20", f'runlog = "{work}/rejoin.jsonl"', "[transport]", 'kind = "zmq"',
             f"pub_port = {free_port()}", f"sub_port = {free_port()}"]
    for a in agents:
        lines += ["[[agent]]", f'id = "{a}"'] + ([] if a == "bs0" else [f'driver = "sim://?elements={board[0]}&bits={board[1]}"'])
    toml = work / "rejoin.toml"
    toml.write_text("\n".join(lines) + "\n")
    dep = load_deployment(toml)
    log = open(work / "rejoin.log", "wb")

    def spawn(a: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "controller", "agent", str(toml), "--id", a],
                                stdout=log, stderr=subprocess.STDOUT)

    procs = {a: spawn(a) for a in agents}
    times: list[tuple[float, float | None]] = []
    victim = agents[-1]

    async def run() -> None:
        server = TwinServer(dataclasses.replace(dep.server_config(), join_timeout_s=120))
        task = asyncio.ensure_future(server.run())
        try:
            for _ in range(repeats):
                start = server.slot
                while server.slot < start + 25:          # settle
                    await asyncio.sleep(0.01)
                procs[victim].kill()
                killed_at, killed_slot = time.perf_counter(), server.slot
                procs[victim].wait()
                rejoins = server.rejoins[victim]
                procs[victim] = spawn(victim)
                hello_s = None
                while True:
                    if hello_s is None and server.rejoins[victim] > rejoins:
                        hello_s = time.perf_counter() - killed_at
                    rec = getattr(server, "last_record", None)
                    if rec is not None and rec["slot"] > killed_slot and rec["agents"][victim]["answered"]:
                        times.append((time.perf_counter() - killed_at, hello_s))
                        break
                    if task.done():
                        return
                    await asyncio.sleep(0.002)
        finally:
            server.stop()
            await task

    try:
        asyncio.run(run())
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=400)
    ap.add_argument("--transports", default="zmq,zmq-ipc,mqtt",
                    help="zmq (loopback TCP), zmq-ipc (unix sockets, ipc_dir), mqtt")
    ap.add_argument("--drivers", default="sim,emu")
    ap.add_argument("--surfaces", type=int, default=4)
    ap.add_argument("--baud", type=int, default=921600)
    ap.add_argument("--period-ms", type=float, default=0.0,
                    help="slot clock period (0: back to back, the most slots per second; a deployment's slot "
                         "clock has a period, after which every daemon's post-slot work is done)")
    ap.add_argument("--elements", type=int, default=10,
                    help="elements per surface (the P1 preset's N = 10; e.g. 256 for a lab board like the public "
                         "256-element one); the bench's untrained bundle is made for this size")
    ap.add_argument("--bits", default="1,2,3", help="resolutions of the scenario and of every board, e.g. 1")
    ap.add_argument("--algo", default="maq-pg")
    ap.add_argument("--rejoin", type=int, default=3,
                    help="kill -9 / cold restart a surface daemon this many times and time its rejoin (0: skip)")
    ap.add_argument("--threads", action="store_true", help="print each process's CPU per slot by thread (stderr)")
    ap.add_argument("--profile", type=Path, default=None, help="write cProfile stats of every process into DIR")
    ap.add_argument("--profile-steady", type=Path, default=None,
                    help="write cProfile stats (thread CPU) of the server over the measured slots only into DIR, "
                         "and have the daemons do the same (RISTWIN_DAEMON_PROFILE)")
    ap.add_argument("--keep-logs", type=Path, default=None,
                    help="copy each configuration's run log (per slot: every answer's timing and its arrival "
                         "in the latency window) into DIR")
    ap.add_argument("--no-park", action="store_true",
                    help="the server's hub forwards the agents' act/ and share/ reports to their peers at once "
                         "instead of when the slot closes (ServerConfig.park_peer_reports=False)")
    ap.add_argument("--cpu-latency-us", type=int, default=None,
                    help="deployment.cpu_latency_us: the server and every daemon hold this CPU wake-up latency "
                         "bound (Linux PM QoS; needs root; controller/cpu_latency.py)")
    ap.add_argument("--all-at-once", action="store_true",
                    help="every observation goes out at the slot's start, also to agents with slack "
                         "(ServerConfig.release_by_slack=False)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="ristwin-bench-") as tmp:
        work = Path(tmp)
        bundle = make_bundle(work / "bundle", args.algo, args.surfaces, args.elements, args.bits)
        rows = []
        for kind in args.transports.split(","):
            for drv in args.drivers.split(","):
                rows.append(run_config(kind, drv, bundle, args.slots, args.surfaces, args.baud, work, args.profile,
                                       args.threads, args.profile_steady, not args.no_park,
                                       (args.elements, args.bits), args.period_ms, not args.all_at_once,
                                       args.cpu_latency_us))
                if args.keep_logs is not None:
                    args.keep_logs.mkdir(parents=True, exist_ok=True)
                    shutil.copy(work / f"{kind}-{drv}.jsonl", args.keep_logs / f"{kind}-{drv}.jsonl")
        rejoin = measure_cold_rejoin(bundle, args.surfaces, work, args.rejoin, (args.elements, args.bits)) if args.rejoin else []
    print(f"{'transport':9s} {'driver':6s} {'slots':>5s} {'p50 ms':>7s} {'p99 ms':>7s} {'slots/s':>8s} "
          f"{'missed':>6s} {'apply p50 ms':>12s} {'lat/apply p50':>13s} {'lat/wire p50':>12s} {'agents CPU ms':>13s} {'server CPU ms':>13s} "
          f"{'window/after/loop':>17s} {'proc CPU ms: agents/server/others':>33s} {'switches/slot: agents/server/others':>35s}")
    for r in rows:
        ratio = f"{r['ratio_p50']:.2f}" if r["ratio_p50"] is not None else "-"
        wratio = f"{r['wire_ratio_p50']:.2f}" if r["wire_ratio_p50"] is not None else "-"
        print(f"{r['transport']:9s} {r['driver']:6s} {r['slots']:5d} {r['p50']:7.2f} {r['p99']:7.2f} "
              f"{r['slots_per_s']:8.1f} {r['missed']:6d} {r['apply_p50']:12.3f} {ratio:>13s} {wratio:>12s} "
              f"{r['agent_cpu']:13.2f} {r['server_cpu']:13.2f} "
              f"{r['win_cpu']:>7.2f}/{r['after_cpu']:.2f}/{r['between_cpu']:.2f} "
              f"{r.get('proc_agents', float('nan')):>15.2f}/{r.get('proc_server', float('nan')):.2f}/"
              f"{r.get('proc_others', float('nan')):.2f} "
              f"{r.get('csw_agents', float('nan')):>17.1f}/{r.get('csw_server', float('nan')):.1f}/"
              f"{r.get('csw_others', float('nan')):.1f}")
    print("last answer's path per slot, p50 ms (out: server -> daemon; work: observation -> answer; "
          "back: answer -> server): " + "; ".join(
              f"{r['transport']}+{r['driver']} {r['path']['out']:.2f} / {r['path']['work']:.2f} / {r['path']['back']:.2f}"
              for r in rows))
    if rejoin:
        print(f"cold restart after kill -9 (no spare), kill -> first answered slot: "
              f"{', '.join(f'{t:.2f}' for t, _ in rejoin)} s (target < 2 s; of which kill -> hello: "
              f"{', '.join('-' if h is None else f'{h:.2f}' for _, h in rejoin)} s)")
    load = os.getloadavg()[0]
    worst = {k: max((r["p99"] for r in rows if r["transport"] == k and r["driver"] == "sim"), default=float("nan"))
             for k in ("zmq", "zmq-ipc", "mqtt")}
    ratio = max((r["ratio_p50"] for r in rows if r["ratio_p50"] is not None), default=float("nan"))
    wratio = max((r["wire_ratio_p50"] for r in rows if r["wire_ratio_p50"] is not None), default=float("nan"))
    print(f"summary: 1 BS + {args.surfaces} surfaces of {args.elements} x {args.bits}-bit elements at {args.baud} "
          f"baud, sim drivers p99 zmq {worst['zmq']:.2f} ms (ipc "
          f"{worst['zmq-ipc']:.2f}) / mqtt {worst['mqtt']:.2f} ms (targets 2 / 5 ms), emulated boards lat/apply "
          f"{ratio:.2f} (lat/wire {wratio:.2f}; target 1.2), load average {load:.1f} on {os.cpu_count()} cores, "
          f"CPU latency bound {sorted({r['cpu_latency'] for r in rows})}")


if __name__ == "__main__":
    main()
