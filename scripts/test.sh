#!/usr/bin/env bash
# Run the test suite against a real single-node Apache Kafka broker.
#   - installs missing Debian packages (scripts/install-deps.sh)
#   - starts Kafka (scripts/kafka-broker.sh start) and exports its address as
#     ONECOUNT_TEST_KAFKA; stops it on exit, whatever happens
#   - runs cargo test --release --all-targets; its exit code is the script's
# Works from any directory. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/install-deps.sh

ONECOUNT_TEST_KAFKA="$(scripts/kafka-broker.sh start)"
export ONECOUNT_TEST_KAFKA
ONECOUNT_TEST_KAFKA_PROXY="$(scripts/kafka-broker.sh proxied)" # "LISTEN UPSTREAM": tests/support_kafka/proxy.rs
export ONECOUNT_TEST_KAFKA_PROXY

on_exit() {
    local rc=$?
    if ((rc != 0)); then
        echo "test.sh: failed with exit code $rc; Kafka broker log tail:" >&2
        scripts/kafka-broker.sh logs 40 >&2 || true
    fi
    scripts/kafka-broker.sh stop || true
    exit "$rc"
}
trap on_exit EXIT

echo "test.sh: ONECOUNT_TEST_KAFKA=$ONECOUNT_TEST_KAFKA" >&2
cargo test --release --all-targets "$@" 2>&1
