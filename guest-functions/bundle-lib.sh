# Shell helpers shared by guest-functions/build.sh and python/build-python.sh: incremental
# builds and writing bundle config.json files. Sourced, never run; needs $FORCE (0|1).

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
