#!/usr/bin/env bash
# Per-kernel profile of one decode step (issue 6): the tiny default model and the synthetic Flash slice at
# batch 1, each as ms/step under the default graph policy and as ncu kernel durations of one eager decode
# forward (DSV4_PROFILE_DECODE). Repository root, .gpu-stage carried. Logs under $OUT.
set -u
. .gpu-stage/env.sh
export DSV4_SOURCE_DIR=$PWD LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader | tee $OUT/gpu.txt
[ -n "${PRE:-}" ] && eval "$PRE"
profile() {  # name, dsv4 bench args...
  local name=$1; shift
  timeout 200 dsv4 bench "$@" --modes auto --json > $OUT/$name.json 2> $OUT/$name.log
  echo "$name bench rc=$?"
  python3 -c "import json,sys; j=json.load(open('$OUT/$name.json')); [print('$name decode b=%d %.3f ms/step' % (d['batch'], d['ms_per_step']['median'] if isinstance(d.get('ms_per_step'),dict) else d.get('ms_per_step', -1)), {k: v for k, v in d.items() if 'floor' in k}) for d in j.get('decode', [])]" 2>&1 | tail -3
  DSV4_PROFILE_DECODE=2 timeout 240 $NCU --profile-from-start off --clock-control none --metrics gpu__time_duration.sum \
    --csv --page raw dsv4 bench "$@" --modes none --reps 1 --warmup 0 --decode-steps 6 > $OUT/${name}_ncu.csv 2> $OUT/${name}_ncu.log
  echo "$name ncu rc=$?"
  python3 tools/profile/ncu_summary.py $OUT/${name}_ncu.csv --json $OUT/${name}_kernels.json --top ${TOP:-22}
}
profile tiny -m models/dsv4-tiny-kjv --device cuda --prefill 128 --batch 1 --spec-tokens 0 --context 64
profile flash --synthetic flash --layers 3 --device cuda --prefill 128 --batch 1 --spec-tokens 0 --context 256
