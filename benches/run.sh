#!/usr/bin/env bash
# Benchmark hello-server against Go net/http, nginx, actix-web and a bare
# hyper hello. One command: installs the tools (apt, pip into a venv),
# builds every peer, runs, writes benches/results/{results.json,results.md,chart.png}.
#
#   benches/run.sh              full run (5 rounds x 10 s per run; ~40 min)
#   benches/run.sh --smoke      CI: one short round, asserts every peer answers,
#                               ends with "bench smoke: N passed, 0 failed"
#   benches/run.sh --help       all options (passed to benches/harness.py)
#
# Environment: BENCH_NO_INSTALL=1 skips apt/pip; BENCH_PYTHON picks the python.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target="$here/target"
piddir="$target/run-pids"
mkdir -p "$target"

# Kill any server the harness started and did not stop (it stops them
# itself; this is the net for a harness killed hard). Only pids it recorded.
cleanup() {
    local f pid want stat rest
    for f in "$piddir"/*; do
        [ -e "$f" ] || continue
        pid="$(basename "$f")"
        read -r want _ <"$f" || want=""
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || stat=""
        rest="${stat##*) }"
        # shellcheck disable=SC2086
        set -- $rest
        # field 22 (start time) must match: never signal a reused pid
        if [ -n "$stat" ] && [ "${20:-}" = "$want" ]; then
            kill -TERM -- "-$pid" 2>/dev/null || true
            sleep 1
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
        rm -f "$f"
    done
}
trap cleanup EXIT

# --- tools from Debian -----------------------------------------------------
# command:package
need=(wrk:wrk h2load:nghttp2-client nghttp:nghttp2-client nginx:nginx go:golang-go
      valgrind:valgrind)
missing=()
for pair in "${need[@]}"; do
    cmd="${pair%%:*}" pkg="${pair#*:}"
    if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$cmd" ]; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "${BENCH_NO_INSTALL:-0}" = 1 ] || [ "$(id -u)" != 0 ]; then
        echo "bench: missing packages: ${missing[*]} (apt-get install them, as root)" >&2
        exit 2
    fi
    echo "bench: apt-get install ${missing[*]}"
    timeout 600 apt-get update -qq
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "bench: cargo not found" >&2; exit 2; }

# --- python with matplotlib (a venv under benches/target) ------------------
py="${BENCH_PYTHON:-python3}"
venv="$target/venv"
if ! "$venv/bin/python" -c 'import matplotlib' >/dev/null 2>&1; then
    if [ "${BENCH_NO_INSTALL:-0}" = 1 ]; then
        echo "bench: no venv with matplotlib at $venv" >&2
        exit 2
    fi
    echo "bench: creating $venv with matplotlib"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    timeout 600 "$venv/bin/pip" install -q --disable-pip-version-check "matplotlib>=3.8,<4"
fi

# Not exec: the EXIT trap must run after the harness. In the background +
# wait, so that a TERM/INT reaches the harness (which stops its servers) at
# once instead of after it finishes.
"$venv/bin/python" "$here/harness.py" "$@" &
child=$!
forward() { kill -"$1" "$child" 2>/dev/null || true; wait "$child" 2>/dev/null; exit "$2"; }
trap 'forward INT 130' INT
trap 'forward TERM 143' TERM
rc=0
wait "$child" || rc=$?
exit "$rc"
