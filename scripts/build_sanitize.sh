#!/usr/bin/env bash
# Configures and builds the sanitizer build into build-san/: CPU-only (DSV4_CUDA=OFF), clang, ASAN + UBSan,
# libFuzzer instrumentation (DSV4_FUZZ=ON): the unit tests, the CLI they run and the fuzz targets.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${DSV4_JOBS:-2}
launcher=()
if command -v ccache >/dev/null 2>&1; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
CC=clang CXX=clang++ cmake -S . -B build-san -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSV4_CUDA=OFF \
  -DDSV4_SANITIZE=address,undefined -DDSV4_FUZZ=ON -DDSV4_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
ninja -C build-san -j"$jobs" dsv4_unit_tests dsv4_cli fuzzers
