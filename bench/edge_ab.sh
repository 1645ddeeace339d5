#!/usr/bin/env bash
# Two builds of the shipit edge against each other, on the same backend, in alternating
# rounds: the way to tell whether a change to the edge costs throughput, with the drift of a
# long run (a busy neighbour, thermal state) cancelled out by pairing each round.
#
#   bench/edge_ab.sh BEFORE_SHIPIT AFTER_SHIPIT          # e.g. two release builds
#   ROUNDS=10 WRK_DURATION=8s bench/edge_ab.sh A B
#   LOAD=h2c bench/edge_ab.sh A B                        # HTTP/2 cleartext with h2load
#   LOAD=h2 bench/edge_ab.sh A B                         # HTTP/2 over TLS with h2load
#   LOAD=https bench/edge_ab.sh A B                      # HTTP/1.1 over TLS with wrk
#
# Build the two binaries from two revisions in worktrees, each with its own target dir:
#   git worktree add /tmp/before <rev> && (cd /tmp/before && CARGO_TARGET_DIR=/tmp/before-target \
#     cargo build --release --locked -p shipit -p hello)
# The backend is examples/hello from the AFTER build's folder (or HELLO=path). Both edges
# get the same connection allowance. Prints each round and the medians of the paired
# ratios (after / before) of requests/s and of the edge's CPU time per request (user +
# system, from /proc): on a box whose neighbours take cores now and then, the CPU per
# request moves less than the rate. Everything it starts is stopped on exit.
set -euo pipefail
[[ $# -eq 2 ]] || { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
BEFORE=$1 AFTER=$2
HELLO=${HELLO:-$(dirname "$AFTER")/hello}
ROUNDS=${ROUNDS:-10}
WRK_DURATION=${WRK_DURATION:-8s}
# wrk: HTTP/1.1, `wrk -t2 -c64`; https: the same over TLS; h2c: HTTP/2 with prior
# knowledge, `h2load -c32 -m10 -t2`; h2: the same over TLS (ALPN h2). The TLS loads use a
# self-signed RSA 2048 certificate made for the run, as bench/edge_compare.sh does.
LOAD=${LOAD:-wrk}
case $LOAD in
    wrk | https) command -v wrk >/dev/null || { echo "wrk is needed (Debian: apt-get install wrk)" >&2; exit 1; } ;;
    h2c | h2) command -v h2load >/dev/null || { echo "h2load is needed (Debian: apt-get install nghttp2-client)" >&2; exit 1; } ;;
    *) echo "LOAD is wrk, https, h2c or h2, not $LOAD" >&2; exit 2 ;;
esac
for bin in "$BEFORE" "$AFTER" "$HELLO"; do [[ -x $bin ]] || { echo "not an executable: $bin" >&2; exit 1; }; done

WORK=$(mktemp -d -t shipit-edge-ab.XXXXXX)
# Five different free ports, each held until all are chosen (a port released at once can
# be handed straight back), and all released before they are printed.
read -r BACKEND PORT_B PORT_A TLS_B TLS_A < <(python3 -c '
import socket
held = [socket.socket() for _ in range(5)]
for s in held: s.bind(("127.0.0.1", 0))
ports = [s.getsockname()[1] for s in held]
for s in held: s.close()
print(*ports)')
TLS_CONFIG=() SCHEME=http CURL_TLS=()
if [[ $LOAD == https || $LOAD == h2 ]]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$WORK/key.pem" \
        -out "$WORK/cert.pem" >"$WORK/openssl.log" 2>&1 || { cat "$WORK/openssl.log" >&2; exit 1; }
    SCHEME=https CURL_TLS=(--cacert "$WORK/cert.pem")
fi
PIDS=()
declare -A EDGE_PID
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

PORT=$BACKEND SHIPIT_RELEASE=r1 "$HELLO" >"$WORK/hello.log" 2>&1 & PIDS+=($!)
for side in before after; do
    mkdir -p "$WORK/$side"
    port=$PORT_B tls=$TLS_B bin=$BEFORE
    [[ $side == after ]] && port=$PORT_A tls=$TLS_A bin=$AFTER
    TLS_CONFIG=()
    [[ $SCHEME == https ]] && TLS_CONFIG=("tls_listen = \"127.0.0.1:$tls\"" \
        "certificates = [{ cert = \"$WORK/cert.pem\", key = \"$WORK/key.pem\" }]")
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
    printf '%s\n' "${TLS_CONFIG[@]}" >>"$WORK/$side/shipit.toml"
    if "$bin" -c "$WORK/$side/shipit.toml" config check >/dev/null 2>&1; then
        "$bin" -c "$WORK/$side/shipit.toml" edge run --listen "127.0.0.1:$port" --dir "$WORK/$side" --target local 2>"$WORK/$side.log" &
    elif [[ $SCHEME == http ]]; then
        "$bin" edge run --listen "127.0.0.1:$port" --dir "$WORK/$side" 2>"$WORK/$side.log" &
    else
        echo "$bin does not take this config (a TLS load needs tls_listen):" >&2
        "$bin" -c "$WORK/$side/shipit.toml" config check >&2 || true
        exit 1
    fi
    PIDS+=($!)
    EDGE_PID[$side]=$!
done
for side in before after; do
    for _ in $(seq 100); do [[ -S $WORK/$side/admin.sock ]] && break; sleep 0.05; done
    curl -sf --unix-socket "$WORK/$side/admin.sock" -X PUT http://edge/routes/web/switch \
        -d "{\"slot\":\"blue\",\"release\":\"r1\",\"addr\":\"127.0.0.1:$BACKEND\"}" >/dev/null
done
[[ $SCHEME == https ]] && PORT_B=$TLS_B PORT_A=$TLS_A
# Each edge answers through the route (the TLS listener may start a moment after the
# admin socket); the last try fails the script.
for port in $PORT_B $PORT_A; do
    for _ in $(seq 100); do curl -sf "${CURL_TLS[@]}" "$SCHEME://127.0.0.1:$port/" >/dev/null && break; sleep 0.05; done
    curl -sf "${CURL_TLS[@]}" "$SCHEME://127.0.0.1:$port/" >/dev/null
done

TICKS=$(getconf CLK_TCK)
# The edge's user + system CPU time so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "| round | before req/s | after req/s | after / before | before CPU µs/req | after CPU µs/req | after / before |"
echo "|---:|---:|---:|---:|---:|---:|---:|"
# One load on port $1; prints "requests/s requests".
load() {
    if [[ $LOAD == h2c || $LOAD == h2 ]]; then
        # h2load takes whole seconds; its summary reads "finished in …, N req/s, …" and
        # "requests: N total, N started, N done, N succeeded, …".
        h2load -c32 -m10 -t2 -D "${WRK_DURATION%s}" "$SCHEME://127.0.0.1:$1/" | awk '
            /^finished in/ {for (i = 1; i <= NF; i++) if ($(i+1) ~ /^req\/s/) rate = $i}
            /^requests:/ {done = $8}
            END {print rate, done}'
    else
        wrk -t2 -c64 -d"$WRK_DURATION" "$SCHEME://127.0.0.1:$1/" | awk '
            / requests in / {done = $1}
            /Requests\/sec/ {rate = $2}
            END {print rate, done}'
    fi
}
# One load on side $1 ($2: its port); prints "requests/s CPU-µs-per-request".
measure() {
    local pid=${EDGE_PID[$1]} before after rate done
    before=$(cpu_ticks "$pid")
    read -r rate done < <(load "$2")
    after=$(cpu_ticks "$pid")
    python3 -c "print($rate, f'{($after - $before) / $TICKS * 1e6 / $done:.2f}')"
}
ratios=() cpu_ratios=()
for r in $(seq "$ROUNDS"); do
    # The side that goes first alternates, so a drift within a round favours neither.
    if (( r % 2 )); then
        read -r b b_cpu < <(measure before "$PORT_B"); read -r a a_cpu < <(measure after "$PORT_A")
    else
        read -r a a_cpu < <(measure after "$PORT_A"); read -r b b_cpu < <(measure before "$PORT_B")
    fi
    ratio=$(python3 -c "print(f'{$a/$b:.3f}')")
    cpu_ratio=$(python3 -c "print(f'{$a_cpu/$b_cpu:.3f}')")
    ratios+=("$ratio") cpu_ratios+=("$cpu_ratio")
    echo "| $r | $b | $a | $ratio | $b_cpu | $a_cpu | $cpu_ratio |"
done
median_of() { printf '%s\n' "$@" | python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.stdin):.3f}")'; }
echo
echo "Median of the paired ratios (after / before): requests/s $(median_of "${ratios[@]}"), CPU per request $(median_of "${cpu_ratios[@]}")"
echo "Reproduce: LOAD=$LOAD ROUNDS=$ROUNDS WRK_DURATION=$WRK_DURATION bench/edge_ab.sh $BEFORE $AFTER"
