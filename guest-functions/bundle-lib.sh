# Shell helpers shared by guest-functions/build.sh and python/build-python.sh: incremental
# builds, function manifests for `snapcall build` (the one path every function bundle is made
# by), and config.json for the bundles that are not functions (the compat runner). Sourced,
# never run; needs $FORCE (0|1), and $SNAPCALL for snapcall_build.

# needs_build OUTPUT INPUT... : true when OUTPUT is missing or older than any INPUT.
needs_build() {
    local out="$1"; shift
    [ "$FORCE" = 1 ] && return 0
    [ -e "$out" ] || return 0
    local f
    for f in "$@"; do
        [ "$f" -nt "$out" ] && return 0
    done
    return 1
}

# write_if_changed FILE : write stdin to FILE only if the content differs.
write_if_changed() {
    local file="$1" tmp
    tmp="$(mktemp "$file.XXXXXX")"
    cat >"$tmp"
    if [ -e "$file" ] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
    else
        chmod 0644 "$tmp"
        mv -f "$tmp" "$file"
    fi
}

# json_str S : S as a JSON string literal (enough for our ASCII paths and values).
json_str() {
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    printf '"%s"' "$s"
}

# json_list ITEM... : a JSON array of strings.
json_list() {
    local first=1 item
    printf '['
    for item in "$@"; do
        [ $first = 1 ] || printf ', '
        first=0
        json_str "$item"
    done
    printf ']'
}

# write_config BUNDLE_DIR ARGS_JSON ENV_JSON ANNOTATION_KEY=VALUE...
# The process's cwd is $CONFIG_CWD, "/" when unset.
write_config() {
    local dir="$1" args="$2" env="$3"; shift 3
    local ann="" kv first=1
    for kv in "$@"; do
        [ $first = 1 ] || ann+=$',\n'
        first=0
        ann+="    $(json_str "${kv%%=*}"): $(json_str "${kv#*=}")"
    done
    write_if_changed "$dir/config.json" <<EOF
{
  "ociVersion": "1.0.2",
  "process": {
    "terminal": false,
    "user": {"uid": 0, "gid": 0},
    "args": $args,
    "env": $env,
    "cwd": $(json_str "${CONFIG_CWD:-/}")
  },
  "root": {"path": "rootfs", "readonly": true},
  "hostname": "snapcall",
  "annotations": {
$ann
  }
}
EOF
}

# manifest_json LANG ANNOTATION_KEY=VALUE... : a function.json (docs/functions.md) on stdout,
# from the bundle annotations build.sh's tables use (snapcall.memory_mib=64 -> "memory_mib": 64).
# Extra top-level JSON members (the "c" or "python" section) come from $MANIFEST_EXTRA.
manifest_json() {
    local lang="$1" kv key value; shift
    printf '{\n  "lang": "%s"' "$lang"
    for kv in "$@"; do
        key="${kv%%=*}"; value="${kv#*=}"
        case "$key" in
            snapcall.memory_mib|snapcall.timeout_ms|snapcall.max_output_bytes)
                printf ',\n  "%s": %s' "${key#snapcall.}" "$value" ;;
            snapcall.content_type|snapcall.response)
                printf ',\n  "%s": %s' "${key#snapcall.}" "$(json_str "$value")" ;;
            *) echo "manifest_json: no manifest field for $key" >&2; return 1 ;;
        esac
    done
    [ -z "${MANIFEST_EXTRA:-}" ] || printf ',\n  %s' "$MANIFEST_EXTRA"
    printf '\n}\n'
}

# snapcall_build FUNCTION_DIR BUNDLE_DIR : `snapcall build` it, without the snapshot (serve and
# the tests take their own), quiet unless something is rebuilt or fails.
snapcall_build() {
    local src="$1" bundle="$2" out force=()
    [ "$FORCE" = 1 ] && force=(--force)
    if ! out="$("$SNAPCALL" build --no-snapshot "${force[@]}" ${PYTHON_RUNTIME:+--python-runtime "$PYTHON_RUNTIME"} \
            -o "$bundle" "$src" 2>&1)"; then
        printf '%s\n' "$out" >&2
        return 1
    fi
    # Tests copy these bundles; the replaced rootfs build keeps for a running server is not needed.
    rm -rf "$bundle/.rootfs.previous"
    printf '%s\n' "$out" | grep -E ': (compile \(.*[0-9] bytes|requirements: [^n]|function: )' \
        | sed "s|^snapcall build: |build: $(basename "$bundle"): |" >&2 || true
}

# find_snapcall : sets $SNAPCALL to the snapcall binary (built now with cargo if not given).
find_snapcall() {
    [ -n "${SNAPCALL:-}" ] && return 0
    local repo
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    (cd "$repo" && cargo build -q --locked -p httpd --bin snapcall) >&2
    SNAPCALL="${CARGO_TARGET_DIR:-$repo/target}/debug/snapcall"
}
