#!/usr/bin/env bash
# Main job: train a small P1 policy, then deploy it as one daemon per agent (BS + two IRSs)
# driving two emulated PIN-diode boards and the twin over ZeroMQ, printing each slot's sum
# rate. About 1-2 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# 1. The twin on its own: one P1 channel snapshot, evaluated (the snapshot contract).
.venv/bin/ristwin twin sample --scenario p1 --seed 0 --out "$out/snap.npz"
.venv/bin/ristwin twin evaluate "$out/snap.npz"   # --json for the machine-readable form

# 2. Train a small MAQ-PG policy (a few hundred steps: a smoke-sized run, not a converged one).
# 200 steps cannot teach the paper's BS head its 2MK free beam entries (docs/RESULTS.md, P1),
# so the quickstart uses the project's opt-in head: MRT directions from the BS's channel
# observation and a learned power split (algo.bs_head=snr-power-mrt, needs CSI observations).
.venv/bin/ristwin train --scenario p1 --algo maq-pg --steps 200 --num-envs 4 --seed 0 \
  --set scenario.observation=csi --set algo.bs_head=snr-power-mrt \
  --eval-every 200 --checkpoint-every 200 --log-every 50 --out "$out/run" --quiet

# 3. Deploy the exported bundle: two board emulators, the twin server (slot clock + ZeroMQ
#    hub) and three agent daemons; one line per slot, then the run log's path.
cp examples/p1-quickstart.toml "$out/"
.venv/bin/ristwin deploy "$out/p1-quickstart.toml" --print-slots
