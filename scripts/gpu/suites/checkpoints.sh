#!/usr/bin/env bash
# Issue 17 on the GPU machine (torch + transformers present): the quantised fixtures from the independent Python
# quantiser and their CPU parity test, the default model's perplexity with dsv4's and Python's quantisers, and
# CUDA vs CPU agreement (KL, top-1) for bf16 and quantised weights. Run from the repository root with the dsv4
# CLI and dsv4_unit_tests on PATH (e.g. `. .gpu-stage/env.sh` first). Writes everything under $OUT; prints a
# summary last. Copy $OUT/quantized/qtiny_* to tests/fixtures/quantized/ to make the parity test run in CI.
set -u
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export DSV4_SOURCE_DIR=$PWD PYTHONUNBUFFERED=1
M=models/dsv4-tiny-kjv
TEXT=$M/heldout.txt
W=$(mktemp -d)
ppl() { dsv4 perplexity --json "$@" 2>>"$OUT/perplexity.log"; }

# 1. Fixtures from the independent quantiser, and dsv4's CPU parity on them.
timeout 900 python3 tools/reference/make_quantized_fixtures.py "$OUT/quantized" > "$OUT/fixtures.log" 2>&1
echo "fixtures rc=$?"
mkdir -p tests/fixtures/quantized
cp -r "$OUT"/quantized/qtiny_* tests/fixtures/quantized/ 2>/dev/null
timeout 300 dsv4_unit_tests --gtest_filter='QuantizedParity.*' > "$OUT/parity.txt" 2>&1
echo "parity rc=$?"; grep -E "PASSED|FAILED|SKIPPED|Failure" -A3 "$OUT/parity.txt" | head -20

# 2. The default model: Python's quantise-dequantise perplexity and checkpoint vs dsv4's.
timeout 900 python3 tools/reference/make_quantized_fixtures.py "$OUT" --kjv $M --heldout $TEXT > "$OUT/kjv.log" 2>&1
echo "python kjv rc=$?"; tail -1 "$OUT/kjv.log"
dsv4 quantize $M "$W/kjv-fp4" > /dev/null && echo "dsv4 quantize ok"
python3 tools/reference/make_quantized_fixtures.py - --compare "$W/kjv-fp4" "$OUT/kjv-python-fp4" > "$OUT/compare.json"
echo "bytes identical to the Python quantiser: rc=$? ($(grep -E '"identical"|"n_differ"' "$OUT/compare.json" | tr -d '\n '))"

# 3. Perplexity, KL and top-1: CPU references, then CUDA (bf16 activations) against them.
ppl -m $M --file $TEXT --save-logits "$W/cpu_bf16w.st" > "$OUT/cpu_bf16w.json"
ppl -m "$W/kjv-fp4" --file $TEXT --kl-reference "$W/cpu_bf16w.st" > "$OUT/cpu_fp4_vs_bf16w.json"
ppl -m "$W/kjv-fp4" --file $TEXT --save-logits "$W/cpu_fp4.st" > "$OUT/cpu_fp4.json"
ppl -m $M --file $TEXT --device cuda --kl-reference "$W/cpu_bf16w.st" > "$OUT/cuda_bf16w_vs_cpu.json"
ppl -m "$W/kjv-fp4" --file $TEXT --device cuda --kl-reference "$W/cpu_fp4.st" > "$OUT/cuda_fp4_vs_cpu.json"
for f in cpu_bf16w cpu_fp4_vs_bf16w cuda_bf16w_vs_cpu cuda_fp4_vs_cpu; do
  printf '%-22s %s\n' "$f" "$(cat "$OUT/$f.json" 2>/dev/null)"
done
cat "$OUT/kjv_perplexity.json" 2>/dev/null
rm -rf "$W"
