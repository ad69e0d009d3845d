#!/usr/bin/env bash
# Run the test suite against a real single-node Apache Kafka broker.
#   - installs missing Debian packages (scripts/install-deps.sh)
#   - starts Kafka (scripts/kafka-broker.sh start) and exports its address as
#     ONECOUNT_TEST_KAFKA; stops it on exit, whatever happens, unless it was running before
#   - runs cargo test --release --all-targets; its exit code is the script's
# Works from any directory. Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Rust is the one tool the scripts do not install (Debian's is older than Cargo.toml's
# rust-version): say so first rather than after the packages and the broker.
command -v cargo >/dev/null 2>&1 || {
    echo "test.sh: cargo not found: install Rust 1.85 or newer (https://rustup.rs)" >&2
    exit 1
}

scripts/install-deps.sh

# A broker someone else started (bench.sh, a developer) is used and left running.
started_here=1
if scripts/kafka-broker.sh status >/dev/null 2>&1; then
    started_here=0
fi
on_exit() {
    local rc=$?
    if ((rc != 0)); then
        echo "test.sh: failed with exit code $rc; Kafka broker log tail:" >&2
        scripts/kafka-broker.sh logs 40 >&2 || true
    fi
    if ((started_here)); then
        scripts/kafka-broker.sh stop || true
    fi
    exit "$rc"
}
trap on_exit EXIT

ONECOUNT_TEST_KAFKA="$(scripts/kafka-broker.sh start)"
export ONECOUNT_TEST_KAFKA
ONECOUNT_TEST_KAFKA_PROXY="$(scripts/kafka-broker.sh proxied)" # "LISTEN UPSTREAM": tests/support_kafka/proxy.rs
export ONECOUNT_TEST_KAFKA_PROXY

echo "test.sh: ONECOUNT_TEST_KAFKA=$ONECOUNT_TEST_KAFKA" >&2
cargo test --release --all-targets "$@" 2>&1
