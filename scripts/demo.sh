#!/usr/bin/env bash
# From a fresh machine: install what snapcall needs, build it and its guest functions, start
# the server on 127.0.0.1, answer real calls (C and Python, each in a brand-new VM restored
# from a snapshot), time them the way Kontain's seed did (serial curl), then stop the server.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" = 0 ]; then
    bash scripts/install-deps.sh
fi
cargo build --release --locked -p httpd
SNAPCALL=target/release/snapcall
# The bundles are made by `snapcall build` (this one, not a second, debug, build of it).
SNAPCALL="$PWD/$SNAPCALL" bash guest-functions/build.sh
PORT=${SNAPCALL_DEMO_PORT:-8080}
URL=http://127.0.0.1:$PORT
LOG=$(mktemp)

"$SNAPCALL" serve --functions target/functions --listen "127.0.0.1:$PORT" 2>"$LOG" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null || true; rm -f "$LOG"' EXIT
for _ in $(seq 200); do
    curl -fs "$URL/healthz" >/dev/null 2>&1 && break
    kill -0 $SERVER 2>/dev/null || { cat "$LOG" >&2; exit 1; }
    sleep 0.1
done
sed 's/^/  server: /' "$LOG"

say() { printf '\n== %s\n' "$*"; }
say "POST /hellowithdata-py (the seed's Kubeless example, in a fresh VM per call)"
curl -s -D - --data '{"Another": "Echo"}' -H 'Content-Type: application/json' "$URL/hellowithdata-py"
say "POST /function/hello-c"
curl -s -D - --data 'hello from the demo' "$URL/function/hello-c"
say "POST /echo-c with 1 MiB of random bytes: byte-exact?"
head -c 1048576 /dev/urandom >"$LOG.in"
curl -s --data-binary @"$LOG.in" "$URL/echo-c" | cmp - "$LOG.in" && echo "yes"
rm -f "$LOG.in"
say "GET /nope (unknown function)"
curl -s -D - "$URL/nope"; echo

say "The seed's method: 50 serial curl processes per function (seconds, as in its table)"
for fn in echo-c hellowithdata-py; do
    for _ in $(seq 50); do
        curl -s -o /dev/null -w '%{time_total}\n' --data '{"Another": "Echo"}' "$URL/$fn"
    done | sort -n | awk -v fn="$fn" '{ v[NR] = $1; s += $1 }
        END { printf "  %-18s mean %.6f  min %.6f  50%% %.6f  max %.6f  (n=%d)\n", fn, s / NR, v[1], v[int(NR / 2) + 1], v[NR], NR }'
done
echo "  seed (i7-8700, minikube): Kubeless mean 0.023300, KM Py Snap mean 0.051000, KM C mean 0.038000"
say "Per-phase timing of the last call is in its Server-Timing header; all counters at $URL/metrics"
curl -s "$URL/metrics" | grep -E '^snapcall_(pool|vms)' || true
