#!/usr/bin/env bash
# bench/build.sh: shipit's image build against the docker CLI's own `docker build`, on the
# same generated contexts and the same engine. See bench/README.md for what each number is.
#
#   bench/build.sh                          # 100M and 1G, small and large files
#   SIZES=100M bench/build.sh               # only the 100 MB contexts
#   SIZES=100M SHAPES=small REPEATS=5 bench/build.sh
#
# Knobs:
#   SIZES    context sizes (100M, 1G, or any number of MiB as <n>M)     default "100M 1G"
#   SHAPES   small = 10,000 files in 100 folders; large = 4 files        default "small large"
#   REPEATS  timed "unchanged" decisions per context (median reported)   default 5
#   ROUNDS   cold builds per context and builder, in alternating order    default 3
#   ENGINE_IMAGES  other images put on the engine for the whole run, so   default 300
#            the decision is timed on an engine that holds images, as a
#            developer's or CI's does (0: an empty engine)
#   BENCH_TARGET_DIR  where the release build goes (CARGO_TARGET_DIR, else target/)
#   BENCH_BIN=<path>  use this build_context binary instead of building it (e.g. a debug one)
#   BENCH_KEEP=1      keep the temp dir (contexts are removed after each run regardless)
set -euo pipefail

SIZES=${SIZES:-"100M 1G"}
SHAPES=${SHAPES:-"small large"}
REPEATS=${REPEATS:-5}
ROUNDS=${ROUNDS:-3}
ENGINE_IMAGES=${ENGINE_IMAGES:-300}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${BENCH_TARGET_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}}
RUN_ID=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
LABEL="shipit-bench.build=$RUN_ID"
WORK=$(mktemp -d /tmp/shipit-build-bench.XXXXXX)
REPO="shipit-bench-build-$RUN_ID"

cleanup() {
    local ids
    ids=$( { docker images -aq --filter "label=$LABEL"; docker images -q "$REPO"; } 2>/dev/null | sort -u)
    [ -n "$ids" ] && docker rmi -f $ids >/dev/null 2>&1 || true
    rm -rf "$WORK/ctx"
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

command -v docker >/dev/null || { echo "needs the docker CLI" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }

if [ -n "${BENCH_BIN:-}" ]; then
    BIN=$BENCH_BIN
else
    echo "building the bench binary (release)..." >&2
    (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" nice -n 10 cargo build --release -q \
        -p shipit-pipeline --example build_context)
    BIN="$TARGET/release/examples/build_context"
fi

now_ms() { date +%s%3N; }

# gen <dir> <MiB> <shape>: a context of random bytes and a FROM scratch Dockerfile.
gen() {
    python3 - "$1" "$2" "$3" <<'PY'
import os, sys
root, mib, shape = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.makedirs(root)
with open(os.path.join(root, "Dockerfile"), "w") as f:
    f.write("FROM scratch\nCOPY . /ctx/\n")
total = mib * 1024 * 1024
if shape == "small":
    count, folders = 10_000, 100
else:
    count, folders = 4, 1
each = total // count
for i in range(count):
    folder = os.path.join(root, f"d{i % folders:03d}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"f{i:05d}.bin"), "wb") as f:
        left = each
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n
PY
}

# timed <out-file> <cmd...>: runs cmd under GNU time; appends "wall_ms peak_kib" to out-file.
timed() {
    local out=$1; shift
    local start end
    start=$(now_ms)
    /usr/bin/time -f '%M' -o "$WORK/time" "$@" >"$WORK/stdout" 2>"$WORK/stderr" || {
        echo "failed: $*" >&2; cat "$WORK/stderr" >&2; exit 1; }
    end=$(now_ms)
    echo "$((end - start)) $(tail -1 "$WORK/time")" >>"$out"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

mib_of() { case $1 in *G) echo $(( ${1%G} * 1024 ));; *M) echo "${1%M}";; *) echo "$1";; esac; }

RESULTS="$WORK/results.tsv"
: >"$RESULTS"

# Other images on the engine: tiny, each its own id, all carrying the run's label.
if [ "$ENGINE_IMAGES" -gt 0 ]; then
    echo "== putting $ENGINE_IMAGES other images on the engine" >&2
    mkdir -p "$WORK/filler"
    printf 'FROM scratch\nCOPY f /f\n' >"$WORK/filler/Dockerfile"
    for i in $(seq "$ENGINE_IMAGES"); do
        echo "$RUN_ID $i" >"$WORK/filler/f"
        docker build -q --label "$LABEL" -t "$REPO-filler:$i" "$WORK/filler" >/dev/null 2>&1 ||
            { echo "could not build filler image $i" >&2; exit 1; }
    done
fi
echo "images on the engine: $(docker images -q | wc -l)" >&2
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# cold_docker / cold_shipit: one cold build each, its image removed afterwards (shipit's is
# kept when $1 is "keep", for the decisions that follow). Neither leaves a cache the other
# could hit: images are removed, and shipit starts without a stat cache.
cold_docker() {
    timed "$WORK/dcold" docker build --no-cache -q -t "$REPO:docker" "${dlabels[@]}" "$ctx"
    docker rmi -f "$REPO:docker" >/dev/null
}
# The floor: the engine's own build of the same context with no label at all. shipit must
# label its image, so this is what it would cost if labels were free.
cold_floor() {
    timed "$WORK/fcold" docker build --no-cache -q -t "$REPO:floor" "$ctx"
    docker rmi -f "$REPO:floor" >/dev/null
}
cold_shipit() {
    rm -rf "$WORK/cache"
    timed "$WORK/scold" "$BIN" build "$ctx" "$REPO:shipit" "$WORK/cache" "$LABEL"
    [ "${1:-}" = keep ] || docker rmi -f "$REPO:shipit" >/dev/null
}
# decisions <out-ms-file> [drop-record]: REPEATS unchanged decisions; each must reuse and
# read no file. With drop-record, the image record is removed first, so the lookup lists
# the engine's images (what every decision did before the record).
decisions() {
    local out=$1 drop=${2:-}
    for _ in $(seq "$REPEATS"); do
        [ -z "$drop" ] || rm -f "$WORK/cache"/image-*.json
        timed "$WORK/ssame$drop" "$BIN" decide "$ctx" "$REPO:shipit" "$WORK/cache" "$LABEL"
        python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["reused"] and d["files_hashed"] == 0, d
open(sys.argv[2], "a").write("%.1f\n" % d["ms"])
' "$WORK/stdout" "$out"
    done
}

for size in $SIZES; do
    for shape in $SHAPES; do
        name="$size-$shape"
        ctx="$WORK/ctx"
        rm -rf "$ctx" "$WORK/cache"
        echo "== $name: generating" >&2
        gen "$ctx" "$(mib_of "$size")" "$shape"
        sync
        one=$(find "$ctx" -name '*.bin' | sort | sed -n 1p)
        two=$(find "$ctx" -name '*.bin' | sort | tail -1)
        # Both builders carry three labels (shipit adds its context-hash and service labels to
        # the run's). The classic builder makes each label given with a build request a step
        # of its own, with a container and a commit (about 1 s apiece here); shipit puts
        # its labels on in one LABEL step after the build. The floor gets no label at all.
        dlabels=(--label "$LABEL" --label "shipit.context-hash=docker" --label "shipit.service=bench")
        rm -f "$WORK/d"* "$WORK/s"* "$WORK/fcold"

        # Cold builds in alternating order, so whatever the engine or the page cache carries
        # from one build to the next favours neither side; the last one keeps shipit's image.
        for round in $(seq "$ROUNDS"); do
            keep=""
            [ "$round" -eq "$ROUNDS" ] && keep=keep
            echo "== $name: cold builds, round $round of $ROUNDS" >&2
            if [ $((round % 2)) -eq 1 ]; then
                cold_docker
                cold_shipit $keep
                cold_floor
            else
                cold_floor
                cold_shipit $keep
                cold_docker
            fi
        done

        echo "== $name: unchanged" >&2
        # One timed run: it sends the whole context again, so it is seconds long and steady.
        docker build -q -t "$REPO:docker" "${dlabels[@]}" "$ctx" >/dev/null 2>&1
        timed "$WORK/dsame" docker build -q -t "$REPO:docker" "${dlabels[@]}" "$ctx"
        docker rmi -f "$REPO:docker" >/dev/null
        decisions "$WORK/sdecide"
        decisions "$WORK/slist" drop-record

        echo "== $name: one file changed" >&2
        printf 'x' >>"$one"
        timed "$WORK/dre" docker build -q -t "$REPO:docker2" "${dlabels[@]}" "$ctx"
        docker rmi -f "$REPO:docker2" >/dev/null
        docker rmi -f "$REPO:shipit" >/dev/null
        printf 'y' >>"$two"
        timed "$WORK/sre" "$BIN" build "$ctx" "$REPO:shipit2" "$WORK/cache" "$LABEL"
        docker rmi -f "$REPO:shipit2" >/dev/null

        # The cold ratio is the median of the rounds' own ratios (each pair ran back to back).
        ratio=$(paste -d' ' <(cut -d' ' -f1 "$WORK/scold") <(cut -d' ' -f1 "$WORK/dcold") |
            awk '{print $1/$2}' | median)
        floor_ratio=$(paste -d' ' <(cut -d' ' -f1 "$WORK/scold") <(cut -d' ' -f1 "$WORK/fcold") |
            awk '{print $1/$2}' | median)
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" \
            "$(cut -d' ' -f1 "$WORK/dcold" | median)" "$(cut -d' ' -f2 "$WORK/dcold" | median)" \
            "$(cut -d' ' -f1 "$WORK/dsame" | median)" "$(cut -d' ' -f1 "$WORK/dre")" \
            "$(cut -d' ' -f1 "$WORK/scold" | median)" "$(cut -d' ' -f2 "$WORK/scold" | sort -n | tail -1)" \
            "$(median <"$WORK/sdecide")" "$(median <"$WORK/slist")" \
            "$(cut -d' ' -f1 "$WORK/ssame" | median)" \
            "$(cut -d' ' -f1 "$WORK/sre")" "$ratio" \
            "$(cut -d' ' -f1 "$WORK/fcold" | median)" "$floor_ratio" >>"$RESULTS"
        echo "row: $(tail -1 "$RESULTS")" >&2
        echo "cold ms per round: docker $(cut -d' ' -f1 "$WORK/dcold" | tr '\n' ' ')/ shipit $(cut -d' ' -f1 "$WORK/scold" | tr '\n' ' ')/ docker without labels $(cut -d' ' -f1 "$WORK/fcold" | tr '\n' ' ')" >&2
        rm -rf "$ctx" "$WORK/cache"
    done
done

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
echo
echo "Reproduce: SIZES=\"$SIZES\" SHAPES=\"$SHAPES\" REPEATS=$REPEATS ROUNDS=$ROUNDS ENGINE_IMAGES=$ENGINE_IMAGES bench/build.sh"
echo
echo "| context | docker cold s | docker RSS MiB | docker unchanged s | docker 1 changed s | shipit cold s | shipit RSS MiB | shipit unchanged decision ms | the same without the image record ms | shipit unchanged process ms | shipit 1 changed s | cold shipit/docker | floor: docker cold without labels s | cold shipit/floor |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
awk -F'\t' '{ printf "| %s | %.2f | %.1f | %.2f | %.2f | %.2f | %.1f | %.1f | %.1f | %d | %.2f | %.2f | %.2f | %.2f |\n",
    $1, $2/1000, $3/1024, $4/1000, $5/1000, $6/1000, $7/1024, $8, $9, $10, $11/1000, $12, $13/1000, $14 }' "$RESULTS"
