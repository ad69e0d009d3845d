#!/usr/bin/env bash
# Regenerate the Grafana dashboard with the pinned grafana-foundation-sdk.
#
#   tools/dashboard/build.sh [OUT]     OUT defaults to grafana/dashboards/onecount.json
#
# Makes tools/dashboard/.venv (python3 >= 3.11, the SDK's minimum) when it is missing or holds
# another SDK version than requirements.txt pins; pip reads PyPI through its usual configuration.
# tests/ops_artifacts.rs runs this into a temporary file and compares it with the committed JSON.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${1:-$root/grafana/dashboards/onecount.json}"
venv="$here/.venv"
python="${PYTHON:-python3}"

"$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' ||
    { echo "build.sh: $python is older than 3.11, which grafana-foundation-sdk needs" >&2; exit 1; }

pinned="$(sed -n 's/^grafana-foundation-sdk==//p' "$here/requirements.txt")"
[[ -n "$pinned" ]] || { echo "build.sh: no grafana-foundation-sdk pin in requirements.txt" >&2; exit 1; }

installed() {
    "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("grafana-foundation-sdk"))' 2>/dev/null
}

if [[ ! -x "$venv/bin/python" || "$(installed || true)" != "$pinned" ]]; then
    echo "build.sh: creating $venv with grafana-foundation-sdk==$pinned" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --requirement "$here/requirements.txt" >&2
    [[ "$(installed)" == "$pinned" ]] ||
        { echo "build.sh: grafana-foundation-sdk $pinned did not install" >&2; exit 1; }
fi

"$venv/bin/python" "$here/onecount_dashboard.py" "$out"
echo "build.sh: wrote $out" >&2
