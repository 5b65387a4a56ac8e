// The indexer's FP4 keys of DeepSeek-V4's cache (KvRoundTrip::kFp4Rotated): the row is rotated by the normalised
// Walsh-Hadamard transform, then held in E2M1 per group of 32 values (the whole row when it is shorter) with a
// power-of-two (E8M0) scale per group — what DeepSeek's reference does to the indexer's query and compressed keys
// (rotate_activation, then fp4_act_quant at block 32). Written once for host and device: the CPU round trip
// (backend/cpu/kv_cache.cc) computes the same values through io/quantization.h's codec, and a CPU test checks that
// packing a row here and reading it back gives exactly that round trip.
//
// Rotation: y = H x / sqrt(n), H the Sylvester Hadamard matrix of order n (a power of two), computed as the
// butterfly below, stage by stage in the order h = 1, 2, 4, ...: every output is the same sequence of f32 additions
// and subtractions whoever computes it (a warp exchanging values by shuffles does the same operations), then one
// multiplication by 1 / sqrt(n) rounded to f32. Rotating twice gives the row back (up to rounding): H H = n I.
//
// Scale of a group with largest magnitude amax: 2^e, e the smallest exponent with max(amax, 6 * 2^-126) <= 6 * 2^e
// (the reference's 2^ceil(log2(amax / 6)) with its floor, computed exactly), at most 127. Codes: round-to-nearest-
// even onto {0, .5, 1, 1.5, 2, 3, 4, 6} of x / 2^e (exact), saturating at 6, bit 3 the sign (NaN -> +0: E2M1 has
// none). Every value times its scale is an f32 and a bf16 value.
//
// Packed row (KvStorage::kFp4Rotated on CUDA), width n a power of two >= 2: n / 2 code bytes (value 2j in the low
// nibble of byte j, 2j + 1 in the high one, as the checkpoints' FP4), then one byte e + 127 per group, padded to
// 4 bytes: 68 bytes at n = 128 (vLLM's MXFP4 indexer-key size), vs 256 in bf16 and 132 as kFp8Row.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define DSV4_FP4_HD __host__ __device__ __forceinline__
#else
#define DSV4_FP4_HD inline
#endif

namespace dsv4::kvfp4 {

constexpr int64_t kGroup = 32;    // values per E8M0 scale
constexpr float kE2m1Max = 6.0f;  // the largest E2M1 magnitude
constexpr int kMinExponent = -126;
constexpr int64_t kMaxDeviceWidth = 256;  // the CUDA kernels hold a row in one warp, 8 values a lane at most

DSV4_FP4_HD bool width_ok(int64_t n) { return n >= 2 && (n & (n - 1)) == 0; }
DSV4_FP4_HD int64_t group_of(int64_t n) { return n < kGroup ? n : kGroup; }
DSV4_FP4_HD int64_t groups_of(int64_t n) { return n / group_of(n); }
DSV4_FP4_HD int64_t row_bytes(int64_t n) { return (n / 2 + groups_of(n) + 3) / 4 * 4; }

// 1 / sqrt(n) rounded to f32 (n a power of two: exact for even log2 n).
DSV4_FP4_HD float rotation_scale(int64_t n) {
  int lg = 0;
  while ((int64_t{1} << lg) < n) ++lg;
  const float half_power = 1.0f / static_cast<float>(int64_t{1} << (lg / 2));  // 2^-floor(lg/2), exact
  return (lg & 1) ? half_power * 0.70710678118654752f : half_power;            // times 2^-1/2 rounded once
}

// y = H x / sqrt(n) in place, the butterfly order the header describes.
DSV4_FP4_HD void rotate(float* x, int64_t n) {
  for (int64_t h = 1; h < n; h *= 2) {
    for (int64_t i = 0; i < n; i += 2 * h) {
      for (int64_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
    }
  }
  const float s = rotation_scale(n);
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

DSV4_FP4_HD float bits_float(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
DSV4_FP4_HD uint32_t float_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
// 2^e for e in [-127, 127], exactly (2^-127 is a subnormal; the FP4 groups' e >= -126, the fp8 blocks' may be -127).
DSV4_FP4_HD float pow2(int e) {
  return e >= -126 ? bits_float(static_cast<uint32_t>(e + 127) << 23) : bits_float(1u << 22);
}

// The group exponent of largest magnitude `amax` (NaN-free; inf gives 127).
DSV4_FP4_HD int group_exponent(float amax) {
  if (!(amax <= 3.40282347e38f)) return 127;
  const float floored = amax > 6.0f * 1.17549435e-38f ? amax : 6.0f * 1.17549435e-38f;
  int k = 0;
  const float f = frexpf(floored, &k);  // floored = f 2^k, f in [0.5, 1); 6 = 0.75 2^3
  const int e = k - 3 + (f > 0.75f ? 1 : 0);
  return e < kMinExponent ? kMinExponent : (e > 127 ? 127 : e);
}

// Round-to-nearest-even onto the E2M1 values (ties to the even code), saturating; NaN -> 0.
DSV4_FP4_HD uint8_t e2m1_encode(float y) {
  if (y != y) return 0;
  const uint8_t sign = static_cast<uint8_t>((float_bits(y) >> 28) & 0x8);
  const float a = fabsf(y);
  uint8_t m;
  if (a <= 0.25f) {
    m = 0;
  } else if (a < 0.75f) {
    m = 1;
  } else if (a <= 1.25f) {
    m = 2;
  } else if (a < 1.75f) {
    m = 3;
  } else if (a <= 2.5f) {
    m = 4;
  } else if (a < 3.5f) {
    m = 5;
  } else if (a <= 5.0f) {
    m = 6;
  } else {
    m = 7;
  }
  return sign | m;
}

DSV4_FP4_HD float e2m1_value(uint8_t code) {
  const uint8_t m = code & 7;
  const float v =
      m < 2 ? 0.5f * static_cast<float>(m) : static_cast<float>(1 << ((m >> 1) - 1)) * (m & 1 ? 1.5f : 1.0f);
  return (code & 8) ? -v : v;
}

// Element e of a packed row of width n, dequantised.
DSV4_FP4_HD float element(const uint8_t* row, int64_t n, int64_t e) {
  const uint8_t byte = row[e / 2];
  const uint8_t code = (e & 1) ? byte >> 4 : byte & 0xF;
  return e2m1_value(code) * pow2(static_cast<int>(row[n / 2 + e / group_of(n)]) - 127);
}

// Packs a row on the host (tests and tools; CUDA packs with a warp per row): rotates a copy of x[0 .. n), then
// quantises it; `out` has row_bytes(n) bytes (the padding is zeroed). width_ok(n), n <= kMaxHostWidth.
constexpr int64_t kMaxHostWidth = 4096;
inline void pack_row_host(const float* x, int64_t n, uint8_t* out) {
  float y[kMaxHostWidth];
  std::memcpy(y, x, static_cast<size_t>(n) * sizeof(float));
  rotate(y, n);
  std::memset(out, 0, static_cast<size_t>(row_bytes(n)));
  const int64_t g = group_of(n);
  for (int64_t b = 0; b < n / g; ++b) {
    float amax = 0.0f;
    for (int64_t i = b * g; i < (b + 1) * g; ++i) amax = fmaxf(amax, fabsf(y[i]));
    const int e = group_exponent(amax);
    out[n / 2 + b] = static_cast<uint8_t>(e + 127);
    for (int64_t i = b * g; i < (b + 1) * g; ++i) {
      const uint8_t code = e2m1_encode(y[i] / pow2(e));
      out[i / 2] = static_cast<uint8_t>(out[i / 2] | ((i & 1) ? code << 4 : code));
    }
  }
}

}  // namespace dsv4::kvfp4
