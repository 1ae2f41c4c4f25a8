#!/usr/bin/env bash
# Build snapcall's guest function bundles (see docs/architecture.md and docs/guest-functions.md).
#
#   guest-functions/build.sh [--out DIR] [--no-python] [--force]
#
# DIR defaults to <repo>/target. Produces DIR/functions/<name>/ and DIR/test-functions/<name>/,
# each an OCI-style bundle: config.json + rootfs/, made by `snapcall build` (docs/functions.md)
# from a function.json staged under DIR/cache/function-src/ ($SNAPCALL, else built here with
# cargo). Idempotent: a program is rebuilt only when a source it depends on is newer; config.json
# is rewritten only when its content changes. Needs only Debian packages (scripts/install-deps.sh).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
OUT="$REPO/target"
WITH_PYTHON=1
FORCE=0

while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --out=*) OUT="${1#--out=}"; shift ;;
        --no-python) WITH_PYTHON=0; shift ;;
        --force) FORCE=1; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
FUNCS="$OUT/functions"
TESTS="$OUT/test-functions"
mkdir -p "$FUNCS" "$TESTS"

log() { printf 'build.sh: %s\n' "$*" >&2; }

# shellcheck source=bundle-lib.sh
source "$HERE/bundle-lib.sh"

# Every bundle is made by `snapcall build`, from a function directory staged here (a
# function.json naming the source in guest-functions/), as a user's function is.
find_snapcall
export SNAPCALL
STAGE="$OUT/cache/function-src"

# c_bundle PARENT NAME KIND SRC ANNOTATION...
#   KIND: glibc (static, non-PIE, ET_EXEC) | pie (static-pie, ET_DYN) | musl (musl-gcc -static)
c_bundle() {
    local parent="$1" name="$2" kind="$3" src="$4"; shift 4
    local fdir="$STAGE/$(basename "$parent")/$name" libc=glibc pie=false
    case "$kind" in
        glibc) ;; pie) pie=true ;; musl) libc=musl ;;
        *) echo "c_bundle: bad kind $kind" >&2; return 1 ;;
    esac
    mkdir -p "$fdir"
    MANIFEST_EXTRA="\"c\": {\"sources\": [$(json_str "$src")], \"libc\": \"$libc\", \"pie\": $pie}" \
        manifest_json c "$@" | write_if_changed "$fdir/function.json"
    snapcall_build "$fdir" "$parent/$name"
}

# ---------------------------------------------------------------- C demo functions
C="$HERE/c"
c_bundle "$FUNCS" echo-c glibc "$C/echo.c" snapcall.content_type=application/octet-stream snapcall.memory_mib=64
c_bundle "$FUNCS" echo-c-pie pie "$C/echo.c" snapcall.content_type=application/octet-stream snapcall.memory_mib=64
c_bundle "$FUNCS" echo-c-musl musl "$C/echo.c" snapcall.content_type=application/octet-stream snapcall.memory_mib=64
c_bundle "$FUNCS" hello-c glibc "$C/hello.c" "snapcall.content_type=text/plain; charset=utf-8" snapcall.memory_mib=64

# ---------------------------------------------------------------- C test guests
T="$C/tests"
TXT="snapcall.content_type=text/plain; charset=utf-8"
c_bundle "$TESTS" null-deref glibc "$T/null-deref.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" ud2 glibc "$T/ud2.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" div-zero glibc "$T/div-zero.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" infinite-loop glibc "$T/infinite-loop.c" "$TXT" snapcall.memory_mib=64 snapcall.timeout_ms=1000
c_bundle "$TESTS" bad-pointer-write glibc "$T/bad-pointer-write.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" path-escape glibc "$T/path-escape.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" mmap-bomb glibc "$T/mmap-bomb.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" forbidden glibc "$T/forbidden.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" counter glibc "$T/counter.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" leftover glibc "$T/leftover.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" syscall-zoo glibc "$T/syscall-zoo.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" big-output glibc "$T/big-output.c" snapcall.content_type=application/octet-stream snapcall.memory_mib=64
c_bundle "$TESTS" exit-code glibc "$T/exit-code.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" stderr-then-fail glibc "$T/stderr-then-fail.c" "$TXT" snapcall.memory_mib=64 snapcall.timeout_ms=1000
c_bundle "$TESTS" open-file glibc "$T/open-file.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" entropy glibc "$T/entropy.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" ring-scribble glibc "$T/ring-scribble.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" fpu-state glibc "$T/fpu-state.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" clock glibc "$T/clock.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" clock-musl musl "$T/clock.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" munmap-checkerboard glibc "$T/munmap-checkerboard.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" deep-recursion glibc "$T/deep-recursion.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" wx glibc "$T/wx.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" wx-1g glibc "$T/wx.c" "$TXT" snapcall.memory_mib=1024 snapcall.timeout_ms=30000
c_bundle "$TESTS" hostile glibc "$T/hostile.c" "$TXT" snapcall.memory_mib=64 snapcall.max_output_bytes=1048576
c_bundle "$TESTS" hostile-short-deadline glibc "$T/hostile.c" "$TXT" snapcall.memory_mib=64 snapcall.timeout_ms=1000
# cgi-echo: echo-c under snapcall.response=cgi, so a test's request body is the response head.
c_bundle "$TESTS" cgi-echo glibc "$C/echo.c" "$TXT" snapcall.memory_mib=64 snapcall.response=cgi
c_bundle "$TESTS" request-echo glibc "$T/request-echo.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" files glibc "$T/files.c" "$TXT" snapcall.memory_mib=64
c_bundle "$TESTS" ipc glibc "$T/ipc.c" "$TXT" snapcall.memory_mib=64 snapcall.timeout_ms=5000
c_bundle "$TESTS" threads glibc "$T/threads.c" "$TXT" snapcall.memory_mib=64 snapcall.timeout_ms=10000
c_bundle "$TESTS" signals glibc "$T/signals.c" "$TXT" snapcall.memory_mib=64 snapcall.timeout_ms=10000
c_bundle "$TESTS" fuzz-syscalls glibc "$T/fuzz-syscalls.c" "$TXT" snapcall.memory_mib=64 snapcall.timeout_ms=2000 snapcall.max_output_bytes=67108864

# path-escape: symlinks inside the rootfs that point out of it; the monitor must not follow them
# to the host.
ln -sfn /etc/passwd "$TESTS/path-escape/rootfs/escape"
ln -sfn ../../../../etc/passwd "$TESTS/path-escape/rootfs/escape-rel"

# syscall-zoo: a data file to stat/read/list.
mkdir -p "$TESTS/syscall-zoo/rootfs/data"
printf 'hello\n' | write_if_changed "$TESTS/syscall-zoo/rootfs/data/hello.txt"

# fuzz-syscalls: files and an escaping symlink for the fuzzed path arguments.
mkdir -p "$TESTS/fuzz-syscalls/rootfs/data"
printf 'hello\n' | write_if_changed "$TESTS/fuzz-syscalls/rootfs/data/hello.txt"
ln -sfn /etc/passwd "$TESTS/fuzz-syscalls/rootfs/escape"

# files: a rootfs file to copy up (the host copy must never change).
mkdir -p "$TESTS/files/rootfs/data"
printf 'from the rootfs\n' | write_if_changed "$TESTS/files/rootfs/data/note.txt"

# open-file: a file it holds open across its first stdin read (snapshots reopen it).
mkdir -p "$TESTS/open-file/rootfs/data"
printf 'abcdefghijklmnopqrstuvwxyz\n' | write_if_changed "$TESTS/open-file/rootfs/data/alphabet.txt"

# ---------------------------------------------------------------- Python (issue 4)
if [ "$WITH_PYTHON" = 1 ] && [ -x "$HERE/python/build-python.sh" ]; then
    OUT="$OUT" FORCE="$FORCE" SNAPCALL="$SNAPCALL" "$HERE/python/build-python.sh"
fi

log "bundles in $FUNCS and $TESTS"
