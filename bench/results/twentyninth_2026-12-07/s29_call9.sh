#!/bin/bash
# Session 29, call 9: dequantize_to_bf16 by 8-value chunks (the quantised prefill's dense FP8 weights). .gpu-Z = full
# stage of the candidate (1cb8501 + the chunked dequantisation; lib 70e6eb60); .gpu-N/head.tar.xz = 1cb8501's lib
# (be28c4d2). The whole GPU suite on the candidate, then the quantised prefill A/B (two rounds) and its kernel trace.
set -u
R=$(pwd); S=$R/.gpu-Z; N=$R/.gpu-N; (cd $S && tar xJf stage.tar.xz); (cd $N && tar xJf head.tar.xz)
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=/tmp/o9; mkdir -p $D; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
md5sum $S/lib/libdsv4.so $N/lib/libdsv4.so $S/bin/dsv4_gpu_tests | tee $D/md5.txt
timeout 200 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED" $D/suite.txt | head
P=(--synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --reps 3 --warmup 1 --cuda-weights quantized)
for r in 1 2; do for lib in head new; do L=$S/lib; [ $lib = head ] && L=$N/lib
  LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH timeout 90 dsv4 bench "${P[@]}" >> $D/p_$lib.txt 2>&1; el "prefill $lib rc=$?"; grep -E "^prefill" $D/p_$lib.txt | tail -1; done; done
true
true
tar czf $OUT/o9.tgz -C /tmp o9
