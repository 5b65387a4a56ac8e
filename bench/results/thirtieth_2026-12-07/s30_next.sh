#!/bin/bash
# For the next session's first call: .gpu-Z = a lean stage (STAGE_LEAN=1 scripts/gpu/stage.sh build .gpu-Z) of main +
# unverified_rms_norm_warp_rows_cuda.patch + unverified_attention_lab_cuda.patch + unverified_moe_gemm_rs_lab_cuda.patch
# (it keeps the server library and cpp-httplib for the serve part); .gpu-N = main's library (scripts/gpu/stage-lib.sh
# build-main .gpu-N). Any card: the whole GPU suite (the patches' verification; on an H200 also issue 20's H200 suite
# point), the attention lab with both kernels, the operand-swapped MoE lab, bf16 prefill 4,096 head vs candidate.
# H200: then the acceptance parts by priority while time is left (LIMIT, default 575 s).
set -u
THIN_LIBS=.gpu-N . scripts/gpu/call_prologue.sh  # R, S, D, CARD, el, left, pack; md5s
timeout 150 dsv4_gpu_tests > $D/suite.txt 2>&1; el "suite rc=$?"; grep -E "^\[  (PASSED|FAILED)|FAILED \]" $D/suite.txt | head; pack
for P in 1 0; do
  DSV4_PREFILL_ATTENTION=$P timeout 60 bench_attention 4096 --json $D/attention_lab_$P.json > $D/attention_lab_$P.txt 2>&1
  el "attention lab DSV4_PREFILL_ATTENTION=$P rc=$?"; tail -3 $D/attention_lab_$P.txt
done
# unverified_moe_gemm_rs_lab_cuda.patch: the operand-swapped quantised MoE variant beside the current kernel (checks
# 256 sampled outputs of each product against the host dequantisation, then times both)
timeout 120 bench_moe_gemm rs > $D/moe_rs.txt 2>&1; el "bench_moe_gemm rs rc=$?"; grep -E "error|PASS|FAIL|ms " $D/moe_rs.txt | head -16
for v in head new; do
  L=$S/lib; [ $v = head ] && L=$R/.gpu-N/lib
  LD_LIBRARY_PATH=$L:$LD_LIBRARY_PATH timeout 40 dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --reps 3 --warmup 1 > $D/p_$v.txt 2>&1
  echo "$v: $(grep -E '^prefill' $D/p_$v.txt)"
done
pack
[[ $CARD == *H200* ]] || exit 0
acc() { local name=$1 parts=$2 levels=$3 need=$4 L=$(left); [ $L -lt $need ] && { el "skip $name ($L s left)"; return; }
  STAGE=$S OUT=$D/acc_$name ACC_PARTS=$parts ACC_SERVE_LEVELS=$levels ACC_BUDGET=$((L-15)) timeout $((L-5)) \
    bash $S/scripts/gpu/suites/acceptance.sh > $D/acc_$name.txt 2>&1; el "acceptance $name"; pack; sed -n '/^---- acceptance/,$p' $D/acc_$name.txt; }
acc rms rms_norm 64 75
acc contexts contexts 64 45
acc quant quant,prefill 64 45
acc serve64 serve 64 75
pack
