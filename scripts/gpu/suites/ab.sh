#!/usr/bin/env bash
# Decode-step A/B of libdsv4.so builds on one card (the per-session `.gpu-next/call.sh` loops, as a suite): the
# stage's programs run against each library in turn, every case once per round, AB_ROUNDS rounds in alternation
# (so drift in clocks or temperature falls on every library alike), then a table of the device ms/step (median of
# the rounds) per case and library, each library's ratio to the first, and the live steps' wall median (a batch
# row's device step replays the last batch, which may do less work than the live steps: ab_table.py). A suite of
# scripts/gpu/run.sh.
#   AB_LIBS    space-separated NAME=DIR (relative to the repository root, where run.sh runs suites), DIR holding a
#              libdsv4.so or a lib.tar.xz with lib/libdsv4.so (unpacked in place; scripts/gpu/stage-lib.sh makes one);
#              default: "stage=$STAGE/lib", the stage alone. NAME=DIR@VAR=VALUE[@VAR=VALUE...] runs that library with
#              those environment switches (an A/B of a DSV4_* switch: "off=$STAGE/lib@DSV4_L2_PREFETCH=0 on=$STAGE/lib")
#   AB_CASES   semicolon-separated NAME:BENCH ARGS on top of the Flash slice's decode line below; default
#              "bf16:--contexts 1024;quantized:--contexts 1024 --cuda-weights quantized"
#   AB_ROUNDS  rounds (default 2); AB_TIMEOUT seconds per bench run (default 60)
#   AB_BATCH   the line's `--batch` list (default 1). The table has a row per `--contexts` context (decoded at b = 1
#              whatever the batch) and one per batch (`decode` in the JSON: short prompts), e.g. for b = 16
#              AB_BATCH=16 AB_CASES="q:--contexts 1024 --cuda-weights quantized"
# Output: $OUT/ab.json (every run's figures) and the table, also in $OUT/ab.txt.
set -u
. "${STAGE:-.gpu-stage}/env.sh"
export LD_LIBRARY_PATH=${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}/usr/local/cuda/lib64
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/ab"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee "$OUT/card.txt"
base="--synthetic flash --layers 3 --device cuda --modes auto --prefill 128 --batch ${AB_BATCH:-1} --decode-steps 8 --reps 3
  --warmup 1 --spec-tokens 0 --kv-cache-memory 16000000000 --json"
libs=${AB_LIBS:-stage=$STAGE/lib}
cases=${AB_CASES:-bf16:--contexts 1024;quantized:--contexts 1024 --cuda-weights quantized}
names=()
declare -A lib_dir lib_env
for spec in $libs; do
  name=${spec%%=*} dir=${spec#*=} env_part=
  if [[ $dir == *@* ]]; then env_part=${dir#*@} dir=${dir%%@*}; fi
  if [ ! -f "$dir/libdsv4.so" ] && [ -f "$dir/lib.tar.xz" ]; then
    tar xJf "$dir/lib.tar.xz" -C "$dir" && dir=$dir/lib
  fi
  if [ ! -f "$dir/libdsv4.so" ]; then
    echo "ab: $name: no libdsv4.so in $dir" >&2
    exit 2
  fi
  if [[ ! $name =~ ^[A-Za-z0-9_.-]+$ ]] || [ -n "${lib_dir[$name]:-}" ]; then
    echo "ab: library names are distinct words of letters, digits, _ . - (got '$name')" >&2
    exit 2
  fi
  names+=("$name")
  lib_dir[$name]=$(cd "$dir" && pwd -P)
  lib_env[$name]=${env_part//@/ }
done
IFS=';' read -r -a case_list <<<"$cases"
for round in $(seq 1 "${AB_ROUNDS:-2}"); do
  for name in "${names[@]}"; do
    dir=${lib_dir[$name]}
    for c in "${case_list[@]}"; do
      cname=${c%%:*} cargs=${c#*:}
      # shellcheck disable=SC2086
      env ${lib_env[$name]} LD_LIBRARY_PATH="$dir:$LD_LIBRARY_PATH" timeout "${AB_TIMEOUT:-60}" dsv4 bench $base $cargs \
        >"$OUT/ab/${name}__${cname}__$round.json" 2>"$OUT/ab/${name}__${cname}__$round.log" ||
        echo "ab: $name $cname round $round: rc=$?"
    done
  done
done
python3 "$(dirname "${BASH_SOURCE[0]}")/ab_table.py" "$OUT/ab" "${names[@]}" --json "$OUT/ab.json" | tee "$OUT/ab.txt"
