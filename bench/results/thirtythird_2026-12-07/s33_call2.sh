#!/bin/bash
# Session 33 call 2: where a 4,096-token Flash-slice prefill spends its time (CUPTI kernel timeline, per family),
# quantised + fp8 activations and bf16, and the quantised b = 1 decode step's timeline. Stage: the full one (.gpu-T,
# tracer included). Carry [".gpu-T"], STAGE_DIR=.gpu-T.
set -u
STAGE_DIR=.gpu-T . scripts/gpu/call_prologue.sh
TR=$S/lib/libdsv4_kernel_trace.so
P="dsv4 bench --synthetic flash --layers 3 --device cuda --prefill 4096 --batch 1 --decode-steps 2 --spec-tokens 0 --modes auto --kv-cache-memory 16000000000 --reps 2 --warmup 1"
for v in q8 bf16; do
  case $v in q8) a="--cuda-weights quantized --activation-quant fp8" ;; bf16) a="--cuda-weights bf16" ;; esac
  LD_PRELOAD=$TR DSV4_KERNEL_TRACE=$D/pf_$v.csv timeout 60 $P $a > $D/pf_$v.txt 2>&1; el "prefill $v rc=$?"
  grep -E "prefill +4096" $D/pf_$v.txt
  python3 $S/tools/profile/kernel_timeline.py $D/pf_$v.csv --steps 2 --where 'prefill_attention_kernel>100' \
    --json $D/pf_$v.json > $D/pf_${v}_tl.txt 2>&1; head -32 $D/pf_${v}_tl.txt
  gzip -9 $D/pf_$v.csv
done
pack
Q="dsv4 bench --synthetic flash --layers 3 --device cuda --modes auto --prefill 128 --batch 1 --decode-steps 16 --reps 2 --warmup 1 --spec-tokens 0 --context 1024 --cuda-weights quantized"
LD_PRELOAD=$TR DSV4_KERNEL_TRACE=$D/dq.csv timeout 60 $Q > $D/dq.txt 2>&1; el "decode q rc=$?"
grep -E "decode" $D/dq.txt | head -4
python3 $S/tools/profile/kernel_timeline.py $D/dq.csv --steps 16 --json $D/dq.json > $D/dq_tl.txt 2>&1; head -30 $D/dq_tl.txt
gzip -9 $D/dq.csv
pack
# The E4M3 gated / w2 products' limiters (speed of light, memory and compute workload, tensor pipe), lab Flash shape.
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
timeout 150 $NCU --clock-control none -k regex:moe_gemm_fp8_kernel -s 0 -c 2 --section SpeedOfLight \
  --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section Occupancy --section LaunchStats \
  --section WarpStateStats bench_moe_gemm fp8 > $D/ncu_fp8.txt 2>&1; el "ncu fp8 rc=$?"
grep -E "moe_gemm_fp8_kernel|Throughput|Pipe|L2 Cache|DRAM|Memory \[|Registers|Warp Cycles|Issued|Eligible|Achieved Occ" $D/ncu_fp8.txt | head -60
pack
