#!/bin/bash
# Session 31, call 5: the lab's operand-swapped MoE GEMM (v3) run again after its header comment edit; on an H200 then
# the acceptance parts while LIMIT lasts.
set -u
. scripts/gpu/call_prologue.sh  # R, S, D, CARD, el, left, pack, acc; md5s
timeout 120 bench_moe_gemm rs > $D/moe_rs.txt 2>&1; el "bench_moe_gemm rs rc=$?"; grep -E "error|PASS|FAIL|ms" $D/moe_rs.txt | head -16; pack
[[ $CARD == *H200* ]] || exit 0
acc quant quant,prefill 64 45
acc contexts contexts 64 45
acc rms rms_norm 64 75
pack
