#!/bin/bash
# Session 30, call 6 (lean, little budget): unverified_rms_norm_warp_rows_cuda.patch on main ce6a44c — the RmsNorm /
# attention / paged attention / MTP-norm tests, the whole GPU suite, then bf16 prefill 4,096 head (.gpu-N) vs
# candidate; on an H200 with time left, the MTP-norm acceptance part.
set -u
R=$(pwd); S=$R/.gpu-Z; (cd $S && tar xJf stage.tar.xz); (cd $R/.gpu-N && tar xJf lib.tar.xz)
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
pack() { (cd $D && tar czf /tmp/all.tmp.$BASHPID --exclude='*.csv' --exclude='*.tgz' . 2>/dev/null; mv /tmp/all.tmp.$BASHPID all.tgz); }
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so $R/.gpu-N/libdsv4.so | tee $D/md5.txt
timeout 60 dsv4_gpu_tests --gtest_filter='CudaOps.RmsNorm*:CudaOps.Attention*:CudaPaged.Attention*' > $D/norm.txt 2>&1; el "norm + attention tests rc=$?"
grep -E "^\[  (PASSED|FAILED)|FAILED \]" $D/norm.txt | head; pack
timeout 120 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" $D/suite.txt | head; pack
for v in head new; do
  L=$S/lib; [ $v = head ] && L=$R/.gpu-N
  LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH timeout 30 dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --reps 3 --warmup 1 > $D/p_$v.txt 2>&1
  echo "$v: $(grep -E '^prefill' $D/p_$v.txt)"
done
pack
if [[ $CARD == *H200* ]]; then
  STAGE=$S OUT=$D/acc ACC_PARTS=rms_norm ACC_BUDGET=60 timeout 65 bash $S/scripts/gpu/suites/acceptance.sh > $D/acc.txt 2>&1
  el "acceptance rms_norm rc=$?"; sed -n '/^---- acceptance/,$p' $D/acc.txt | head -20; rm -f $D/acc/rms_norm/logs.tgz; pack
fi
