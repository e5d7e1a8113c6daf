"""One agent daemon's slot in one process, without a bus: CPU per section and per whole slot.

A surface daemon (sim driver) and the BS daemon of the control-loop bench's deployment (P1
with 4 surfaces, an untrained MAQ-PG bundle) answer pre-encoded observations through the
daemon's own slot path (``_observation_for_me`` + ``_answer_now``, sends into a recorder);
the BS also decodes the four surfaces' answers it overhears each slot, when they wake it at
slot close. Sections are timed alone (best of 5 x ``--reps``); "whole slot" is this thread's
CPU per slot over ``--slots`` slots in a row: the answer alone (what lies in the latency
window) and with the peers' reports. Warm caches: in the running loop (six processes on two cores) the same code
costs several times more, so compare trees with this, and latency with
``bench/control_loop.py``.

    /work/venv/bin/python bench/daemon_slot.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIM = "sim://?elements=10&bits=1,2,3"


class Recorder:
    """What a slot uses of the ZeroMQ client: publish, and arming the quiet socket."""

    def __init__(self) -> None:
        self.sent: dict[str, bytes] = {}
        self.armed = False

    def publish(self, topic: str, body: bytes) -> None:
        self.sent[topic] = body

    def arm_quiet(self, armed: bool = True) -> None:
        self.armed = armed


def measure(bundle_dir: Path, agent: str, slots: int, reps: int, peer_reports: list[tuple[str, bytes]]) -> dict:
    from controller import messages as m
    from controller.daemon import AgentDaemon, DaemonConfig
    from controller.transports import BusConfig
    from twin.hil import CONFIG_FROM_ACTION

    surface = not agent.startswith("bs")
    d = AgentDaemon(DaemonConfig(bus=BusConfig(kind="zmq"), agent=agent, bundle=str(bundle_dir),
                                 driver_url=SIM if surface else ""))
    rng = np.random.default_rng(0)
    dim = d.bundle.obs_dim(agent)
    far = time.time() + 3600
    payloads = [m.encode(m.Observation(s, agent, rng.standard_normal(dim).astype(np.float32), far, time.time()))
                for s in range(slots + 50)]
    client = Recorder()

    def answer(payload: bytes) -> None:
        msg = d._observation_for_me(payload)
        d._answer_now(client, msg, time.thread_time(), payload)

    def slot(payload: bytes) -> None:
        answer(payload)
        if peer_reports:    # what the daemon does when they wake it at slot close (_sync_loop)
            d._peer_raw.extend(peer_reports)
            d._absorb_peers()

    def per_slot(f) -> float:
        for p in payloads[:50]:
            f(p)
        c0 = time.thread_time()
        for p in payloads[50:]:
            f(p)
        return (time.thread_time() - c0) / slots * 1e6

    whole = per_slot(slot)
    window = per_slot(answer) if peer_reports else whole

    def best(f) -> float:
        f()
        return min(timeit.repeat(f, number=reps, repeat=5)) / reps * 1e6

    payload = payloads[0]
    msg = m.decode(payload)
    decided = d._decide(msg)
    rows = {"decode + check the observation": best(lambda: d._observation_for_me(payload)),
            "decide": best(lambda: d.bundle.decide(agent, msg.obs))}
    if surface:
        to_config = CONFIG_FROM_ACTION[d.bundle.scenario_name]
        args = (decided[1], msg.obs, d.bundle.scenario_config, d.board_resolutions)
        requested = to_config(*args)
        rows["action -> SurfaceConfig (twin.hil)"] = best(lambda: to_config(*args))
        rows["sim driver apply + readback check"] = best(lambda: d.driver.apply(requested, on_mismatch="return"))
    rows["apply + encode the answer"] = best(lambda: d._apply_and_report(msg, decided, time.thread_time()))
    rows["share body"] = best(lambda: d._share_body(msg, decided[0], payload))
    if peer_reports:
        body = peer_reports[0][1]
        rows["decode one peer's answer"] = best(lambda: m.decode(body))
    rows["whole slot: the answer (in the latency window)"] = window
    rows["whole slot, with the peers' reports at slot close"] = whole
    if d.driver is not None:
        d.driver.close()
    return {"agent": agent, "rows": rows, "counters": dict(d.counters)}


def surface_answers(bundle_dir: Path, n: int) -> list[tuple[str, bytes]]:
    """One answer per surface, as its daemon sends it (what the BS overhears every slot)."""
    from controller import messages as m
    from controller.daemon import AgentDaemon, DaemonConfig
    from controller.transports import BusConfig

    out = []
    for i in range(n):
        agent = f"irs{i}"
        d = AgentDaemon(DaemonConfig(bus=BusConfig(kind="zmq"), agent=agent, bundle=str(bundle_dir), driver_url=SIM))
        obs = np.random.default_rng(i).standard_normal(d.bundle.obs_dim(agent)).astype(np.float32)
        rec = Recorder()
        d._answer_now(rec, m.Observation(0, agent, obs, time.time() + 60, time.time()), time.thread_time())
        out.append((f"act/{agent}", rec.sent[f"act/{agent}"]))
        d.driver.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slots", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=2000)
    ap.add_argument("--surfaces", type=int, default=4)
    args = ap.parse_args()

    import torch

    from control_loop import make_bundle   # the same bundle as the control-loop bench

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="ristwin-daemon-slot-") as tmp:
        bundle = make_bundle(Path(tmp) / "bundle", "maq-pg", args.surfaces)
        results = [measure(bundle, "irs0", args.slots, args.reps, []),
                   measure(bundle, "bs0", args.slots, args.reps, surface_answers(bundle, args.surfaces))]
    names = list(dict.fromkeys(k for r in results for k in r["rows"]))
    print(f"{'section (us, this thread CPU)':50s} " + " ".join(f"{r['agent']:>8s}" for r in results))
    for k in names:
        print(f"{k:50s} " + " ".join(f"{r['rows'][k]:8.1f}" if k in r["rows"] else f"{'-':>8s}" for r in results))
    irs = results[0]["rows"]["whole slot: the answer (in the latency window)"]
    bs, bs_all = (results[1]["rows"][k] for k in ("whole slot: the answer (in the latency window)",
                                                   "whole slot, with the peers' reports at slot close"))
    print(f"summary: in-process daemon slot CPU, surface {irs:.1f} us, BS {bs:.1f} us answering and "
          f"{bs_all:.1f} us with its {args.surfaces} peer answers decoded, warm caches, one process")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "bench"))
    main()
