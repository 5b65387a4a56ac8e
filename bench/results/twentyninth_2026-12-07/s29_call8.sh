#!/bin/bash
# Session 29, call 8: call 6's candidate (lib be28c4d2: A copies without per-row selects, the scale load after the
# fence) — the whole GPU suite on it, then the lab (bf16 + quantised) beside the session's head, the bf16 and quantised
# 4,096-token prefills, and acceptance.sh's quant part (decode b = 1 / 16 on the quantised slice).
set -u
R=$(pwd); S=$R/.gpu-Z; N=$R/.gpu-N; (cd $S && tar xJf stage.tar.xz); (cd $N && tar xJf cand.tar.xz)
export DSV4_LIB=$N/lib; . $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=/tmp/o8; mkdir -p $D; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
md5sum $N/lib/libdsv4.so $S/bin/dsv4_gpu_tests | tee $D/md5.txt; ldd $S/bin/dsv4_gpu_tests | grep dsv4 | tee -a $D/md5.txt
timeout 200 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED" $D/suite.txt | head
for v in base new; do B=$N/bin/bench_moe_gemm; [ $v = base ] && B=$N/bin/bench_moe_gemm_base
  timeout 120 $B > $D/lab_$v.txt 2>&1; el "lab $v rc=$?"; grep -E "FAIL|ALL|ms" $D/lab_$v.txt | sed "s/^/$v: /"; done
P=(--synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --reps 3 --warmup 1)
for v in bf16 quant bf16 quant; do X=(); [ $v = quant ] && X=(--cuda-weights quantized)
  timeout 90 dsv4 bench "${P[@]}" "${X[@]}" >> $D/p_$v.txt 2>&1; el "prefill $v rc=$?"; grep -E "^prefill" $D/p_$v.txt | tail -1; done
STAGE=$S OUT=$D/acc ACC_PARTS=quant ACC_BUDGET=120 timeout 130 bash $S/scripts/gpu/suites/acceptance.sh > $D/acc.txt 2>&1; el "acc quant rc=$?"
sed -n '/^---- acceptance/,$p' $D/acc.txt
tar czf $OUT/o8.tgz -C /tmp o8
