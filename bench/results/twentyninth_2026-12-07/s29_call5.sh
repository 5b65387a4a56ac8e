#!/bin/bash
# Session 29, call 5: call 4's candidate (lib 8eafb7c3): the whole GPU suite on it, the bf16 prefill beside the
# quantised one, and Nsight Compute's per-instruction stall samples of its quantised gated product (packed in one
# archive: a call returns few files).
set -u
R=$(pwd); S=$R/.gpu-Z; N=$R/.gpu-N; (cd $S && tar xJf stage.tar.xz); (cd $N && tar xJf cand.tar.xz)
export DSV4_LIB=$N/lib; . $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=/tmp/o5; mkdir -p $D; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
md5sum $N/lib/libdsv4.so $S/bin/dsv4_gpu_tests | tee $D/md5.txt; ldd $S/bin/dsv4_gpu_tests | grep dsv4 | tee -a $D/md5.txt
timeout 200 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED" $D/suite.txt | head
P=(--synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --reps 3 --warmup 1)
for v in bf16 quant; do X=(); [ $v = quant ] && X=(--cuda-weights quantized)
  timeout 90 dsv4 bench "${P[@]}" "${X[@]}" > $D/p_$v.txt 2>&1; el "prefill $v rc=$?"; grep -E "^prefill" $D/p_$v.txt; done
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
timeout 150 $NCU --clock-control none -k regex:moe_gemm_wgmma_kernel -s 2 -c 1 --section WarpStateStats --section SourceCounters \
  --section SpeedOfLight --section MemoryWorkloadAnalysis --import-source no --page source --print-source sass --csv $N/bin/bench_moe_gemm quant > $D/src.csv 2> $D/ncu_src.log
el "ncu rc=$?"
timeout 100 $NCU --clock-control none -k regex:moe_gemm_wgmma_kernel -s 2 -c 1 --section SpeedOfLight --section MemoryWorkloadAnalysis \
  --section ComputeWorkloadAnalysis --section WarpStateStats $N/bin/bench_moe_gemm quant > $D/ncu_sections.txt 2>&1; el "ncu2 rc=$?"
grep -E "Duration|Throughput|Busy|Pipe|highest|excessive" $D/ncu_sections.txt | head -20
tar czf $OUT/o5.tgz -C /tmp o5; ls -la $OUT
