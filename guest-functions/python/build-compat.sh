#!/usr/bin/env bash
# Build the compat bundle: the Python guest's rootfs (static interpreter, stdlib, /etc,
# zoneinfo) plus CPython's regression tests from Debian's libpython3.11-testsuite and the
# compat runner. Used by `cargo run -p benches --bin compat` (docs/compat.md); needs
# guest-functions/build.sh to have built the Python rootfs template first.
#
#   guest-functions/python/build-compat.sh [--out DIR]    -> DIR/compat/cpython-tests/
#
# Incremental like build.sh: rebuilt only when the template, the testsuite, the runner or
# this script is newer than the bundle.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GF="$(cd "$HERE/.." && pwd)"
REPO="$(cd "$GF/.." && pwd)"
OUT="$REPO/target"
FORCE="${FORCE:-0}"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --out=*) OUT="${1#--out=}"; shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "build-compat.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
PYVER=3.11
STDLIB_SRC="/usr/lib/python$PYVER"
TESTS_SRC="$STDLIB_SRC/test"
TEMPLATE="$OUT/cache/python-build/rootfs"
STAMP="$OUT/cache/python-build/rootfs.stamp"
BUNDLE="$OUT/compat/cpython-tests"
ROOT="$BUNDLE/rootfs"
NICE=(nice -n 10)

log() { printf 'build-compat: %s\n' "$*" >&2; }
die() { printf 'build-compat: error: %s\n' "$*" >&2; exit 1; }

[ -e "$STAMP" ] || die "no Python rootfs template in $TEMPLATE: run guest-functions/build.sh"
[ -e "$TESTS_SRC/libregrtest/__init__.py" ] || die "missing $TESTS_SRC: run scripts/install-deps.sh (libpython$PYVER-testsuite)"

# shellcheck source=../bundle-lib.sh
source "$GF/bundle-lib.sh"

if needs_build "$ROOT/.snapcall-stamp" "$STAMP" "$TESTS_SRC/__init__.py" "$TESTS_SRC/libregrtest/__init__.py" \
        "$HERE/compat_runner.py" "$HERE/build-compat.sh"; then
    log "assembling $BUNDLE"
    rm -rf "$ROOT"
    mkdir -p "$BUNDLE"
    cp -al "$TEMPLATE" "$ROOT" 2>/dev/null || cp -a "$TEMPLATE" "$ROOT"
    # The tests, and the stdlib pieces function bundles leave out that tests import: pydoc
    # (test_enum's help() checks) with its topics in pydoc_data, dbm (pickletester, so all of
    # test_pickle, imports it; dbm.dumb is pure Python).
    tar -C "$STDLIB_SRC" --no-anchored --exclude=__pycache__ --exclude='*.pyc' \
        -cf - test pydoc.py pydoc_data dbm | tar -C "$ROOT/usr/lib/python$PYVER" -xf -
    # An empty writable working directory (the VM's overlay, natively an overlayfs) and /tmp.
    mkdir -p "$ROOT/work" "$ROOT/tmp" "$ROOT/compat"
    cp "$HERE/compat_runner.py" "$ROOT/compat/runner.py"
    # .pyc with the guest interpreter, as for the stdlib: nothing is compiled at import time
    # (some test files are deliberately invalid Python; compileall reports and skips them).
    env -i PYTHONHOME="$ROOT/usr" PYTHONUTF8=1 PYTHONCOERCECLOCALE=0 \
        "${NICE[@]}" "$ROOT/usr/bin/python3" -S -m compileall -q \
        --invalidation-mode unchecked-hash -d "/usr/lib/python$PYVER" \
        "$ROOT/usr/lib/python$PYVER/test" "$ROOT/usr/lib/python$PYVER/pydoc.py" \
        "$ROOT/usr/lib/python$PYVER/pydoc_data" "$ROOT/usr/lib/python$PYVER/dbm" >"$OUT/compat/compileall.log" 2>&1 || true
    env -i PYTHONHOME="$ROOT/usr" PYTHONUTF8=1 "$ROOT/usr/bin/python3" -S -c '
import py_compile, sys
py_compile.compile(sys.argv[1], dfile="/compat/runner.py", doraise=True,
                   invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
' "$ROOT/compat/runner.py"
    touch "$ROOT/.snapcall-stamp"
fi

# Generous limits: a whole test module runs in one call.
ENV_JSON="$(json_list PATH=/usr/bin HOME=/ PYTHONHOME=/usr PYTHONUTF8=1 PYTHONCOERCECLOCALE=0 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1)"
CONFIG_CWD=/work write_config "$BUNDLE" "$(json_list /usr/bin/python3 -S -B /compat/runner.py)" "$ENV_JSON" \
    "snapcall.content_type=application/x-ndjson" "snapcall.memory_mib=1024" \
    "snapcall.timeout_ms=900000" "snapcall.max_output_bytes=268435456"
log "bundle $BUNDLE"
