#!/usr/bin/env bash
# Native (no VM) checks of the guest bundles built by guest-functions/build.sh:
#   - binaries are static (no PT_INTERP); ET_EXEC, except echo-c-pie (ET_DYN static-pie)
#   - C demo functions answer correctly
#   - each Python bundle, run from its config.json (args, env) with its rootfs as "/", gives the
#     expected answer and exit code
#   - under strace: no clone/fork/vfork/execve beyond the first exec, no .so or lib-dynload or
#     locale file opened, nothing opened for writing; syscall counts before the first read(0)
#     (what the snapshot captures) and after it (what every call pays)
#
#   guest-functions/test-native.sh [--out DIR] [--build]
#
# Runs the bundle under chroot when root (so nothing outside the rootfs can be used), else with
# paths rewritten into the rootfs. Ends with "N passed, N failed".
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$HERE/../target"
BUILD=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --build) BUILD=1; shift ;;
        *) echo "test-native.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$BUILD" = 1 ] && { "$HERE/build.sh" --out "$OUT" || exit 1; }
OUT="$(cd "$OUT" && pwd)"
F="$OUT/functions"
T="$OUT/test-functions"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

pass=0 fail=0
ok() { pass=$((pass + 1)); printf 'ok   %s\n' "$*"; }
bad() { fail=$((fail + 1)); printf 'FAIL %s\n' "$*"; }
check() { local name="$1"; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }

USE_CHROOT=0
CHROOT="$(command -v chroot || true)"
if [ "$(id -u)" = 0 ] && [ -n "$CHROOT" ]; then USE_CHROOT=1; fi
HAVE_STRACE=0
command -v strace >/dev/null && HAVE_STRACE=1

elf_type() { readelf -h "$1" 2>/dev/null | awk '/Type:/{print $2}'; }
has_interp() { readelf -lW "$1" 2>/dev/null | grep -q INTERP; }

# ------------------------------------------------------------------ ELF checks
for bin in "$F"/*/rootfs/bin/* "$T"/*/rootfs/bin/* "$F"/*/rootfs/usr/bin/python3; do
    [ -f "$bin" ] || continue
    name="${bin#"$OUT"/}"
    want=EXEC
    case "$bin" in */echo-c-pie) want=DYN ;; esac
    check "static ELF $want: $name" bash -c "[ \"\$(readelf -h '$bin' | awk '/Type:/{print \$2}')\" = $want ] && ! readelf -lW '$bin' | grep -q INTERP"
done
PY="$F/hello-py/rootfs/usr/bin/python3"
if [ -f "$PY" ]; then
    file "$PY" | grep -q 'statically linked' && ok "file(1) says statically linked: python3" \
        || bad "file(1) says statically linked: python3 ($(file -b "$PY"))"
fi

# ------------------------------------------------------------------ C functions
head -c 3000000 /dev/urandom >"$TMP/rand"
for e in echo-c echo-c-pie echo-c-musl; do
    b="$F/$e/rootfs/bin/$e"
    [ -x "$b" ] || { bad "$e: missing"; continue; }
    check "$e echoes 3 MB of binary" bash -c "'$b' <'$TMP/rand' | cmp -s - '$TMP/rand'"
done
out="$(printf 'hello world!' | "$F/hello-c/rootfs/bin/hello-c")"
check "hello-c greeting" [ "$out" = "Hello from C! You sent 12 bytes." ]

# ------------------------------------------------------------------ Python bundles
# Read a bundle's config.json with the bundle's own interpreter (no host Python needed):
# prints NUL-separated "args..." then a "--env--" marker then "K=V..." entries.
read_config() {
    local bundle="$1"
    env -i PYTHONHOME="$bundle/rootfs/usr" PYTHONUTF8=1 "$bundle/rootfs/usr/bin/python3" -S -c '
import json, sys
c = json.load(open(sys.argv[1]))
sys.stdout.write("\0".join(c["process"]["args"] + ["--env--"] + c["process"]["env"]) + "\0")
' "$bundle/config.json"
}

# run_bundle BUNDLE STDIN_FILE STDOUT_FILE STDERR_FILE [strace-log] -> exit code of the guest
run_bundle() {
    local bundle="$1" in="$2" out="$3" err="$4" trace="${5:-}"
    local root="$bundle/rootfs" args=() envs=() seen_env=0 item
    while IFS= read -r -d '' item; do
        if [ "$item" = "--env--" ]; then seen_env=1; continue; fi
        if [ $seen_env = 0 ]; then args+=("$item"); else envs+=("$item"); fi
    done < <(read_config "$bundle")
    local cmd
    if [ $USE_CHROOT = 1 ]; then
        cmd=(env -i "${envs[@]}" "$CHROOT" "$root" "${args[@]}")
    else
        # Rewrite guest-absolute paths (program, script, PYTHONHOME/PYTHONPATH) into the rootfs.
        local a e rargs=() renv=()
        for a in "${args[@]}"; do case "$a" in /*) [ -e "$root$a" ] && a="$root$a" ;; esac; rargs+=("$a"); done
        for e in "${envs[@]}"; do
            case "$e" in PYTHONHOME=*|PYTHONPATH=*) e="${e%%=*}=$(echo "${e#*=}" | sed "s|\(^\|:\)/|\1$root/|g")" ;; esac
            renv+=("$e")
        done
        cmd=(env -i "${renv[@]}" "${rargs[@]}")
    fi
    if [ -n "$trace" ]; then
        strace -f -qq -o "$trace" "${cmd[@]}" <"$in" >"$out" 2>"$err"
    else
        (cd "$root" && "${cmd[@]}" <"$in" >"$out" 2>"$err")
    fi
}

have_py() { [ -x "$1/rootfs/usr/bin/python3" ] && [ -f "$1/config.json" ]; }

pycase() { # NAME BUNDLE INPUT EXPECTED_RC EXPECTED_STDOUT(or '*') [STDERR_GREP]
    local name="$1" bundle="$2" input="$3" erc="$4" eout="$5" egrep="${6:-}"
    have_py "$bundle" || { bad "$name: bundle $bundle missing"; return; }
    printf '%s' "$input" >"$TMP/in"
    run_bundle "$bundle" "$TMP/in" "$TMP/out" "$TMP/err"
    local rc=$?
    local got
    got="$(cat "$TMP/out")"
    if [ "$rc" != "$erc" ]; then bad "$name: exit $rc, want $erc; stderr: $(tail -3 "$TMP/err")"; return; fi
    if [ "$eout" != '*' ] && [ "$got" != "$eout" ]; then bad "$name: stdout '$got', want '$eout'"; return; fi
    if [ -n "$egrep" ] && ! grep -q -- "$egrep" "$TMP/err"; then bad "$name: stderr lacks '$egrep'"; return; fi
    ok "$name"
}

pycase "hellowithdata-py JSON in -> JSON out" "$F/hellowithdata-py" '{"hello": "world", "n": [1, 2.5]}' 0 '{"hello": "world", "n": [1, 2.5]}' "'event-type': 'application/json'"
pycase "hellowithdata-py text in -> text out" "$F/hellowithdata-py" 'plain text, not JSON' 0 'plain text, not JSON' "'event-type': 'text/plain'"
pycase "hellowithdata-py empty request" "$F/hellowithdata-py" '' 0 ''
pycase "hello-py greeting" "$F/hello-py" 'twelve chars' 0 'Hello from Python 3.11! You sent 12 characters.'
pycase "py-raise exits 1 with traceback" "$T/py-raise" 'x' 1 '' 'ValueError: py-raise'
pycase "py-state is 1 in a fresh process" "$T/py-state" 'x' 0 '1'
# Non-UTF-8 bytes come back byte for byte.
if have_py "$F/hellowithdata-py"; then
    printf '\xff\xfe\x00binary\x80' >"$TMP/bin"
    run_bundle "$F/hellowithdata-py" "$TMP/bin" "$TMP/out" "$TMP/err"
    check "hellowithdata-py non-UTF-8 bytes round-trip" cmp -s "$TMP/bin" "$TMP/out"
fi

# Required stdlib modules import with the built-in C accelerators, nothing dlopen'ed.
if have_py "$F/hello-py"; then
    R="$F/hello-py/rootfs"
    if env -i PYTHONHOME="$R/usr" PYTHONUTF8=1 PYTHONCOERCECLOCALE=0 PYTHONDONTWRITEBYTECODE=1 \
        "$R/usr/bin/python3" -S -B -c '
import sys
sys.path = [p for p in sys.path if not p.endswith("lib-dynload")]
import json, decimal, datetime, random, hashlib, re, base64, zlib, uuid, contextvars, math
import _json, _decimal, _contextvars, _datetime, _random, _struct, _sha256, _md5, _blake2
import _sha1, _sha512, _sha3, _bisect, _heapq, unicodedata, array, binascii
assert json.decoder.c_scanstring is not None and decimal.Decimal is _decimal.Decimal
assert hashlib.sha256(b"abc").hexdigest().startswith("ba7816bf")
assert hashlib.sha3_256(b"").hexdigest().startswith("a7ffc6f8")
assert hashlib.blake2b(b"").hexdigest().startswith("786a02f7")
assert str(decimal.Decimal(1) / decimal.Decimal(8)) == "0.125"
assert zlib.decompress(zlib.compress(b"x" * 1000)) == b"x" * 1000
assert base64.b64decode(base64.b64encode(b"\0\1")) == b"\0\1"
assert not [m for m in sys.modules.values() if (getattr(m, "__file__", "") or "").endswith(".so")]
' 2>"$TMP/err"; then ok "stdlib modules import (json decimal datetime random hashlib re base64 ...)"
    else bad "stdlib modules import: $(tail -3 "$TMP/err")"; fi
fi

# ------------------------------------------------------------------ strace
if [ $HAVE_STRACE = 1 ]; then
    for bundle in "$F/hellowithdata-py" "$F/hello-py"; do
        have_py "$bundle" || continue
        name="$(basename "$bundle")"
        printf '{"k": "v"}' >"$TMP/in"
        run_bundle "$bundle" "$TMP/in" "$TMP/out" "$TMP/err" "$TMP/trace"
        # Keep only the guest's part: from its execve on (chroot/env come first).
        awk '/execve\(/ {buf = ""} {buf = buf $0 "\n"} END {printf "%s", buf}' "$TMP/trace" >"$TMP/guest"
        exe_line="$(head -1 "$TMP/guest")"
        total=$(grep -cvE '^\S+ \+\+\+|^\S+ ---' "$TMP/guest")
        first=$(grep -nE '(read|readv)\(0,' "$TMP/guest" | head -1 | cut -d: -f1)
        before=$(( ${first:-1} - 2 )) # minus the execve line and the read itself
        after=$(( total - ${first:-1} + 1 ))
        printf '     %s: %d syscalls natively (%d after execve before the first read(0) [snapshot point], %d from it on)\n' \
            "$name" "$total" "$before" "$after"
        grep -oE '^[0-9]+ +[a-z0-9_]+' "$TMP/guest" | awk '{print $2}' | sort | uniq -c | sort -rn \
            | head -8 | awk '{printf "       %5d %s\n", $1, $2}'
        check "$name: guest ran one execve" grep -q 'python3' <<<"$exe_line"
        check "$name: no clone/fork/vfork/extra execve" bash -c "! tail -n +2 '$TMP/guest' | grep -qE '^[0-9]+ +(clone3?|fork|vfork|execve)\('"
        check "$name: no .so / lib-dynload opened" bash -c "! grep -E 'open' '$TMP/guest' | grep -qE '\.so\"|lib-dynload'"
        check "$name: no locale/gconv file opened" bash -c "! grep -E 'open' '$TMP/guest' | grep -qE 'locale|gconv'"
        # glibc's tzset probes /etc/localtime once (absent from the rootfs -> UTC).
        check "$name: no time zone file read" bash -c "! grep -E 'open' '$TMP/guest' | grep -E 'zoneinfo|localtime' | grep -qv ENOENT"
        check "$name: nothing opened for writing" bash -c "! grep -E 'open' '$TMP/guest' | grep -qE 'O_WRONLY|O_RDWR|O_CREAT'"
        check "$name: handler work after the request is small (<= 40 syscalls)" [ "$after" -le 40 ]
    done
else
    echo "     (strace not installed: syscall checks skipped)"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
