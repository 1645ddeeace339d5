#!/usr/bin/env bash
# The edge against nginx, HAProxy and Caddy: throughput, latency, failed requests during
# switches under load, switch latency and memory, on this machine, in one run.
#
#   bench/edge_compare.sh              # the full run: about 9 minutes once built
#   bench/edge_compare.sh --quick      # a smoke run: under 2 minutes once built
#   ROUNDS=5 WRK_DURATION=20s bench/edge_compare.sh   # knobs: see below
#
# Every proxy runs as the invoking user on 127.0.0.1, with its own temp dir and ports, in
# front of the same two backends: examples/hello built natively, run as two plain processes
# (blue and green, with different release ids so /version tells them apart). wrk is the load
# generator, in its own process. bench/README.md explains the method and the fairness
# choices; bench/RESULTS.md has the latest full run. Everything this script starts is
# stopped on exit (also on failure or Ctrl-C), and its temp dir is removed.
set -euo pipefail

QUICK=
for arg in "$@"; do
    case $arg in
        --quick) QUICK=1 ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

# Knobs (environment). The defaults are the ones bench/RESULTS.md was produced with.
if [[ -n $QUICK ]]; then
    d_duration=3s d_warmup=1s d_rounds=1 d_quiet=5 d_loaded=10 d_conns=1000
else
    d_duration=10s d_warmup=2s d_rounds=3 d_quiet=20 d_loaded=50 d_conns=10000
fi
WRK_THREADS=${WRK_THREADS:-2}
WRK_CONNECTIONS=${WRK_CONNECTIONS:-64}     # the saturation profile's fixed concurrency
WRK_DURATION=${WRK_DURATION:-$d_duration}
WRK_WARMUP=${WRK_WARMUP:-$d_warmup}        # untimed run per target and profile
ROUNDS=${ROUNDS:-$d_rounds}                # rounds of every target in turn, per profile
QUIET_SWITCHES=${QUIET_SWITCHES:-$d_quiet} # switch latency with only the poller running
LOADED_SWITCHES=${LOADED_SWITCHES:-$d_loaded} # switches under wrk load, failures counted
SWITCH_INTERVAL_MS=${SWITCH_INTERVAL_MS:-500} # longer than an nginx reload takes here
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-$d_conns}
PROXIES=${PROXIES:-shipit nginx haproxy caddy}
BENCH_KEEP=${BENCH_KEEP:-}                 # set to 1 to keep configs, logs and raw output
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $QUIET_SWITCHES =~ ^[1-9][0-9]*$ && $LOADED_SWITCHES =~ ^[1-9][0-9]*$ &&
    $SWITCH_INTERVAL_MS =~ ^[1-9][0-9]*$ && $IDLE_CONNECTIONS =~ ^[0-9]+$ ]] ||
    { echo "ROUNDS, QUIET_SWITCHES, LOADED_SWITCHES and SWITCH_INTERVAL_MS must be ≥ 1" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# Its own target dir, so a release build does not fight with the debug builds of the shared
# target/ (and is kept between runs: about 8 minutes the first time on 2 cores).
BENCH_TARGET=${BENCH_TARGET_DIR:-$HOME/.cache/shipit-bench/target}
OUT=${BENCH_OUT:-bench/edge_compare${QUICK:+-quick}.json}
# The full command line, every knob spelled out, so the report says how to get it again.
REPRODUCE="WRK_THREADS=$WRK_THREADS WRK_CONNECTIONS=$WRK_CONNECTIONS WRK_DURATION=$WRK_DURATION \
ROUNDS=$ROUNDS QUIET_SWITCHES=$QUIET_SWITCHES LOADED_SWITCHES=$LOADED_SWITCHES \
SWITCH_INTERVAL_MS=$SWITCH_INTERVAL_MS IDLE_CONNECTIONS=$IDLE_CONNECTIONS PROXIES='$PROXIES' \
bench/edge_compare.sh${QUICK:+ --quick}"

say() { printf '[edge-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- Build (in the background) and tools -----------------------------------------------

command -v cargo >/dev/null || die "cargo is needed to build shipit and examples/hello"
command -v python3 >/dev/null || die "python3 is needed for the poller, the connection holder and the report"
command -v curl >/dev/null || die "curl is needed to wait for the backends and proxies to answer"
mkdir -p "$BENCH_TARGET"
BUILD_LOG=$BENCH_TARGET/edge-bench-build.log
say "building shipit and examples/hello in release mode in $BENCH_TARGET (log: $BUILD_LOG)"
CARGO_TARGET_DIR=$BENCH_TARGET cargo build --release --locked -p shipit -p hello -p floor-proxy >"$BUILD_LOG" 2>&1 &
BUILD_PID=$!
# Until the cleanup below takes over: do not leave the build running if this script stops.
trap 'kill "$BUILD_PID" 2>/dev/null || true' EXIT

# The other proxies and the load generator come from Debian's packages, so any Debian box
# gets the same versions. Their packaged services are not used: each runs from a temp dir.
missing=()
for tool in wrk:wrk nginx:nginx haproxy:haproxy caddy:caddy; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]} with apt-get"
    if ! apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
        say "apt-get install failed; running apt-get update first, then retrying"
        apt-get update -qq >/dev/null
        apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

if ! wait "$BUILD_PID"; then
    tail -n 30 "$BUILD_LOG" >&2
    die "the release build failed; its log is above"
fi
SHIPIT=$BENCH_TARGET/release/shipit
HELLO=$BENCH_TARGET/release/hello
FLOOR=$BENCH_TARGET/release/floor-proxy
[[ -x $SHIPIT && -x $HELLO && -x $FLOOR ]] || die "no binaries at $SHIPIT, $HELLO and $FLOOR after the build"

# 10k client connections need 10k descriptors in the client and in the proxy.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < IDLE_CONNECTIONS + 1000)); then
    die "the open-file limit is $(ulimit -n), too low for IDLE_CONNECTIONS=$IDLE_CONNECTIONS; \
raise the hard limit (ulimit -Hn) or lower IDLE_CONNECTIONS"
fi

# --- Isolation and cleanup -------------------------------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shipit-edge-bench.XXXXXX")
RAW=$WORK/raw
mkdir -p "$RAW"
declare -A PID=()

# Whether pid runs: our exited children stay zombies (which `kill -0` still finds) until
# the shell reaps them.
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ ${stat##*) } != Z* ]]
}

stop_pid() {
    local pid=$1 signal=$2
    kill -"$signal" "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        running "$pid" || return 0
        sleep 0.05
    done
    say "warning: pid $pid did not stop on SIG$signal within 5 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    say "cleaning up: stopping the proxies and backends this run started"
    for name in "${!PID[@]}"; do
        # nginx: QUIT is its graceful stop; the others stop on TERM.
        [[ $name == nginx ]] && stop_pid "${PID[$name]}" QUIT || stop_pid "${PID[$name]}" TERM
    done
    if [[ -n $BENCH_KEEP ]]; then
        say "configs, logs and raw output kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Ports below the kernel's ephemeral range (net.ipv4.ip_local_port_range), so that no
# outgoing connection on this busy box can take one between this check and the bind: a port
# the kernel hands out for port 0 is in that range, and is free again for any connect() as
# soon as the check closes it. Each is checked by binding it on every address (hello listens
# on 0.0.0.0).
read -r BLUE_PORT GREEN_PORT SHIPIT_PORT NGINX_PORT HAPROXY_PORT CADDY_PORT CADDY_ADMIN_PORT FLOOR_PORT < <(python3 -c '
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
ports = []
for port in random.sample(range(max(1024, low - 12000), low), 200):
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            continue
    ports.append(port)
    if len(ports) == 8:
        break
print(*ports)')
[[ -n $FLOOR_PORT ]] || die "found no 8 free ports below the ephemeral port range"

# Waits until URL answers 200, at most 10 s; names what it waited for when it gives up.
wait_http() {
    local what=$1 url=$2 log=$3
    for _ in $(seq 200); do
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
        sleep 0.05
    done
    tail -n 20 "$log" >&2 || true
    die "$what did not answer 200 at $url within 10 s; its log is above"
}

# --- Backends: examples/hello as blue and green ----------------------------------------

for slot in blue green; do
    port_var=${slot^^}_PORT
    PORT=${!port_var} SHIPIT_RELEASE=bench-$slot SHIPIT_SLOT=$slot SHIPIT_VERSION=bench \
        "$HELLO" 2>"$WORK/hello-$slot.log" &
    PID[hello-$slot]=$!
    wait_http "hello ($slot)" "http://127.0.0.1:${!port_var}/version" "$WORK/hello-$slot.log"
done

# --- The proxies, each pointing at blue ------------------------------------------------

URL_DIRECT=http://127.0.0.1:$BLUE_PORT/
# The floor: bench/floor, a proxy that only forwards (no routing, timeouts, metrics or error
# answers), in front of blue. It is not switched; it shows what any proxy pays here.
URL_FLOOR=http://127.0.0.1:$FLOOR_PORT/
mkdir -p "$WORK/floor"
"$FLOOR" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$BLUE_PORT" 2>"$WORK/floor/floor.log" &
PID[floor]=$!
wait_http "the floor proxy" "${URL_FLOOR}version" "$WORK/floor/floor.log"
declare -A URL=(
    [shipit]=http://127.0.0.1:$SHIPIT_PORT/
    [nginx]=http://127.0.0.1:$NGINX_PORT/
    [haproxy]=http://127.0.0.1:$HAPROXY_PORT/
    [caddy]=http://127.0.0.1:$CADDY_PORT/
)

# shipit: the edge as `shipit release` starts it (the tokio runtime as shipped: one worker
# per core), with the route set through its admin API.
# Its connection limits are raised to what nginx and HAProxy get below (every load comes from
# 127.0.0.1, so the per-client limit would otherwise refuse the idle connections past 1024).
start_shipit() {
    local dir=$WORK/shipit
    mkdir -p "$dir"
    cat >"$dir/shipit.toml" <<EOF
[services.bench]
port = 8080
[targets.local]
listen = "127.0.0.1:$SHIPIT_PORT"
[targets.local.edge]
max_connections = $((IDLE_CONNECTIONS + 1000))
max_connections_per_ip = $((IDLE_CONNECTIONS + 1000))
EOF
    "$SHIPIT" -c "$dir/shipit.toml" edge run --listen "127.0.0.1:$SHIPIT_PORT" --dir "$dir" \
        --target local 2>"$dir/edge.log" &
    PID[shipit]=$!
    for _ in $(seq 200); do [[ -S $dir/admin.sock ]] && break; sleep 0.05; done
    [[ -S $dir/admin.sock ]] || { tail -n 20 "$dir/edge.log" >&2; die "the shipit edge made no admin socket within 10 s"; }
}

# nginx: two workers, keep-alive to the upstream, no access log. A switch renames the
# other slot's config over nginx.conf and runs `nginx -s reload`.
start_nginx() {
    local dir=$WORK/nginx slot port user=""
    mkdir -p "$dir/tmp"
    # Only a master started as root switches its workers' user; keep them the invoking user.
    ((EUID == 0)) && user="user $(id -un) $(id -gn);"
    for slot in blue green; do
        port_var=${slot^^}_PORT
        cat >"$dir/nginx-$slot.conf" <<EOF
$user
worker_processes 2;
worker_rlimit_nofile $(ulimit -n);
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections $((IDLE_CONNECTIONS + 1000));
}
http {
    access_log off;
    client_body_temp_path $dir/tmp/client_body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    upstream app {
        server 127.0.0.1:${!port_var};
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header X-Forwarded-Host \$host;
        }
    }
}
EOF
    done
    cp "$dir/nginx-blue.conf" "$dir/nginx.conf"
    nginx -q -t -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" || die "nginx refused $dir/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;' 2>>"$dir/error.log" &
    PID[nginx]=$!
}

# HAProxy: one process, two threads, keep-alive on both sides with server connections
# shared between clients (http-reuse always), no log. Both slots are servers of one
# backend; the idle one is in maintenance, and a switch swaps the states at runtime.
start_haproxy() {
    local dir=$WORK/haproxy
    mkdir -p "$dir"
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 2
    # HAProxy wants two descriptors per connection (client and server) and refuses to
    # start when it cannot raise its file limit that far. Idle clients on shared server
    # connections need about one each, so it runs with the limit it has (and says so).
    maxconn $((IDLE_CONNECTIONS + 1000))
    no strict-limits
    stats socket $dir/admin.sock mode 600 level admin

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 30s
    timeout http-keep-alive 60s

frontend bench
    bind 127.0.0.1:$HAPROXY_PORT
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend app

backend app
    server blue 127.0.0.1:$BLUE_PORT
    server green 127.0.0.1:$GREEN_PORT disabled
EOF
    haproxy -q -c -f "$dir/haproxy.cfg" || die "haproxy refused $dir/haproxy.cfg"
    haproxy -db -f "$dir/haproxy.cfg" >"$dir/haproxy.log" 2>&1 &
    PID[haproxy]=$!
}

# Caddy: GOMAXPROCS as Go sets it (one per core), keep-alive to the upstream, no access log
# (Caddy logs requests only when a server asks for it). A switch loads the other slot's
# whole config through the admin API. Its config and data dirs are in the temp dir.
start_caddy() {
    local dir=$WORK/caddy slot
    mkdir -p "$dir"
    for slot in blue green; do
        port_var=${slot^^}_PORT
        cat >"$dir/caddy-$slot.json" <<EOF
{
  "admin": {"listen": "127.0.0.1:$CADDY_ADMIN_PORT", "config": {"persist": false}},
  "logging": {"logs": {"default": {"level": "WARN"}}},
  "apps": {"http": {"servers": {"bench": {
    "listen": ["127.0.0.1:$CADDY_PORT"],
    "automatic_https": {"disable": true},
    "routes": [{"handle": [{
      "handler": "reverse_proxy",
      "upstreams": [{"dial": "127.0.0.1:${!port_var}"}],
      "transport": {"protocol": "http", "keep_alive": {"enabled": true, "max_idle_conns_per_host": 64}}
    }]}]
  }}}}
}
EOF
    done
    HOME=$dir XDG_CONFIG_HOME=$dir/config XDG_DATA_HOME=$dir/data \
        caddy run --config "$dir/caddy-blue.json" 2>"$dir/caddy.log" &
    PID[caddy]=$!
}

for proxy in $PROXIES; do
    case $proxy in
        shipit | nginx | haproxy | caddy) "start_$proxy" ;;
        *) die "unknown proxy $proxy in PROXIES (known: shipit nginx haproxy caddy)" ;;
    esac
done

# What the Python helpers need to know: backends, URLs, pids, admin endpoints.
python3 - "$WORK/targets.json" <<EOF
import json, sys
proxies = {}
for name in "$PROXIES".split():
    proxies[name] = {"url": {"shipit": "${URL[shipit]}", "nginx": "${URL[nginx]}",
                             "haproxy": "${URL[haproxy]}", "caddy": "${URL[caddy]}"}[name]}
extra = {
    "shipit": {"admin_socket": "$WORK/shipit/admin.sock", "service": "bench"},
    "nginx": {"prefix": "$WORK/nginx", "conf": "$WORK/nginx/nginx.conf",
              "error_log": "$WORK/nginx/error.log",
              "confs": {"blue": "$WORK/nginx/nginx-blue.conf", "green": "$WORK/nginx/nginx-green.conf"}},
    "haproxy": {"socket": "$WORK/haproxy/admin.sock"},
    "caddy": {"admin": "127.0.0.1:$CADDY_ADMIN_PORT",
              "configs": {"blue": "$WORK/caddy/caddy-blue.json", "green": "$WORK/caddy/caddy-green.json"}},
}
for name in proxies:
    proxies[name].update(extra[name])
json.dump({
    "backends": {"blue": {"addr": "127.0.0.1:$BLUE_PORT", "release": "bench-blue"},
                 "green": {"addr": "127.0.0.1:$GREEN_PORT", "release": "bench-green"}},
    "proxies": proxies,
}, open(sys.argv[1], "w"), indent=1)
EOF

if [[ " $PROXIES " == *" shipit "* ]]; then
    python3 bench/edge_switch.py set "$WORK/targets.json" shipit blue
fi
for proxy in $PROXIES; do
    wait_http "$proxy" "${URL[$proxy]}version" "$WORK/$proxy/"*.log
    running "${PID[$proxy]}" || die "$proxy exited; see $WORK/$proxy"
done
say "backends blue :$BLUE_PORT and green :$GREEN_PORT; proxies:$(for p in $PROXIES; do port=${URL[$p]##*:}; printf ' %s :%s' "$p" "${port%/}"; done)"

# --- Versions and machine, for the report ----------------------------------------------

{
    echo "shipit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- edge cli pipeline 2>/dev/null || echo ' (with uncommitted changes in edge/, cli/ or pipeline/)')"
    echo "nginx $(nginx -v 2>&1 | sed 's|.*/||')"
    echo "haproxy $(haproxy -v | sed -n '1s/HAProxy version \([^ ]*\).*/\1/p')"
    echo "caddy $(caddy version | cut -d' ' -f1)"
    echo "wrk $(wrk -v 2>&1 | sed -n '1s/wrk \(debian\/\)\{0,1\}\([^ ]*\).*/\2/p')"
    echo "machine nproc=$(nproc), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "date $(date -u '+%Y-%m-%d %H:%M UTC')"
} >"$RAW/versions"

# --- Memory at rest --------------------------------------------------------------------

for proxy in $PROXIES; do
    python3 bench/edge_memory.py "${PID[$proxy]}" "${URL[$proxy]}" 0 "$RAW/memory-start-$proxy.json"
done

# --- Throughput and latency ------------------------------------------------------------

# Two profiles, each run against every target in turn, ROUNDS times, so a burst of other
# work on the box hits all targets alike:
# - saturation: WRK_CONNECTIONS connections; requests/s is the throughput, and its latencies
#   include queueing on the cores that wrk, the proxy and the backend share.
# - one connection: no queueing, so proxy − direct is what the extra hop costs a request.
TARGETS="direct floor $PROXIES"
target_url() {
    case $1 in
        direct) echo "$URL_DIRECT" ;;
        floor) echo "$URL_FLOOR" ;;
        *) echo "${URL[$1]}" ;;
    esac
}
# Whose CPU time a run is charged to: the proxy's process tree, or hello for "direct".
target_pid() { [[ $1 == direct ]] && echo "${PID[hello-blue]}" || echo "${PID[$1]}"; }
cpu_ticks() { python3 bench/edge_memory.py --cpu-ticks "$(target_pid "$1")"; }
wrk_profile() {
    local profile=$1 threads=$2 connections=$3 round target
    say "load: wrk -t$threads -c$connections -d$WRK_DURATION --latency, $ROUNDS rounds of: $TARGETS"
    for target in $TARGETS; do
        wrk -t"$threads" -c"$connections" -d"$WRK_WARMUP" "$(target_url "$target")" >/dev/null
    done
    for ((round = 1; round <= ROUNDS; round++)); do
        for target in $TARGETS; do
            cut -d' ' -f1 /proc/loadavg >"$RAW/loadavg-$profile-$target-$round"
            before=$(cpu_ticks "$target")
            wrk -t"$threads" -c"$connections" -d"$WRK_DURATION" --latency "$(target_url "$target")" \
                >"$RAW/wrk-$profile-$target-$round.txt"
            echo "$before $(cpu_ticks "$target") $(getconf CLK_TCK)" >"$RAW/cpu-$profile-$target-$round"
        done
    done
}
wrk_profile sat "$WRK_THREADS" "$WRK_CONNECTIONS"
wrk_profile one 1 1

# --- Switches --------------------------------------------------------------------------

# Switch latency with nothing but the poller running.
for proxy in $PROXIES; do
    say "switch latency: $QUIET_SWITCHES switches of $proxy, one every $SWITCH_INTERVAL_MS ms, no other load"
    python3 bench/edge_switch.py switch "$WORK/targets.json" "$proxy" "$QUIET_SWITCHES" \
        "$SWITCH_INTERVAL_MS" "$RAW/switch-quiet-$proxy.json"
done

# Switches under the saturation load: wrk runs from 1 s before the first switch until after
# the last; every socket error and non-2xx it counts is a failed request.
span_s=$(((LOADED_SWITCHES * SWITCH_INTERVAL_MS + 999) / 1000 + 3))
for proxy in $PROXIES; do
    say "failures: $LOADED_SWITCHES switches of $proxy under wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${span_s}s"
    cut -d' ' -f1 /proc/loadavg >"$RAW/loadavg-switch-$proxy"
    wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${span_s}s" --latency "${URL[$proxy]}" \
        >"$RAW/wrk-switch-$proxy.txt" &
    wrk_pid=$!
    # The load's lead-in before the first switch: connections open and warm.
    sleep 1
    python3 bench/edge_switch.py switch "$WORK/targets.json" "$proxy" "$LOADED_SWITCHES" \
        "$SWITCH_INTERVAL_MS" "$RAW/switch-loaded-$proxy.json"
    wait "$wrk_pid"
done

# --- Memory with many idle connections -------------------------------------------------

for proxy in $PROXIES; do
    say "memory: $proxy at rest, then holding $IDLE_CONNECTIONS idle keep-alive connections"
    python3 bench/edge_memory.py "${PID[$proxy]}" "${URL[$proxy]}" "$IDLE_CONNECTIONS" \
        "$RAW/memory-conns-$proxy.json"
done

for proxy in $PROXIES; do
    running "${PID[$proxy]}" || die "$proxy exited during the run; see $WORK/$proxy"
done

# --- Report ----------------------------------------------------------------------------

echo "Reproduce: $REPRODUCE"
echo
python3 bench/edge_report.py "$RAW" "$OUT" "$REPRODUCE" "$TARGETS" \
    "wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION --latency" "wrk -t1 -c1 -d$WRK_DURATION --latency" \
    "$SWITCH_INTERVAL_MS" "$IDLE_CONNECTIONS"
echo
echo "Raw numbers: $OUT"
echo "Reproduce: $REPRODUCE"
