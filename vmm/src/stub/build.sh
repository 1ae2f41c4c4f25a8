#!/bin/sh
# Assembles fast_write.S into a flat binary linked at the fast entry's guest address
# (layout::FAST_SYSCALL_ENTRY). Needs binutils (as, ld, objcopy).
#   vmm/src/stub/build.sh OUT.bin
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$1"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
as --64 -o "$TMP/s.o" "$HERE/fast_write.S"
ld -m elf_x86_64 -Ttext=0xA400 -e _start -o "$TMP/s.elf" "$TMP/s.o"
objcopy -O binary -j .text "$TMP/s.elf" "$OUT"
