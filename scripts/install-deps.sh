#!/usr/bin/env bash
# Install the Debian packages onecount's builds and tests need, only those missing.
# A warm run (everything present) makes no apt call at all.
#
#   build-essential pkg-config zlib1g-dev  rdkafka crate's vendored librdkafka build
#   prometheus                             promtool, to check the metrics output
#   chromium                               browser tests
#   python3 curl                           helpers used by the scripts
#   openjdk-17-jre-headless maven          local Apache Kafka broker (scripts/kafka-broker.sh),
#                                          only installed if java / mvn are not on PATH
#
# Needs root (or sudo). Set ONECOUNT_SKIP_APT=1 to skip entirely.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

t0=$(oc_now)
if [[ "${ONECOUNT_SKIP_APT:-}" == 1 ]]; then
    oc_log "install-deps: ONECOUNT_SKIP_APT=1, skipping"
    exit 0
fi

# Debian packages that must be installed (checked with dpkg).
packages=(build-essential pkg-config zlib1g-dev prometheus chromium)
# Tools that only need to be on PATH, with the package that brings them.
declare -A tools=(
    [python3]=python3
    [curl]=curl
    [java]=openjdk-17-jre-headless
    [mvn]=maven
    [promtool]=prometheus
)

installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

declare -A want=()
for p in "${packages[@]}"; do
    installed "$p" || want[$p]=1
done
for t in "${!tools[@]}"; do
    command -v "$t" >/dev/null 2>&1 || want[${tools[$t]}]=1
done
missing=("${!want[@]}")

if ((${#missing[@]} == 0)); then
    oc_log "install-deps: all present (${packages[*]} ${!tools[*]}), nothing to do ($(oc_elapsed "$t0")s)"
    exit 0
fi

oc_log "install-deps: missing: ${missing[*]}"
SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || oc_die "need root or sudo to install: ${missing[*]}"
    SUDO=(sudo -n)
fi

# Keep package scripts from starting daemons (prometheus ships an init script)
# unless the machine already has a policy in place.
policy=/usr/sbin/policy-rc.d
if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
    "${SUDO[@]}" chmod 755 "$policy"
    trap '"${SUDO[@]}" rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
"${SUDO[@]}" apt-get update -q >&2
"${SUDO[@]}" apt-get install "${apt_opts[@]}" --no-install-recommends "${missing[@]}" >&2

for p in "${missing[@]}"; do
    installed "$p" || oc_die "install-deps: $p still not installed"
done
oc_log "install-deps: installed ${missing[*]} in $(oc_elapsed "$t0")s"
