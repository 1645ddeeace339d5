#!/usr/bin/env bash
# shipit's own time in an ECS release, against the moto server: the wall time of each
# `shipit release` process, less the pauses it spent waiting on AWS conditions (the records'
# `waited_ms`: rollout, target health, drain) and the Docker engine's build and push.
# Goal: ≤ 1 s (median).
#
#   bench/ecs_overhead.sh                 # 10 timed releases after one untimed
#   RELEASES=30 bench/ecs_overhead.sh
#
# It starts its own moto server (.venv, see tests/requirements.txt) and docker-registry on
# 127.0.0.1, creates the infrastructure with localstack/bootstrap.sh, plays the ECS agent
# moto lacks (bench/ecs_agent.py registers each service's targets), and releases a
# FROM-scratch hello image. Everything it starts is stopped on exit, also on failure or
# Ctrl-C; its images are removed. Traffic goes to 127.0.0.1 only.
set -euo pipefail

RELEASES=${RELEASES:-10}
[[ $RELEASES =~ ^[1-9][0-9]*$ ]] || { echo "RELEASES must be ≥ 1" >&2; exit 2; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
REPRODUCE="RELEASES=$RELEASES bench/ecs_overhead.sh"

say() { printf '[ecs-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "error: $*"; exit 1; }

command -v docker >/dev/null && docker info >/dev/null 2>&1 || die "the Docker engine does not answer \`docker info\`"
command -v docker-registry >/dev/null || die "docker-registry is needed (apt-get install docker-registry)"
[[ -x .venv/bin/moto_server && -x .venv/bin/aws ]] ||
    die "no .venv with moto and awscli: run \`bash tests/run\` once, or: python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt"

TARGET_DIR=${CARGO_TARGET_DIR:-target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR
say "building shipit (release) and examples/hello (static)"
cargo build --release --quiet --locked -p shipit
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --quiet --locked -p hello \
    --target x86_64-unknown-linux-gnu --target-dir "$TARGET_DIR/hello"
SHIPIT=$TARGET_DIR/release/shipit
HELLO=$TARGET_DIR/hello/x86_64-unknown-linux-gnu/release/hello

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shipit-ecs-bench.XXXXXX")
PIDS=()
SERVICE=hello-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    docker images -q --filter "label=shipit.service=$SERVICE" | sort -u | xargs -r docker rmi -f --no-prune >/dev/null 2>&1 || true
    [[ -n ${BENCH_KEEP:-} ]] || rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

say "starting moto and a registry on 127.0.0.1"
MOTO_PORT=$(free_port)
MOTO_ECS_SERVICE_RUNNING=1 .venv/bin/moto_server -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
REG_PORT=$(free_port)
mkdir -p "$WORK/registry"
cat >"$WORK/registry.yml" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$REG_PORT
  secret: shipit-bench
YML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$MOTO_PORT/moto-api/data.json" >/dev/null 2>&1 &&
        curl -fs "http://127.0.0.1:$REG_PORT/v2/" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -fs "http://127.0.0.1:$REG_PORT/v2/" >/dev/null || die "the registry did not start (see $WORK/registry.log)"
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT AWS_ACCESS_KEY_ID=testing \
    AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_SESSION_TOKEN

say "creating the infrastructure (localstack/bootstrap.sh)"
PREFIX=bench-${SERVICE#hello-}
PATH="$ROOT/.venv/bin:$PATH" bash localstack/bootstrap.sh "$PREFIX" "$SERVICE" >"$WORK/target.toml" 2>"$WORK/bootstrap.log" ||
    die "bootstrap.sh failed: $(tail -3 "$WORK/bootstrap.log")"
value() { sed -n "s/^$1 = \"\\(.*\\)\"$/\\1/p" "$WORK/target.toml" | head -n 1; }
CLUSTER=$(value cluster)
TG_BLUE=$(sed -n 's/^target_groups = { blue = "\([^"]*\)".*/\1/p' "$WORK/target.toml")
TG_GREEN=$(sed -n 's/.*green = "\([^"]*\)" }$/\1/p' "$WORK/target.toml")
[[ -n $CLUSTER && -n $TG_BLUE && -n $TG_GREEN ]] || die "could not read the target from: $(cat "$WORK/target.toml")"

mkdir -p "$WORK/context/dist"
cp "$HELLO" "$WORK/context/dist/hello"
cp examples/hello/Dockerfile "$WORK/context/Dockerfile"
{
    printf '[services.%s]\ncontext = "context"\nport = 8080\n\n' "$SERVICE"
    sed -e "s|^repository = .*|repository = \"127.0.0.1:$REG_PORT/$PREFIX/$SERVICE\"|" \
        -e "s|^\\[targets\\..*\\]|[targets.aws]|" "$WORK/target.toml"
    printf 'desired_count = 1\n'
} >"$WORK/shipit.toml"
export SHIPIT_STATE_DIR=$WORK/state NO_COLOR=1

.venv/bin/python bench/ecs_agent.py "$CLUSTER" "$SERVICE-blue" "$SERVICE-green" "$TG_BLUE" "$TG_GREEN" \
    >"$WORK/agent.log" 2>&1 &
PIDS+=($!)

release() {
    local out=$1 start end
    start=$(date +%s.%N)
    "$SHIPIT" -c "$WORK/shipit.toml" release --json --no-version >"$out" 2>"$out.log" ||
        die "shipit release failed: $(tail -5 "$out.log")"
    end=$(date +%s.%N)
    python3 -c "print($end - $start)"
}

say "one untimed release (builds and pushes the image)"
release "$WORK/warmup.json" >/dev/null
: >"$WORK/walls.txt"
for i in $(seq "$RELEASES"); do
    wall=$(release "$WORK/release-$i.json")
    echo "$i $wall" >>"$WORK/walls.txt"
    say "release $i/$RELEASES: $wall s"
done
records=()
for i in $(seq "$RELEASES"); do records+=("$WORK/release-$i.json"); done
python3 bench/ecs_report.py "$WORK/walls.txt" "${records[@]}" -- "$REPRODUCE"
