#!/usr/bin/env bash
# The edge against nginx, HAProxy and Caddy: throughput and latency on plain HTTP/1.1, HTTPS
# HTTP/1.1, HTTP/2 over TLS and h2c, new TLS connections per second, failed requests during
# switches under load, switch latency and memory (also with idle TLS connections), on this
# machine, in one run.
#
#   bench/edge_compare.sh              # the full run: about 23 minutes once built
#   bench/edge_compare.sh --quick      # a smoke run: about 3 minutes once built
#   PROFILES='https h2 h2c handshake tls-memory' bench/edge_compare.sh --quick   # TLS only
#   ROUNDS=5 WRK_DURATION=20s CERT_KEY=ecdsa bench/edge_compare.sh   # knobs: see below
#
# Every proxy runs as the invoking user on 127.0.0.1, with its own temp dir and ports, in
# front of the same two backends: examples/hello built natively, run as two plain processes
# (blue and green, with different release ids so /version tells them apart), and serves TLS
# with the same certificate, made for the run. wrk, h2load and openssl s_time are the load
# generators, in their own processes. bench/README.md explains the method and the fairness
# choices; bench/RESULTS.md has the latest full run. Everything this script starts is
# stopped on exit (also on failure or Ctrl-C), and its temp dir is removed.
set -euo pipefail

QUICK=
for arg in "$@"; do
    case $arg in
        --quick) QUICK=1 ;;
        -h | --help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

# Knobs (environment). The defaults are the ones bench/RESULTS.md was produced with.
if [[ -n $QUICK ]]; then
    d_duration=3s d_warmup=1s d_rounds=1 d_quiet=5 d_loaded=10 d_conns=1000 d_handshake=2s
else
    d_duration=10s d_warmup=2s d_rounds=3 d_quiet=50 d_loaded=50 d_conns=10000 d_handshake=10s
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
# What to measure, in this order whatever the order given:
#   plain      wrk on plain HTTP/1.1: saturation and one connection (with direct and floor)
#   https      wrk on HTTPS HTTP/1.1, keep-alive, saturation
#   h2         h2load, HTTP/2 over TLS (ALPN h2)
#   h2c        h2load, HTTP/2 cleartext with prior knowledge
#   handshake  openssl s_time: new TLS connections per second, full and resumed handshakes
#   switch     switch latency, and failed requests during switches under load
#   memory     RSS with IDLE_CONNECTIONS idle plain keep-alive connections
#   tls-memory RSS with TLS_IDLE_CONNECTIONS idle TLS connections
ALL_PROFILES="plain https h2 h2c handshake switch memory tls-memory"
PROFILES=${PROFILES:-$ALL_PROFILES}
CERT_KEY=${CERT_KEY:-rsa}                  # the certificate's key: rsa (2048) or ecdsa (P-256)
# The floor's runtime: per-core (one current-thread runtime per core, as the edge runs its
# serving threads, and as nginx and HAProxy run one event loop per worker) or multi-thread
# (tokio's, as the edge ran before its serving threads).
FLOOR_RUNTIME=${FLOOR_RUNTIME:-per-core}
H2_CLIENTS=${H2_CLIENTS:-32}               # h2load -c: connections
H2_STREAMS=${H2_STREAMS:-10}               # h2load -m: concurrent streams per connection
HANDSHAKE_CLIENTS=${HANDSHAKE_CLIENTS:-8}  # openssl s_time processes side by side
HANDSHAKE_DURATION=${HANDSHAKE_DURATION:-$d_handshake} # per run, full and resumed each
TLS_IDLE_CONNECTIONS=${TLS_IDLE_CONNECTIONS:-$IDLE_CONNECTIONS}
BENCH_KEEP=${BENCH_KEEP:-}                 # set to 1 to keep configs, logs and raw output
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $QUIET_SWITCHES =~ ^[1-9][0-9]*$ && $LOADED_SWITCHES =~ ^[1-9][0-9]*$ &&
    $SWITCH_INTERVAL_MS =~ ^[1-9][0-9]*$ && $IDLE_CONNECTIONS =~ ^[0-9]+$ &&
    $H2_CLIENTS =~ ^[1-9][0-9]*$ && $H2_STREAMS =~ ^[1-9][0-9]*$ &&
    $HANDSHAKE_CLIENTS =~ ^[1-9][0-9]*$ && $TLS_IDLE_CONNECTIONS =~ ^[0-9]+$ ]] ||
    { echo "ROUNDS, QUIET_SWITCHES, LOADED_SWITCHES, SWITCH_INTERVAL_MS, H2_CLIENTS, H2_STREAMS and \
HANDSHAKE_CLIENTS must be ≥ 1; IDLE_CONNECTIONS and TLS_IDLE_CONNECTIONS ≥ 0" >&2; exit 2; }
for profile in $PROFILES; do
    [[ " $ALL_PROFILES " == *" $profile "* ]] ||
        { echo "unknown profile $profile in PROFILES (known: $ALL_PROFILES)" >&2; exit 2; }
done
[[ $CERT_KEY == rsa || $CERT_KEY == ecdsa ]] || { echo "CERT_KEY is rsa or ecdsa, not $CERT_KEY" >&2; exit 2; }
[[ $FLOOR_RUNTIME == multi-thread || $FLOOR_RUNTIME == per-core ]] ||
    { echo "FLOOR_RUNTIME is multi-thread or per-core, not $FLOOR_RUNTIME" >&2; exit 2; }
measures() { [[ " $PROFILES " == *" $1 "* ]]; }
# Whole seconds of a wrk-style duration (30, 30s, 2m), for h2load and s_time.
seconds() {
    local d=$1
    case $d in
        *m) echo $((${d%m} * 60)) ;;
        *s) echo "${d%s}" ;;
        *) echo "$d" ;;
    esac
}
[[ $(seconds "$WRK_DURATION") =~ ^[1-9][0-9]*$ && $(seconds "$WRK_WARMUP") =~ ^[0-9]+$ &&
    $(seconds "$HANDSHAKE_DURATION") =~ ^[1-9][0-9]*$ ]] ||
    { echo "WRK_DURATION, WRK_WARMUP and HANDSHAKE_DURATION are whole seconds or minutes here (10s, 2m)" >&2; exit 2; }
DURATION_S=$(seconds "$WRK_DURATION")
WARMUP_S=$(seconds "$WRK_WARMUP")
HANDSHAKE_S=$(seconds "$HANDSHAKE_DURATION")
# The most connections any profile holds at once: the proxies' limits and the file limit.
MOST_CONNECTIONS=$((IDLE_CONNECTIONS > TLS_IDLE_CONNECTIONS ? IDLE_CONNECTIONS : TLS_IDLE_CONNECTIONS))

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# Its own target dir, so a release build does not fight with the debug builds of the shared
# target/ (and is kept between runs: about 8 minutes the first time on 2 cores).
BENCH_TARGET=${BENCH_TARGET_DIR:-$HOME/.cache/shipit-bench/target}
OUT=${BENCH_OUT:-bench/edge_compare${QUICK:+-quick}.json}
# The full command line, every knob spelled out, so the report says how to get it again.
REPRODUCE="WRK_THREADS=$WRK_THREADS WRK_CONNECTIONS=$WRK_CONNECTIONS WRK_DURATION=$WRK_DURATION \
WRK_WARMUP=$WRK_WARMUP ROUNDS=$ROUNDS QUIET_SWITCHES=$QUIET_SWITCHES LOADED_SWITCHES=$LOADED_SWITCHES \
SWITCH_INTERVAL_MS=$SWITCH_INTERVAL_MS IDLE_CONNECTIONS=$IDLE_CONNECTIONS \
TLS_IDLE_CONNECTIONS=$TLS_IDLE_CONNECTIONS CERT_KEY=$CERT_KEY FLOOR_RUNTIME=$FLOOR_RUNTIME H2_CLIENTS=$H2_CLIENTS \
H2_STREAMS=$H2_STREAMS HANDSHAKE_CLIENTS=$HANDSHAKE_CLIENTS HANDSHAKE_DURATION=$HANDSHAKE_DURATION \
PROXIES='$PROXIES' \
PROFILES='$PROFILES' bench/edge_compare.sh${QUICK:+ --quick}"

say() { printf '[edge-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- Build (in the background) and tools -----------------------------------------------

command -v cargo >/dev/null || die "cargo is needed to build shipit and examples/hello"
command -v python3 >/dev/null || die "python3 is needed for the poller, the connection holder and the report"
command -v curl >/dev/null || die "curl is needed to wait for the backends and proxies to answer"
command -v timeout >/dev/null || die "timeout (coreutils) is needed to bound every load run"
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
for tool in wrk:wrk nginx:nginx haproxy:haproxy caddy:caddy h2load:nghttp2-client openssl:openssl; do
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
if (($(ulimit -n) < MOST_CONNECTIONS + 1000)); then
    die "the open-file limit is $(ulimit -n), too low for IDLE_CONNECTIONS=$IDLE_CONNECTIONS and \
TLS_IDLE_CONNECTIONS=$TLS_IDLE_CONNECTIONS; raise the hard limit (ulimit -Hn) or lower them"
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
# The TLS ports serve HTTPS (HTTP/1.1 or HTTP/2 by ALPN); the h2c ports serve HTTP/2 with
# prior knowledge (the shipit edge does that on its plain port, beside HTTP/1.1).
read -r BLUE_PORT GREEN_PORT SHIPIT_PORT NGINX_PORT HAPROXY_PORT CADDY_PORT CADDY_ADMIN_PORT FLOOR_PORT \
    SHIPIT_TLS_PORT NGINX_TLS_PORT HAPROXY_TLS_PORT CADDY_TLS_PORT NGINX_H2C_PORT HAPROXY_H2C_PORT \
    CADDY_H2C_PORT < <(python3 -c '
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
    if len(ports) == 15:
        break
print(*ports)')
[[ -n $CADDY_H2C_PORT ]] || die "found no 15 free ports below the ephemeral port range"

# Waits until URL answers 200, at most 10 s; names what it waited for when it gives up.
# Any further arguments go to curl.
wait_http() {
    local what=$1 url=$2 log=$3
    shift 3
    for _ in $(seq 200); do
        curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null && return 0
        sleep 0.05
    done
    tail -n 20 "$log" >&2 || true
    die "$what did not answer 200 at $url within 10 s; its log is above"
}

# --- The certificate every proxy serves ------------------------------------------------

# Self-signed, for localhost and 127.0.0.1, made for this run: RSA 2048 (what most sites
# still serve) or, with CERT_KEY=ecdsa, ECDSA P-256. HAProxy reads the chain and the key
# from one file.
CERT_DIR=$WORK/cert
mkdir -p "$CERT_DIR"
CERT=$CERT_DIR/cert.pem
CERT_KEY_FILE=$CERT_DIR/key.pem
case $CERT_KEY in
    rsa) key_args=(-newkey rsa:2048) CERT_LABEL="RSA 2048" ;;
    ecdsa) key_args=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) CERT_LABEL="ECDSA P-256" ;;
esac
openssl req -x509 "${key_args[@]}" -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$CERT_KEY_FILE" -out "$CERT" \
    >"$CERT_DIR/openssl.log" 2>&1 || { cat "$CERT_DIR/openssl.log" >&2; die "openssl could not make the certificate"; }
cat "$CERT" "$CERT_KEY_FILE" >"$CERT_DIR/haproxy.pem"

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
FLOOR_ARGS=()
[[ $FLOOR_RUNTIME == per-core ]] && FLOOR_ARGS=(per-core)
"$FLOOR" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$BLUE_PORT" "${FLOOR_ARGS[@]}" 2>"$WORK/floor/floor.log" &
PID[floor]=$!
wait_http "the floor proxy" "${URL_FLOOR}version" "$WORK/floor/floor.log"
declare -A URL=(
    [shipit]=http://127.0.0.1:$SHIPIT_PORT/
    [nginx]=http://127.0.0.1:$NGINX_PORT/
    [haproxy]=http://127.0.0.1:$HAPROXY_PORT/
    [caddy]=http://127.0.0.1:$CADDY_PORT/
)
declare -A TLS_URL=(
    [shipit]=https://127.0.0.1:$SHIPIT_TLS_PORT/
    [nginx]=https://127.0.0.1:$NGINX_TLS_PORT/
    [haproxy]=https://127.0.0.1:$HAPROXY_TLS_PORT/
    [caddy]=https://127.0.0.1:$CADDY_TLS_PORT/
)
declare -A H2C_URL=(
    [shipit]=http://127.0.0.1:$SHIPIT_PORT/
    [nginx]=http://127.0.0.1:$NGINX_H2C_PORT/
    [haproxy]=http://127.0.0.1:$HAPROXY_H2C_PORT/
    [caddy]=http://127.0.0.1:$CADDY_H2C_PORT/
)

# shipit: the edge as `shipit release` starts it (as shipped: one serving thread per core,
# each with its own event loop), with the route set through its admin API, and its TLS listener
# (`tls_listen`, the certificate as the default one; ALPN h2 and http/1.1). Its plain
# listener serves h2c with prior knowledge beside HTTP/1.1.
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
max_connections = $((MOST_CONNECTIONS + 1000))
max_connections_per_ip = $((MOST_CONNECTIONS + 1000))
tls_listen = "127.0.0.1:$SHIPIT_TLS_PORT"
certificates = [{ cert = "$CERT", key = "$CERT_KEY_FILE" }]
EOF
    "$SHIPIT" -c "$dir/shipit.toml" edge run --listen "127.0.0.1:$SHIPIT_PORT" --dir "$dir" \
        --target local 2>"$dir/edge.log" &
    PID[shipit]=$!
    for _ in $(seq 200); do [[ -S $dir/admin.sock ]] && break; sleep 0.05; done
    [[ -S $dir/admin.sock ]] || { tail -n 20 "$dir/edge.log" >&2; die "the shipit edge made no admin socket within 10 s"; }
}

# nginx: two workers, keep-alive to the upstream, no access log. A switch renames the
# other slot's config over nginx.conf and runs `nginx -s reload`. One server per listener:
# plain HTTP/1.1; TLS with HTTP/2 by ALPN (`listen ... ssl http2`, nginx 1.22's form; its
# default ssl_protocols leaves TLS 1.3 out, so they are named as the others default them);
# and h2c (`listen ... http2` without ssl, which nginx 1.22 serves as HTTP/2 only, with prior
# knowledge).
start_nginx() {
    local dir=$WORK/nginx slot port user=""
    mkdir -p "$dir/tmp"
    # Only a master started as root switches its workers' user; keep them the invoking user.
    ((EUID == 0)) && user="user $(id -un) $(id -gn);"
    cat >"$dir/location.conf" <<EOF
location / {
    proxy_pass http://app;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host \$host;
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto \$scheme;
    proxy_set_header X-Forwarded-Host \$host;
}
EOF
    for slot in blue green; do
        port_var=${slot^^}_PORT
        cat >"$dir/nginx-$slot.conf" <<EOF
$user
worker_processes 2;
worker_rlimit_nofile $(ulimit -n);
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections $((MOST_CONNECTIONS + 1000));
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
        keepalive 512;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        include $dir/location.conf;
    }
    server {
        listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
        ssl_certificate $CERT;
        ssl_certificate_key $CERT_KEY_FILE;
        ssl_protocols TLSv1.2 TLSv1.3;
        include $dir/location.conf;
    }
    server {
        listen 127.0.0.1:$NGINX_H2C_PORT http2;
        include $dir/location.conf;
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
# backend; the idle one is in maintenance, and a switch swaps the states at runtime. Three
# frontends on that backend: plain HTTP/1.1, TLS with ALPN h2 and http/1.1, and h2c
# (`proto h2`: HTTP/2 with prior knowledge).
start_haproxy() {
    local dir=$WORK/haproxy
    mkdir -p "$dir"
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 2
    # HAProxy wants two descriptors per connection (client and server) and refuses to
    # start when it cannot raise its file limit that far. Idle clients on shared server
    # connections need about one each, so it runs with the limit it has (and says so).
    maxconn $((MOST_CONNECTIONS + 1000))
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

frontend bench_tls
    bind 127.0.0.1:$HAPROXY_TLS_PORT ssl crt $CERT_DIR/haproxy.pem alpn h2,http/1.1
    option forwardfor
    http-request set-header X-Forwarded-Proto https
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend app

frontend bench_h2c
    bind 127.0.0.1:$HAPROXY_H2C_PORT proto h2
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
# whole config through the admin API. Its config and data dirs are in the temp dir. Three
# servers with the same route: plain HTTP/1.1 (as before: Caddy's default protocols, of
# which only h1 applies without TLS); TLS with the certificate loaded from its files and
# protocols h1 and h2 (its default would add h3, which no other proxy here serves, and an
# Alt-Svc header on every answer); and h1 with h2c.
start_caddy() {
    local dir=$WORK/caddy slot routes
    mkdir -p "$dir"
    for slot in blue green; do
        port_var=${slot^^}_PORT
        routes='[{"handle": [{
      "handler": "reverse_proxy",
      "upstreams": [{"dial": "127.0.0.1:'${!port_var}'"}],
      "transport": {"protocol": "http", "keep_alive": {"enabled": true, "max_idle_conns_per_host": 512}}
    }]}]'
        cat >"$dir/caddy-$slot.json" <<EOF
{
  "admin": {"listen": "127.0.0.1:$CADDY_ADMIN_PORT", "config": {"persist": false}},
  "logging": {"logs": {"default": {"level": "WARN"}}},
  "apps": {
   "tls": {"certificates": {"load_files": [{"certificate": "$CERT", "key": "$CERT_KEY_FILE"}]}},
   "http": {"servers": {
   "bench": {
    "listen": ["127.0.0.1:$CADDY_PORT"],
    "automatic_https": {"disable": true},
    "routes": $routes
   },
   "bench_tls": {
    "listen": ["127.0.0.1:$CADDY_TLS_PORT"],
    "protocols": ["h1", "h2"],
    "automatic_https": {"disable": true},
    "tls_connection_policies": [{}],
    "routes": $routes
   },
   "bench_h2c": {
    "listen": ["127.0.0.1:$CADDY_H2C_PORT"],
    "protocols": ["h1", "h2c"],
    "automatic_https": {"disable": true},
    "routes": $routes
   }
  }}}
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

# The log that says why a proxy did not answer.
proxy_log() {
    case $1 in
        shipit) echo "$WORK/shipit/edge.log" ;;
        nginx) echo "$WORK/nginx/error.log" ;;
        haproxy) echo "$WORK/haproxy/haproxy.log" ;;
        caddy) echo "$WORK/caddy/caddy.log" ;;
    esac
}

if [[ " $PROXIES " == *" shipit "* ]]; then
    python3 bench/edge_switch.py set "$WORK/targets.json" shipit blue
fi
for proxy in $PROXIES; do
    wait_http "$proxy" "${URL[$proxy]}version" "$(proxy_log "$proxy")"
    running "${PID[$proxy]}" || die "$proxy exited; see $WORK/$proxy"
done
say "backends blue :$BLUE_PORT and green :$GREEN_PORT; proxies:$(for p in $PROXIES; do port=${URL[$p]##*:}; printf ' %s :%s' "$p" "${port%/}"; done)"

# --- What each proxy serves, checked before the load -----------------------------------

# Each profile a proxy is to be measured on is tried first, with the client of the
# profile, until it works (at most 10 s). One that never does is left out of that profile,
# and the report shows it as n/a with the reason found here.
declare -A NA=()
probe() {
    local profile=$1 proxy=$2 out=$WORK/probe-$1-$2.txt hostport
    case $profile in
        https | tls-memory)
            curl -fsS -o /dev/null --max-time 2 --http1.1 --cacert "$CERT" "${TLS_URL[$proxy]}" >"$out" 2>&1 ||
                { echo "HTTPS GET / with the bench certificate: $(tail -n 1 "$out")"; return 1; } ;;
        h2 | h2c)
            local url=${TLS_URL[$proxy]} alpn=h2
            [[ $profile == h2c ]] && url=${H2C_URL[$proxy]} alpn=h2c
            timeout -k 2 10 h2load -n4 -c1 -m1 "$url" >"$out" 2>&1 || true
            grep -q "^Application protocol: $alpn\$" "$out" ||
                { echo "h2load negotiated no $alpn: $(grep -m1 -E '^Application protocol|[Ee]rror|No protocol' "$out" || tail -n 1 "$out")"; return 1; }
            grep -q ' 4 succeeded' "$out" ||
                { echo "h2load: $(grep -m1 '^requests:' "$out" || tail -n 1 "$out")"; return 1; } ;;
        handshake)
            # s_time's exact request, on one connection: 200, then the proxy closes.
            hostport=${TLS_URL[$proxy]#https://}
            timeout -k 2 15 python3 bench/edge_tls_handshake.py "${hostport%/}" probe >"$out" 2>&1 ||
                { echo "the request s_time sends (bench/edge_tls_handshake.py): $(tail -n 1 "$out")"; return 1; } ;;
    esac
}
for profile in https h2 h2c handshake tls-memory; do
    measures "$profile" || continue
    for proxy in $PROXIES; do
        deadline=$((SECONDS + 10))
        until reason=$(probe "$profile" "$proxy") || ((SECONDS >= deadline)); do
            sleep 0.5
        done
        if [[ -n $reason ]]; then
            NA[$profile-$proxy]=$reason
            echo "$reason" >"$RAW/na-$profile-$proxy"
            say "warning: $proxy is left out of the $profile profile: $reason"
        fi
        reason=
    done
done

# --- Versions and machine, for the report ----------------------------------------------

{
    echo "shipit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- edge cli pipeline 2>/dev/null || echo ' (with uncommitted changes in edge/, cli/ or pipeline/)')"
    echo "nginx $(nginx -v 2>&1 | sed 's|.*/||')"
    echo "haproxy $(haproxy -v | sed -n '1s/HAProxy version \([^ ]*\).*/\1/p')"
    echo "caddy $(caddy version | cut -d' ' -f1)"
    echo "wrk $(wrk -v 2>&1 | sed -n '1s/wrk \(debian\/\)\{0,1\}\([^ ]*\).*/\2/p')"
    echo "h2load $(h2load --version | sed -n '1s/.*nghttp2\/\([^ ]*\).*/\1/p')"
    echo "openssl $(openssl version | cut -d' ' -f2)"
    echo "certificate $CERT_LABEL"
    echo "machine nproc=$(nproc), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "date $(date -u '+%Y-%m-%d %H:%M UTC')"
} >"$RAW/versions"

# What each proxy's TLS listener settles on with OpenSSL's client defaults (the client
# library of wrk, h2load and s_time), and whether it serves the bench certificate.
for proxy in $PROXIES; do
    for profile in https h2 handshake tls-memory; do
        measures "$profile" && [[ -z ${NA[$profile-$proxy]:-} ]] || continue
        hostport=${TLS_URL[$proxy]#https://}
        timeout -k 2 5 openssl s_client -connect "${hostport%/}" -CAfile "$CERT" -verify_hostname localhost \
            -brief </dev/null >"$RAW/tls-$proxy.txt" 2>&1 || true
        break
    done
done

# --- Memory at rest --------------------------------------------------------------------

for proxy in $PROXIES; do
    python3 bench/edge_memory.py "${PID[$proxy]}" "${URL[$proxy]}" 0 "$RAW/memory-start-$proxy.json"
done

# --- Throughput and latency ------------------------------------------------------------

# Every profile runs against every target in turn, ROUNDS times, so a burst of other work on
# the box hits all targets alike. Raw profile names (in the raw file names): sat and one
# (plain), https, h2, h2c, handshake-full, handshake-resumed.
TARGETS="direct floor $PROXIES"
profile_targets() {
    local profile=$1 proxy list=""
    case $profile in
        sat | one) echo "$TARGETS"; return ;;
    esac
    for proxy in $PROXIES; do
        [[ -n ${NA[${profile%%-*}-$proxy]:-} ]] || list+=" $proxy"
    done
    echo "${list# }"
}
target_url() {
    local profile=$1 target=$2
    case $target in
        direct) echo "$URL_DIRECT"; return ;;
        floor) echo "$URL_FLOOR"; return ;;
    esac
    case $profile in
        https | h2 | handshake-*) echo "${TLS_URL[$target]}" ;;
        h2c) echo "${H2C_URL[$target]}" ;;
        *) echo "${URL[$target]}" ;;
    esac
}
# Whose CPU time a run is charged to: the proxy's process tree, or hello for "direct".
target_pid() { [[ $1 == direct ]] && echo "${PID[hello-blue]}" || echo "${PID[$1]}"; }
cpu_ticks() { python3 bench/edge_memory.py --cpu-ticks "$(target_pid "$1")"; }
# The whole box's CPU counters (the `cpu` line of /proc/stat, in ticks): user nice system
# idle iowait irq softirq steal.
box_ticks() { awk '/^cpu / {print $2, $3, $4, $5, $6, $7, $8, $9; exit}' /proc/stat; }
# Runs `MEASURE PROFILE TARGET ROUND` for every target of the profile in turn, ROUNDS times,
# with the load average before each run, the CPU time the target used during it, and the
# box's CPU counters around it (how much of the box sat idle).
rounds() {
    local profile=$1 measure=$2 round target before box
    for ((round = 1; round <= ROUNDS; round++)); do
        for target in $(profile_targets "$profile"); do
            cut -d' ' -f1 /proc/loadavg >"$RAW/loadavg-$profile-$target-$round"
            before=$(cpu_ticks "$target")
            box=$(box_ticks)
            "$measure" "$profile" "$target" "$round"
            echo "$box $(box_ticks)" >"$RAW/box-$profile-$target-$round"
            echo "$before $(cpu_ticks "$target") $(getconf CLK_TCK)" >"$RAW/cpu-$profile-$target-$round"
        done
    done
}
# A load run that outlives its own duration by LIMIT seconds is stopped, and the run fails.
bounded() {
    local limit=$1 rc=0
    shift
    timeout -k 5 "$limit" "$@" || rc=$?
    ((rc != 124 && rc != 137)) || die "$1 did not finish within $limit s: $*"
    return "$rc"
}

# wrk: plain HTTP/1.1 (sat, one) and HTTPS HTTP/1.1 (https), keep-alive. Each target gets an
# untimed warm-up run first.
wrk_profile() {
    local profile=$1 target
    WRK_ARGS=(-t"$2" -c"$3")
    say "load ($profile): wrk ${WRK_ARGS[*]} -d$WRK_DURATION --latency, $ROUNDS rounds of: $(profile_targets "$profile")"
    if ((WARMUP_S > 0)); then
        for target in $(profile_targets "$profile"); do
            bounded $((WARMUP_S + 30)) wrk "${WRK_ARGS[@]}" -d"$WRK_WARMUP" "$(target_url "$profile" "$target")" >/dev/null
        done
    fi
    rounds "$profile" wrk_run
}
wrk_run() {
    bounded $((DURATION_S + 30)) wrk "${WRK_ARGS[@]}" -d"$WRK_DURATION" --latency "$(target_url "$1" "$2")" \
        >"$RAW/wrk-$1-$2-$3.txt"
}

# h2load: HTTP/2 over TLS (ALPN h2) and h2c (prior knowledge). Each run has its own warm-up
# (connections opened and streams flowing, not counted) before the timed part.
H2_THREADS=$((WRK_THREADS < H2_CLIENTS ? WRK_THREADS : H2_CLIENTS))
H2_ARGS=(-c"$H2_CLIENTS" -m"$H2_STREAMS" -t"$H2_THREADS" -D "$DURATION_S")
((WARMUP_S > 0)) && H2_ARGS+=(--warm-up-time="$WARMUP_S")
H2_COMMAND="h2load ${H2_ARGS[*]}"
h2load_profile() {
    say "load ($1): $H2_COMMAND, $ROUNDS rounds of: $(profile_targets "$1")"
    rounds "$1" h2load_run
}
h2load_run() {
    local out=$RAW/h2load-$1-$2-$3.txt rc=0
    # A failing run is kept (the report shows its errors), not fatal; a hanging one is.
    bounded $((DURATION_S + WARMUP_S + 30)) h2load "${H2_ARGS[@]}" "$(target_url "$1" "$2")" >"$out" 2>&1 || rc=$?
    ((rc == 0)) || echo "h2load exited with $rc" >>"$out"
}

# New TLS connections per second (bench/edge_tls_handshake.py): HANDSHAKE_CLIENTS
# `openssl s_time` processes, each one connection at a time with one request
# (`Connection: close`); full handshakes (-new), then resumed ones (-reuse).
HANDSHAKE_COMMAND="$HANDSHAKE_CLIENTS × openssl s_time -new|-reuse -www '/ HTTP/1.1\r\nHost: …\r\nConnection: close…' for ${HANDSHAKE_S}s"
handshake_profile() {
    say "load ($1): $HANDSHAKE_COMMAND ${1#handshake-}, $ROUNDS rounds of: $(profile_targets "$1")"
    rounds "$1" handshake_run
}
handshake_run() {
    local hostport=${TLS_URL[$2]#https://}
    bounded $((HANDSHAKE_S + 60)) python3 bench/edge_tls_handshake.py "${hostport%/}" "${1#handshake-}" \
        "$HANDSHAKE_CLIENTS" "$HANDSHAKE_S" "$RAW/$1-$2-$3.json"
}

if measures plain; then
    wrk_profile sat "$WRK_THREADS" "$WRK_CONNECTIONS"
    wrk_profile one 1 1
fi
measures https && wrk_profile https "$WRK_THREADS" "$WRK_CONNECTIONS"
measures h2 && h2load_profile h2
measures h2c && h2load_profile h2c
if measures handshake; then
    handshake_profile handshake-full
    handshake_profile handshake-resumed
fi

# --- Switches --------------------------------------------------------------------------

if measures switch; then
    # Switch latency with nothing but the poller running.
    for proxy in $PROXIES; do
        say "switch latency: $QUIET_SWITCHES switches of $proxy, one every $SWITCH_INTERVAL_MS ms, no other load"
        python3 bench/edge_switch.py switch "$WORK/targets.json" "$proxy" "$QUIET_SWITCHES" \
            "$SWITCH_INTERVAL_MS" "$RAW/switch-quiet-$proxy.json"
    done
    # The same with a release the edge has not seen at every switch, as `shipit release`
    # makes: the backend is first named to `PUT /routes/bench/next` (unmeasured, as the
    # release does once the slot is verified), so the edge opens a connection ahead each time
    # instead of taking the replaced instance's. The alternation above is a rollback.
    if [[ " $PROXIES " == *" shipit "* ]]; then
        say "switch latency: $QUIET_SWITCHES switches of shipit, each to a new release, one every $SWITCH_INTERVAL_MS ms, no other load"
        python3 bench/edge_switch.py switch "$WORK/targets.json" shipit "$QUIET_SWITCHES" \
            "$SWITCH_INTERVAL_MS" "$RAW/switch-quiet-release-shipit.json" --new-release
    fi

    # Switches under the saturation load: wrk runs from 1 s before the first switch until
    # after the last; every socket error and non-2xx it counts is a failed request.
    span_s=$(((LOADED_SWITCHES * SWITCH_INTERVAL_MS + 999) / 1000 + 3))
    for proxy in $PROXIES; do
        say "failures: $LOADED_SWITCHES switches of $proxy under wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d${span_s}s"
        cut -d' ' -f1 /proc/loadavg >"$RAW/loadavg-switch-$proxy"
        timeout -k 5 $((span_s + 30)) wrk -t"$WRK_THREADS" -c"$WRK_CONNECTIONS" -d"${span_s}s" --latency "${URL[$proxy]}" \
            >"$RAW/wrk-switch-$proxy.txt" &
        wrk_pid=$!
        # The load's lead-in before the first switch: connections open and warm.
        sleep 1
        python3 bench/edge_switch.py switch "$WORK/targets.json" "$proxy" "$LOADED_SWITCHES" \
            "$SWITCH_INTERVAL_MS" "$RAW/switch-loaded-$proxy.json"
        wait "$wrk_pid"
    done
fi

# --- Memory with many idle connections -------------------------------------------------

if measures memory; then
    for proxy in $PROXIES; do
        say "memory: $proxy at rest, then holding $IDLE_CONNECTIONS idle keep-alive connections"
        python3 bench/edge_memory.py "${PID[$proxy]}" "${URL[$proxy]}" "$IDLE_CONNECTIONS" \
            "$RAW/memory-conns-$proxy.json"
    done
fi
if measures tls-memory; then
    for proxy in $(profile_targets tls-memory); do
        say "memory: $proxy at rest, then holding $TLS_IDLE_CONNECTIONS idle TLS connections"
        python3 bench/edge_memory.py "${PID[$proxy]}" "${TLS_URL[$proxy]}" "$TLS_IDLE_CONNECTIONS" \
            "$RAW/memory-tls-$proxy.json"
    done
fi

for proxy in $PROXIES; do
    running "${PID[$proxy]}" || die "$proxy exited during the run; see $WORK/$proxy"
done

# --- Report ----------------------------------------------------------------------------

# What the report needs to know besides the raw files: the commands and the knobs.
REPRODUCE=$REPRODUCE PROFILES=$PROFILES TARGETS=$TARGETS PROXIES=$PROXIES FLOOR_RUNTIME=$FLOOR_RUNTIME \
    SAT_CMD="wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION --latency" \
    ONE_CMD="wrk -t1 -c1 -d$WRK_DURATION --latency" \
    HTTPS_CMD="wrk -t$WRK_THREADS -c$WRK_CONNECTIONS -d$WRK_DURATION --latency https://…" \
    H2_CMD="$H2_COMMAND https://… (ALPN h2)" H2C_CMD="$H2_COMMAND http://… (h2c, prior knowledge)" \
    HANDSHAKE_CMD="$HANDSHAKE_COMMAND" \
    python3 - "$RAW/settings.json" "$SWITCH_INTERVAL_MS" "$IDLE_CONNECTIONS" "$TLS_IDLE_CONNECTIONS" <<'EOF'
import json, os, sys
e = os.environ
json.dump({
    "reproduce": e["REPRODUCE"],
    "profiles": e["PROFILES"].split(),
    "targets": e["TARGETS"].split(),
    "proxies": e["PROXIES"].split(),
    "floor_runtime": e["FLOOR_RUNTIME"],
    "commands": {"saturation": e["SAT_CMD"], "one_connection": e["ONE_CMD"], "https": e["HTTPS_CMD"],
                 "h2": e["H2_CMD"], "h2c": e["H2C_CMD"], "handshake": e["HANDSHAKE_CMD"]},
    "switch_interval_ms": int(sys.argv[2]),
    "idle_connections": int(sys.argv[3]),
    "tls_idle_connections": int(sys.argv[4]),
}, open(sys.argv[1], "w"), indent=1)
EOF

echo "Reproduce: $REPRODUCE"
echo
python3 bench/edge_report.py "$RAW" "$OUT"
echo
echo "Raw numbers: $OUT"
echo "Reproduce: $REPRODUCE"
