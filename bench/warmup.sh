#!/usr/bin/env bash
# Warm-up: the latency clients see right after a switch, with and without warm-up traffic,
# against the floor (the same clients on the same release once it is warm), in one run.
#
#   bench/warmup.sh                                  # the defaults below
#   ROUNDS=5 COLD_REQUESTS=400 bench/warmup.sh
#   BENCH_BIN=target/debug/shipit bench/warmup.sh    # a shipit binary already built
#
# examples/hello plays a slow-starting service: its first COLD_REQUESTS requests (but health
# and version checks) take COLD_MS longer (HELLO_COLD_REQUESTS, HELLO_COLD_MS). Each round
# releases it twice, once without and once with `[services.hello.warmup]` (WARMUP_REQUESTS
# GETs on /, 8 at a time), and right after each release sends CLIENT_REQUESTS GETs through
# the edge, CLIENTS at a time, timing each; then the same again on the now warm release: the
# floor. It prints p50, p99 and max per case over all rounds.
#
# Its own state directory and edge port; traffic to 127.0.0.1 only; every client run is
# bounded by its request count and a 10 s timeout per request; what it started is removed on
# exit.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
COLD_REQUESTS=${COLD_REQUESTS:-200}
COLD_MS=${COLD_MS:-50}
WARMUP_REQUESTS=${WARMUP_REQUESTS:-$((COLD_REQUESTS * 2))}
CLIENT_REQUESTS=${CLIENT_REQUESTS:-400}
CLIENTS=${CLIENTS:-8}
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $CLIENT_REQUESTS =~ ^[1-9][0-9]*$ && $CLIENTS =~ ^[1-9][0-9]*$ ]] ||
    { echo "ROUNDS, CLIENT_REQUESTS and CLIENTS must be ≥ 1" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
REPRODUCE="ROUNDS=$ROUNDS COLD_REQUESTS=$COLD_REQUESTS COLD_MS=$COLD_MS WARMUP_REQUESTS=$WARMUP_REQUESTS CLIENT_REQUESTS=$CLIENT_REQUESTS CLIENTS=$CLIENTS bench/warmup.sh"

say() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "error: $*"; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer \`docker info\`"
command -v python3 >/dev/null || die "python3 is needed for the clients"

TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
if [[ -n ${BENCH_BIN:-} ]]; then
    SHIPIT=$BENCH_BIN
else
    say "building the release binary: cargo build --release -p shipit"
    cargo build --release --quiet -p shipit
    SHIPIT=$TARGET_DIR/release/shipit
fi
[[ -x $SHIPIT ]] || die "no shipit binary at $SHIPIT"
say "building the hello binary (static, as examples/hello's pre_build does)"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --quiet --release --locked -p hello \
    --target x86_64-unknown-linux-gnu --target-dir "$TARGET_DIR/hello"
mkdir -p examples/hello/dist
cp "$TARGET_DIR/hello/x86_64-unknown-linux-gnu/release/hello" examples/hello/dist/hello

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shipit-warmup-bench.XXXXXX")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SERVICE=warmup-bench-$$
export NO_COLOR=1

# One config per case; the same service, state and edge, so both cases replace each other.
write_config() {
    local file=$1 warmup=$2
    cat >"$file" <<EOF
state_dir = "$WORK/state"
project = "warmup-bench-$$"

[services.$SERVICE]
context = "$ROOT/examples/hello"
port = 8080

[services.$SERVICE.env]
HELLO_COLD_REQUESTS = "$COLD_REQUESTS"
HELLO_COLD_MS = "$COLD_MS"

[services.$SERVICE.health]
path = "/healthz"
interval = "50ms"

[services.$SERVICE.verify]
version_path = "/version"

[targets.local]
kind = "local"
listen = "127.0.0.1:$PORT"
drain_timeout = "5s"
stop_timeout = "2s"
EOF
    if [[ $warmup == yes ]]; then
        printf '\n[services.%s.warmup]\nrequests = %s\nconcurrency = 8\n' \
            "$SERVICE" "$WARMUP_REQUESTS" >>"$file"
    fi
}
write_config "$WORK/cold.toml" no
write_config "$WORK/warm.toml" yes

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    "$SHIPIT" -q -c "$WORK/cold.toml" down >/dev/null 2>&1 || say "warning: shipit down failed"
    local pidfile=$WORK/state/edge/local/edge.pid
    if [[ -f $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
    docker images -q --filter "label=shipit.service=$SERVICE" | sort -u |
        xargs -r docker rmi -f >/dev/null 2>&1 || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# CLIENT_REQUESTS GETs on / through the edge, CLIENTS at a time: one latency (ms) per line.
clients() {
    python3 - "$PORT" "$CLIENT_REQUESTS" "$CLIENTS" <<'PY'
import http.client, sys, threading, time
port, total, clients = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
lock = threading.Lock()
left = [total]
out = []
def run():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while True:
        with lock:
            if left[0] == 0:
                return
            left[0] -= 1
        t = time.perf_counter()
        conn.request("GET", "/")
        r = conn.getresponse()
        r.read()
        took = (time.perf_counter() - t) * 1000
        if r.status != 200:
            sys.exit(f"GET / answered {r.status}")
        with lock:
            out.append(took)
threads = [threading.Thread(target=run) for _ in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
if len(out) != total:
    sys.exit(f"only {len(out)} of {total} requests were answered")
print("\n".join(f"{x:.3f}" for x in out))
PY
}

for ((round = 1; round <= ROUNDS; round++)); do
    for case in cold warm; do
        say "round $round: release without$([[ $case == warm ]] && echo ' (with)') warm-up"
        "$SHIPIT" -q -c "$WORK/$case.toml" release >/dev/null 2>"$WORK/release.log" ||
            { tail -n 20 "$WORK/release.log" >&2; die "shipit release failed"; }
        label=$([[ $case == warm ]] && echo "with warm-up" || echo "without warm-up")
        clients | sed "s/^/$label\t/" >>"$WORK/samples"
        clients | sed "s/^/floor (warm release)\t/" >>"$WORK/samples"
    done
done

python3 - "$WORK/samples" "$REPRODUCE" "$ROUNDS" "$CLIENT_REQUESTS" <<'PY'
import sys, math
path, reproduce, rounds, per = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
cases = {}
for line in open(path):
    name, ms = line.rstrip("\n").split("\t")
    cases.setdefault(name, []).append(float(ms))
def q(xs, p):
    xs = sorted(xs)
    return xs[max(1, math.ceil(p * len(xs))) - 1]
print(f"first {per} client requests after a switch, {rounds} rounds (ms)")
print(f"{'case':<24}{'requests':>9}{'p50':>9}{'p99':>9}{'max':>9}")
for name in ["without warm-up", "with warm-up", "floor (warm release)"]:
    xs = cases.get(name, [])
    if xs:
        print(f"{name:<24}{len(xs):>9}{q(xs, .5):>9.2f}{q(xs, .99):>9.2f}{max(xs):>9.2f}")
print(f"\nreproduce: {reproduce}")
PY
