#!/bin/bash
# Session 30, call 1. .gpu-Z = full stage of main c3c604b (CUDA code = session 29's verified build).
# H200: the whole GPU suite (issue 20's H200 point), then every acceptance part by priority.
# Other cards: the bf16 prefill's kernel split at 4,096 and 32,768 tokens (baseline for a 64-head prefill attention).
set -u
R=$(pwd); S=$R/.gpu-Z; (cd $S && tar xJf stage.tar.xz)
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }; LIM=${LIMIT:-575}; left() { echo $(( LIM - ($(date +%s)-T0) )); }
pack() { (cd $D && tar czf /tmp/all.tmp.$BASHPID --exclude='*.csv' --exclude='*.tgz' --exclude='*.ncu-rep' . 2>/dev/null; mv /tmp/all.tmp.$BASHPID all.tgz); }
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so | tee $D/md5.txt
( while sleep 25; do pack; done ) & PACKER=$!
if [[ $CARD == *H200* ]]; then
  timeout 200 dsv4_gpu_tests > $D/suite_h200.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)" $D/suite_h200.txt | head -8; pack
  acc() { local name=$1 parts=$2 levels=$3 need=$4 L=$(left); [ $L -lt $need ] && { el "skip $name ($L s left)"; return; }
    STAGE=$S OUT=$D/acc_$name ACC_PARTS=$parts ACC_SERVE_LEVELS=$levels ACC_BUDGET=$((L-15)) timeout $((L-5)) \
      bash $S/scripts/gpu/suites/acceptance.sh > $D/acc_$name.txt 2>&1; el "acceptance $name"; pack; sed -n '/^---- acceptance/,$p' $D/acc_$name.txt; }
  acc rms rms_norm 64 75
  acc contexts contexts 64 45
  acc serve64 serve 64 75
  acc quant quant,prefill 64 45
  acc serve_levels serve 1,16,256 150
  kill $PACKER 2>/dev/null; pack; exit 0
fi
for T in 4096 32768; do
  P=(--synthetic flash --layers 3 --device cuda --prefill $T --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --kv-cache-memory 16000000000)
  LD_PRELOAD=$S/lib/libdsv4_kernel_trace.so DSV4_KERNEL_TRACE=/tmp/t_$T.csv timeout 120 dsv4 bench "${P[@]}" --reps 3 --warmup 1 > $D/p_$T.txt 2>&1
  el "$T rc=$?"; grep -E "^prefill" $D/p_$T.txt
  python3 $S/tools/profile/kernel_timeline.py /tmp/t_$T.csv --where "moe_gemm_wgmma_kernel>300" --steps 3 > $D/tl_$T.txt 2>&1; head -14 $D/tl_$T.txt
  pack
done
kill $PACKER 2>/dev/null; pack
