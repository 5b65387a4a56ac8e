#!/usr/bin/env bash
# Stage this worktree's build for scripts/gpu/longctx.sh into DEST (default: /work/main/.gpu-longctx, a folder
# the lead's checkout ignores): bin/ (dsv4, dsv4_gpu_tests), lib/ (libdsv4*.so), longctx.sh, as one
# stage.tar.xz. On the device: cd .gpu-longctx && tar xJf stage.tar.xz && bash longctx.sh
set -euo pipefail
root=$(git rev-parse --show-toplevel)
dest=${1:-/work/main/.gpu-longctx}
tmp=$(mktemp -d)
mkdir -p "$tmp/bin" "$tmp/lib" "$dest"
cp "$root/build/dsv4" "$root/build/tests/dsv4_gpu_tests" "$tmp/bin/"
cp "$root"/build/libdsv4*.so "$tmp/lib/"
cp "$root/scripts/gpu/longctx.sh" "$tmp/"
strip --strip-debug "$tmp"/bin/* "$tmp"/lib/*
rm -f "$dest/stage.tar.xz"
tar cf - -C "$tmp" bin lib longctx.sh | xz -T2 -3 > "$dest/stage.tar.xz"
rm -rf "$tmp"
ls -la "$dest/stage.tar.xz"
