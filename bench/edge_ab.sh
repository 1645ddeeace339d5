#!/usr/bin/env bash
# Two builds of the shipit edge against each other, on the same backend, in alternating
# rounds: the way to tell whether a change to the edge costs throughput, with the drift of a
# long run (a busy neighbour, thermal state) cancelled out by pairing each round.
#
#   bench/edge_ab.sh BEFORE_SHIPIT AFTER_SHIPIT          # e.g. two release builds
#   ROUNDS=10 WRK_DURATION=8s bench/edge_ab.sh A B
#   LOAD=h2c bench/edge_ab.sh A B                        # HTTP/2 cleartext with h2load
#
# Build the two binaries from two revisions in worktrees, each with its own target dir:
#   git worktree add /tmp/before <rev> && (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target \
#     cargo build --release --locked -p shipit -p hello)
# The backend is examples/hello from the AFTER build's folder (or HELLO=path). Both edges
# get the same connection allowance. Prints each round and the median of the paired
# ratios (after / before); everything it starts is stopped on exit.
set -euo pipefail
[[ $# -eq 2 ]] || { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
BEFORE=$1 AFTER=$2
HELLO=${HELLO:-$(dirname "$AFTER")/hello}
ROUNDS=${ROUNDS:-10}
WRK_DURATION=${WRK_DURATION:-8s}
# wrk: HTTP/1.1, `wrk -t2 -c64`; h2c: HTTP/2 with prior knowledge, `h2load -c32 -m10 -t2`.
LOAD=${LOAD:-wrk}
case $LOAD in
    wrk) command -v wrk >/dev/null || { echo "wrk is needed (Debian: apt-get install wrk)" >&2; exit 1; } ;;
    h2c) command -v h2load >/dev/null || { echo "h2load is needed (Debian: apt-get install nghttp2-client)" >&2; exit 1; } ;;
    *) echo "LOAD is wrk or h2c, not $LOAD" >&2; exit 2 ;;
esac
for bin in "$BEFORE" "$AFTER" "$HELLO"; do [[ -x $bin ]] || { echo "not an executable: $bin" >&2; exit 1; }; done

WORK=$(mktemp -d -t shipit-edge-ab.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACKEND=$(free_port) PORT_B=$(free_port) PORT_A=$(free_port)
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

PORT=$BACKEND SHIPIT_RELEASE=r1 "$HELLO" >"$WORK/hello.log" 2>&1 & PIDS+=($!)
for side in before after; do
    mkdir -p "$WORK/$side"
    port=$PORT_B bin=$BEFORE
    [[ $side == after ]] && port=$PORT_A bin=$AFTER
    # An edge that knows the limit keys gets them raised; an older one runs without a config.
    cat >"$WORK/$side/shipit.toml" <<T
[services.bench]
port = 8080
[targets.local]
listen = "127.0.0.1:$port"
[targets.local.edge]
max_connections = 20000
max_connections_per_ip = 20000
T
    if "$bin" -c "$WORK/$side/shipit.toml" config check >/dev/null 2>&1; then
        "$bin" -c "$WORK/$side/shipit.toml" edge run --listen "127.0.0.1:$port" --dir "$WORK/$side" --target local 2>"$WORK/$side.log" &
    else
        "$bin" edge run --listen "127.0.0.1:$port" --dir "$WORK/$side" 2>"$WORK/$side.log" &
    fi
    PIDS+=($!)
done
for side in before after; do
    for _ in $(seq 100); do [[ -S $WORK/$side/admin.sock ]] && break; sleep 0.05; done
    curl -sf --unix-socket "$WORK/$side/admin.sock" -X PUT http://edge/routes/web/switch \
        -d "{\"slot\":\"blue\",\"release\":\"r1\",\"addr\":\"127.0.0.1:$BACKEND\"}" >/dev/null
done
for port in $PORT_B $PORT_A; do curl -sf "http://127.0.0.1:$port/" >/dev/null; done

echo "| round | before req/s | after req/s | after / before |"
echo "|---:|---:|---:|---:|"
load() {
    if [[ $LOAD == h2c ]]; then
        # h2load takes whole seconds; its summary line reads "finished in …, N req/s, …".
        h2load -c32 -m10 -t2 -D "${WRK_DURATION%s}" --warm-up-time=1 "http://127.0.0.1:$1/" \
            | awk '/^finished in/ {for (i = 1; i <= NF; i++) if ($(i+1) ~ /^req\/s/) print $i}'
    else
        wrk -t2 -c64 -d"$WRK_DURATION" "http://127.0.0.1:$1/" | awk '/Requests\/sec/ {print $2}'
    fi
}
ratios=()
for r in $(seq "$ROUNDS"); do
    # The side that goes first alternates, so a drift within a round favours neither.
    if (( r % 2 )); then
        b=$(load "$PORT_B"); a=$(load "$PORT_A")
    else
        a=$(load "$PORT_A"); b=$(load "$PORT_B")
    fi
    ratio=$(python3 -c "print(f'{$a/$b:.3f}')")
    ratios+=("$ratio")
    echo "| $r | $b | $a | $ratio |"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.stdin):.3f}")')
echo
echo "Median of the paired ratios (after / before): $median"
echo "Reproduce: LOAD=$LOAD ROUNDS=$ROUNDS WRK_DURATION=$WRK_DURATION bench/edge_ab.sh $BEFORE $AFTER"
