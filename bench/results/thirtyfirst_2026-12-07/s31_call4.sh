#!/bin/bash
# Session 31, call 4: the lab's operand-swapped MoE GEMM, v3 (six stages; scale loads combined only where used; v2: one commit group a k step with wait<3>, the FP4 pair
# by one byte_perm of the word and the word << 4, scales a stage ahead, one multiply) beside the library's kernel;
# then an ncu stall profile of v2's gated kernel.
set -u
. scripts/gpu/call_prologue.sh  # R, S, D, CARD, el, left, pack, acc; md5s
timeout 120 bench_moe_gemm rs > $D/moe_rs.txt 2>&1; el "bench_moe_gemm rs rc=$?"; grep -E "error|PASS|FAIL|ms" $D/moe_rs.txt | head -16; pack
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
timeout 150 $NCU --clock-control none -k regex:moe_gemm_rs_kernel -s 2 -c 1 --section WarpStateStats --section SourceCounters \
  --import-source no --page source --print-source sass --csv bench_moe_gemm rs > /tmp/src.csv 2> $D/ncu_src.log
el "ncu rc=$?"; gzip -c /tmp/src.csv > $D/rs_src.csv.gz; python3 $S/tools/profile/sass_stalls.py /tmp/src.csv > $D/rs_stalls.txt 2>&1; head -5 $D/rs_stalls.txt | cut -c1-200
pack
