// Element types of tensors and checkpoints, with host-side conversions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace dsv4 {

// F8_E8M0: an unsigned power-of-two exponent byte (bias 127, 0xFF NaN), the scale format of DeepSeek's
// quantised checkpoints. I8: signed bytes (packed FP4 weights are stored as I8, two E2M1 values a byte).
enum class DType : uint8_t { F32, BF16, F16, I64, I32, F8_E4M3, U8, BOOL, F8_E8M0, I8 };

size_t dtype_size(DType t);
const char* dtype_name(DType t);  // safetensors spelling: "F32", "BF16", ...
// Parses a safetensors dtype string; returns false for anything dsv4 does not recognise.
bool parse_dtype(std::string_view s, DType* out);
inline bool is_float(DType t) {
  return t == DType::F32 || t == DType::BF16 || t == DType::F16 || t == DType::F8_E4M3;
}

// ---- scalar conversions (host) -------------------------------------------------------------
inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint32_t float_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }
// Round-to-nearest-even, NaN preserved (matches torch's float -> bfloat16 cast).
inline uint16_t float_to_bf16(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float round_to_bf16(float f) { return bf16_to_float(float_to_bf16(f)); }
float f16_to_float(uint16_t h);
uint16_t float_to_f16(float f);
float f8e4m3_to_float(uint8_t v);

// Converts `n` elements of a floating dtype to float32.
void convert_to_f32(DType src_type, const void* src, float* dst, size_t n);
// Converts `n` float32 values to a floating dtype (F32, BF16 or F16).
void convert_from_f32(const float* src, DType dst_type, void* dst, size_t n);

}  // namespace dsv4
