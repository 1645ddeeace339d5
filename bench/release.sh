#!/usr/bin/env bash
# The local-target benchmark: release and rollback wall time by phase, and the edge's
# throughput and latency against the live container, all in one run.
#
#   bench/release.sh                      # the defaults below
#   RELEASES=20 WRK_DURATION=30s bench/release.sh
#
# It releases examples/hello with its own state directory and edge port, so it never touches
# a `.shipit/` or an edge that someone else is using, and it removes what it started on exit
# (also on failure or Ctrl-C). Traffic goes to 127.0.0.1 only; every load run is bounded by
# wrk's duration. bench/README.md explains the numbers; bench/RESULTS.md has the latest ones.
set -euo pipefail

# Knobs (environment). The defaults are the ones bench/RESULTS.md was produced with.
RELEASES=${RELEASES:-10}             # timed consecutive releases, after one warm-up release
ROLLBACKS=${ROLLBACKS:-$RELEASES}    # timed rollbacks, each right after a release
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-64}
WRK_DURATION=${WRK_DURATION:-10s}
WRK_WARMUP=${WRK_WARMUP:-2s}         # untimed run per path and profile: connections, caches
WRK_ROUNDS=${WRK_ROUNDS:-3}          # alternating direct/edge rounds per load profile
BENCH_KEEP=${BENCH_KEEP:-}           # set to 1 to keep the raw records and logs
[[ $RELEASES =~ ^[1-9][0-9]*$ && $ROLLBACKS =~ ^[0-9]+$ && $WRK_ROUNDS =~ ^[1-9][0-9]*$ ]] ||
    { echo "RELEASES and WRK_ROUNDS must be ≥ 1, ROLLBACKS ≥ 0" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# The example's migrate hook would add a one-off container to every timed release; the bench
# measures the release itself, so it runs a copy of the example's config without [hooks]
# (beside it, so its relative paths hold), removed on exit.
CONFIG=examples/hello/.bench-release-$$.toml
awk '/^\[services\.hello\.hooks\]/ { skip = 1; next } /^\[/ { skip = 0 } !skip' \
    examples/hello/shipit.toml >"$CONFIG"
trap 'rm -f "$CONFIG"' EXIT
SERVICE=hello
TARGET=local
REPRODUCE="RELEASES=$RELEASES ROLLBACKS=$ROLLBACKS WRK_THREADS=$WRK_THREADS WRK_CONNECTIONS=$WRK_CONNECTIONS WRK_DURATION=$WRK_DURATION WRK_ROUNDS=$WRK_ROUNDS bench/release.sh"

say() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- Tools -----------------------------------------------------------------------------

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer \`docker info\`"
command -v python3 >/dev/null || die "python3 is needed to read the records and wrk's output"
if ! command -v wrk >/dev/null; then
    # Same load generator for the edge and the direct run, from the distribution, so the
    # numbers can be reproduced on any Debian box.
    say "wrk is missing: installing it with apt-get (Debian package \`wrk\`)"
    if ! apt-get install -y -qq wrk >/dev/null 2>&1; then
        say "apt-get install failed; running apt-get update first, then retrying"
        apt-get update -qq >/dev/null
        apt-get install -y -qq wrk >/dev/null
    fi
fi

# `shipit down` at the end removes every container labelled with this service and target,
# whatever state dir started it. Refuse rather than remove somebody else's running example.
others=$(docker ps -aq --filter "label=shipit.service=$SERVICE" --filter "label=shipit.target=$TARGET")
if [[ -n $others ]]; then
    die "containers of service $SERVICE on target $TARGET already exist (${others//$'\n'/ }); \
they belong to another \`shipit release -c $CONFIG\`. Run \`shipit down -c $CONFIG\` there first."
fi

# --- Build -----------------------------------------------------------------------------

say "building the release binary: cargo build --release -p shipit"
cargo build --release --quiet -p shipit
TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
SHIPIT=$TARGET_DIR/release/shipit
[[ -x $SHIPIT ]] || die "no binary at $SHIPIT after the build"

# --- Isolation and cleanup -------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shipit-bench.XXXXXX")
RAW=$WORK/raw
mkdir -p "$WORK/state" "$RAW"
# A port the kernel just handed out and released: free unless something grabs it meanwhile.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export SHIPIT_STATE_DIR=$WORK/state
export HELLO_LISTEN=127.0.0.1:$PORT
export NO_COLOR=1
EDGE_URL=http://$HELLO_LISTEN/
FLOOR_NAME=shipit-bench-floor-$$

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    say "cleaning up: shipit down, then removing $WORK"
    "$SHIPIT" -q -c "$CONFIG" down >/dev/null 2>&1 || say "warning: shipit down failed"
    docker rm -f "$FLOOR_NAME" >/dev/null 2>&1 || true
    # down stops the edge only once it has no routes; make sure ours is gone either way.
    local pidfile=$SHIPIT_STATE_DIR/edge/$TARGET/edge.pid
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
    rm -f "$CONFIG"
    if [[ -n $BENCH_KEEP ]]; then
        say "raw records and logs kept in $RAW"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Releases and rollbacks ------------------------------------------------------------

# Runs `shipit <command> --json` and appends "<kind> <wall ms> <record file>" to the index.
# Wall time is taken around the exec with $EPOCHREALTIME (no fork), so it includes process
# start, config loading, the git revision, the engine connection and exit: what a user waits.
timed() {
    local kind=$1 n=$2 command=$3
    local out=$RAW/$kind-$n.json log=$RAW/$kind-$n.log
    local t0 t1
    t0=$EPOCHREALTIME
    if ! "$SHIPIT" -c "$CONFIG" "$command" --json >"$out" 2>"$log"; then
        tail -n 30 "$log" >&2
        die "shipit $command ($kind $n) failed; its log is above"
    fi
    t1=$EPOCHREALTIME
    echo "$kind $(python3 -c "print(round(($t1 - $t0) * 1000, 1))") $out" >>"$RAW/index"
}

say "state dir $SHIPIT_STATE_DIR, edge on $HELLO_LISTEN"
say "warm-up release: runs the example's pre_build and builds or reuses the image (not timed)"
timed warmup 0 release

# Other work on this box skews every number; the load averages go into the report.
cut -d' ' -f1-3 /proc/loadavg >"$RAW/loadavg-releases"
say "$RELEASES timed releases (image reused)"
for ((i = 1; i <= RELEASES; i++)); do
    timed release "$i" release
done

# Each rollback follows a release, so it brings back the release just replaced, whose
# stopped container is still in the other slot: the case "rollback under a second while its
# slot is warm" is about. The release before it is not timed.
say "$ROLLBACKS timed rollbacks (each after an untimed release)"
for ((i = 1; i <= ROLLBACKS; i++)); do
    timed setup "$i" release
    timed rollback "$i" rollback
done

# --- The engine's floor ----------------------------------------------------------------

# The same image created, started, stopped and removed straight through the Engine API:
# what launch and retire cannot go below whatever shipit does.
say "engine floor: $RELEASES× create/start/inspect/stop/remove of the same image, by the Engine API"
IMAGE_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["image_id"])' "$RAW/release-$RELEASES.json")
python3 "$ROOT/bench/engine_floor.py" "$IMAGE_ID" "$RELEASES" "$FLOOR_NAME" "$RAW/engine-floor.json"

# --- Load: through the edge vs. direct to the live container ---------------------------

"$SHIPIT" -c "$CONFIG" edge status --json >"$RAW/edge-status.json"
DIRECT=$(python3 - "$RAW/edge-status.json" "$SERVICE" <<'EOF'
import json, sys
status = json.load(open(sys.argv[1]))
print(next(r["live"]["addr"] for r in status["routes"] if r["service"] == sys.argv[2]))
EOF
)
EDGE_PID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$RAW/edge-status.json")
DIRECT_URL=http://$DIRECT/
rss() { awk '/^VmRSS/ {print $2}' "/proc/$EDGE_PID/status"; }
echo "$(rss)" >"$RAW/edge-rss-idle"
# With the engine's userland proxy, "direct" is wrk → docker-proxy → app, not wrk → app.
pgrep -c -x docker-proxy >"$RAW/docker-proxies" || true
cut -d' ' -f1-3 /proc/loadavg >"$RAW/loadavg-load"

# Two profiles, each run the same way against both addresses:
# - saturation: the connections/threads asked for; this is throughput, and its latencies
#   include queueing on this machine's two cores, which wrk, the edge, docker-proxy and the
#   app all share.
# - one connection: no queueing, so edge minus direct is what the extra hop costs a request.
# Direct and edge alternate for WRK_ROUNDS rounds, so a burst of other work on the box hits
# both paths alike; the report pairs each round's edge run with its direct run.
wrk_profile() {
    local profile=$1 threads=$2 connections=$3 round path url
    say "load: wrk -t$threads -c$connections -d$WRK_DURATION --latency, $WRK_ROUNDS rounds of direct $DIRECT_URL then edge $EDGE_URL"
    wrk -t"$threads" -c"$connections" -d"$WRK_WARMUP" "$DIRECT_URL" >/dev/null
    wrk -t"$threads" -c"$connections" -d"$WRK_WARMUP" "$EDGE_URL" >/dev/null
    for ((round = 1; round <= WRK_ROUNDS; round++)); do
        for path in direct edge; do
            [[ $path == direct ]] && url=$DIRECT_URL || url=$EDGE_URL
            wrk -t"$threads" -c"$connections" -d"$WRK_DURATION" --latency "$url" \
                >"$RAW/wrk-$profile-$path-$round.txt"
        done
    done
}
wrk_profile sat "$WRK_THREADS" "$WRK_CONNECTIONS"
wrk_profile one 1 1
echo "$(rss)" >"$RAW/edge-rss-after"

# --- Report ----------------------------------------------------------------------------

echo "Reproduce: $REPRODUCE"
echo
python3 "$ROOT/bench/release_report.py" "$RAW" \
    "wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION --latency" "wrk -t1 -c1 -d$WRK_DURATION --latency"
echo
echo "Reproduce: $REPRODUCE"
