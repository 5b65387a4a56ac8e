#!/usr/bin/env bash
# GPU run: graph/model tests, reference-script checks (MTP fixtures reproduce, trainer smoke run), a CUDA
# generation, and HF transformers timed on the default model beside dsv4. Repository root, .gpu-stage carried.
set -u
. .gpu-stage/env.sh
export DSV4_SOURCE_DIR=$PWD LD_LIBRARY_PATH=$LD_LIBRARY_PATH:/usr/local/cuda/lib64 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout 120 dsv4_gpu_tests --gtest_filter='GraphModel*:*GraphModel*:*CudaModelParity.GreedyTokensMatchCpuEngine*' \
  > $OUT/tests.txt 2>&1; echo "tests rc=$?"; grep -E "PASSED  \]|FAILED  \]|Failure" -A2 $OUT/tests.txt | head -20
python3 tools/reference/make_mtp_fixtures.py /tmp/mfx > $OUT/mtp_fixtures.log 2>&1; echo "mtp fixtures rc=$?"
for f in model.safetensors expected.safetensors; do
  cmp -s /tmp/mfx/mtp_tiny/$f tests/fixtures/mtp/mtp_tiny/$f && echo "$f reproduces bit for bit" || echo "$f DIFFERS"
done
timeout 120 python3 tools/train/train_tiny.py --corpus build/corpus/kjv.txt --out /tmp/smoke --smoke > $OUT/smoke.log 2>&1
echo "trainer smoke rc=$?"; grep -E "acceptance K=2|export check|error" $OUT/smoke.log | head -3
dsv4 generate -m models/dsv4-tiny-kjv -p "And God said" -n 48 --device cuda --spec-tokens 2 2>&1 | tail -3
dsv4 bench -m models/dsv4-tiny-kjv --device cuda --modes auto --prefill 128 --batch 1 --spec-tokens 0 --reps 9 --json \
  > $OUT/dsv4_b1.json 2>/dev/null
python3 -c "import json;d=json.load(open('$OUT/dsv4_b1.json'));r=d['runs'][0];print('dsv4 default mode decode b=1: %.3f ms/step, load %.3f s'%(r['decode'][0]['ms_per_step']['median'], r['load_seconds']))"
timeout 220 python3 bench/hf_compare.py --model models/dsv4-tiny-kjv --compile-budget 150 > $OUT/hf.json 2> $OUT/hf.log
echo "hf rc=$?"; grep -vE "Warning|warn" $OUT/hf.log | tail -4
