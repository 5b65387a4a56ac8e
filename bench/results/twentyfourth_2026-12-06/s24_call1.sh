#!/bin/bash
# Session 24, call 1 (stage = db258f6's verified binaries; .gpu-N = the moe_decode_quant candidate's lib).
# H200: whole suite + acceptance on the stage, then the candidate's A/B. Other cards: the A/B, timelines, source counters.
set -u
AB_EXTRA=
R=$(pwd); S=$R/.gpu-X; (cd $S && tar xJf stage.tar.xz)
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }
pack() { (cd $D && tar czf all.tgz --exclude=all.tgz --exclude='*.csv' --exclude='*.tgz' --exclude='*.ncu-rep' . 2>/dev/null); }
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so | tee $D/md5.txt
if [[ $CARD == *H200* ]]; then
  TESTS_S=200 OUT=$D/suite bash $S/scripts/gpu/run.sh tests > $D/suite.txt 2>&1; el "suite"; tail -4 $D/suite.txt; grep -hE "^\[  FAILED" $D/suite/*.log 2>/dev/null | head; pack
  STAGE=$S OUT=$D/acc ACC_PARTS=rms_norm,contexts,quant,prefill,serve ACC_SERVE_LEVELS=1,16,64,256 ACC_BUDGET=300 bash $S/scripts/gpu/suites/acceptance.sh > $D/acc.txt 2>&1; el "acceptance"; tail -30 $D/acc.txt; pack
fi
ab() { OUT=$D/ab$1 AB_LIBS="head=.gpu-X/lib new=.gpu-N/lib $AB_EXTRA" AB_BATCH="$2" AB_CASES="$3" AB_ROUNDS=$4 AB_TIMEOUT=90 STAGE=$S bash $S/scripts/gpu/suites/ab.sh > $D/ab$1.txt 2>&1; el "ab $1"; tail -8 $D/ab$1.txt; pack; }
tar xJf .gpu-N/lib.tar.xz -C .gpu-N
LD_LIBRARY_PATH=$R/.gpu-N/lib:$LD_LIBRARY_PATH timeout 120 dsv4_gpu_tests --gtest_filter='CudaQuant.*:CudaOps.Moe*:*Moe*' > $D/new_moe_tests.txt 2>&1; el "new lib moe tests rc=$?"; grep -E "PASSED|FAILED" $D/new_moe_tests.txt | head; pack
[[ $CARD == *H200* ]] && exit 0
AB_EXTRA="carve=.gpu-N/lib@DSV4_SMEM_CARVEOUT=100" ab 1 "1,16" "q:--contexts 1024 --cuda-weights quantized;b16:--contexts 1024" 2
P=$R/tools/profile
F=(--synthetic flash --layers 3 --device cuda --modes auto --prefill 128 --batch 1 --decode-steps 16 --reps 2 --warmup 1 --spec-tokens 0 --kv-cache-memory 16000000000)
for c in b16 q; do [ $(( $(date +%s)-T0 )) -gt 400 ] && break
  X=""; [ $c = q ] && X="--cuda-weights quantized"
  LD_PRELOAD=$S/lib/libdsv4_kernel_trace.so DSV4_KERNEL_TRACE=$D/t_$c.csv timeout 90 dsv4 bench "${F[@]}" --context 1024 $X > $D/t_$c.txt 2>&1
  grep -E "^decode" $D/t_$c.txt; python3 $P/kernel_timeline.py $D/t_$c.csv --steps 16 > $D/timeline_$c.txt 2>&1; head -30 $D/timeline_$c.txt
done; el "timelines"; pack
for ctx in 1024; do [ $(( $(date +%s)-T0 )) -gt 450 ] && break
  STAGE=$S OUT=$D/src_$ctx PHASES=source SOURCE_KERNELS='^split_attention_kernel' NCU_CONTEXT=$ctx bash $S/scripts/gpu/suites/longctx.sh > $D/src_$ctx.txt 2>&1
  el "source $ctx"; tail -40 $D/src_$ctx.txt; pack
done
