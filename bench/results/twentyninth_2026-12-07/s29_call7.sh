#!/bin/bash
# Session 29, call 7: the producers issue stage t + 1's copies after stage t's fence (one stage ahead).
# .gpu-N/cand.tar.xz = candidate lib + labs: bench_moe_gemm (candidate), _v3 (call 6), _v2 (be4c8cd).
set -u
R=$(pwd); S=$R/.gpu-Z; N=$R/.gpu-N; (cd $S && tar xJf stage.tar.xz); (cd $N && tar xJf cand.tar.xz)
export DSV4_LIB=$N/lib; . $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=/tmp/o7; mkdir -p $D; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
md5sum $N/lib/libdsv4.so | tee $D/md5.txt; ldd $S/bin/dsv4 | grep dsv4
for r in 1 2; do for v in v2 v3 new; do
  B=$N/bin/bench_moe_gemm; [ $v != new ] && B=$N/bin/bench_moe_gemm_$v
  timeout 120 $B > $D/lab_${v}_$r.txt 2>&1; el "lab $v r$r rc=$?"; grep -E "FAIL|ALL|ms" $D/lab_${v}_$r.txt | sed "s/^/$v: /"
done; done
timeout 150 dsv4_gpu_tests --gtest_filter='CudaQuant.*:*Moe*' > $D/tests_moe.txt 2>&1; el "moe tests rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED" $D/tests_moe.txt | head
P=(--synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --reps 3 --warmup 1 --cuda-weights quantized)
timeout 90 dsv4 bench "${P[@]}" > $D/p_new.txt 2>&1; el "prefill new rc=$?"; grep -E "^prefill" $D/p_new.txt
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
timeout 150 $NCU --clock-control none -k regex:moe_gemm_wgmma_kernel -s 2 -c 1 --section WarpStateStats --section SourceCounters \
  --import-source no --page source --print-source sass --csv $N/bin/bench_moe_gemm quant > $D/src.csv 2> $D/ncu_src.log
el "ncu rc=$?"; tar czf $OUT/o7.tgz -C /tmp o7
