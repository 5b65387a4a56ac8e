#!/bin/bash
# Session 29, call 2: the quantised MoE prefill GEMM's producer rework (lane-pair code rows, scales two stages ahead,
# one arrive a warp, no second-multiply path for ordinary scales). .gpu-Z = full stage of bd14ffb (head);
# .gpu-N/cand.tar.xz = the candidate libdsv4.so + the lab (bench_moe_gemm, with its quantised Flash timing) built on
# the candidate and on the head kernel (bench_moe_gemm_base).
set -u
R=$(pwd); S=$R/.gpu-Z; N=$R/.gpu-N; (cd $S && tar xJf stage.tar.xz); (cd $N && tar xJf cand.tar.xz)
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }; LIM=${LIMIT:-570}; left() { echo $(( LIM - ($(date +%s)-T0) )); }
md5sum $N/lib/libdsv4.so $S/lib/libdsv4.so | tee $D/md5.txt
for r in 1 2; do for v in base new; do
  B=$N/bin/bench_moe_gemm; [ $v = base ] && B=$N/bin/bench_moe_gemm_base
  LD_LIBRARY_PATH=$N/lib:$LD_LIBRARY_PATH timeout 120 $B quant > $D/lab_${v}_$r.txt 2>&1; el "lab $v r$r rc=$?"; grep -E "FAIL|PASS|ms" $D/lab_${v}_$r.txt | sed "s/^/$v: /"
done; done
DSV4_LIB=$N/lib timeout 150 dsv4_gpu_tests --gtest_filter='CudaQuant.*:*Moe*' > $D/tests_moe.txt 2>&1; el "moe tests rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED" $D/tests_moe.txt | head
P=(--synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --reps 3 --warmup 1 --cuda-weights quantized)
for lib in head new; do L=$S/lib; [ $lib = new ] && L=$N/lib
  DSV4_LIB=$L timeout 90 dsv4 bench "${P[@]}" > $D/p_$lib.txt 2>&1; el "prefill $lib rc=$?"; grep -E "^prefill" $D/p_$lib.txt; done
L=$(left); [ $L -gt 150 ] && { DSV4_LIB=$N/lib timeout $((L-10)) dsv4_gpu_tests > $D/suite_new.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED" $D/suite_new.txt | head; }
true
