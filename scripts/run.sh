#!/usr/bin/env bash
# README command (a): install dependencies, build, and generate with the default model: the trained
# dsv4-tiny-kjv (models/, with tokenizer and MTP layer). Should it be absent, a random tiny checkpoint is
# created instead (models/tiny-random). Extra arguments go to `dsv4 generate` (e.g. --device cuda, -n 128,
# --spec-tokens 2, --prompt "...").
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
model=models/dsv4-tiny-kjv
if [ ! -f "$model/config.json" ]; then
  model=models/tiny-random
  [ -f "$model/config.json" ] || build/dsv4 make-tiny "$model" --seed 0
fi
exec build/dsv4 generate -m "$model" --prompt "Once upon a time" -n 64 "$@"
