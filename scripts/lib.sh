# shellcheck shell=bash
# Shared helpers for the onecount scripts. Source it; don't run it.
#
#   ONECOUNT_CACHE  downloaded tools (Kafka jars, tansu binary); survives clones.
#                   Default: ${XDG_CACHE_HOME:-$HOME/.cache}/onecount
#   ONECOUNT_STATE  runtime state of local brokers (pid, bootstrap file, logs).
#                   Default: <repo>/.brokers (git-ignored)

ONECOUNT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ONECOUNT_CACHE="${ONECOUNT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/onecount}"
ONECOUNT_STATE="${ONECOUNT_STATE:-$ONECOUNT_ROOT/.brokers}"
export ONECOUNT_ROOT ONECOUNT_CACHE ONECOUNT_STATE

# Messages go to stderr so stdout stays clean for values (e.g. the bootstrap address).
oc_log() { printf '%s\n' "$*" >&2; }
oc_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

oc_python() {
    local py
    for py in python3 python; do
        if command -v "$py" >/dev/null 2>&1; then "$py" "$@"; return; fi
    done
    oc_die "python3 not found (run scripts/install-deps.sh)"
}

# Seconds since the epoch with sub-second precision (bash 5).
oc_now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }
# oc_elapsed START -> "1.23"
oc_elapsed() { awk -v a="$1" -v b="$(oc_now)" 'BEGIN { printf "%.2f", b - a }'; }

# oc_free_ports N: print N distinct free TCP ports on 127.0.0.1, one a line.
oc_free_ports() {
    oc_python - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
    s.close()
EOF
}

# oc_port_in_use PORT: true if something listens on 127.0.0.1:PORT.
oc_port_in_use() {
    oc_python - "$1" <<'EOF'
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
except OSError:
    sys.exit(1)
EOF
}

# oc_kafka_ping HOST:PORT [quiet]: send a Kafka ApiVersions v0 request over a raw
# socket; succeed if the broker answers with error_code 0. Prints a one-line
# summary unless the second argument is "quiet".
oc_kafka_ping() {
    oc_python - "$1" "${2:-}" <<'EOF'
import socket, struct, sys
host, _, port = sys.argv[1].rpartition(":")
quiet = sys.argv[2] == "quiet"
client_id = b"onecount-ping"
body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id  # ApiVersions v0
try:
    s = socket.create_connection((host, int(port)), timeout=3)
    s.settimeout(3)
    s.sendall(struct.pack(">i", len(body)) + body)
    def read(n):
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                raise OSError("connection closed by broker")
            buf += chunk
        return buf
    (size,) = struct.unpack(">i", read(4))
    resp = read(size)
    s.close()
except OSError as e:
    if not quiet:
        print("ApiVersions to %s failed: %s" % (sys.argv[1], e), file=sys.stderr)
    sys.exit(1)
corr, err, n = struct.unpack(">ihi", resp[:10])
if corr != 7 or err != 0:
    if not quiet:
        print("ApiVersions to %s: correlation %d, error_code %d" % (sys.argv[1], corr, err), file=sys.stderr)
    sys.exit(1)
apis = {}
for i in range(n):
    key, lo, hi = struct.unpack(">hhh", resp[10 + 6 * i:16 + 6 * i])
    apis[key] = (lo, hi)
if not quiet:
    names = {0: "Produce", 1: "Fetch", 3: "Metadata", 11: "JoinGroup", 19: "CreateTopics"}
    print("ApiVersions ok from %s: %d APIs; %s" % (sys.argv[1], n, ", ".join(
        "%s v%d-%d" % (names[k], *apis[k]) for k in names if k in apis)), file=sys.stderr)
EOF
}

oc_pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

# oc_read_pid FILE: print the pid stored in FILE if that process is alive.
oc_read_pid() {
    local pid
    [[ -f "$1" ]] || return 1
    pid="$(cat "$1" 2>/dev/null || true)"
    oc_pid_alive "$pid" || return 1
    printf '%s\n' "$pid"
}

# oc_stop_pid PID NAME [TIMEOUT_S]: SIGTERM, wait, then SIGKILL.
oc_stop_pid() {
    local pid=$1 name=$2 timeout=${3:-20} i
    oc_pid_alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        oc_pid_alive "$pid" || return 0
        sleep 0.1
    done
    oc_log "$name (pid $pid) did not stop after ${timeout}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        oc_pid_alive "$pid" || return 0
        sleep 0.1
    done
    oc_log "$name (pid $pid) still alive after SIGKILL"
    return 1
}

# oc_tail_log FILE [N]: print the last N lines of a log to stderr, without colour codes.
oc_tail_log() {
    local file=$1 n=${2:-40}
    if [[ -f "$file" ]]; then
        oc_log "---- last $n lines of $file ----"
        tail -n "$n" "$file" | sed 's/\x1b\[[0-9;]*m//g' >&2
        oc_log "---- end of $file ----"
    else
        oc_log "(no log at $file)"
    fi
}
