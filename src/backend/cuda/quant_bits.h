// The bit-level decoding of the quantised weight formats that the CUDA decode kernels use (quant_decode.cuh,
// quant_mma.cuh), kept free of device types so that the CPU unit tests check it against the host codecs
// (tests/unit/quant_bits_test.cc) on every code.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define DSV4_HOST_DEVICE __host__ __device__
#else
#define DSV4_HOST_DEVICE
#endif

namespace dsv4::cuda {

// The f32 bits of 2^(S - 127) for an E8M0 scale byte S: the subnormal 2^-127 for S = 0, a quiet NaN for
// S = 255 (E8M0's NaN, which the loader rejects).
DSV4_HOST_DEVICE constexpr uint32_t e8m0_to_f32_bits(uint8_t s) {
  return s == 0 ? 0x00400000u : s == 0xff ? 0x7fc00000u : static_cast<uint32_t>(s) << 23;
}

// Two E2M1 codes of a 32-bit word of 8 codes (code i in bits 4i .. 4i + 3), codes a and a + 4 (a < 4), as the bits
// of a bf16x2 (code a in the low half), each code's value times 2^-126: the
// word shifted so that code a sits in bits 12..15 (and code a + 4 in 28..31) has its sign at bf16's sign bit and its
// magnitude bits (e1 e0 m) at 14..12; shifted right by 6 they are bf16 exponent bits 8..7 and the top mantissa bit,
// i.e. 2^(e-127) (1 + m/2) for e > 0 and the subnormal m * 2^-127 for e = 0 — the value times 2^-126, exactly.
// Tensor-core decode (moe_decode_quant.cu) multiplies the pair by e2m1_bf16_scale_bits (bf16 keeps subnormals).
DSV4_HOST_DEVICE constexpr uint32_t e2m1_pair_to_bf16x2_bits(uint32_t word, int a) {
  const uint32_t q = word << (4 * (3 - a));
  return (q & 0x80008000u) | ((q & 0x70007000u) >> 6);
}

// The bf16x2 multiplier that turns e2m1_pair_to_bf16x2_bits's values into the weights of E8M0 scale S:
// 2^126 * 2^(S - 127) = 2^(S - 1) in both halves, exact for S <= 128 (bf16's largest power of two is 2^127); for
// larger S, e2m1_bf16_scale_high_bits is a second factor (2^126 first, then 2^(S - 127)).
DSV4_HOST_DEVICE constexpr uint32_t e2m1_bf16_scale_bits(uint8_t s) {
  const uint32_t h = s <= 128 ? (static_cast<uint32_t>(s) + 126u) << 7 : 0x7E80u;  // 2^(S-1) or 2^126
  return h | h << 16;
}
DSV4_HOST_DEVICE constexpr uint32_t e2m1_bf16_scale_high_bits(uint8_t s) {
  const uint32_t h = static_cast<uint32_t>(s) << 7;  // 2^(S - 127), S in 129..254
  return h | h << 16;
}

// Two E4M3 codes of a 32-bit word of 4 codes (code i in byte i): bytes 0 and 2 (odd = false) or 1 and 3 (odd =
// true), as the bits of a bf16x2 (the lower byte's code in the low half) holding each code's value times 2^-120:
// the sign goes to bf16's sign bit and the 7 magnitude bits (e3..e0 m2..m0) to bits 10..4, i.e. bf16 exponent
// bits 10..7 and the top three mantissa bits: 2^(e-127) (1 + m/8) for e > 0 and the subnormal m * 2^-129 for
// e = 0 — E4M3's 2^(e-7) (1 + m/8) or m * 2^-9, times 2^-120, exactly. E4M3's NaN codes (0x7F, 0xFF) come out as
// +-480 * 2^-120, finite: a checkpoint holding them is broken anyway. The tensor-core GEMV (quant_gemv.cu) pairs
// the codes this way, and its activations the same way, so the MMA's k order is (0, 2), (1, 3) within a word.
DSV4_HOST_DEVICE constexpr uint32_t e4m3_pair_to_bf16x2_bits(uint32_t word, bool odd) {
  const uint32_t q = odd ? word : word << 8;
  return (q & 0x80008000u) | ((q >> 4) & 0x07F007F0u);
}

// The bf16x2 multiplier that turns e4m3_pair_to_bf16x2_bits's values into the weights of E8M0 scale S:
// 2^120 * 2^(S - 127) = 2^(S - 7) in both halves for S <= 134 (bf16's largest power of two is 2^127); for larger
// S, e4m3_bf16_scale_high_bits is a second factor (2^127 first, then 2^(S - 134)). The products are exact wherever
// the weight is a bf16 normal, i.e. for every code when S >= 10; below, bf16's subnormals round.
DSV4_HOST_DEVICE constexpr uint32_t e4m3_bf16_scale_bits(uint8_t s) {
  const uint32_t h = s <= 134 ? (static_cast<uint32_t>(s) + 120u) << 7 : 0x7F00u;  // 2^(S-7) or 2^127
  return h | h << 16;
}
DSV4_HOST_DEVICE constexpr uint32_t e4m3_bf16_scale_high_bits(uint8_t s) {
  const uint32_t h = (static_cast<uint32_t>(s) - 7u) << 7;  // 2^(S - 134), S in 135..254
  return h | h << 16;
}

}  // namespace dsv4::cuda
