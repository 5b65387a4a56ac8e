#!/bin/bash
# Session 25, call 4 (little device time left): as call 3, shorter. H200: the pipelined tests, the whole suite on the
# stage (main's CUDA code) and the MTP-norm peers (issue 20). H100: the candidate's suite, memcheck, a one-round A/B.
set -u
R=$(pwd); S=$R/.gpu-Y; (cd $S && tar xJf stage.tar.xz); tar xJf .gpu-C/lib.tar.xz -C .gpu-C
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
pack() { (cd $D && tar czf all.tgz --exclude=all.tgz --exclude='*.csv' --exclude='*.tgz' --exclude='*.ncu-rep' . 2>/dev/null); }
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so .gpu-C/lib/libdsv4.so | tee $D/md5.txt
C="env LD_LIBRARY_PATH=$R/.gpu-C/lib:$LD_LIBRARY_PATH"
timeout 40 dsv4_gpu_tests --gtest_filter='CudaSampleTokens.Pipelined*' > $D/sample_tests.txt 2>&1; el "pipelined tests rc=$?"; grep -E "^\[  (PASSED|FAILED)|Failure|Which is" $D/sample_tests.txt | head; pack
if [[ $CARD == *H200* ]]; then
  STAGE=$S OUT=$D/acc ACC_PARTS=tests,rms_norm ACC_BUDGET=200 bash $S/scripts/gpu/suites/acceptance.sh > $D/acc.txt 2>&1; el "acceptance"; pack
  grep -hE "^\[  FAILED" $D/acc/tests/*.log 2>/dev/null | head; tail -12 $D/acc.txt; exit 0
fi
$C timeout 120 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite (candidate lib) rc=$?"; grep -E "^\[  (PASSED|FAILED)" $D/suite.txt | head -8; pack
$C timeout 30 compute-sanitizer --tool memcheck dsv4_gpu_tests --gtest_filter='CudaOps.HcPre*' > $D/memcheck.txt 2>&1; el "memcheck rc=$?"; tail -1 $D/memcheck.txt; pack
OUT=$D/ab AB_LIBS="head=.gpu-Y/lib new=.gpu-C/lib" AB_BATCH="1" AB_CASES="b16:--contexts 1024;q:--contexts 1024 --cuda-weights quantized" AB_ROUNDS=2 AB_TIMEOUT=60 STAGE=$S bash $S/scripts/gpu/suites/ab.sh > $D/ab.txt 2>&1; el "ab"; tail -12 $D/ab.txt; pack
