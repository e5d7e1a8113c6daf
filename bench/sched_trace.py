"""Who runs on the CPUs at the start of a slot: the control-loop bench under the kernel's
scheduler trace. Needs root and tracefs (Linux).

Runs ``bench/control_loop.py`` with the arguments after ``--``, waits ``--after-s`` for it to
reach its steady state, records ``sched_switch`` / ``sched_wakeup`` for ``--trace-s``, and
prints each thread's on-CPU time per slot inside the first ``--window-ms`` of its slots: the
twin server's threads, each agent daemon's main and ZeroMQ I/O threads, the board emulators,
and the idle time. A slot starts where the server's main thread ends a run longer than
``--step-ms`` (its twin step; the observations go out right after it), so use it on
configurations whose twin step is that long (the P1 bench scenario's is ~2 ms).

    sudo /work/venv/bin/python bench/sched_trace.py -- --slots 2000 --transports zmq --drivers emu \\
        --rejoin 0 --elements 256 --bits 1 --baud 115200
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRACEFS = Path("/sys/kernel/tracing")
EVENTS = ("sched_switch", "sched_wakeup")
_LINE = re.compile(r"\[(\d+)\].*?\s(\d+\.\d+): (sched_switch|sched_wakeup): (.*)")
_SWITCH = re.compile(r"prev_comm=(.*?) prev_pid=(\d+).*next_comm=(.*?) next_pid=(\d+)")


def _write(name: str, value: str) -> None:
    (TRACEFS / name).write_text(value)


def thread_labels(root_pid: int) -> dict[str, str]:
    """tid -> a readable label for the bench process and its children's threads."""
    labels: dict[str, str] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if int(proc.name) == root_pid:
            who = "srv"
        elif ppid != root_pid:
            continue
        elif m := re.search(r"--id (\S+)", cmd):
            who = m.group(1)
        elif m := re.search(r"emulate --tcp (\d+)", cmd):
            who = f"emu{m.group(1)}"
        else:
            who = Path(cmd.split(" ")[0]).name or proc.name
        for task in (proc / "task").iterdir():
            try:
                comm = (task / "comm").read_text().strip()
            except OSError:
                continue
            kind = "main" if task.name == proc.name else "IO" if "IO" in comm else comm
            labels[task.name] = f"{who}:{kind}"
    return labels


def on_cpu_intervals(trace: str, labels: dict[str, str]) -> dict[str, list[tuple[float, float]]]:
    current: dict[int, tuple[str, float]] = {}
    out: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for line in trace.splitlines():
        m = _LINE.search(line)
        if not m or m.group(3) != "sched_switch":
            continue
        cpu, t = int(m.group(1)), float(m.group(2))
        sw = _SWITCH.search(m.group(4))
        if not sw:
            continue
        if cpu in current:
            name, since = current.pop(cpu)
            out[name].append((since, t))
        nxt = sw.group(4)
        name = "idle" if nxt == "0" else labels.get(nxt, f"{sw.group(3)}")
        current[cpu] = (name, t)
    return out


def per_slot(intervals: dict[str, list[tuple[float, float]]], window_s: float, step_s: float) -> tuple[int, dict[str, float]]:
    starts = sorted(b for a, b in intervals.get("srv:main", []) if b - a > step_s)[1:-1]
    total: collections.Counter = collections.Counter()
    for s in starts:
        for name, spans in intervals.items():
            for a, b in spans:
                overlap = min(b, s + window_s) - max(a, s)
                if overlap > 0:
                    total[name] += overlap
    return len(starts), {k: v / max(1, len(starts)) for k, v in total.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--after-s", type=float, default=9.0, help="seconds to let the bench warm up first")
    ap.add_argument("--trace-s", type=float, default=0.4, help="seconds of trace")
    ap.add_argument("--window-ms", type=float, default=1.2, help="the part of each slot to account")
    ap.add_argument("--step-ms", type=float, default=1.0, help="a server main-thread run this long is a twin step")
    ap.add_argument("bench_args", nargs=argparse.REMAINDER, help="-- then bench/control_loop.py's arguments")
    args = ap.parse_args()
    bench_args = args.bench_args[1:] if args.bench_args[:1] == ["--"] else args.bench_args
    if not (TRACEFS / "trace").exists():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=False, capture_output=True)
    if not os.access(TRACEFS / "trace", os.W_OK):
        sys.exit(f"{TRACEFS}: not writable; run as root on a kernel with tracefs")
    _write("tracing_on", "0")
    _write("trace", "")
    _write("buffer_size_kb", "20000")
    for ev in EVENTS:
        _write(f"events/sched/{ev}/enable", "1")
    bench = subprocess.Popen([sys.executable, str(ROOT / "bench" / "control_loop.py"), *bench_args],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(args.after_s)
        labels = thread_labels(bench.pid)
        _write("tracing_on", "1")
        time.sleep(args.trace_s)
        _write("tracing_on", "0")
        trace = (TRACEFS / "trace").read_text()
    finally:
        _write("tracing_on", "0")
        for ev in EVENTS:
            _write(f"events/sched/{ev}/enable", "0")
        out, _ = bench.communicate()
    n, per = per_slot(on_cpu_intervals(trace, labels), args.window_ms / 1e3, args.step_ms / 1e3)
    print("\n".join(line for line in out.splitlines() if line.startswith(("zmq", "mqtt", "last answer"))))
    print(f"\non-CPU time in the first {args.window_ms:g} ms of {n} slots (us per slot; 'idle' summed over CPUs)")
    for name, s in sorted(per.items(), key=lambda kv: -kv[1]):
        if s * 1e6 >= 0.5:
            print(f"  {name:24s} {s * 1e6:8.1f}")
    groups: collections.Counter = collections.Counter()
    for name, s in per.items():
        who, _, kind = name.partition(":")
        groups["server" if who == "srv" else "emulators" if who.startswith("emu") else "idle" if name == "idle"
               else f"agents:{kind or 'other'}" if who[:2] in ("bs", "ir", "st") else "other"] += s * 1e6
    print("summary: " + ", ".join(f"{k} {v:.0f} us" for k, v in sorted(groups.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
