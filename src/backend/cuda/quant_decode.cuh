// Device decoding of the quantised weight formats (quant_matrix.h) for the kernels that expand codes in registers
// (quant_gemv.cu, moe_decode_quant.cu). Every conversion is exact: the host codecs of io/quantization.h are the
// oracle (tests/gpu/cuda_quant_test.cu).
//
// UNVERIFIED ON GPU (compiled for sm_90a only; see quant_matrix.h).
//
// One 16-byte load of codes holds 16 E4M3 values (FP8) or 32 E2M1 values (FP4) and is expanded in groups of 8
// values (the width of one 16-byte load of bf16 activations):
//  - E4M3: cvt.rn.f16x2.e4m3x2 (sm_89+, through cuda_fp8.h) turns two codes into two f16, exactly (every E4M3
//    value, subnormals included, is an f16 value), then f16 -> f32.
//  - E2M1: no e2m1 conversion instruction exists before sm_100, so bit placement (quant_bits.h, checked on the
//    CPU on every code): two codes four apart in a 32-bit word of 8 codes become one f16x2 of their values times
//    2^-14 (exact, subnormals included), one __hmul2 by 2^14 restores them (exact: |values| <= 6), so a group's
//    pairs are elements (j, j + 4).
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "backend/cuda/bf16_stream.cuh"
#include "backend/cuda/quant_bits.h"
#include "dsv4/io/quantization.h"

namespace dsv4::cuda {

// A 16-byte load of codes (any pointer type: the weight stream bypasses L1 as the bf16 one does).
__device__ __forceinline__ uint4 load_codes(const uint8_t* p) {
  return load_streaming(reinterpret_cast<const bf16*>(p));
}

// p[off ..] when `in`, else zeros, the guard inside the load (load_streaming_if).
__device__ __forceinline__ uint4 load_codes_if(const uint8_t* p, int64_t off, bool in) {
  return load_streaming_if(reinterpret_cast<const bf16*>(p + off), 0, in);
}

// 2^(S - 127) for an E8M0 scale byte, exactly (quant_bits.h).
__device__ __forceinline__ float e8m0_to_float(uint8_t s) { return __uint_as_float(e8m0_to_f32_bits(s)); }

template <WeightFormat F>
struct QuantTraits;
template <>
struct QuantTraits<WeightFormat::kFp8Block> {
  static constexpr int kValuesPerLoad = 16;  // one byte each
  static constexpr int kGroups = 2;          // groups of 8 values per load
  static constexpr int kBlockCols = 128;     // inputs per scale
  static constexpr int kBlockRows = 128;     // rows per scale
};
template <>
struct QuantTraits<WeightFormat::kFp4> {
  static constexpr int kValuesPerLoad = 32;  // two a byte
  static constexpr int kGroups = 4;
  static constexpr int kBlockCols = 32;
  static constexpr int kBlockRows = 1;
};

// Byte offset of element k (a multiple of the values per load) within a row of codes.
template <WeightFormat F>
__device__ __forceinline__ int64_t code_offset(int64_t k) {
  return F == WeightFormat::kFp4 ? k / 2 : k;
}

// The 8 values of group g of one 16-byte load of codes, times `scale`, as f32 in element order.
template <WeightFormat F, int G>
__device__ __forceinline__ void decode_group(const uint4& v, float scale, float (&wf)[kBf16PerVec]) {
  const uint32_t u[4] = {v.x, v.y, v.z, v.w};
  if constexpr (F == WeightFormat::kFp8Block) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t word = u[2 * G + h];
#pragma unroll
      for (int p = 0; p < 2; ++p) {
        const __half2_raw raw =
            __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(word >> (16 * p)), __NV_E4M3);
        const float2 f = __half22float2(__half2(raw));
        wf[4 * h + 2 * p] = f.x * scale;
        wf[4 * h + 2 * p + 1] = f.y * scale;
      }
    }
  } else {
    const uint32_t word = u[G];  // elements 8G .. 8G + 7, element i in bits 4i .. 4i + 3
    __half2_raw two14_raw;
    two14_raw.x = two14_raw.y = 0x7400;  // 2^14 in f16 (a constant, not a runtime conversion)
    const __half2 two14(two14_raw);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t bits = e2m1_pair_to_f16x2_bits(word, j);  // elements j and j + 4, times 2^-14
      __half2_raw raw;
      raw.x = static_cast<unsigned short>(bits & 0xffffu);
      raw.y = static_cast<unsigned short>(bits >> 16);
      const float2 f = __half22float2(__hmul2(__half2(raw), two14));
      wf[j] = f.x * scale;
      wf[j + 4] = f.y * scale;
    }
  }
}

}  // namespace dsv4::cuda
