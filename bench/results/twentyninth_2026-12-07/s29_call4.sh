#!/bin/bash
# Session 29, call 4: the quantised producer loop without per-chunk branches (one loop per format, zero-filled codes
# expand to zeros). .gpu-N/cand.tar.xz = candidate lib + labs: bench_moe_gemm (candidate), _v1 (call 2's), _base (head).
set -u
R=$(pwd); S=$R/.gpu-Z; N=$R/.gpu-N; (cd $S && tar xJf stage.tar.xz); (cd $N && tar xJf cand.tar.xz)
export DSV4_LIB=$N/lib; . $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
md5sum $N/lib/libdsv4.so $S/lib/libdsv4.so | tee $D/md5.txt; ldd $S/bin/dsv4 | grep dsv4
for r in 1 2; do for v in base v1 new; do
  B=$N/bin/bench_moe_gemm; [ $v != new ] && B=$N/bin/bench_moe_gemm_$v
  timeout 120 $B quant > $D/lab_${v}_$r.txt 2>&1; el "lab $v r$r rc=$?"; grep -E "FAIL|ms" $D/lab_${v}_$r.txt | sed "s/^/$v: /"
done; done
timeout 150 dsv4_gpu_tests --gtest_filter='CudaQuant.*:*Moe*' > $D/tests_moe.txt 2>&1; el "moe tests rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED" $D/tests_moe.txt | head
P=(--synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --reps 3 --warmup 1 --cuda-weights quantized)
for lib in head new; do L=$S/lib; [ $lib = new ] && L=$N/lib
  LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH timeout 90 dsv4 bench "${P[@]}" > $D/p_$lib.txt 2>&1; el "prefill $lib rc=$?"; grep -E "^prefill" $D/p_$lib.txt; done
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
timeout 150 $NCU --clock-control none -k regex:moe_gemm_wgmma_kernel -s 2 -c 1 --section WarpStateStats --section SourceCounters \
  --import-source no --page source --print-source sass --csv $N/bin/bench_moe_gemm quant > /tmp/src.csv 2> $D/ncu_src.log
el "ncu rc=$?"; gzip -c /tmp/src.csv > $D/src.csv.gz
