#!/usr/bin/env bash
# A thin stage for scripts/gpu/suites/ab.sh: only a build's libdsv4.so (stripped to its dynamic symbols), as
# DEST/lib.tar.xz (lib/libdsv4.so inside), ~6 MB. The programs come from a full stage (scripts/gpu/stage.sh) carried
# beside it:
#   scripts/gpu/stage-lib.sh BUILD_DIR DEST   ->  DEST/lib.tar.xz;  on the machine  AB_LIBS="main=.gpu-stage/lib new=DEST"
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:?usage: stage-lib.sh BUILD_DIR DEST}
dest=${2:?usage: stage-lib.sh BUILD_DIR DEST}
[ -f "$build/libdsv4.so" ] || { echo "stage-lib: no $build/libdsv4.so" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lib" "$dest"
cp "$build/libdsv4.so" "$tmp/lib/"
# Dynamic symbols are all a shared library needs; -9e: ~6.0 MB where --strip-debug and -6 gave 6.3 (a call carries
# the tracked tree, a stage and this within 64 MiB).
strip --strip-unneeded "$tmp/lib/libdsv4.so"
XZ_OPT=-9e tar -cJf "$dest/lib.tar.xz" -C "$tmp" lib
echo "staged $(du -h "$dest/lib.tar.xz" | cut -f1) in $dest/lib.tar.xz"
