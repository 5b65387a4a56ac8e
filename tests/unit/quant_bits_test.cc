// The bit-level decoding of the CUDA quantised-weight kernels (backend/cuda/quant_bits.h) against the host codecs
// (io/quantization.h), on every code and every position: what the GPU parity tests (tests/gpu/cuda_quant_test.cu)
// would otherwise be the first to catch.
#include "backend/cuda/quant_bits.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "dsv4/core/dtype.h"
#include "dsv4/io/quantization.h"

namespace dsv4 {
namespace {

// The packing convention the pairs assume: element 2i in the low nibble of byte i (quantize_fp4's layout), so
// element e of a little-endian word is nibble e.
TEST(QuantBits, E2m1WordOrderIsTheCheckpointPacking) {
  float w[8] = {0.5f, -1.0f, 1.5f, 2.0f, -3.0f, 4.0f, 6.0f, -0.5f};
  uint8_t packed[4], scale[1];
  quantize_fp4(w, 1, 8, packed, scale, "test");
  ASSERT_EQ(scale[0], 127) << "amax 6 needs the unit scale";
  uint32_t word;
  std::memcpy(&word, packed, 4);
  const float two126 = std::ldexp(1.0f, 126);
  for (int a = 0; a < 4; ++a) {
    const uint32_t bits = cuda::e2m1_pair_to_bf16x2_bits(word, a);
    EXPECT_EQ(bits_to_float((bits & 0xffffu) << 16) * two126, w[a]) << "element " << a;
    EXPECT_EQ(bits_to_float(bits & 0xffff0000u) * two126, w[a + 4]) << "element " << a + 4;
  }
}

// The bf16 pairs of the tensor-core decode: every code in both halves of every pair, times its multiplier for every
// scale byte, equals the host codec's value times 2^(S - 127) (two factors beyond S = 128, as the kernel applies).
TEST(QuantBits, E2m1PairsToBf16TimesTheScaleAreTheWeights) {
  auto bf16_bits_to_float = [](uint32_t h) { return bits_to_float(h << 16); };
  auto mul_bf16 = [&](uint32_t a, uint32_t b) {  // exact here: a power of two times a 2-bit significand
    return bf16_bits_to_float(a) * bf16_bits_to_float(b);
  };
  for (int a = 0; a < 4; ++a) {
    for (uint32_t lo = 0; lo < 16; ++lo) {
      for (uint32_t hi = 0; hi < 16; ++hi) {
        uint32_t word = 0x9abcdef1u;
        word &= ~(0xfu << (4 * a)) & ~(0xfu << (4 * (a + 4)));
        word |= lo << (4 * a) | hi << (4 * (a + 4));
        const uint32_t bits = cuda::e2m1_pair_to_bf16x2_bits(word, a);
        for (int s : {0, 1, 100, 127, 128, 129, 200, 254}) {
          const uint8_t S = static_cast<uint8_t>(s);
          const uint32_t m = cuda::e2m1_bf16_scale_bits(S);
          float got_lo = mul_bf16(bits & 0xffffu, m & 0xffffu), got_hi = mul_bf16(bits >> 16, m >> 16);
          if (s > 128) {
            const uint32_t m2 = cuda::e2m1_bf16_scale_high_bits(S);
            got_lo *= bf16_bits_to_float(m2 & 0xffffu);
            got_hi *= bf16_bits_to_float(m2 >> 16);
          }
          const float scale = std::ldexp(1.0f, s - 127);
          EXPECT_EQ(got_lo, fp4_e2m1_to_float(static_cast<uint8_t>(lo)) * scale)
              << "pair " << a << " lo " << lo << " S " << s;
          EXPECT_EQ(got_hi, fp4_e2m1_to_float(static_cast<uint8_t>(hi)) * scale)
              << "pair " << a << " hi " << hi << " S " << s;
        }
      }
    }
  }
}

// The bf16 pairs of the tensor-core FP8 GEMV: every E4M3 code but NaN in both halves of both pairs of a word, next
// to codes in the other bytes that must not leak in, times its multiplier for every scale byte at which the weights
// are bf16 normals (two factors beyond S = 134, as the kernel applies), equals the host codec's value times 2^(S-127).
TEST(QuantBits, E4m3PairsToBf16TimesTheScaleAreTheWeights) {
  auto bf16_bits_to_float = [](uint32_t h) { return bits_to_float(h << 16); };
  for (int odd = 0; odd < 2; ++odd) {
    for (uint32_t lo = 0; lo < 256; ++lo) {
      if ((lo & 0x7f) == 0x7f) continue;  // NaN
      for (uint32_t hi : {0x00u, 0x01u, 0x08u, 0x37u, 0x7eu, 0x80u, 0x81u, 0xb5u, 0xfeu, lo ^ 0x80u}) {
        // The other two bytes all-ones (NaN codes, every bit set): they must not leak into the pair.
        const uint32_t word = odd ? (0x00ff00ffu | lo << 8 | hi << 24) : (0xff00ff00u | lo | hi << 16);
        const uint32_t bits = cuda::e4m3_pair_to_bf16x2_bits(word, odd != 0);
        for (int s : {10, 100, 120, 127, 134, 135, 200, 254}) {
          const uint8_t S = static_cast<uint8_t>(s);
          const uint32_t m = cuda::e4m3_bf16_scale_bits(S);
          // Exact here (a 4-bit significand times a power of two, a bf16 normal): float arithmetic is bf16's.
          float got_lo = bf16_bits_to_float(bits & 0xffffu) * bf16_bits_to_float(m & 0xffffu);
          float got_hi = bf16_bits_to_float(bits >> 16) * bf16_bits_to_float(m >> 16);
          if (s > 134) {
            const uint32_t m2 = cuda::e4m3_bf16_scale_high_bits(S);
            got_lo *= bf16_bits_to_float(m2 & 0xffffu);
            got_hi *= bf16_bits_to_float(m2 >> 16);
          }
          const float scale = std::ldexp(1.0f, s - 127);
          EXPECT_EQ(float_to_bits(got_lo), float_to_bits(f8e4m3_to_float(static_cast<uint8_t>(lo)) * scale))
              << "odd " << odd << " code " << lo << " S " << s;
          EXPECT_EQ(float_to_bits(got_hi), float_to_bits(f8e4m3_to_float(static_cast<uint8_t>(hi)) * scale))
              << "odd " << odd << " code " << hi << " S " << s;
        }
      }
    }
  }
}

// Every E8M0 byte but NaN: 2^(S - 127) exactly, S = 0 the subnormal 2^-127.
TEST(QuantBits, E8m0ScalesArePowersOfTwo) {
  for (int s = 0; s < 255; ++s) {
    EXPECT_EQ(bits_to_float(cuda::e8m0_to_f32_bits(static_cast<uint8_t>(s))), std::ldexp(1.0f, s - 127)) << s;
  }
  EXPECT_TRUE(std::isnan(bits_to_float(cuda::e8m0_to_f32_bits(0xff))));
}

}  // namespace
}  // namespace dsv4
