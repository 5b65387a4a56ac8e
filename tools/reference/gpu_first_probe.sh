#!/usr/bin/env bash
# First GPU-machine probe: environment facts, transformers sources we mirror, and the HF fixtures.
set -u
echo "== machine"; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
ls /usr/local/cuda/lib64 2>/dev/null | grep -E "cublasLt" ; ldconfig -p | grep -E "cublasLt|libgomp" | head
TD=$(python3 -c "import transformers,os;print(os.path.dirname(transformers.__file__))")
python3 -c "import transformers,torch;print('transformers',transformers.__version__,'torch',torch.__version__)"
tar czf "$OUT/hf_src.tgz" -C "$TD" models/deepseek_v4 modeling_rope_utils.py masking_utils.py \
  conversion_mapping.py activations.py cache_utils.py core_model_loading.py 2>&1 | tail -2
echo "== our binaries"; . .gpu-stage/env.sh && dsv4_gpu_tests 2>&1 | tail -3
echo "== fixtures"; PYTHONUNBUFFERED=1 python3 tools/reference/make_fixtures.py /tmp/fx 2>&1 | tee "$OUT/fixtures.log" | tail -30
tar czf "$OUT/fixtures.tgz" -C /tmp fx; ls -la "$OUT"
