#!/usr/bin/env bash
# The benchmark anyone can rerun: replays 1M generated actions and prints input records/s and
# peak RSS, then the per-stage breakdown, the floor under any replay of the same files on this
# machine (benches/pipeline.rs) and the bytes each live dedup key costs.
#   ONECOUNT_BENCH_ACTIONS (default 1000000), ONECOUNT_BENCH_SEED (default 1)
# Data is generated once into target/bench-data/<actions>-<seed> and reused.
#
# scripts/bench.sh instructions: replay of 100k actions under callgrind (valgrind): the
# instructions executed, which do not move with the machine's load the way wall times do here,
# so a change of a few percent can be judged from one run. Prints the total, per input record,
# and the functions that cost most (inclusive). Installs valgrind if it is missing (as root).
#
# scripts/bench.sh service: the Kafka service (benches/service.rs): throughput next to a plain
# consume of the same topics, processing latency, restore time for 1M and 10M live keys. Uses
# the broker at ONECOUNT_TEST_KAFKA, or starts one (and stops it after) if none runs.
#   ONECOUNT_BENCH_SERVICE_ACTIONS (default 200000), ONECOUNT_BENCH_PARTITIONS (default 3),
#   ONECOUNT_BENCH_RESTORE_KEYS (default 1000000,10000000), ONECOUNT_BENCH_PARTS,
#   ONECOUNT_BENCH_SERVICE_TOML (lines added to the service's config; see benches/service.rs)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "${1:-}" = service ]; then
    echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "== commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown), load: $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ -z "${ONECOUNT_TEST_KAFKA:-}" ]; then
        if ! scripts/kafka-broker.sh status >/dev/null 2>&1; then
            trap 'scripts/kafka-broker.sh stop || true' EXIT
        fi
        ONECOUNT_TEST_KAFKA="$(scripts/kafka-broker.sh start)"
        export ONECOUNT_TEST_KAFKA
    fi
    echo "== broker: $ONECOUNT_TEST_KAFKA"
    cargo bench --quiet --bench service
    exit 0
fi

if [ "${1:-}" = instructions ]; then
    if ! command -v valgrind >/dev/null; then
        # Only this mode needs it, so it is installed here rather than by install-deps.sh.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get install -y -q valgrind >/dev/null
        else
            echo "bench.sh instructions needs valgrind (apt-get install valgrind)" >&2
            exit 1
        fi
    fi
    cargo build --release --quiet
    data="target/bench-data/100000-1"
    if [ ! -f "$data/truth.json" ]; then
        target/release/onecount generate --actions 100000 --seed 1 --out "$data"
    fi
    profile="target/bench-data/callgrind.out"
    valgrind --tool=callgrind --callgrind-out-file="$profile" target/release/onecount replay \
        --browser "$data/browser.jsonl" --server "$data/server.jsonl" --orders "$data/orders.jsonl" \
        --out "target/bench-data/out-100000-1" 2>&1 | grep -E "refs|replayed"
    records=$(sed -n 's/.*"total": *\([0-9]*\).*/\1/p' "target/bench-data/out-100000-1/stats.json" | head -1)
    total=$(callgrind_annotate "$profile" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    echo "== $total instructions, $((total / records)) per input record ($records records)"
    callgrind_annotate --inclusive=yes "$profile" 2>/dev/null \
        | grep -E '^ *[0-9,]+ \( *[0-9.]+%\) +[^ ]*:.*onecount::' \
        | awk '{ f = $0; sub(/^[^:]*:/, "", f); sub(/ \[.*$/, "", f); if (!seen[f]++) print }' \
        | head -25 | cut -c1-160
    exit 0
fi

actions=${ONECOUNT_BENCH_ACTIONS:-1000000}
seed=${ONECOUNT_BENCH_SEED:-1}
data="target/bench-data/${actions}-${seed}"
out="target/bench-data/out-${actions}-${seed}"

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "== commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
cargo build --release --quiet
if [ ! -f "$data/truth.json" ]; then
    echo "== generating $actions actions (seed $seed) into $data"
    target/release/onecount generate --actions "$actions" --seed "$seed" --out "$data"
fi

replay() {
    /usr/bin/time -f "peak RSS %M KB, %e s wall, %U s user, %S s system" "$@" \
        target/release/onecount replay --browser "$data/browser.jsonl" \
        --server "$data/server.jsonl" --orders "$data/orders.jsonl" --out "$out"
}
echo "== replay on every core (each input parsed on a thread of its own; outputs written)"
replay
echo "== replay on one core (taskset -c 0: each line parsed as the engine takes it)"
replay taskset -c 0

echo "== where the time goes"
ONECOUNT_BENCH_DIR="$data" cargo bench --quiet --bench pipeline

echo "== state per live dedup key (5M keys)"
cargo bench --quiet --bench state_memory
