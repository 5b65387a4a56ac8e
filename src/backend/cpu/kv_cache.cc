// The attention caches' formats on the CPU (ops::KvRoundTrip): the values a cache of the format gives back, computed
// in place on f32 rows; and the activations' FP8 format of --activation-quant fp8 (kFp8Blocks128). The CPU keeps its
// caches in f32 and applies the round trip where a value enters a cache (the window kv before attention reads it, an
// entry before it is stored), which is exactly what storing the format and reading it back gives.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_ops.h"
#include "dsv4/io/quantization.h"
#include "dsv4/ops/kv_fp4.h"

namespace dsv4::cpu {
namespace {

constexpr float kE4m3Max = 448.0f;
constexpr float kAmaxFloor = 1e-4f;
constexpr int64_t kFp8Block = 64;             // the cache's blocks
constexpr int64_t kFp8ActivationBlock = 128;  // the activations' blocks (DeepSeek's act_quant)

float amax(const float* x, int64_t n) {
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// e4m3(x / s) * s for n values at scale s (x / s saturates at +-448 in the encoder).
void e4m3_round_trip(float* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] = f8e4m3_to_float(float_to_f8e4m3(x[i] / s)) * s;
}

void bf16_round_trip(float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = round_to_bf16(x[i]);
}

// E4M3 per `block` values (the last block may be shorter), each block at a power-of-two (UE8M0) scale: x / s is
// exact, and |x / s| <= 448 for every x of the block.
void e4m3_blocks_round_trip(float* x, int64_t n, int64_t block) {
  for (int64_t b = 0; b < n; b += block) {
    const int64_t m = std::min(block, n - b);
    const int e = scale_exponent(std::max(amax(x + b, m), kAmaxFloor), kE4m3Max);
    e4m3_round_trip(x + b, m, std::ldexp(1.0f, e));
  }
}

// kFp4Rotated: the Hadamard rotation (kv_fp4.h's butterfly), then E2M1 per group at the smallest power-of-two scale
// 2^e with max(amax, 6 * 2^-126) <= 6 * 2^e, through io/quantization.h's codec (kv_fp4.h has its own, checked
// against this one).
void fp4_rotated_round_trip(float* x, int64_t n) {
  kvfp4::rotate(x, n);
  const int64_t g = kvfp4::group_of(n);
  const float floor = std::ldexp(kvfp4::kE2m1Max, kvfp4::kMinExponent);
  for (int64_t b = 0; b < n; b += g) {
    const int e = scale_exponent(std::max(amax(x + b, g), floor), kvfp4::kE2m1Max);
    for (int64_t i = b; i < b + g; ++i) {
      x[i] = std::ldexp(fp4_e2m1_to_float(float_to_fp4_e2m1(std::ldexp(x[i], -e))), e);
    }
  }
}

}  // namespace

void kv_round_trip_row(float* row, int64_t width, int64_t rope_dim, KvRoundTrip format) {
  switch (format) {
    case KvRoundTrip::kNone:
      return;
    case KvRoundTrip::kBf16:
      return bf16_round_trip(row, width);
    case KvRoundTrip::kFp8Blocks: {
      const int64_t plain = width - rope_dim;
      e4m3_blocks_round_trip(row, plain, kFp8Block);
      return bf16_round_trip(row + plain, rope_dim);
    }
    case KvRoundTrip::kFp8Row:
      return e4m3_round_trip(row, width, std::max(amax(row, width), kAmaxFloor) / kE4m3Max);
    case KvRoundTrip::kFp8Blocks128:
      return e4m3_blocks_round_trip(row, width, kFp8ActivationBlock);
    case KvRoundTrip::kFp4Rotated:
      return fp4_rotated_round_trip(row, width);
  }
}

void kv_round_trip(Tensor x, int64_t rope_dim, KvRoundTrip format) {
  const int64_t width = x.size(-1), rows = x.numel() / std::max<int64_t>(width, 1);
  for (int64_t r = 0; r < rows; ++r) kv_round_trip_row(x.ptr<float>() + r * width, width, rope_dim, format);
}

}  // namespace dsv4::cpu
