#!/bin/bash
# Session 30, call 4 (main 39a6ce1 + kernel_timeline --launches): where the 64-head prefill attention should start —
# Flash-slice decode at b = 32 / 64 / 128 (T rows a step) with it off and on; then every launch of a bf16 4,096-token
# prefill step (which kernels are far from their bytes).
set -u
R=$(pwd); S=$R/.gpu-Z; (cd $S && tar xJf stage.tar.xz)
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
pack() { (cd $D && tar czf /tmp/all.tmp.$BASHPID --exclude='*.csv' --exclude='*.tgz' . 2>/dev/null; mv /tmp/all.tmp.$BASHPID all.tgz); }
md5sum $S/lib/libdsv4.so | tee $D/md5.txt
for round in 1 2; do
  for B in 32 64 128; do
    for P in 0 1; do
      DSV4_PREFILL_ATTENTION=$P timeout 100 dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 3000 --batch $B --decode-steps 8 --spec-tokens 0 --modes auto --reps 3 --warmup 1 > $D/d_${B}_${P}_$round.txt 2>&1
      echo "b=$B P=$P round $round: $(grep -E '^decode batch' $D/d_${B}_${P}_$round.txt)"
    done
  done
done
pack
LD_PRELOAD=$S/lib/libdsv4_kernel_trace.so DSV4_KERNEL_TRACE=/tmp/t.csv timeout 100 dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --reps 3 --warmup 1 > $D/trace.txt 2>&1
python3 $S/tools/profile/kernel_timeline.py /tmp/t.csv --where "moe_gemm_wgmma_kernel>300" --steps 3 --launches > $D/tl_4096.txt 2>&1; head -30 $D/tl_4096.txt
el done; pack
