#!/bin/bash
# Session 29, last call (small budget): on an H200 only — the whole GPU suite on the final code (lib 70e6eb60; issue
# 20's H200 suite point), then the MTP-norm part (rms_norm tests, C-API parity, Triton peers) as time allows; any
# other card: exit at once.
set -u
R=$(pwd); S=$R/.gpu-Z; (cd $S && tar xJf stage.tar.xz)
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
[[ $CARD == *H200* ]] || { echo "not an H200: nothing to do"; exit 0; }
T0=$(date +%s); LIM=${LIMIT:-150}; left() { echo $(( LIM - ($(date +%s)-T0) )); }
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so | tee $D/md5.txt
timeout $(( LIM - 10 )) dsv4_gpu_tests > $D/suite_h200.txt 2>&1; echo "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)" $D/suite_h200.txt | head -8
L=$(left); [ $L -gt 40 ] && { STAGE=$S OUT=$D/acc ACC_PARTS=rms_norm ACC_BUDGET=$((L-5)) timeout $((L-3)) bash $S/scripts/gpu/suites/acceptance.sh > $D/acc.txt 2>&1; sed -n "/^fused MTP input/,\$p" $D/acc/rms_norm.log | head -30; }
rm -f $D/acc/rms_norm/logs.tgz
