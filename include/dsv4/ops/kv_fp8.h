// The packed rows of the FP8 attention cache (--kv-cache-dtype fp8 on CUDA): byte layouts and the scalar codec,
// written once for host and device. The CUDA writers (ring stores, compressor entries) and readers (attention,
// indexer) use these functions; the CPU keeps f32 rows and applies KvRoundTrip (backend/cpu/kv_cache.cc), and a
// CPU test checks that packing a row here and reading it back gives exactly that round trip.
//
// KvStorage::kFp8Blocks, a row of `width` = P + R values (the last R = rope_dim are the RoPE part), P % 8 == 0:
//   bytes [0, P)              E4M3 codes of the no-RoPE part
//   bytes [P, P + 2R)         the RoPE part in bf16
//   bytes [P + 2R, + P / 64)  one UE8M0 byte per 64 codes (exponent + 127; the last block may be shorter)
//   padded to 8 bytes: 584 bytes at width 512, rope 64 (448 + 128 + 7 + 1), vs 1024 in bf16.
// KvStorage::kFp8Row, a row of `width` values, width % 4 == 0: `width` E4M3 codes, then one fp32 scale:
//   132 bytes at width 128, vs 256 in bf16 (vLLM's FP8 indexer-key layout).
// KvStorage::kFp4Rotated, the indexer keys of the fp8 cache: dsv4/ops/kv_fp4.h (68 bytes at width 128); the
//   functions below take it too.
// Encoding, as the CPU's round trip: scale 2^e with e the smallest exponent such that max(amax, 1e-4) <= 448 * 2^e
// (clamped to [-127, 127]) for a block, s = max(amax, 1e-4) / 448 for an fp8 row; codes = round-to-nearest-even
// onto the finite E4M3 values of x / s, saturating at +-448 (NaN -> 0x7F); dequantised value = e4m3(code) * s.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "dsv4/ops/kv_fp4.h"
#include "dsv4/ops/paged_rows.h"

#ifdef __CUDACC__
#define DSV4_KV_HD __host__ __device__ __forceinline__
#else
#define DSV4_KV_HD inline
#endif

namespace dsv4::kvfp8 {

constexpr float kE4m3Max = 448.0f;
constexpr float kAmaxFloor = 1e-4f;  // the CPU round trip's floor (backend/cpu/kv_cache.cc)
constexpr int64_t kBlock = 64;       // codes per UE8M0 scale

using kvfp4::bits_float;  // the bit casts and 2^e, host and device
using kvfp4::float_bits;
using kvfp4::pow2;

// bf16 bits of f, round-to-nearest-even, NaN kept (dtype.h's float_to_bf16).
DSV4_KV_HD uint16_t bf16_bits(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
DSV4_KV_HD float bf16_value(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// Round-to-nearest-even onto the finite E4M3FN values, saturating at +-448, NaN -> 0x7F (io/quantization.h's
// float_to_f8e4m3, computed instead of searched: the scalings by powers of two below are exact).
DSV4_KV_HD uint8_t e4m3_encode(float x) {
  if (x != x) return 0x7F;
  const uint8_t sign = (float_bits(x) >> 24) & 0x80;
  const float a = fabsf(x);
  if (!(a < kE4m3Max)) return sign | 0x7E;
  if (a < 0.015625f) {  // below 2^-6: subnormals, steps of 2^-9 (code 8 = 2^-6 when it rounds up)
    return sign | static_cast<uint8_t>(rintf(a * 512.0f));
  }
  int k = 0;
  frexpf(a, &k);                                            // a = f 2^k, f in [0.5, 1)
  const int E = k - 1;                                      // a = (1 + m / 8) 2^E, E in [-6, 8]
  const int q = static_cast<int>(rintf(ldexpf(a, 3 - E)));  // in [8, 16]: 16 carries into the exponent
  return sign | static_cast<uint8_t>(((E + 7) << 3) + (q - 8));
}

// The value of an E4M3FN code (0x7F / 0xFF: NaN).
DSV4_KV_HD float e4m3_value(uint8_t c) {
  const int e = (c >> 3) & 15, m = c & 7;
  float v;
  if (e == 15 && m == 7) {
    v = bits_float(0x7fc00000u);
  } else if (e == 0) {
    v = static_cast<float>(m) * 0.001953125f;  // m 2^-9
  } else {
    v = static_cast<float>(8 + m) * pow2(e - 10);
  }
  return (c & 0x80) ? -v : v;
}

// The UE8M0 exponent of a block with largest magnitude `amax` (already floored, > 0): the smallest e with
// amax <= 448 2^e, clamped to [-127, 127] (io/quantization.h's scale_exponent at qmax 448).
DSV4_KV_HD int block_exponent(float amax) {
  if (!(amax <= 3.40282347e38f)) return 127;  // inf: the largest scale (NaN never reaches here: amax skips NaN)
  int k = 0;
  const float f = frexpf(amax, &k);  // amax = f 2^k; 448 = 0.875 2^9
  const int e = k - 9 + (f > 0.875f ? 1 : 0);
  return e < -127 ? -127 : (e > 127 ? 127 : e);
}

// ---- row layouts ------------------------------------------------------------------------------------------
DSV4_KV_HD int64_t blocks_of(int64_t plain) { return (plain + kBlock - 1) / kBlock; }

// Bytes of one packed row (0 for kPlain: the caller sizes plain rows by their dtype).
DSV4_KV_HD int64_t row_bytes(KvStorage s, int64_t width, int64_t rope_dim) {
  switch (s) {
    case KvStorage::kFp8Blocks: {
      const int64_t plain = width - rope_dim;
      return (plain + 2 * rope_dim + blocks_of(plain) + 7) / 8 * 8;
    }
    case KvStorage::kFp8Row:
      return (width + 4 + 3) / 4 * 4;
    case KvStorage::kFp4Rotated:
      return kvfp4::row_bytes(width);
    default:
      return 0;
  }
}

// Whether a packed format takes rows of this shape (the readers load 8 codes at a time).
inline bool shape_ok(KvStorage s, int64_t width, int64_t rope_dim) {
  if (s == KvStorage::kFp8Blocks) {
    return rope_dim >= 0 && rope_dim % 2 == 0 && width > rope_dim && (width - rope_dim) % 8 == 0;
  }
  if (s == KvStorage::kFp8Row) return width > 0 && width % 8 == 0;
  if (s == KvStorage::kFp4Rotated) return kvfp4::width_ok(width) && width <= kvfp4::kMaxDeviceWidth;
  return true;
}

// kFp8Blocks: where the parts of a row start.
DSV4_KV_HD const uint16_t* rope_part(const uint8_t* row, int64_t plain) {
  return reinterpret_cast<const uint16_t*>(row + plain);
}
DSV4_KV_HD const uint8_t* scale_bytes(const uint8_t* row, int64_t plain, int64_t rope_dim) {
  return row + plain + 2 * rope_dim;
}

// Element e of a packed row, dequantised.
DSV4_KV_HD float element(const uint8_t* row, KvStorage s, int64_t width, int64_t rope_dim, int64_t e) {
  if (s == KvStorage::kFp4Rotated) return kvfp4::element(row, width, e);
  if (s == KvStorage::kFp8Row) {
    float scale;
    std::memcpy(&scale, row + width, 4);
    return e4m3_value(row[e]) * scale;
  }
  const int64_t plain = width - rope_dim;
  if (e >= plain) return bf16_value(rope_part(row, plain)[e - plain]);
  return e4m3_value(row[e]) * pow2(static_cast<int>(scale_bytes(row, plain, rope_dim)[e / kBlock]) - 127);
}

// kFp8Row's scale for a row with largest magnitude `amax`.
DSV4_KV_HD float row_scale(float amax) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(fmaxf(amax, kAmaxFloor), kE4m3Max);
#else
  return fmaxf(amax, kAmaxFloor) / kE4m3Max;
#endif
}
// x / s, IEEE (the CPU's division; exact for the power-of-two block scales).
DSV4_KV_HD float divide(float x, float s) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(x, s);
#else
  return x / s;
#endif
}

// Packs a whole row on the host (tests and tools; the CUDA kernels pack with a block per row). `x` has `width`
// values; `out` has row_bytes(s, width, rope_dim) bytes (the padding is zeroed).
inline void pack_row_host(const float* x, KvStorage s, int64_t width, int64_t rope_dim, uint8_t* out) {
  if (s == KvStorage::kFp4Rotated) return kvfp4::pack_row_host(x, width, out);  // rotates a copy of x
  const int64_t bytes = row_bytes(s, width, rope_dim);
  std::memset(out, 0, static_cast<size_t>(bytes));
  auto amax_of = [](const float* v, int64_t n) {
    float m = 0.0f;
    for (int64_t i = 0; i < n; ++i) m = fmaxf(m, fabsf(v[i]));
    return m;
  };
  if (s == KvStorage::kFp8Row) {
    const float scale = row_scale(amax_of(x, width));
    for (int64_t i = 0; i < width; ++i) out[i] = e4m3_encode(divide(x[i], scale));
    std::memcpy(out + width, &scale, 4);
    return;
  }
  const int64_t plain = width - rope_dim;
  for (int64_t b = 0; b < blocks_of(plain); ++b) {
    const int64_t lo = b * kBlock, n = plain - lo < kBlock ? plain - lo : kBlock;
    const int e = block_exponent(fmaxf(amax_of(x + lo, n), kAmaxFloor));
    out[plain + 2 * rope_dim + b] = static_cast<uint8_t>(e + 127);
    for (int64_t i = lo; i < lo + n; ++i) out[i] = e4m3_encode(divide(x[i], pow2(e)));
  }
  for (int64_t i = 0; i < rope_dim; ++i) {
    const uint16_t h = bf16_bits(x[plain + i]);
    std::memcpy(out + plain + 2 * i, &h, 2);
  }
}

}  // namespace dsv4::kvfp8
