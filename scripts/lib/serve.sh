# Sourced by the measurement scripts (soak.sh, wrk-throughput.sh): starts `snapcall serve`
# in the background on a free port and waits until it listens.
#
#   serve_in_background BIN FUNCTIONS_DIR WORK NAME
#
# Sets PID (the server) and ADDR (host:port); the server's stderr goes to WORK/server.log.
# An EXIT trap stops the server and removes WORK. NAME prefixes the error when it does not start.
serve_in_background() {
    local bin="$1" functions="$2" work="$3" name="$4"
    "$bin" serve --functions "$functions" --listen 127.0.0.1:0 2> "$work/server.log" &
    PID=$!
    SERVE_WORK="$work"
    trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$SERVE_WORK"' EXIT
    ADDR=""
    for _ in $(seq 1200); do
        ADDR="$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$work/server.log")"
        [ -n "$ADDR" ] && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name: the server did not start:" >&2
    cat "$work/server.log" >&2
    exit 1
}
