#!/usr/bin/env bash
# Configures and builds dsv4 into build/ (Release, Ninja, -j2 by default: DSV4_JOBS overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
jobs=${DSV4_JOBS:-2}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build -j"$jobs"
