#!/bin/bash
# Session 29, call 1. .gpu-Z = full stage of main bd14ffb (CUDA code = 48abe00's, whose suite passed on an H100).
# H200: the whole GPU suite (issue 20's H200 point), then every acceptance part by priority.
# Other cards: where a quantised 4,096-token prefill spends its time — CUPTI kernel sums of bf16 / quantised /
# quantised + --activation-quant fp8 prefills, and Nsight Compute sections of the quantised and bf16 MoE wgmma
# products (stall reasons, memory) — for the quantised-prefill work of issue 17.
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
P=(--synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto)
for v in bf16 quant quantfp8; do
  X=(); [ $v != bf16 ] && X=(--cuda-weights quantized); [ $v = quantfp8 ] && X+=(--activation-quant fp8)
  LD_PRELOAD=$S/lib/libdsv4_kernel_trace.so DSV4_KERNEL_TRACE=/tmp/t_$v.csv timeout 90 dsv4 bench "${P[@]}" --reps 3 --warmup 1 "${X[@]}" > $D/p_$v.txt 2>&1
  el "$v rc=$?"; grep -E "^prefill" $D/p_$v.txt
  python3 $S/tools/profile/kernel_timeline.py /tmp/t_$v.csv --where "moe_gemm_wgmma_kernel>300" --steps 3 > $D/tl_$v.txt 2>&1; head -24 $D/tl_$v.txt
  pack
done
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
for v in quant bf16; do
  X=(); [ $v != bf16 ] && X=(--cuda-weights quantized)
  L=$(left); [ $L -lt 60 ] && break
  timeout $((L-20)) $NCU --clock-control none -k regex:moe_gemm_wgmma -c 2 --section SpeedOfLight --section WarpStateStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy \
    --section LaunchStats --section SourceCounters dsv4 bench "${P[@]}" --reps 1 --warmup 0 "${X[@]}" > $D/ncu_$v.txt 2>&1
  el "ncu $v rc=$?"; pack
done
L=$(left); [ $L -gt 40 ] && { timeout $((L-10)) bench_moe_gemm > $D/lab.txt 2>&1; el "lab rc=$?"; tail -6 $D/lab.txt; }
kill $PACKER 2>/dev/null; pack
