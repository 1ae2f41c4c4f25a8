#!/usr/bin/env bash
# Soak: many calls through `snapcall serve`, then check that the server's open fds, RSS and
# live VMs are where they were after warm-up (docs/soak.md has a run's numbers).
#
#   scripts/soak.sh [--calls N] [--max-minutes M] [--connections C] [--chunk-secs S] [--function NAME]
#
# Load stops after N calls or M minutes of load, whichever comes first (then the end sample
# and the checks run as usual; the summary says how many calls were made).
# Defaults: 1 000 000 calls (no time limit) of echo-c (its snapshot taken by the server at start), 8
# keep-alive connections from one wrk thread, samples every 20 s of load. Not in CI: it runs
# for tens of minutes. Needs a release build (`cargo build --release -p httpd`), the C
# bundles (`guest-functions/build.sh --no-python`) and wrk. Run it under `chrt -i 0` on a
# shared machine. Exits 1 if a call failed or fds / RSS / live VMs are not flat at the end.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CALLS=1000000
CONNS=8
CHUNK=20
MAX_MINUTES=0
FUNCTION=echo-c
while [ $# -gt 0 ]; do
    case "$1" in
        --calls) CALLS="$2"; shift 2 ;;
        --connections) CONNS="$2"; shift 2 ;;
        --chunk-secs) CHUNK="$2"; shift 2 ;;
        --max-minutes) MAX_MINUTES="$2"; shift 2 ;;
        --function) FUNCTION="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "soak.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

BIN="$REPO/target/release/snapcall"
[ -x "$BIN" ] || { echo "soak.sh: build first: cargo build --release -p httpd" >&2; exit 2; }
command -v wrk >/dev/null || { echo "soak.sh: wrk is not installed" >&2; exit 2; }
SRC="$REPO/target/functions/$FUNCTION"
[ -f "$SRC/config.json" ] || { echo "soak.sh: no bundle $SRC (guest-functions/build.sh --no-python)" >&2; exit 2; }

WORK="$(mktemp -d /tmp/snapcall-soak.XXXXXX)"
mkdir -p "$WORK/functions"
cp -a "$SRC" "$WORK/functions/"
rm -f "$WORK/functions/$FUNCTION/snapshot.kmsnap"   # the server takes a fresh one
cat > "$WORK/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = "soak-request-body"
EOF

. "$REPO/scripts/lib/serve.sh"
serve_in_background "$BIN" "$WORK/functions" "$WORK" soak.sh
URL="http://$ADDR/$FUNCTION"

metric() { curl -s "http://$ADDR/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
fds() { ls "/proc/$PID/fd" | wc -l; }
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$PID/status"; }
live_vms() { echo $(( $(metric snapcall_vms_created_total) - $(metric snapcall_vms_destroyed_total) )); }
# Wait until the pool has refilled and the reaper has destroyed every used VM.
settle() {
    local last="" now
    for _ in $(seq 100); do
        now="$(live_vms) $(metric snapcall_pool_ready_vms)"
        [ "$now" = "$last" ] && return 0
        last="$now"
        sleep 0.3
    done
}
sample() {
    printf '%-8s calls %9d  fds %4d  rss_kib %7d  live_vms %3d  ready_vms %3d  conns %3s\n' \
        "$1" "$2" "$(fds)" "$(rss)" "$(live_vms)" "$(metric snapcall_pool_ready_vms)" "$(metric snapcall_connections_open)"
}

body="$(curl -s --data-binary check "$URL")"
[ "$body" = check ] || { echo "soak.sh: warm-up call answered '$body'" >&2; exit 1; }
# Warm-up: the allocator, the pool and the page cache reach their steady state.
wrk -t1 -c"$CONNS" -d5s -s "$WORK/post.lua" "$URL" > /dev/null
settle
START_FDS=$(fds); START_RSS=$(rss); START_VMS=$(live_vms)
echo "soak: $CALLS calls of $FUNCTION, $CONNS connections, server pid $PID, $(date -u +%FT%TZ)"
sample start 0

done_calls=0
bad=0
t0=$(date +%s)
while [ "$done_calls" -lt "$CALLS" ]; do
    if [ "$MAX_MINUTES" -gt 0 ] && [ $(( $(date +%s) - t0 )) -ge $(( MAX_MINUTES * 60 )) ]; then
        echo "soak: stopping at the time limit of $MAX_MINUTES minutes"
        break
    fi
    out="$(wrk -t1 -c"$CONNS" -d"${CHUNK}s" -s "$WORK/post.lua" "$URL")"
    n=$(echo "$out" | awk '/requests in/ { print $1 }')
    nb=$(echo "$out" | awk '/Non-2xx/ { print $NF }')
    errs=$(echo "$out" | awk '/Socket errors/ { s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i; print s }')
    done_calls=$((done_calls + n))
    bad=$((bad + ${nb:-0} + ${errs:-0}))
    sample load "$done_calls"
done
elapsed=$(( $(date +%s) - t0 ))
settle
sample end "$done_calls"
END_FDS=$(fds); END_RSS=$(rss); END_VMS=$(live_vms)
body="$(curl -s --data-binary check-after "$URL")"
calls_metric=$(metric "snapcall_calls_total{function=\"$FUNCTION\"}")
errors_metric=$(curl -s "http://$ADDR/metrics" | awk -v f="function=\"$FUNCTION\"" 'index($1, "snapcall_call_errors_total{" f) == 1 { s += $2 } END { print s + 0 }')

echo "soak: $done_calls calls in ${elapsed}s ($((done_calls / (elapsed > 0 ? elapsed : 1)))/s); non-2xx or socket errors: $bad; server counted $calls_metric calls, $errors_metric errors"
echo "soak: fds $START_FDS -> $END_FDS, RSS $START_RSS -> $END_RSS KiB, live VMs $START_VMS -> $END_VMS"
fail=0
[ "$bad" -eq 0 ] || { echo "soak: FAIL: $bad failed requests"; fail=1; }
[ "$errors_metric" = 0 ] || { echo "soak: FAIL: the server counted $errors_metric call errors"; fail=1; }
[ "$body" = check-after ] || { echo "soak: FAIL: the last call answered '$body'"; fail=1; }
[ "$END_FDS" -le "$START_FDS" ] || { echo "soak: FAIL: fds grew"; fail=1; }
[ "$END_VMS" -le "$START_VMS" ] || { echo "soak: FAIL: live VMs grew"; fail=1; }
# RSS: allow 16 MiB or 10% of noise (allocator caches), no more.
limit=$(( START_RSS + (START_RSS / 10 > 16384 ? START_RSS / 10 : 16384) ))
[ "$END_RSS" -le "$limit" ] || { echo "soak: FAIL: RSS grew beyond $limit KiB"; fail=1; }
grep -q panicked "$WORK/server.log" && { echo "soak: FAIL: the server log has a panic"; fail=1; }
[ "$fail" = 0 ] && echo "soak: OK: flat"
exit "$fail"
