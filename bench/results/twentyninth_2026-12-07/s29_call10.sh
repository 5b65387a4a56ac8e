#!/bin/bash
# Session 29, call 10: the quantised producers expand two stages an iteration (one fence, both slots awaited first).
# .gpu-Z = stage with the candidate lib; .gpu-N/labs.tar.xz = the candidate lab and b1ed23e's (_v3).
set -u
R=$(pwd); S=$R/.gpu-Z; N=$R/.gpu-N; (cd $S && tar xJf stage.tar.xz); (cd $N && tar xJf labs.tar.xz)
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=/tmp/o10; mkdir -p $D; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
md5sum $S/lib/libdsv4.so | tee $D/md5.txt
for r in 1 2; do for v in v3 new; do B=$N/bin/bench_moe_gemm; [ $v = v3 ] && B=$N/bin/bench_moe_gemm_v3
  timeout 120 $B > $D/lab_${v}_$r.txt 2>&1; el "lab $v r$r rc=$?"; grep -E "FAIL|ALL|quantised.*ms" $D/lab_${v}_$r.txt | sed "s/^/$v: /"; done; done
timeout 150 dsv4_gpu_tests --gtest_filter='CudaQuant.*:*Moe*' > $D/tests_moe.txt 2>&1; el "moe tests rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED" $D/tests_moe.txt | head
P=(--synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --reps 3 --warmup 1 --cuda-weights quantized)
timeout 90 dsv4 bench "${P[@]}" > $D/p_new.txt 2>&1; el "prefill rc=$?"; grep -E "^prefill" $D/p_new.txt
tar czf $OUT/o10.tgz -C /tmp o10
