// `dsv4 quantize`: writes a checkpoint in DeepSeek's official quantised layout from any checkpoint dsv4 loads.
#pragma once

#include <cstdint>
#include <string>

#include "dsv4/io/quantization.h"

namespace dsv4 {

struct QuantizeOptions {
  // Routed experts: kFp4 (the released Flash / Pro), kFp8Block (the "-Base" checkpoints) or kPlain (bf16).
  WeightFormat experts = WeightFormat::kFp4;
  // Largest shard in bytes; tensors are never split, so a shard may exceed it by one tensor.
  size_t shard_bytes = size_t{5} << 30;
};

struct QuantizeReport {
  size_t tensors = 0;       // written, scales included
  size_t input_bytes = 0;   // the source checkpoint's tensors
  size_t output_bytes = 0;  // the written tensors
  int shards = 0;
};

// Reads `in_dir` (validated as load_weights does; quantised sources are dequantised exactly first) and writes
// `out_dir`: config.json with quantization_config {fp8, e4m3, ue8m0, [128, 128], dynamic} and expert_dtype;
// the dense projections as F8_E4M3 with F8_E8M0 128 x 128 block scales, routed experts as `experts` says
// (FP4: I8 [out, in/2] + F8_E8M0 [out, in/32]), every other tensor unchanged; official names, shards
// `model-0000i-of-0000n.safetensors` with `model.safetensors.index.json`; tokenizer files copied.
// Scales are the smallest powers of two that hold each block's largest magnitude (io/quantization.h).
QuantizeReport quantize_checkpoint(const std::string& in_dir, const std::string& out_dir,
                                   const QuantizeOptions& options);

}  // namespace dsv4
