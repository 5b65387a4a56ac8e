#!/usr/bin/env bash
# README command (a): install dependencies, build, create the tiny default model if absent, generate.
# Extra arguments go to `dsv4 generate` (e.g. --device cuda, -n 64, --prompt "...").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
model=models/tiny-random
[ -f "$model/config.json" ] || build/dsv4 make-tiny "$model" --seed 0
exec build/dsv4 generate -m "$model" --prompt "Hello, dsv4" -n 32 "$@"
