#!/usr/bin/env bash
# A long differential run of the edge's HTTP/1.1 relay against the general path (hyper):
# generated request byte streams go through both paths, each in front of a recording
# upstream, and both must accept the same requests with the same body lengths, or refuse
# alike (edge/tests/hostile/differential.rs). The test suite runs a few dozen streams on a
# fixed seed; this runs many on a fresh one.
#
#   bench/fuzz.sh                  # 5000 streams, seed from the clock
#   CASES=50000 SEED=42 bench/fuzz.sh
#
# A divergence is shrunk to a small stream and printed escaped: add that line to
# edge/tests/hostile/corpus.txt, which every test run replays. Traffic stays on 127.0.0.1.
set -euo pipefail

CASES=${CASES:-5000}
SEED=${SEED:-$(date +%s)}
[[ $CASES =~ ^[1-9][0-9]*$ && $SEED =~ ^[0-9]+$ ]] ||
    { echo "CASES must be ≥ 1 and SEED a number" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
echo "differential run: $CASES streams, seed $SEED (again: CASES=$CASES SEED=$SEED bench/fuzz.sh)" >&2
HOSTILE_DIFF_CASES=$CASES HOSTILE_DIFF_SEED=$SEED \
    cargo test --release -p shipit-edge --test hostile \
    differential::relay_and_general_path_agree_on_generated_streams -- --exact
