#!/usr/bin/env bash
# The soak benchmark: a seeded random mix of releases, rollbacks and failing candidates on
# the local target, under a continuous mixed load through the edge; every request counted,
# every operation's outcome checked, and what is left on the engine counted at the end.
#
#   bench/soak.sh              # the full run: 1000 operations (see bench/README.md for its length)
#   bench/soak.sh --quick      # a smoke run: 20 operations, a few minutes once built
#   OPS=200 SEED=7 KEEPALIVE=32 bench/soak.sh   # knobs: see below
#   bench/soak.sh --target sandbox --quick      # the same on the ecs target, against `shipit sandbox`
#
# With --target sandbox the project's only target is the sandbox's ecs target: `shipit sandbox
# up` starts it on free ports, the load goes through its production listener, and the
# operations run the whole ECS path (tasks as containers, weighted listener, test-listener
# version check). The target sets keep_previous = "0s" (one task runs after each operation,
# as on the local target) and verify_timeout from the health deadline; images are not pruned
# on an ecs target, so its census counts them without a limit.
#
# The load (bench/soak, `soak-load`) runs six kinds of request at once: keep-alive GET, a
# new connection per GET, POST of a 256 KiB body, 3-second slow requests, WebSocket echo
# sessions and HTTP/2 (h2c). Goal: 0 failed requests of at least 10 million, every exit
# code as expected, and nothing leaked: at most the live and the warm slot's containers and
# their images. It makes its own project in a temp dir (a unique service name, its own
# state dir and edge port), so it touches nobody else's containers, and on exit (also on
# failure or Ctrl-C) it stops the load, runs `shipit down`, removes its images and temp dir.
# Traffic goes to 127.0.0.1 only. This is a benchmark, not a CI test.
set -euo pipefail

QUICK=
SANDBOX=
expect_target=
for arg in "$@"; do
    if [[ -n $expect_target ]]; then
        [[ $arg == sandbox ]] || { echo "--target takes only 'sandbox' (the default is the local target)" >&2; exit 2; }
        SANDBOX=1 expect_target=
        continue
    fi
    case $arg in
        --quick) QUICK=1 ;;
        --target) expect_target=1 ;;
        -h | --help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

# Knobs (environment). The defaults are the ones bench/RESULTS.md was produced with.
if [[ -n $QUICK ]]; then d_ops=20 d_min=0; else d_ops=1000 d_min=10000000; fi
OPS=${OPS:-$d_ops}                        # operations after the first release
SEED=${SEED:-1}                           # the operation sequence and the load's bodies
MIX=${MIX:-release=55,rollback=20,unhealthy=15,crash=10}   # relative weights
MIN_REQUESTS=${MIN_REQUESTS:-$d_min}      # the goal the report checks the total against
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-30s}     # a healthy candidate's health deadline
FAIL_HEALTH_TIMEOUT=${FAIL_HEALTH_TIMEOUT:-3s} # an unhealthy candidate's (it never passes)
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-30s}       # the target's drain deadline
OP_TIMEOUT=${OP_TIMEOUT:-300}             # seconds one shipit command may take (then SIGINT)
KEEP_IMAGES=${KEEP_IMAGES:-5}             # the target's keep_images (2 or more): images kept besides those in use
# The load: concurrency per kind (see `soak-load --help`).
KEEPALIVE=${KEEPALIVE:-16}                # keep-alive connections, GET /
NEWCONN=${NEWCONN:-2}                     # workers, a new connection per GET /
POST=${POST:-2}                           # keep-alive connections, POST /echo 256 KiB
SLOW=${SLOW:-16}                          # keep-alive connections, GET /slow (SLOW_FOR each)
SLOW_FOR=${SLOW_FOR:-3s}
WS=${WS:-8}                               # WebSocket sessions at once
WS_INTERVAL=${WS_INTERVAL:-100ms}         # between two messages of a session
WS_MESSAGES=${WS_MESSAGES:-20}            # messages per session, then a clean close
H2_CONNECTIONS=${H2_CONNECTIONS:-2}       # h2c connections
H2_STREAMS=${H2_STREAMS:-8}               # streams in flight on each
LOAD_THREADS=${LOAD_THREADS:-2}           # the load generator's runtime threads
MAX_REQUESTS=${MAX_REQUESTS:-200000000}   # the load's request budget
MAX_RATE=${MAX_RATE:-0}                   # requests/s the load starts at most (0: no cap), to leave CPU to the operations
MAX_DURATION=${MAX_DURATION:-$((OPS * 30 + 300))s}  # the load's hard deadline
BENCH_KEEP=${BENCH_KEEP:-}                # set to 1 to keep the project, the logs and raw output
for n in OPS OP_TIMEOUT KEEP_IMAGES KEEPALIVE NEWCONN POST SLOW WS WS_MESSAGES H2_CONNECTIONS \
    H2_STREAMS LOAD_THREADS MAX_REQUESTS MIN_REQUESTS SEED MAX_RATE; do
    [[ ${!n} =~ ^[0-9]+$ ]] || { echo "$n must be a whole number, not '${!n}'" >&2; exit 2; }
done
((OPS >= 1)) || { echo "OPS must be ≥ 1" >&2; exit 2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
OUT=${BENCH_OUT:-bench/soak${SANDBOX:+-sandbox}${QUICK:+-quick}.json}
REPRODUCE="OPS=$OPS SEED=$SEED MIX=$MIX HEALTH_TIMEOUT=$HEALTH_TIMEOUT \
FAIL_HEALTH_TIMEOUT=$FAIL_HEALTH_TIMEOUT DRAIN_TIMEOUT=$DRAIN_TIMEOUT KEEP_IMAGES=$KEEP_IMAGES \
KEEPALIVE=$KEEPALIVE NEWCONN=$NEWCONN POST=$POST SLOW=$SLOW SLOW_FOR=$SLOW_FOR WS=$WS \
WS_INTERVAL=$WS_INTERVAL WS_MESSAGES=$WS_MESSAGES H2_CONNECTIONS=$H2_CONNECTIONS \
H2_STREAMS=$H2_STREAMS LOAD_THREADS=$LOAD_THREADS MAX_RATE=$MAX_RATE bench/soak.sh${SANDBOX:+ --target sandbox}${QUICK:+ --quick}"

say() { printf '[soak %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- Tools and build -------------------------------------------------------------------

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the Docker engine does not answer \`docker info\`"
command -v python3 >/dev/null || die "python3 is needed for the operations and the report"
command -v cargo >/dev/null || die "cargo is needed to build shipit, soak-load and examples/hello"

TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
say "building shipit and soak-load in release mode: cargo build --release --locked -p shipit -p soak-load"
cargo build --release --quiet --locked -p shipit -p soak-load
# hello as its image needs it: static, as examples/hello/shipit.toml's pre_build builds it.
say "building examples/hello, statically linked, for its FROM scratch image"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --quiet --locked -p hello \
    --target x86_64-unknown-linux-gnu --target-dir "$TARGET_DIR/hello"
SHIPIT=$TARGET_DIR/release/shipit
LOAD=$TARGET_DIR/release/soak-load
HELLO=$TARGET_DIR/hello/x86_64-unknown-linux-gnu/release/hello
[[ -x $SHIPIT && -x $LOAD && -x $HELLO ]] || die "no binaries at $SHIPIT, $LOAD and $HELLO after the build"

# --- The project: a temp dir, a unique service, its own state dir and edge port ---------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shipit-soak.XXXXXX")
RAW=$WORK/raw
mkdir -p "$WORK/state" "$WORK/context/dist" "$RAW"
RUN_ID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
SERVICE=soak-$RUN_ID
# Every image built from this context carries it, dangling ones included: the census finds
# them by it whatever the pipeline labels or tags.
IMAGE_LABEL=shipit-soak.run=$RUN_ID
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
EDGE=127.0.0.1:$PORT
export SHIPIT_STATE_DIR=$WORK/state
export NO_COLOR=1
unset SHIPIT_CONFIG HELLO_HEALTH SOAK_HELLO_EXIT SOAK_HEALTH_TIMEOUT

cp "$HELLO" "$WORK/context/dist/hello"
echo "seed $SEED first release" >"$WORK/context/soak-stamp"
# The stamp changes before every release and candidate: new code, so a new image each time.
cat >"$WORK/context/.dockerignore" <<'EOF'
*
!dist/hello
!soak-stamp
EOF
# The stamp is copied last, so every step before it comes from the build cache: on this
# engine's classic builder each metadata step costs a container (about 1 s on fuse-overlayfs).
cat >"$WORK/context/Dockerfile" <<EOF
FROM scratch
COPY dist/hello /hello
EXPOSE 8080
ENTRYPOINT ["/hello"]
LABEL ${IMAGE_LABEL%%=*}="${IMAGE_LABEL#*=}"
COPY soak-stamp /soak-stamp
EOF
CONFIG=$WORK/shipit.toml
cat >"$CONFIG" <<EOF
# The soak's project: examples/hello, with a health deadline the failing candidates shorten.
[services.$SERVICE]
context = "context"
port = 8080

[services.$SERVICE.env]
HELLO_HEALTH = "\${HELLO_HEALTH:-ok}"
HELLO_EXIT = "\${SOAK_HELLO_EXIT:-}"

[services.$SERVICE.health]
path = "/healthz"
interval = "100ms"
timeout = "\${SOAK_HEALTH_TIMEOUT:-$HEALTH_TIMEOUT}"
healthy_threshold = 2

[services.$SERVICE.verify]
version_path = "/version"
EOF
if [[ -z $SANDBOX ]]; then
    cat >>"$CONFIG" <<EOF

[targets.local]
kind = "local"
listen = "$EDGE"
drain_timeout = "$DRAIN_TIMEOUT"
stop_timeout = "10s"
keep_images = $KEEP_IMAGES
EOF
fi

LOAD_PID=
# Whether pid runs: our exited children stay zombies (which `kill -0` still finds) until
# the shell reaps them.
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ ${stat##*) } != Z* ]]
}

# Stops the load with SIGINT (it finishes its requests in flight and writes its report),
# at most 60 s, then SIGKILL.
stop_load() {
    [[ -n $LOAD_PID ]] || return 0
    kill -INT "$LOAD_PID" 2>/dev/null || true
    for _ in $(seq 600); do
        running "$LOAD_PID" || break
        sleep 0.1
    done
    if running "$LOAD_PID"; then
        say "warning: soak-load (pid $LOAD_PID) did not stop within 60 s; killing it"
        kill -KILL "$LOAD_PID" 2>/dev/null || true
    fi
    wait "$LOAD_PID" 2>/dev/null || true
    LOAD_PID=
}

edge_pid() { cat "$SHIPIT_STATE_DIR/edge/local/edge.pid" 2>/dev/null || true; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_load
    say "cleaning up: shipit down, then this project's leftovers and $WORK"
    "$SHIPIT" -q -c "$CONFIG" down >/dev/null 2>&1 || say "warning: shipit down failed"
    if [[ -n $SANDBOX ]]; then
        "$SHIPIT" -q -c "$CONFIG" sandbox down >/dev/null 2>&1 || say "warning: shipit sandbox down failed"
    fi
    # Whatever down left: containers of this service, its edge, the images of this run.
    local ids pid
    ids=$(docker ps -aq --filter "label=shipit.service=$SERVICE")
    [[ -z $ids ]] || docker rm -f $ids >/dev/null 2>&1 || true
    pid=$(edge_pid)
    if [[ -n $pid ]] && running "$pid"; then kill "$pid" 2>/dev/null || true; fi
    ids=$(docker images -q --no-trunc --filter "label=$IMAGE_LABEL" | sort -u)
    [[ -z $ids ]] || docker rmi -f $ids >/dev/null 2>&1 || say "warning: removing this run's images failed"
    if [[ -n $BENCH_KEEP ]]; then
        say "project, logs and raw output kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SANDBOX_ID=
if [[ -n $SANDBOX ]]; then
    # The sandbox's production listener is where the edge would be; three more free ports.
    read -r EMULATOR_PORT REGISTRY_PORT TEST_PORT < <(python3 -c 'import socket
ss = [socket.socket() for _ in range(3)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])')
    moto=()
    [[ -x $ROOT/.venv/bin/moto_server ]] && moto=(--moto-server "$ROOT/.venv/bin/moto_server")
    say "shipit sandbox up (its production listener on $EDGE)"
    "$SHIPIT" -c "$CONFIG" sandbox up "${moto[@]}" --json --emulator-port "$EMULATOR_PORT" \
        --registry-port "$REGISTRY_PORT" --production-port "$PORT" --test-port "$TEST_PORT" \
        >"$RAW/sandbox.json" 2>"$RAW/sandbox.log" || { tail -n 20 "$RAW/sandbox.log" >&2; die "shipit sandbox up failed"; }
    SANDBOX_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"]["record"]["id"])' "$RAW/sandbox.json")
    # Two tasks per slot (the block's), the old slot scaled down at once after each
    # operation, and the health deadline the failing candidates shorten, as on the local
    # target.
    python3 - "$CONFIG" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
line = "desired_count = 2\n"
assert line in text, "no desired_count in the sandbox's block"
text = text.replace(line, line + 'keep_previous = "0s"\nverify_timeout = "${SOAK_HEALTH_TIMEOUT:-2m}"\n', 1)
open(path, "w").write(text)
PY
    "$SHIPIT" -q -c "$CONFIG" config check >/dev/null || die "the sandbox's target does not load"
    KEEP_IMAGES=100000
fi

# --- The first release, then the load --------------------------------------------------

{
    echo "shipit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet HEAD -- edge cli pipeline examples/hello 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "machine nproc=$(nproc), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
    echo "docker $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
    echo "date $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RAW/versions"

say "project $SERVICE in $WORK, edge on $EDGE"
say "first release (starts the edge; not one of the $OPS operations)"
if ! "$SHIPIT" -c "$CONFIG" release --json >"$RAW/first.json" 2>"$RAW/first.log"; then
    tail -n 30 "$RAW/first.log" >&2
    die "the first release failed; its log is above"
fi

say "load: keep-alive $KEEPALIVE, new-connection $NEWCONN, POST $POST, slow $SLOW, WebSocket $WS, h2c ${H2_CONNECTIONS}×$H2_STREAMS"
"$LOAD" --addr "$EDGE" --seed "$SEED" --duration "$MAX_DURATION" --max-requests "$MAX_REQUESTS" \
    --max-rate "$MAX_RATE" \
    --keepalive "$KEEPALIVE" --newconn "$NEWCONN" --post "$POST" --slow "$SLOW" --slow-for "$SLOW_FOR" \
    --ws "$WS" --ws-interval "$WS_INTERVAL" --ws-messages "$WS_MESSAGES" \
    --h2-connections "$H2_CONNECTIONS" --h2-streams "$H2_STREAMS" --threads "$LOAD_THREADS" \
    --progress 30s --json "$RAW/load.json" >"$RAW/load.txt" &
LOAD_PID=$!
# Its first slow requests and WebSocket sessions are under way before the first operation.
sleep 3
running "$LOAD_PID" || die "soak-load exited at start (see above)"

# --- The operations --------------------------------------------------------------------

say "$OPS operations, seed $SEED, mix $MIX"
python3 "$ROOT/bench/soak_ops.py" run --shipit "$SHIPIT" --config "$CONFIG" \
    --context "$WORK/context" --service "$SERVICE" --edge "$EDGE" --image-label "$IMAGE_LABEL" \
    --first "$RAW/first.json" --seed "$SEED" --ops "$OPS" --mix "$MIX" \
    --fail-health-timeout "$FAIL_HEALTH_TIMEOUT" --op-timeout "$OP_TIMEOUT" --load-pid "$LOAD_PID" \
    --log-dir "$RAW/ops" --out "$RAW/ops.jsonl" --went-live "$RAW/went-live.json" \
    ${SANDBOX_ID:+--sandbox-id "$SANDBOX_ID" --per-slot 2}

# Requests sent right after the last operation are still part of it.
sleep 3
say "stopping the load"
stop_load
[[ -s $RAW/load.json ]] || die "soak-load wrote no report ($RAW/load.json)"

# --- What is left ----------------------------------------------------------------------

census() {
    python3 "$ROOT/bench/soak_ops.py" census --service "$SERVICE" --image-label "$IMAGE_LABEL" \
        --state-dir "$SHIPIT_STATE_DIR" --keep-images "$KEEP_IMAGES" \
        ${SANDBOX_ID:+--sandbox-id "$SANDBOX_ID" --per-slot 2}
}
say "census: containers and images of this project, before shipit down"
census >"$RAW/census-end.json"
say "shipit down"
set +e
"$SHIPIT" -c "$CONFIG" down --json >"$RAW/down.json" 2>"$RAW/down.log"
echo $? >"$RAW/down.exit"
set -e
# down stops the edge once it has no routes; give it the edge's stop deadline.
for _ in $(seq 350); do
    pid=$(edge_pid)
    [[ -n $pid ]] && running "$pid" || break
    sleep 0.1
done
if [[ -n $SANDBOX_ID ]]; then
    # The sandbox's agent stops a scaled-down task once its deregistration delay (5 s) passed.
    for _ in $(seq 300); do
        [[ -z $(docker ps -aq --filter "label=shipit.sandbox=$SANDBOX_ID") ]] && break
        sleep 0.1
    done
fi
census >"$RAW/census-down.json"

# --- Report ----------------------------------------------------------------------------

echo "Reproduce: $REPRODUCE"
echo
# It exits 1 when a goal is missed; the run still ends with its footer and its cleanup.
verdict=0
python3 "$ROOT/bench/soak_report.py" "$RAW" "$OUT" "$REPRODUCE" "$MIN_REQUESTS" "$KEEP_IMAGES" || verdict=$?
echo
echo "Raw numbers: $OUT"
echo "Reproduce: $REPRODUCE"
((verdict == 0)) || say "a goal was missed: see the checks above"
exit "$verdict"
