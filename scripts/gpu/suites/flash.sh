#!/usr/bin/env bash
# Synthetic DeepSeek-V4-Flash slice on the GPU (issue 6): random bf16 weights built on the device, decode
# ms/step against the HBM floor, prefill throughput, start-up. Repository root, .gpu-stage carried.
# FULL=1 runs the complete measurement (prefill 128/1024/4096, batches 1/16/64). EXTRA_ARGS adds bench options, e.g.
# EXTRA_ARGS="--cuda-weights quantized" for the slice in DeepSeek's FP8 / FP4 layout kept quantised (issue 17).
set -u
. "${STAGE:-.gpu-stage}/env.sh"
export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if [ "${FULL:-0}" = 1 ]; then
  args="--prefill 128,1024,4096 --batch 1,16,64 --context 1024 --reps 5 --decode-steps 32 --modes auto"
else
  args="--prefill 128 --batch 1,16 --context 256 --reps 3 --decode-steps 16 --modes auto --spec-tokens 0"
fi
timeout ${TIMEOUT:-400} dsv4 bench --synthetic flash --layers ${LAYERS:-3} --device cuda $args ${EXTRA_ARGS:-} > $OUT/flash.txt 2> $OUT/flash.log
echo "flash bench rc=$?"; cat $OUT/flash.txt; grep -E "error|CUDA graphs:" $OUT/flash.log | cut -c1-300 | tail -4
