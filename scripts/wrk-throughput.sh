#!/usr/bin/env bash
# Throughput and host CPU per call, the way issue 10 measured them: `snapcall serve` with its
# defaults, wrk with 8 keep-alive connections, unpaced, for each function in turn, in
# alternating rounds so that every function sees the same host.
#
#   scripts/wrk-throughput.sh [--rounds R] [--secs S] [--connections C] [--bin SNAPCALL] [FUNCTION...]
#
# Defaults: 2 rounds of 10 s, 8 connections, echo-c and hellowithdata-py (snapshots taken by
# the server at start), the release binary (`cargo build --release -p httpd`). Prints one line
# per round and function: calls/s, p50/p99 latency, errors and the server's CPU per call
# (utime + stime of the server process over the run, divided by the calls wrk counted).
# Server flags go in the environment, e.g. SNAPCALL_NO_MEMORY_REUSE=1 for an A/B run.
# Not in CI: it is a measurement. Needs the bundles (guest-functions/build.sh) and wrk.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS=2
SECS=10
CONNS=8
BIN="$REPO/target/release/snapcall"
FUNCTIONS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS="$2"; shift 2 ;;
        --secs) SECS="$2"; shift 2 ;;
        --connections) CONNS="$2"; shift 2 ;;
        --bin) BIN="$2"; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        -*) echo "wrk-throughput.sh: unknown argument: $1" >&2; exit 2 ;;
        *) FUNCTIONS+=("$1"); shift ;;
    esac
done
[ ${#FUNCTIONS[@]} -gt 0 ] || FUNCTIONS=(echo-c hellowithdata-py)
[ -x "$BIN" ] || { echo "wrk-throughput.sh: build first: cargo build --release -p httpd" >&2; exit 2; }
command -v wrk >/dev/null || { echo "wrk-throughput.sh: wrk is not installed (apt-get install wrk)" >&2; exit 2; }

WORK="$(mktemp -d /tmp/snapcall-wrk.XXXXXX)"
mkdir -p "$WORK/functions"
for f in "${FUNCTIONS[@]}"; do
    src="$REPO/target/functions/$f"
    [ -f "$src/config.json" ] || { echo "wrk-throughput.sh: no bundle $src (guest-functions/build.sh)" >&2; exit 2; }
    cp -a "$src" "$WORK/functions/"
    rm -f "$WORK/functions/$f/snapshot.kmsnap"   # the server takes a fresh one with its own build
done
cat > "$WORK/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"name": "wrk"}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT %d %.6f %.3f %.3f %d\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, errors))
end
EOF

. "$REPO/scripts/lib/serve.sh"
serve_in_background "$BIN" "$WORK/functions" "$WORK" wrk-throughput.sh

TICKS=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
printf '%-18s %5s %10s %9s %9s %7s %14s\n' function round calls/s "p50 ms" "p99 ms" errors "CPU/call ms"
for round in $(seq "$ROUNDS"); do
    for f in "${FUNCTIONS[@]}"; do
        url="http://$ADDR/$f"
        curl -sf -X POST -d '{"name":"warm"}' "$url" > /dev/null   # the snapshot exists, the pool is filling
        sleep 1
        before=$(cpu_ticks)
        line=$(wrk -t2 -c"$CONNS" -d"${SECS}s" -s "$WORK/post.lua" "$url" | grep '^RESULT')
        after=$(cpu_ticks)
        read -r _ requests duration p50 p99 errors <<< "$line"
        awk -v f="$f" -v r="$round" -v n="$requests" -v d="$duration" -v p50="$p50" -v p99="$p99" -v e="$errors" \
            -v cpu="$((after - before))" -v hz="$TICKS" \
            'BEGIN { printf "%-18s %5d %10.0f %9.2f %9.2f %7d %14.3f\n", f, r, n / d, p50, p99, e, (n ? cpu / hz * 1000 / n : 0) }'
        sleep 2
    done
done
# Where the pool's VMs came from over the whole run (inline: the pool did not keep up).
curl -sf "http://$ADDR/metrics" |
    grep -E '^snapcall_(vms_created_total|vms_created_inline_total|memory_reused_total|huge_pages_reused_total) ' |
    tr '\n' ' '
echo
