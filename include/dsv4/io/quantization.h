// DeepSeek's quantised checkpoint formats: the `quantization_config` / `expert_dtype` of config.json, and the
// exact host codecs of its weight formats (docs/checkpoints.md).
//
//  - FP8 block: F8_E4M3 weight [out, in] + F8_E8M0 scale [ceil(out/128), ceil(in/128)];
//    w[n, k] = e4m3(q[n, k]) * 2^(S[n/128, k/128] - 127) (the scale multiplies).
//  - FP4 (MXFP4-style experts): I8 weight [out, in/2], two E2M1 values a byte, element 2j in the low nibble,
//    magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6} with bit 3 the sign; F8_E8M0 scale [out, ceil(in/32)];
//    w[n, k] = e2m1(q[n, k]) * 2^(S[n, k/32] - 127).
// Both dequantise exactly into f32 (and into bf16: e4m3 and e2m1 values times a power of two are bf16 values).
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

namespace dsv4 {

// How one weight matrix is stored in a checkpoint.
enum class WeightFormat : uint8_t {
  kPlain,     // F32 / BF16 / F16, no scale
  kFp8Block,  // F8_E4M3 [out, in] + F8_E8M0 [ceil(out/128), ceil(in/128)]
  kFp4,       // I8 [out, in/2] packed E2M1 + F8_E8M0 [out, ceil(in/32)]
};
// "plain", "fp8-e4m3 (ue8m0 128x128 blocks)", "fp4-e2m1 (ue8m0 per 32)"
const char* weight_format_name(WeightFormat f);

constexpr int64_t kFp8Block = 128;  // weight_block_size [128, 128]
constexpr int64_t kFp4Group = 32;   // inputs per FP4 scale

// The checkpoint's quantisation, from config.json: `quantization_config` ({"quant_method": "fp8", "fmt":
// "e4m3", "scale_fmt": "ue8m0", "weight_block_size": [128, 128], "activation_scheme": "dynamic"}) and the
// top-level `expert_dtype` ("fp4" | "fp8" | "bf16"; also read inside quantization_config, as V4.1 writes it).
struct QuantizationConfig {
  bool quantized = false;                       // quantization_config present
  WeightFormat dense = WeightFormat::kPlain;    // dense projections: FP8 when quantized
  WeightFormat experts = WeightFormat::kPlain;  // routed experts: expert_dtype (absent: as the dense ones)
  std::string expert_dtype;                     // as written in config.json ("" when absent)

  // FP8 dense projections with FP4 (fp4) or FP8 (fp8) routed experts: the official Flash / Pro layout.
  static QuantizationConfig official(WeightFormat experts = WeightFormat::kFp4);
};

// Parses the quantisation fields of a config.json object. Absent fields of quantization_config take
// DeepSeek-V4's values (e4m3, ue8m0, [128, 128], dynamic). Errors (kParseError) name the field: unknown
// quant_method / fmt / scale_fmt / activation_scheme / expert_dtype, block sizes other than 128 x 128 (named
// as unsupported), an fp4/fp8 expert_dtype without quantization_config, conflicting expert_dtype values.
QuantizationConfig parse_quantization_config(const nlohmann::json& root, const std::string& origin);
// Writes quantization_config and expert_dtype into a config.json object (nothing for a plain checkpoint).
void write_quantization_config(const QuantizationConfig& q, nlohmann::json& root);

// ---- scalar codecs -----------------------------------------------------------------------------------------
float fp4_e2m1_to_float(uint8_t nibble);  // low 4 bits: sign bit 3, magnitude table {0, .5, 1, 1.5, 2, 3, 4, 6}
// Round-to-nearest-even onto the finite E4M3FN values, saturating at +-448 (NaN -> 0x7F).
uint8_t float_to_f8e4m3(float x);
// The UE8M0 (power-of-two) scale of a block: the smallest e with amax <= qmax * 2^e, exactly, clamped to the E8M0
// range [-127, 127]; 0 for an all-zero block. The weight quantisers and the fp8 KV cache (backend/cpu/kv_cache.cc).
int scale_exponent(double amax, double qmax);
// Round-to-nearest-even onto the E2M1 values, saturating at +-6 (NaN is a caller error: 0 is returned).
uint8_t float_to_fp4_e2m1(float x);

// Storage shapes of an [out, in] weight in a format: the weight itself and its scale (empty for kPlain).
std::vector<int64_t> quantized_weight_shape(WeightFormat f, int64_t out, int64_t in);
std::vector<int64_t> quantized_scale_shape(WeightFormat f, int64_t out, int64_t in);

// ---- matrix codecs (host, OpenMP over rows for large matrices) --------------------------------------------
// Dequantise into f32 [out, in], exactly. `what` names the tensor in errors: a NaN weight code (E4M3
// 0x7F/0xFF), a NaN scale (E8M0 0xFF) or a scale large enough to overflow f32 (2^120 for FP8, 2^126 for FP4)
// throw kInvalidArgument with its position.
void dequantize_fp8_block(const uint8_t* q, const uint8_t* scale, int64_t out, int64_t in, float* dst,
                          const std::string& what);
void dequantize_fp4(const uint8_t* packed, const uint8_t* scale, int64_t out, int64_t in, float* dst,
                    const std::string& what);
// The widest span, in binades, of one row's group scales in an FP4 matrix [out, in] (scale [out, ceil(in / 32)]):
// max over rows of (largest - smallest scale byte). CUDA's E4M3 MoE products (--activation-quant fp8) fold a row's
// group scales into E4M3 codes relative to its largest, exactly while this is at most 14.
int fp4_row_scale_span(const uint8_t* scale, int64_t out, int64_t in);

// Quantise f32 [out, in]. Each block (FP8: 128 x 128, FP4: 1 x 32 along `in`) gets the smallest power-of-two
// scale s with amax <= qmax * s (qmax 448 / 6; an all-zero block gets s = 1; exponents below 2^-127 clamp to
// it), values are rounded to nearest-even of w / s. Non-finite inputs throw kInvalidArgument naming `what`.
// q: [out, in] bytes (FP8) or [out, in/2] packed (FP4, `in` even); scale: quantized_scale_shape bytes.
void quantize_fp8_block(const float* w, int64_t out, int64_t in, uint8_t* q, uint8_t* scale, const std::string& what);
void quantize_fp4(const float* w, int64_t out, int64_t in, uint8_t* packed, uint8_t* scale, const std::string& what);

}  // namespace dsv4
