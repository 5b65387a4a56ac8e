#!/bin/bash
# Session 28, call 3: stage = 48abe00 (+ the rms_norm lab library); on an H200 the suite and the acceptance parts, on an H100 the MTP-norm peers; .gpu-Z = full stage of main 5dc9e2d + the copy_segments patch + the H200 MTP-norm launch rule
# (+ host-only server route-table refactor); .gpu-H = main 5dc9e2d lib (the head).
# Any card: the candidate's whole GPU suite first (verification; on an H200 also issue 20's suite point).
# H200: acceptance parts on the candidate (head if the suite failed) by priority (contexts, serve at 64, quant +
# prefill, serve at 1/16/256, MTP norms), then memcheck and the pipelined A/B as time allows.
# H100: memcheck, pipelined A/B, then current H100 contexts/quant figures.
set -u
R=$(pwd); S=$R/.gpu-Z; (cd $S && tar xJf stage.tar.xz); (cd $R/.gpu-H && tar xJf lib.tar.xz)
. $S/env.sh; export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 DSV4_SOURCE_DIR=$R PYTHONUNBUFFERED=1
D=$OUT; CARD=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1); echo "$CARD" | tee $D/card.txt
T0=$(date +%s); el() { echo "[$(( $(date +%s)-T0 )) s] $*"; }; LIM=${LIMIT:-575}; left() { echo $(( LIM - ($(date +%s)-T0) )); }
pack() { (cd $D && tar czf /tmp/all.tmp.$BASHPID --exclude='*.csv' --exclude='*.tgz' --exclude='*.ncu-rep' . 2>/dev/null; mv /tmp/all.tmp.$BASHPID all.tgz); }
md5sum $S/bin/dsv4_gpu_tests $S/lib/libdsv4.so $R/.gpu-H/lib/libdsv4.so | tee $D/md5.txt
( while sleep 25; do pack; done ) & PACKER=$!
SRC=0; if [[ $CARD == *H200* ]]; then timeout $(( LIM - 10 < 200 ? LIM - 10 : 200 )) dsv4_gpu_tests > $D/suite_candidate.txt 2>&1; SRC=$?; el "candidate suite rc=$SRC"; fi
grep -E "^\[  (PASSED|FAILED)" $D/suite_candidate.txt | head -8; pack
san() { timeout $1 compute-sanitizer --tool memcheck dsv4_gpu_tests --gtest_filter='CudaCopySegments.*:CudaSampleTokens.*' > $D/memcheck.txt 2>&1; el "memcheck rc=$?"; tail -2 $D/memcheck.txt; pack; }
ab() { for r in $(seq $1); do for nl in head=$R/.gpu-H/lib new=$S/lib; do
    env LD_LIBRARY_PATH=${nl#*=}:$LD_LIBRARY_PATH timeout 60 dsv4 bench --synthetic flash --layers 3 --device cuda --modes auto --spec-tokens 0 \
      --kv-cache-memory 16000000000 --prefill 128 --batch 1 --contexts 1024,32768 --decode-steps 8 --reps 3 --warmup 1 2>&1 | \
      grep -E "^decode at context" | sed "s/^/${nl%%=*} r$r: /" | tee -a $D/ab_pipelined.txt; done; done; el "pipelined ab"; pack; }
if [[ $CARD == *H200* ]]; then
  export DSV4_LIB=""; [ $SRC -ne 0 ] && export DSV4_LIB=$R/.gpu-H/lib; echo "acceptance lib: ${DSV4_LIB:-candidate}"
  acc() { local name=$1 parts=$2 levels=$3 need=$4 L=$(left); [ $L -lt $need ] && { el "skip $name ($L s left)"; return; }
    STAGE=$S OUT=$D/acc_$name ACC_PARTS=$parts ACC_SERVE_LEVELS=$levels ACC_BUDGET=$((L-15)) timeout $((L-5)) \
      bash $S/scripts/gpu/suites/acceptance.sh > $D/acc_$name.txt 2>&1; el "acceptance $name"; pack; sed -n '/^---- acceptance/,$p' $D/acc_$name.txt; }
  acc contexts contexts 64 45
  acc serve64 serve 64 75
  acc quant quant,prefill 64 45
  acc serve_levels serve 1,16,256 150
  acc rms rms_norm 64 75
  unset DSV4_LIB
  L=$(left); [ $L -gt 70 ] && san 50
  L=$(left); [ $L -gt 45 ] && ab 1
  kill $PACKER 2>/dev/null; pack; exit 0
fi
L=$(left); STAGE=$S OUT=$D/acc ACC_PARTS=rms_norm ACC_BUDGET=$((L-10)) timeout $((L-5)) bash $S/scripts/gpu/suites/acceptance.sh > $D/acc.txt 2>&1; el "acc rms_norm"; sed -n "/^fused MTP input/,\$p" $D/acc/rms_norm.log | head -60
kill $PACKER 2>/dev/null; pack
