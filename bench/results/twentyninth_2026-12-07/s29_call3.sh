#!/bin/bash
# Session 29, call 3: call 2's candidate verified on its own library (call 2's suite and engine A/B had run the head's:
# env.sh fixes LD_LIBRARY_PATH when sourced), then Nsight Compute's per-instruction stall samples of the candidate's
# quantised gated product (the lab's Flash shape).
set -u
R=$(pwd); S=$R/.gpu-Z; N=$R/.gpu-N; (cd $S && tar xJf stage.tar.xz); (cd $N && tar xJf cand.tar.xz)
export DSV4_LIB=$N/lib; . $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" > $D/env.txt; md5sum $N/lib/libdsv4.so $S/lib/libdsv4.so | tee $D/md5.txt
timeout 150 dsv4_gpu_tests --gtest_filter='CudaQuant.*:*Moe*' > $D/tests_moe.txt 2>&1; el "moe tests rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED" $D/tests_moe.txt | head
grep -c "" /proc/$$/maps >/dev/null; ldd $S/bin/dsv4 | grep dsv4 | tee -a $D/env.txt
P=(--synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --reps 3 --warmup 1 --cuda-weights quantized)
for lib in head new head new; do L=$S/lib; [ $lib = new ] && L=$N/lib
  LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH timeout 90 dsv4 bench "${P[@]}" > $D/p_$lib.txt 2>&1; el "prefill $lib rc=$?"; grep -E "^prefill" $D/p_$lib.txt; done
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
timeout 200 $NCU --clock-control none -k regex:moe_gemm_wgmma_kernel -s 2 -c 1 --section WarpStateStats --section SourceCounters \
  --import-source no --page source --print-source sass --csv $N/bin/bench_moe_gemm quant > /tmp/src.csv 2> $D/ncu_src.log
el "ncu rc=$?"; python3 $S/stalls.py /tmp/src.csv > $D/stalls.txt 2>&1; head -60 $D/stalls.txt | cut -c1-220
gzip -c /tmp/src.csv > $D/src.csv.gz; ls -la $D/src.csv.gz
