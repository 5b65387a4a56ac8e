#!/usr/bin/env bash
# README command (b): install dependencies, build, run every test (GPU tests skip without a GPU), then the
# sanitizer pass: the CPU unit tests under ASAN + UBSan (CPU-only clang build, build-san/) and every fuzz
# target for DSV4_FUZZ_SECONDS (default 20) each. DSV4_SANITIZE=0 skips the sanitizer pass.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j2
if [ "${DSV4_SANITIZE:-1}" != "0" ]; then
  scripts/build_sanitize.sh
  (
    source scripts/sanitize_env.sh
    # A sanitizer report fails the test that caused it (exit 86/87, never dsv4's 1 or 2).
    ctest --test-dir build-san --output-on-failure -j2 --timeout 900
  )
  DSV4_FUZZ_SEED=${DSV4_FUZZ_SEED:-1} scripts/fuzz.sh "${DSV4_FUZZ_SECONDS:-20}"
fi
