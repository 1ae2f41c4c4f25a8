#!/usr/bin/env bash
# Build the static, non-PIE CPython 3.11 guest and the Python bundles.
# Called by guest-functions/build.sh (env: OUT=<target dir>, FORCE=0|1); see
# docs/guest-functions.md. Uses only Debian packages:
#   libpython3.11-dev  libpython3.11.a (non-PIC, core + most stdlib C modules) and python.o
#   libpython3.11-stdlib  the pure-Python stdlib copied into the rootfs
#   zlib1g-dev, libexpat1-dev  libz.a, libexpat.a
#   apt-get source python3.11  C modules Debian ships only as lib-dynload .so files (_json,
#                              _decimal + bundled libmpdec, _contextvars, ...), compiled in here
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GF="$(cd "$HERE/.." && pwd)"
REPO="$(cd "$GF/.." && pwd)"
OUT="${OUT:-$REPO/target}"
FORCE="${FORCE:-0}"
FUNCS="$OUT/functions"
TESTS="$OUT/test-functions"
CACHE="$OUT/cache"
SRC_PARENT="$CACHE/python-src"
BUILD="$CACHE/python-build"
PYVER=3.11
CONFIG_DIR="/usr/lib/python$PYVER/config-$PYVER-x86_64-linux-gnu"
LIBPY="$CONFIG_DIR/libpython$PYVER.a"
STDLIB_SRC="/usr/lib/python$PYVER"
CC="${CC:-gcc}"
NICE=(nice -n 10)

log() { printf 'build-python: %s\n' "$*" >&2; }
die() { printf 'build-python: error: %s\n' "$*" >&2; exit 1; }

for f in "$LIBPY" "$CONFIG_DIR/config.c" "$CONFIG_DIR/python.o" /usr/lib/x86_64-linux-gnu/libz.a \
         /usr/lib/x86_64-linux-gnu/libexpat.a "$STDLIB_SRC/os.py"; do
    [ -e "$f" ] || die "missing $f: run scripts/install-deps.sh"
done

# shellcheck source=../bundle-lib.sh
source "$GF/bundle-lib.sh"

# ------------------------------------------------------------------ CPython source (cached)
find_src() { { ls -d "$SRC_PARENT"/python$PYVER-*/ 2>/dev/null || true; } | head -1 | sed 's:/$::'; }
SRC="$(find_src)"
if [ -z "$SRC" ] || [ ! -e "$SRC/Modules/_json.c" ]; then
    log "fetching CPython source with apt-get source python$PYVER"
    mkdir -p "$SRC_PARENT"
    ver="$(dpkg-query -W -f='${Version}' "libpython$PYVER-dev")"
    # Prefer the source of the installed libpython; any $PYVER revision has the same upstream C
    # modules (Debian's revisions only add patches), so fall back to the other revisions the
    # deb-src indexes list (a security update's .dsc is sometimes missing from its pool).
    versions=("$ver")
    while read -r v; do [ "$v" = "$ver" ] || versions+=("$v"); done \
        < <(apt-cache showsrc "python$PYVER" 2>/dev/null | sed -n 's/^Version: //p' | sort -rV | uniq)
    : >"$SRC_PARENT/apt-get-source.log"
    for v in "${versions[@]}"; do
        ( cd "$SRC_PARENT" && apt-get source -qq "python$PYVER=$v" ) >>"$SRC_PARENT/apt-get-source.log" 2>&1 && break
    done
    SRC="$(find_src)"
    if [ -z "$SRC" ]; then
        # Last resort: the upstream tarball alone (apt-get source fetches it before the .dsc).
        orig="$(ls "$SRC_PARENT"/python${PYVER}_*.orig.tar.* 2>/dev/null | head -1 || true)"
        [ -n "$orig" ] || die "apt-get source python$PYVER failed (see $SRC_PARENT/apt-get-source.log); deb-src entries come from scripts/install-deps.sh"
        mkdir -p "$SRC_PARENT/python$PYVER-orig"
        tar -C "$SRC_PARENT/python$PYVER-orig" --strip-components=1 -xf "$orig"
    fi
    SRC="$(find_src)"
    [ -n "$SRC" ] && [ -e "$SRC/Modules/_json.c" ] || die "no CPython source under $SRC_PARENT"
fi
log "CPython source: $SRC"

# ------------------------------------------------------------------ extra built-in modules
# name:source files (relative to Modules/). These are the modules Debian ships only as
# lib-dynload .so files that snapcall's Python guests need; everything else in Debian's
# config.c (_struct, math, _datetime, _random, binascii, zlib, _sha*/_md5/_blake2/_sha3,
# _bisect, _heapq, unicodedata, array, select, _pickle, _socket, pyexpat, ...) is already in
# libpython3.11.a.
MPDEC=(basearith constants context convolute crt difradix2 fnt fourstep io mpalloc mpdecimal
       numbertheory sixstep transpose)
EXTRA_MODULES=(
    "_json:_json.c"
    "_contextvars:_contextvarsmodule.c"
    "_decimal:_decimal/_decimal.c $(printf '_decimal/libmpdec/%s.c ' "${MPDEC[@]}")"
    "_typing:_typingmodule.c"
    "_queue:_queuemodule.c"
    "_zoneinfo:_zoneinfo.c"
    "_asyncio:_asynciomodule.c"
    "_lsprof:_lsprof.c rotatingtree.c"
    "resource:resource.c"
    "mmap:mmapmodule.c"
)

OBJ="$BUILD/obj"
mkdir -p "$OBJ"
CFLAGS=(-O2 -g0 -fwrapv -fno-strict-aliasing -std=c11 -fno-pie -fno-semantic-interposition
        -DNDEBUG -DPy_BUILD_CORE_BUILTIN
        -I/usr/include/python$PYVER -I/usr/include/python$PYVER/internal
        -I"$SRC/Modules" -I"$SRC/Modules/_decimal/libmpdec"
        -DCONFIG_64=1 -DASM=1)

objs=()
compile_jobs=()
for entry in "${EXTRA_MODULES[@]}"; do
    for src in ${entry#*:}; do
        o="$OBJ/$(echo "$src" | tr '/' '_' | sed 's/\.c$/.o/')"
        objs+=("$o")
        if needs_build "$o" "$SRC/Modules/$src" "$HERE/build-python.sh"; then
            compile_jobs+=("$SRC/Modules/$src=$o")
        fi
    done
done
if [ ${#compile_jobs[@]} -gt 0 ]; then
    log "compiling ${#compile_jobs[@]} C files (2 at a time)"
    printf '%s\n' "${compile_jobs[@]}" | "${NICE[@]}" xargs -P 2 -I{} sh -c '
        s="${1%%=*}"; o="${1#*=}"; shift
        "$@" -c "$s" -o "$o.tmp" && mv -f "$o.tmp" "$o"' _ {} "$CC" "${CFLAGS[@]}" \
        || die "compiling extra modules failed"
fi

# config.c: Debian's built-in table plus the extra modules.
CONFIG_C="$BUILD/config.c"
if needs_build "$CONFIG_C" "$CONFIG_DIR/config.c" "$HERE/build-python.sh"; then
    decls="" entries=""
    for entry in "${EXTRA_MODULES[@]}"; do
        name="${entry%%:*}"
        decls+="extern PyObject* PyInit_${name}(void);\\n"
        entries+="    {\"${name}\", PyInit_${name}},\\n"
    done
    sed -e "s|^/\* -- ADDMODULE MARKER 1 -- \*/|/* snapcall extra modules */\\n${decls}&|" \
        -e "s|^/\* -- ADDMODULE MARKER 2 -- \*/|/* snapcall extra modules */\\n${entries}&|" \
        "$CONFIG_DIR/config.c" >"$CONFIG_C.tmp"
    grep -q 'PyInit__json' "$CONFIG_C.tmp" || die "could not patch config.c"
    mv -f "$CONFIG_C.tmp" "$CONFIG_C"
fi
if needs_build "$BUILD/config.o" "$CONFIG_C"; then
    "${NICE[@]}" "$CC" "${CFLAGS[@]}" -c "$CONFIG_C" -o "$BUILD/config.o"
fi

# ------------------------------------------------------------------ link
PYBIN="$BUILD/python3"
if needs_build "$PYBIN" "$BUILD/config.o" "${objs[@]}" "$LIBPY" "$CONFIG_DIR/python.o"; then
    log "linking static non-PIE python3"
    # glibc warns that getpwnam/getaddrinfo & co. in a static binary would need the host's NSS
    # libraries at run time; the guests never call them (pwd/_socket stay for importability).
    "${NICE[@]}" "$CC" -static -no-pie -Wl,--gc-sections -o "$PYBIN.tmp" \
        "$CONFIG_DIR/python.o" "$BUILD/config.o" "${objs[@]}" "$LIBPY" \
        -lexpat -lz -lm -lpthread -ldl -lutil 2>"$BUILD/link.log" \
        || { cat "$BUILD/link.log" >&2; die "link failed"; }
    strip --strip-all "$PYBIN.tmp"
    mv -f "$PYBIN.tmp" "$PYBIN"
    log "python3: $(stat -c %s "$PYBIN") bytes"
fi

# ------------------------------------------------------------------ shared rootfs template
# One pruned stdlib + compiled .pyc, built once and hard-linked into each Python bundle.
TEMPLATE="$BUILD/rootfs"
STAMP="$BUILD/rootfs.stamp"
PRUNE=(test idlelib tkinter turtledemo ensurepip lib2to3 distutils pydoc_data venv ctypes curses
       sqlite3 dbm lib-dynload site-packages dist-packages "config-$PYVER-x86_64-linux-gnu"
       __phello__ unittest/test turtle.py pydoc.py)
TZDATA=/usr/share/zoneinfo
[ -e "$TZDATA/tzdata.zi" ] || die "missing $TZDATA/tzdata.zi (Debian's tzdata): run scripts/install-deps.sh"
if needs_build "$STAMP" "$PYBIN" "$HERE/build-python.sh" "$STDLIB_SRC/os.py" "$TZDATA/tzdata.zi"; then
    log "assembling stdlib rootfs template"
    rm -rf "$TEMPLATE.tmp"
    mkdir -p "$TEMPLATE.tmp/usr/bin" "$TEMPLATE.tmp/usr/lib"
    excludes=(--no-anchored --exclude=__pycache__ --exclude='*.pyc' --exclude='*.exe' --anchored)
    for p in "${PRUNE[@]}"; do excludes+=(--exclude="python$PYVER/$p"); done
    # tar keeps symlinks and modes; copy only the pure-Python stdlib.
    tar -C /usr/lib "${excludes[@]}" -cf - "python$PYVER" | tar -C "$TEMPLATE.tmp/usr/lib" -xf -
    # Drop any test packages inside other packages (e.g. */tests/) that are never imported.
    find "$TEMPLATE.tmp/usr/lib/python$PYVER" -depth -type d \( -name tests -o -name test \) \
        -exec rm -rf {} + 2>/dev/null || true
    # Debian's sitecustomize.py is a symlink to the host's /etc; the guest runs -S anyway.
    rm -f "$TEMPLATE.tmp/usr/lib/python$PYVER/sitecustomize.py" "$TEMPLATE.tmp/usr/lib/python$PYVER/EXTERNALLY-MANAGED"
    # What a normal process finds in /etc and /usr/share: its user and group (snapcall's guest
    # is uid/gid 1000, vmm's GUEST_UID, home / as HOME=/; root and nobody as on any system;
    # glibc's static NSS reads these files without nsswitch.conf), and the zoneinfo database
    # from Debian's tzdata for
    # zoneinfo.ZoneInfo and TZ=<zone>. Not /etc/localtime: without it glibc's tzset (one
    # ENOENT at start-up) and the guest's local time are UTC. Not tzdata's right/ (leap-second
    # variants nothing here uses) nor its localtime symlink into the host's /etc.
    mkdir -p "$TEMPLATE.tmp/etc" "$TEMPLATE.tmp/usr/share"
    printf '%s\n' 'root:x:0:0:root:/root:/usr/sbin/nologin' 'snapcall:x:1000:1000:snapcall function:/:/usr/sbin/nologin' \
        'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin' >"$TEMPLATE.tmp/etc/passwd"
    printf '%s\n' 'root:x:0:' 'snapcall:x:1000:' 'nogroup:x:65534:' >"$TEMPLATE.tmp/etc/group"
    tar -C "$(dirname "$TZDATA")" --exclude=zoneinfo/right --exclude=zoneinfo/localtime \
        -cf - "$(basename "$TZDATA")" | tar -C "$TEMPLATE.tmp/usr/share" -xf -
    cp "$PYBIN" "$TEMPLATE.tmp/usr/bin/python3"
    ln -s python3 "$TEMPLATE.tmp/usr/bin/python$PYVER"
    # Pre-compile with the guest interpreter itself (same magic number), unchecked-hash so the
    # guest never stats sources to validate .pyc files and never tries to write new ones.
    env -i PYTHONHOME="$TEMPLATE.tmp/usr" PYTHONUTF8=1 PYTHONCOERCECLOCALE=0 \
        "${NICE[@]}" "$TEMPLATE.tmp/usr/bin/python3" -S -m compileall -q \
        --invalidation-mode unchecked-hash -d "/usr/lib/python$PYVER" \
        "$TEMPLATE.tmp/usr/lib/python$PYVER" >"$BUILD/compileall.log" 2>&1 \
        || { tail -20 "$BUILD/compileall.log" >&2; log "warning: some modules did not compile"; }
    rm -rf "$TEMPLATE"
    mv "$TEMPLATE.tmp" "$TEMPLATE"
    touch "$STAMP"
fi

# ------------------------------------------------------------------ bundles
# Each bundle is made by `snapcall build` (as any user's Python function is) from a function
# directory staged here: a function.json and a link to the module's file.
[ -n "${SNAPCALL:-}" ] || find_snapcall
STAGE="$OUT/cache/function-src"
PYTHON_RUNTIME="$TEMPLATE"

# py_bundle PARENT NAME FUNCTION_FILE MODULE HANDLER MEMORY_MIB TIMEOUT_MS CONTENT_TYPE [RESPONSE]
#   RESPONSE: body (default: the return value is the body) | cgi (status and headers too)
py_bundle() {
    local parent="$1" name="$2" file="$3" module="$4" handler="$5" mem="$6" tmo="$7" ctype="$8"
    local response="${9:-body}"
    local fdir="$STAGE/$(basename "$parent")/$name"
    mkdir -p "$fdir"
    ln -sfn "$file" "$fdir/$module.py"
    MANIFEST_EXTRA="\"python\": {\"module\": $(json_str "$module"), \"handler\": $(json_str "$handler")}" \
        manifest_json python "snapcall.content_type=$ctype" "snapcall.memory_mib=$mem" \
        "snapcall.timeout_ms=$tmo" "snapcall.response=$response" | write_if_changed "$fdir/function.json"
    snapcall_build "$fdir" "$parent/$name"
}

P="$HERE/functions"
py_bundle "$FUNCS" hellowithdata-py "$P/hellowithdata.py" hellowithdata handler 256 10000 application/json
py_bundle "$FUNCS" hello-py "$P/hello.py" hello handler 256 10000 "text/plain; charset=utf-8"
py_bundle "$TESTS" py-raise "$P/tests/py_raise.py" py_raise handler 256 10000 "text/plain; charset=utf-8"
py_bundle "$TESTS" py-state "$P/tests/py_state.py" py_state handler 256 10000 "text/plain; charset=utf-8"
py_bundle "$TESTS" py-time "$P/tests/py_time.py" py_time handler 256 10000 "application/json"
py_bundle "$TESTS" py-http "$P/tests/py_http.py" py_http handler 256 10000 "text/plain; charset=utf-8" cgi
py_bundle "$TESTS" py-imports "$P/tests/py_imports.py" py_imports handler 256 10000 "application/json"
py_bundle "$TESTS" py-system "$P/tests/py_system.py" py_system handler 256 10000 "application/json"
