#!/usr/bin/env bash
# Main job. Grows with the product: today it samples a P1 channel snapshot and evaluates it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup
out=$(mktemp -d)
.venv/bin/ristwin twin sample --scenario p1 --seed 0 --out "$out/snap.npz"
.venv/bin/ristwin twin evaluate "$out/snap.npz" --json
