#!/bin/bash
# Session 23, call 1: moe_plan warp counts + compressor_emit warp rows + mHC per-token kernels several tokens a block + review refactors (window_key, entry_key, store_bf16x4, ballot shared keys, rope_pair) + split attention layout restored + prefill_pad_rows + rope tokens per block (unverified patches
# of session 22). Suite, memcheck, [H200: acceptance], quantised b = 1 A/B (e476712 / c19d2af / new), tiny prefill
# kernel sums c19d2af vs new, tiny serve at 64 c19d2af vs new.
set -u
R=$(pwd); S=$R/.gpu-X; (cd $S && tar xJf stage.tar.xz)
for P in Q; do tar xJf .gpu-$P/lib.tar.xz -C .gpu-$P; done
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
pack() { (cd $D && tar czf all.tgz --exclude=all.tgz --exclude='*.csv' --exclude='*.tgz' . 2>/dev/null); }
TESTS_S=200 OUT=$D/suite bash $S/scripts/gpu/run.sh tests > $D/suite.txt 2>&1; el "suite"; tail -4 $D/suite.txt; grep -hE "^\[  FAILED" $D/suite/*.log 2>/dev/null | head; pack
if [[ $CARD == *H200* ]]; then
  STAGE=$S OUT=$D/acc ACC_PARTS=rms_norm,contexts,quant,prefill,serve ACC_SERVE_LEVELS=1,16,64,256 ACC_BUDGET=330 bash $S/scripts/gpu/suites/acceptance.sh > $D/acc.txt 2>&1; el "acceptance"; tail -30 $D/acc.txt; pack
fi
timeout 120 compute-sanitizer --tool memcheck dsv4_gpu_tests --gtest_filter='CudaOpParity.Rope:CudaOps.Attention:CudaOps.AttentionSmallHeads:CudaOps.AttentionSmallHeadsPrefill' > $D/memcheck.txt 2>&1; el "memcheck"; tail -2 $D/memcheck.txt; pack
timeout 90 compute-sanitizer --tool memcheck dsv4_gpu_tests --gtest_filter='CudaOps.HcPreAndHead:CudaOps.HcPost:CudaOps.CompressorEmit*:CudaOps.MoeExpertsSmallShapes' > $D/memcheck_hc.txt 2>&1; el "memcheck hc rc=$?"; tail -2 $D/memcheck_hc.txt; pack
OUT=$D/ab AB_LIBS="c19d2af=.gpu-Q/lib new=.gpu-X/lib" AB_BATCH="1" AB_CASES="q:--contexts 1024 --cuda-weights quantized" AB_ROUNDS=2 STAGE=$S bash $S/scripts/gpu/suites/ab.sh > $D/ab.txt 2>&1; el "ab"; tail -8 $D/ab.txt; pack
P=$R/tools/profile
for lib in new c19d2af; do
  L=$S/lib; [ $lib = c19d2af ] && L=$R/.gpu-Q/lib
  LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH LD_PRELOAD=$S/lib/libdsv4_kernel_trace.so DSV4_KERNEL_TRACE=$D/p_$lib.csv timeout 60 dsv4 bench -m models/dsv4-tiny-kjv --device cuda --modes auto --prefill 8192 --batch 1 --decode-steps 2 --reps 10 --warmup 1 --spec-tokens 0 > $D/p_$lib.txt 2>&1
  echo "== $lib"; grep -E "^prefill" $D/p_$lib.txt; python3 $S/famsum.py $D/p_$lib.csv $P 2>&1 | head -14 > $D/famsum_$lib.txt; grep -E "kernels|rope|rms|attention" $D/famsum_$lib.txt
done; el "traces"; pack
rm -rf /tmp/old_stage && cp -r $S /tmp/old_stage && cp $R/.gpu-Q/lib/libdsv4.so /tmp/old_stage/lib/
for lib in new c19d2af new c19d2af; do [ $(( $(date +%s)-T0 )) -gt 470 ] && break; ST=$S; [ $lib = c19d2af ] && ST=/tmp/old_stage
  STAGE=$ST OUT=$D/serve_$lib MODELS=tiny LEVELS=64 LOAD_ARGS="--requests-per-slot 8" MAX_S=15 bash $S/scripts/gpu/suites/serve.sh > $D/serve_$lib.txt 2>&1
  echo "== $lib"; grep -E "concurrency 64" $D/serve_$lib.txt; grep -E "engine" $D/serve_$lib/load_tiny.txt | head -3; el "serve $lib"; cat $D/serve_$lib.txt >> $D/serve_all.txt; pack
done
for lib in new c19d2af; do
  L=$S/lib; [ $lib = c19d2af ] && L=$R/.gpu-Q/lib
  LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH timeout 60 dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --reps 3 --modes auto --spec-tokens 0 > $D/flash_prefill_$lib.txt 2>&1
  echo "== flash prefill $lib"; grep -E "^prefill" $D/flash_prefill_$lib.txt
done; el "flash prefill"; pack
