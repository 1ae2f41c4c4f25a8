#!/usr/bin/env bash
# Install everything snapcall needs on a fresh Debian 12 (bookworm) machine, as root.
# Idempotent and quiet: re-running it installs nothing new and prints little.
#
# Besides binary packages it enables source packages (deb-src) so that
# guest-functions/build.sh can run `apt-get source python3.11` (the static CPython guest is
# compiled partly from the matching CPython source). The deb-src entries are derived from the
# machine's own apt sources; this repository names no package host.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "install-deps.sh: must run as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive

SRC_FILE=/etc/apt/sources.list.d/snapcall-deb-src.sources

# has_deb_src: true when some apt source already provides deb-src entries.
has_deb_src() {
    grep -rqsE '^[[:space:]]*Types:.*\bdeb-src\b' /etc/apt/sources.list.d/ 2>/dev/null && return 0
    grep -qsE '^[[:space:]]*deb-src[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null && return 0
    return 1
}

# enable_deb_src: write deb-src twins of the machine's enabled deb entries (deb822 and one-line
# formats), so source packages come from wherever binary packages already come from.
enable_deb_src() {
    local tmp
    tmp="$(mktemp)"
    {
        echo "# Written by snapcall scripts/install-deps.sh: deb-src twins of the deb entries"
        echo "# in this machine's own apt sources (for apt-get source python3.11)."
        local f
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -e "$f" ] || continue
            [ "$f" = "$SRC_FILE" ] && continue
            # Split into stanzas (blank-line separated); keep enabled stanzas whose Types has
            # deb, and rewrite Types to deb-src.
            awk '
                function flush() {
                    if (n > 0 && isdeb && enabled) {
                        for (i = 1; i <= n; i++) print lines[i]
                        print ""
                    }
                    n = 0; isdeb = 0; enabled = 1
                }
                BEGIN { n = 0; isdeb = 0; enabled = 1 }
                /^[[:space:]]*$/ { flush(); next }
                /^[[:space:]]*#/ { next }
                /^Types:/ {
                    if ($0 ~ /[[:space:]]deb([[:space:]]|$)/) isdeb = 1
                    lines[++n] = "Types: deb-src"; next
                }
                /^Enabled:[[:space:]]*(no|false)/ { enabled = 0 }
                { lines[++n] = $0 }
                END { flush() }
            ' "$f"
        done
    } >"$tmp"
    # One-line format: /etc/apt/sources.list and *.list.
    local lines
    lines="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | sed -nE 's/^[[:space:]]*deb[[:space:]]+/deb-src /p' || true)"
    if grep -q '^Types: deb-src' "$tmp"; then
        install -m 0644 "$tmp" "$SRC_FILE"
    fi
    rm -f "$tmp"
    if [ -n "$lines" ]; then
        printf '%s\n' "# Written by snapcall scripts/install-deps.sh" "$lines" \
            >/etc/apt/sources.list.d/snapcall-deb-src.list
    fi
}

if ! has_deb_src; then
    enable_deb_src
fi

PACKAGES=(
    # C toolchain and the guests' libcs
    build-essential gcc make libc6-dev musl-tools binutils file
    # static CPython guest: libpython3.11.a + stdlib, and the C libraries its modules link
    python3.11 libpython3.11-dev libpython3.11-stdlib zlib1g-dev libexpat1-dev
    # Python bundles' /usr/share/zoneinfo; CPython's regression tests for the compat measure
    # (docs/compat.md)
    tzdata libpython3.11-testsuite
    # `apt-get source python3.11` (dpkg-source unpacks .dsc/.orig.tar.xz/.debian.tar.xz)
    dpkg-dev xz-utils patch
    # testing and measuring
    strace linux-perf wrk curl ca-certificates
    # the provider's test images (env, cat, sha512sum: guest-functions/images/build.sh) and
    # OpenFaaS's certifier (Go, built offline from its vendored modules: scripts/certify.sh)
    busybox-static golang-go
)

# Run apt-get update once, then install only what is missing.
apt-get update -qq >/dev/null
missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps.sh: installing ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Let shmem use transparent huge pages where a program asks (madvise): the VM pool keeps each
# snapshot's data in a memfd, and VMs then map the windows no call writes 2 MiB at a time,
# shared (docs/vmm.md). "advise" changes nothing for programs that do not ask. Not persistent
# across reboots; skipped where the file is missing or read-only.
THP_SHMEM=/sys/kernel/mm/transparent_hugepage/shmem_enabled
if [ -w "$THP_SHMEM" ] && grep -q '\[never\]' "$THP_SHMEM"; then
    echo advise >"$THP_SHMEM" 2>/dev/null || true
fi
echo "install-deps.sh: ok"
