#!/usr/bin/env bash
# The README's quick start, run exactly as written there (the lines between its
# `<!-- quickstart` markers), in a scratch directory, with each answer checked. CI runs it
# (scripts/test.sh). Needs the guest bundles' Python runtime (guest-functions/build.sh), the
# snapcall binary ($SNAPCALL, default target/debug/snapcall, built if missing), /dev/kvm, and
# pip's package index (the quick start installs a package from PyPI).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
README="$REPO/README.md"
SNAPCALL="${SNAPCALL:-$REPO/target/debug/snapcall}"
[ -x "$SNAPCALL" ] || (cd "$REPO" && cargo build -q --locked -p httpd --bin snapcall)
export PATH="$(cd "$(dirname "$SNAPCALL")" && pwd):$PATH"

say() { printf 'quickstart: %s\n' "$*" >&2; }
die() { printf 'quickstart: FAILED: %s\n' "$*" >&2; exit 1; }

# The quick start's lines, as the README has them.
BLOCK="$(awk '/^<!-- quickstart/ {on=1; next} /^<!-- \/quickstart/ {on=0} on' "$README" | sed '/^```/d')"
[ -n "$BLOCK" ] || die "no <!-- quickstart --> block in $README"
SERVE_LINE="$(printf '%s\n' "$BLOCK" | grep -n '^snapcall serve ' | cut -d: -f1)"
[ -n "$SERVE_LINE" ] || die "the quick start has no 'snapcall serve' line"

WORK="$(mktemp -d /tmp/snapcall-quickstart.XXXXXX)"
SERVER=""
cleanup() {
    [ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null || true
    [ -z "$SERVER" ] || wait "$SERVER" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"

# The README says 127.0.0.1:8080; here a free port, through the environment snapcall reads.
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export SNAPCALL_LISTEN="127.0.0.1:$PORT" SNAPCALL_URL="127.0.0.1:$PORT"

# 1. Everything up to and including `snapcall serve ... &`, as one piece of shell (it holds a
#    here-document).
say "running the quick start's first $SERVE_LINE lines in $WORK"
# (Not `printf | head`: bash's printf writes a pipe line by line, head exits after its
# lines, and the printf still writing dies of SIGPIPE, which pipefail made CI's exit 141.
# Here-strings below for the same reason: `grep -q` exits at its first match.)
sed -n "1,${SERVE_LINE}p" <<<"$BLOCK" >"$WORK/.setup.sh"
# shellcheck disable=SC1091
source "$WORK/.setup.sh"
SERVER=$!
for _ in $(seq 1 300); do
    curl -sf "http://$SNAPCALL_URL/healthz" >/dev/null 2>&1 && break
    kill -0 "$SERVER" 2>/dev/null || die "snapcall serve exited"
    sleep 0.1
done
curl -sf "http://$SNAPCALL_URL/healthz" >/dev/null || die "snapcall serve did not answer /healthz"
[ -s functions/slugger/snapshot.kmsnap ] && [ -s functions/hello/snapshot.kmsnap ] \
    || die "snapcall build left no snapshot"

# 2. Every later line is one command; its output is checked.
expect() { # OUTPUT WHAT PATTERN (grep -E)
    grep -Eq -- "$3" <<<"$1" || die "$2: expected /$3/ in:\n$1"
}
n=0
while IFS= read -r line; do
    [ -n "$line" ] || continue
    n=$((n + 1))
    say "\$ $line"
    out="$(eval "$line")" || die "'$line' failed"
    printf '%s\n' "$out"
    case "$line" in
        "snapcall invoke slugger"*) expect "$out" "$line" '^\{"slug": "hello-world"\}$' ;;
        "snapcall invoke hello"*) expect "$out" "$line" '^Hello from C, Ada!$' ;;
        "snapcall logs slugger"*)
            expect "$out" "$line" ' 200 [0-9.]+ms$'
            expect "$out" "$line" '^    slugifying Hello, World!$' ;;
        "snapcall list"*)
            expect "$out" "$line" '^hello +native +64Mi +10000ms +verified +[0-9]+ +[0-9]+ +[0-9]+ +1 +0$'
            expect "$out" "$line" '^slugger +native +256Mi +10000ms +verified +[0-9]+ +[0-9]+ +[0-9]+ +1 +0$' ;;
        "snapcall describe hello"*)
            expect "$out" "$line" '^snapshot: +present yes, verified yes'
            expect "$out" "$line" '^calls: +1 total, 0 in flight, errors: none$' ;;
        *) die "no check for the quick start's line: $line (add one to scripts/quickstart.sh)" ;;
    esac
done < <(printf '%s\n' "$BLOCK" | tail -n +"$((SERVE_LINE + 1))")
[ "$n" -ge 5 ] || die "only $n commands after serve"
say "ok: the README's quick start gives the answers it promises"
