#!/bin/bash
# Session 25, call 1: stage = main 9d7453b + split attention first-tile/QK-split + rms_norm_rope two parts (.gpu-Y),
# baseline lib db258f6 (.gpu-H). H200: whole acceptance (suite included) first. H100: suite, sanitizers, A/B.
set -u
R=$(pwd); S=$R/.gpu-Y; (cd $S && tar xJf stage.tar.xz); tar xJf .gpu-H/lib.tar.xz -C .gpu-H
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
pack() { (cd $D && tar czf all.tgz --exclude=all.tgz --exclude='*.csv' --exclude='*.tgz' --exclude='*.ncu-rep' . 2>/dev/null); }
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so .gpu-H/lib/libdsv4.so | tee $D/md5.txt
if [[ $CARD == *H200* ]]; then
  STAGE=$S OUT=$D/acc ACC_SERVE_LEVELS=1,16,64,256 ACC_BUDGET=470 bash $S/scripts/gpu/suites/acceptance.sh > $D/acc.txt 2>&1; el "acceptance"; pack
  grep -hE "^\[  FAILED" $D/acc/tests/*.log 2>/dev/null | head
  timeout 25 compute-sanitizer --tool memcheck dsv4_gpu_tests --gtest_filter='CudaOps.AttentionFlashShapes:CudaOps.RmsNormRopeTwoParts' > $D/memcheck.txt 2>&1; el "memcheck rc=$?"; tail -1 $D/memcheck.txt
  timeout 25 compute-sanitizer --tool racecheck dsv4_gpu_tests --gtest_filter='CudaOps.AttentionFlashShapes' > $D/racecheck.txt 2>&1; el "racecheck rc=$?"; tail -1 $D/racecheck.txt; pack
  tail -30 $D/acc.txt
  exit 0
fi
TESTS_S=110 OUT=$D/suite bash $S/scripts/gpu/run.sh tests > $D/suite.txt 2>&1; el "suite"; tail -3 $D/suite.txt; grep -hE "^\[  FAILED" $D/suite/*.log 2>/dev/null | head; pack
timeout 30 compute-sanitizer --tool memcheck dsv4_gpu_tests --gtest_filter='CudaOps.AttentionFlashShapes:CudaOps.RmsNormRopeTwoParts' > $D/memcheck.txt 2>&1; el "memcheck rc=$?"; tail -2 $D/memcheck.txt; pack
timeout 30 compute-sanitizer --tool racecheck dsv4_gpu_tests --gtest_filter='CudaOps.AttentionFlashShapes' > $D/racecheck.txt 2>&1; el "racecheck rc=$?"; tail -2 $D/racecheck.txt; pack
OUT=$D/ab AB_LIBS="head=.gpu-H/lib new=.gpu-Y/lib" AB_BATCH="1,16" AB_CASES="b16:--contexts 1024,32768;q:--contexts 1024 --cuda-weights quantized" AB_ROUNDS=2 AB_TIMEOUT=60 STAGE=$S bash $S/scripts/gpu/suites/ab.sh > $D/ab.txt 2>&1; el "ab"; tail -16 $D/ab.txt; pack
