#!/usr/bin/env bash
# Stages what the CUDA backend's GPU checks need (library, test binary, CLI, fixtures, the run scripts) into
# DEST (default: .gpu-cuda), a folder small enough to carry to a GPU machine (~18 MiB).
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=${1:-.gpu-cuda}
mkdir -p "$dest/tests/fixtures"
cp build/libdsv4.so build/tests/dsv4_gpu_tests build/dsv4 scripts/gpu/run.sh scripts/gpu/final.sh "$dest/"
rm -rf "$dest/tests/fixtures/hf" "$dest/tests/fixtures/mtp"
cp -r tests/fixtures/hf tests/fixtures/mtp "$dest/tests/fixtures/"
du -sh "$dest"
