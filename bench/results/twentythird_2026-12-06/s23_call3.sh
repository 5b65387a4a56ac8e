#!/bin/bash
# Session 23, final code: layout restore + review folds + rope tokens per block (mHC token groups, compressor_emit warp
# rows, moe_plan warp counts and prefill_pad_rows reverted after call 1). Suite, memcheck, tiny prefill kernel sums,
# quantised b = 1 A/B vs c19d2af.
set -u
R=$(pwd); S=$R/.gpu-X; (cd $S && tar xJf stage.tar.xz); tar xJf .gpu-Q/lib.tar.xz -C .gpu-Q
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1 | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
pack() { (cd $D && tar czf all.tgz --exclude=all.tgz --exclude='*.csv' --exclude='*.tgz' . 2>/dev/null); }
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so | tee $D/md5.txt
TESTS_S=200 OUT=$D/suite bash $S/scripts/gpu/run.sh tests > $D/suite.txt 2>&1; el "suite"; tail -3 $D/suite.txt; grep -hE "^\[  FAILED" $D/suite/*.log 2>/dev/null | head; pack
timeout 150 compute-sanitizer --tool memcheck dsv4_gpu_tests --gtest_filter='CudaOpParity.Rope:CudaOps.RmsNormRope:CudaOps.AttentionSmallHeadsPrefill:CudaOps.CompressorEmitChunkedEqualsOneShot:CudaOps.HcPreAndHead:CudaOps.HcPost' > $D/memcheck.txt 2>&1; el "memcheck"; tail -2 $D/memcheck.txt; pack
timeout 60 compute-sanitizer --tool racecheck dsv4_gpu_tests --gtest_filter='CudaOps.AttentionSmallHeadsPrefill' > $D/racecheck.txt 2>&1; el "racecheck"; tail -1 $D/racecheck.txt; pack
for lib in new c19d2af; do
  L=$S/lib; [ $lib = c19d2af ] && L=$R/.gpu-Q/lib
  LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH LD_PRELOAD=$S/lib/libdsv4_kernel_trace.so DSV4_KERNEL_TRACE=/tmp/p_$lib.csv timeout 60 dsv4 bench -m models/dsv4-tiny-kjv --device cuda --modes auto --prefill 8192 --batch 1 --decode-steps 2 --reps 10 --warmup 1 --spec-tokens 0 > $D/p_$lib.txt 2>&1
  echo "== $lib"; grep -E "^prefill" $D/p_$lib.txt; python3 $S/fwsum.py /tmp/p_$lib.csv > $D/fwsum_$lib.txt; head -14 $D/fwsum_$lib.txt
done; el "traces"; pack
OUT=$D/ab AB_LIBS="c19d2af=.gpu-Q/lib new=.gpu-X/lib" AB_BATCH="1" AB_CASES="q:--contexts 1024 --cuda-weights quantized;bf16:--contexts 1024" AB_ROUNDS=2 STAGE=$S bash $S/scripts/gpu/suites/ab.sh > $D/ab.txt 2>&1; el "ab"; tail -12 $D/ab.txt; pack
