#!/usr/bin/env bash
# Build the local OCI images the provider tests and OpenFaaS's certifier deploy, with no
# container engine: each image is a rootfs tarred with fixed owners and times, gzipped, and
# written with its config, manifest and index.json as an OCI image layout (image-spec
# image-layout.md), the same files `skopeo copy ... oci:DIR:TAG` writes.
#
#   guest-functions/images/build.sh [--out DIR]
#
# DIR defaults to <repo>/target/images, laid out as the server's --images store:
#   DIR/docker.io/functions/alpine/       env, cat, sha512sum (Debian's busybox-static)
#   DIR/docker.io/theaxer/redirector/     ./handler: a static C redirect (the certifier's)
#   DIR/docker.io/snapcall/version/       prints $version after $delay_ms
#   DIR/docker.io/snapcall/dynamic/       a dynamically linked program (must be refused)
#   DIR/docker.io/snapcall/hostile-climb/ a layer writing through a climbing symlink (stays inside)
#   DIR/docker.io/snapcall/hostile-dotdot/ a layer with a ../ member (must be refused)
#   DIR/docker.io/snapcall/alpine.tar     the alpine image again, as an OCI archive
# Needs: busybox-static, gcc, musl-tools, tar, gzip, coreutils (scripts/install-deps.sh).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
OUT="$REPO/target/images"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --out=*) OUT="${1#--out=}"; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "images/build.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
BUSYBOX="${BUSYBOX:-/bin/busybox}"
[ -x "$BUSYBOX" ] || { echo "images/build.sh: $BUSYBOX missing (apt-get install busybox-static)" >&2; exit 1; }
file -L "$BUSYBOX" | grep -q 'statically linked' || { echo "images/build.sh: $BUSYBOX is not static" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

# blob LAYOUT FILE: stores FILE as a blob of LAYOUT; prints its hex digest.
blob() {
    local d
    d="$(sha "$2")"
    mkdir -p "$1/blobs/sha256"
    cp "$2" "$1/blobs/sha256/$d"
    echo "$d"
}

# image LAYOUT TAG ROOTFS CONFIG: one single-layer image. CONFIG is the image config's
# "config" object (Entrypoint, Cmd, Env, WorkingDir) as JSON.
image() {
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$3" -cf "$WORK/layer.tar" .
    layer_image "$1" "$2" "$WORK/layer.tar" "$4"
}

# layer_image LAYOUT TAG LAYER_TAR CONFIG: the image of one (uncompressed) layer tar.
layer_image() {
    local layout="$1" tag="$2" run_config="$4"
    [ "$3" = "$WORK/layer.tar" ] || cp "$3" "$WORK/layer.tar"
    rm -rf "$layout"
    mkdir -p "$layout"
    local diff_id
    diff_id="$(sha "$WORK/layer.tar")"
    gzip -n -9 -c "$WORK/layer.tar" >"$WORK/layer.tar.gz"
    local layer
    layer="$(blob "$layout" "$WORK/layer.tar.gz")"
    printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
        "$run_config" "$diff_id" >"$WORK/config.json"
    local config
    config="$(blob "$layout" "$WORK/config.json")"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
        "$config" "$(size "$WORK/config.json")" "$layer" "$(size "$WORK/layer.tar.gz")" >"$WORK/manifest.json"
    local manifest
    manifest="$(blob "$layout" "$WORK/manifest.json")"
    printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
        "$manifest" "$(size "$WORK/manifest.json")" "$tag" >"$layout/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
    echo "images/build.sh: $layout:$tag" >&2
}

PATH_ENV='"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"'

# functions/alpine: what the certifier runs as env, cat and sha512sum.
R="$WORK/alpine"
mkdir -p "$R/bin" "$R/tmp" "$R/etc"
cp "$BUSYBOX" "$R/bin/busybox"
for applet in env cat sha512sum sh echo ls; do ln -s busybox "$R/bin/$applet"; done
echo "root:x:0:0:root:/root:/bin/sh" >"$R/etc/passwd"
image "$OUT/docker.io/functions/alpine" latest "$R" "{\"Env\":[$PATH_ENV],\"Cmd\":[\"/bin/sh\"]}"

# The same image as an OCI archive (a tar of the layout), under another name.
mkdir -p "$OUT/docker.io/snapcall"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$OUT/docker.io/functions/alpine" \
    -cf "$OUT/docker.io/snapcall/alpine.tar" .
echo "images/build.sh: $OUT/docker.io/snapcall/alpine.tar (archive)" >&2

# theaxer/redirector: ./handler in /home/app answers 302 to $destination.
R="$WORK/redirector"
mkdir -p "$R/home/app"
musl-gcc -O2 -static -o "$R/home/app/handler" "$HERE/redirector.c"
strip "$R/home/app/handler"
image "$OUT/docker.io/theaxer/redirector" latest "$R" "{\"Env\":[$PATH_ENV],\"WorkingDir\":\"/home/app\",\"Cmd\":[\"./handler\"],\"Labels\":{\"snapcall.response\":\"cgi\"}}"

# snapcall/version: prints $version after $delay_ms (a deploy replacing a function mid-call).
R="$WORK/version"
mkdir -p "$R/bin"
musl-gcc -O2 -static -o "$R/bin/version" "$HERE/version.c"
strip "$R/bin/version"
image "$OUT/docker.io/snapcall/version" latest "$R" "{\"Env\":[$PATH_ENV],\"Cmd\":[\"version\"]}"

# snapcall/hostile-climb and snapcall/hostile-dotdot: layers as an attacker writes them
# (Python's tarfile: GNU tar will not), next to the version program. climb writes through a
# symlink climbing out with `..` (the write must land inside the rootfs); dotdot has a
# `../` member (the deploy must be refused, 422).
python3 - "$WORK" "$WORK/version/bin/version" <<'PY'
import io, sys, tarfile
work, program = sys.argv[1], open(sys.argv[2], "rb").read()
def add(t, name, kind=tarfile.REGTYPE, data=b"", target=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, 0o755, target
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    t.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
with tarfile.open(f"{work}/climb.tar", "w", format=tarfile.GNU_FORMAT) as t:
    add(t, "bin", tarfile.DIRTYPE)
    add(t, "bin/version", data=program)
    add(t, "tmp", tarfile.DIRTYPE)
    add(t, "up", tarfile.SYMTYPE, target="../../../../../../../..")
    add(t, "up/tmp/snapcall-hostile-climb", data=b"planted\n")
with tarfile.open(f"{work}/dotdot.tar", "w", format=tarfile.GNU_FORMAT) as t:
    add(t, "bin", tarfile.DIRTYPE)
    add(t, "bin/version", data=program)
    add(t, "../snapcall-hostile-dotdot", data=b"planted\n")
PY
layer_image "$OUT/docker.io/snapcall/hostile-climb" latest "$WORK/climb.tar" "{\"Env\":[$PATH_ENV],\"Cmd\":[\"version\"]}"
layer_image "$OUT/docker.io/snapcall/hostile-dotdot" latest "$WORK/dotdot.tar" "{\"Env\":[$PATH_ENV],\"Cmd\":[\"version\"]}"

# snapcall/dynamic: a dynamically linked program, which a deploy must refuse with a 422.
R="$WORK/dynamic"
mkdir -p "$R/bin"
gcc -O2 -o "$R/bin/hello" "$HERE/redirector.c"
image "$OUT/docker.io/snapcall/dynamic" latest "$R" "{\"Env\":[$PATH_ENV],\"Cmd\":[\"hello\"]}"
