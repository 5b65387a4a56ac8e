#!/bin/bash
# Session 30, call 5: rms_norm_warp_kernel (bf16 rows of 512-1,024 a warp a row). RmsNorm tests, then bf16 Flash prefill
# 4,096 / 32,768 tokens, head (.gpu-N: main 39a6ce1) vs candidate (.gpu-Z) in alternation, then the whole GPU suite.
set -u
R=$(pwd); S=$R/.gpu-Z; (cd $S && tar xJf stage.tar.xz); (cd $R/.gpu-N && tar xJf lib.tar.xz)
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
pack() { (cd $D && tar czf /tmp/all.tmp.$BASHPID --exclude='*.csv' --exclude='*.tgz' . 2>/dev/null; mv /tmp/all.tmp.$BASHPID all.tgz); }
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so $R/.gpu-N/libdsv4.so | tee $D/md5.txt
if [[ $CARD == *H200* ]]; then  # the whole suite first (issue 20's H200 point), then the MTP-norm acceptance part
  timeout 220 dsv4_gpu_tests > $D/suite_h200.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" $D/suite_h200.txt | head; pack
  STAGE=$S OUT=$D/acc ACC_PARTS=rms_norm ACC_BUDGET=150 timeout 160 bash $S/scripts/gpu/suites/acceptance.sh > $D/acc.txt 2>&1
  el "acceptance rms_norm rc=$?"; sed -n '/^---- acceptance/,$p' $D/acc.txt | head -30; rm -f $D/acc/rms_norm/logs.tgz; pack
fi
timeout 100 dsv4_gpu_tests --gtest_filter='CudaOps.RmsNorm*:CudaOps.Attention*:CudaPaged.Attention*:*MtpNorm*' > $D/norm.txt 2>&1; el "norm tests rc=$?"
grep -E "^\[  (PASSED|FAILED)|FAILED \]" $D/norm.txt | head; pack
for round in 1; do
  for v in head new; do
    L=$S/lib; [ $v = head ] && L=$R/.gpu-N
    for T in 4096 32768; do
      LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH timeout 100 dsv4 bench --synthetic flash --layers 3 --device cuda --prefill $T --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --kv-cache-memory 16000000000 --reps 3 --warmup 1 > $D/p_${T}_${v}_$round.txt 2>&1
      echo "$v T=$T round $round: $(grep -E '^prefill' $D/p_${T}_${v}_$round.txt)"
    done
  done
done
pack
# (no trace: the carry limit)

if [[ $CARD != *H200* ]] && grep -q "^\[  PASSED" $D/norm.txt && ! grep -q "FAILED" $D/norm.txt; then
  timeout 220 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" $D/suite.txt | head
fi
pack
