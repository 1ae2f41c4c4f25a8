#!/bin/sh
# Builds the snapcall vDSO and writes it to vmm/src/vdso/vdso.so (committed; the monitor
# embeds it with include_bytes!). Reproducible: the same gcc/binutils give the same bytes,
# and vmm's test `vdso_blob_matches_its_source` rebuilds it and compares.
#
#   guest-functions/vdso/build.sh [OUT]     (default OUT: vmm/src/vdso/vdso.so)
#
# The blob was built with the toolchain named in vmm/src/vdso/TOOLCHAIN; the test compares
# bytes only when `gcc --version` matches it.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${1:-$ROOT/vmm/src/vdso/vdso.so}
CC=${CC:-gcc}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Relative paths and a fixed directory keep the build independent of where the repo lives.
cd "$HERE"
"$CC" -fPIC -shared -nostdlib -O2 -fno-stack-protector \
	-ffreestanding -fno-builtin -fno-asynchronous-unwind-tables -fcf-protection=none \
	-mno-red-zone -Wall -Wextra -Werror \
	-Wl,--hash-style=both -Wl,-soname=linux-vdso.so.1 \
	-Wl,--version-script=vdso.map -Wl,-T,vdso.lds \
	-Wl,--build-id=none -Wl,-z,max-page-size=4096 -Wl,-z,noexecstack -Wl,--no-undefined -s \
	-o "$TMP/vdso.so" vdso.c

# The monitor copies the file as is: it must need no relocation and fit its region.
if readelf -r "$TMP/vdso.so" | grep -q 'R_X86_64'; then
	echo "vdso: the image has relocations; it must be position-independent without any" >&2
	readelf -r "$TMP/vdso.so" >&2
	exit 1
fi
mkdir -p "$(dirname "$OUT")"
cp "$TMP/vdso.so" "$OUT"
if [ $# -eq 0 ]; then
	# Which toolchain made the committed blob (the byte comparison needs the same one).
	{ "$CC" --version | head -n1; ld --version | head -n1; } >"$ROOT/vmm/src/vdso/TOOLCHAIN"
fi
