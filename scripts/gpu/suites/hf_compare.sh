#!/usr/bin/env bash
# dsv4 (default graph mode) and transformers (eager, torch.compile) decode at batch 1 on the default model,
# same card, same run. Repository root, .gpu-stage carried.
set -u
. "${STAGE:-.gpu-stage}/env.sh"
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
dsv4 bench -m models/dsv4-tiny-kjv --device cuda --modes auto --prefill 128 --batch 1 --spec-tokens 0 --reps 9 --json \
  > $OUT/dsv4_b1.json 2>/dev/null
python3 -c "import json;d=json.load(open('$OUT/dsv4_b1.json'));r=d['runs'][0];print('dsv4 default mode decode b=1: %.3f ms/step, load+capture %.3f s'%(r['decode'][0]['ms_per_step']['median'], r['load_seconds']))"
timeout 240 python3 bench/hf_compare.py --model models/dsv4-tiny-kjv --compile-budget 170 > $OUT/hf.json 2> $OUT/hf.log
echo "hf rc=$?"; grep -E "HF eager|torch.compile|Error" $OUT/hf.log | tail -4
