// Device access to the quantised weight formats (quant_matrix.h) for the kernels that stream codes in the MMA layout
// (quant_gemv.cu, moe_decode_quant.cu): 16-byte loads of codes past L1, E8M0 scales, and each format's geometry. The
// codes become bf16 MMA operands in quant_mma.cuh (exact; the host codecs of io/quantization.h are the oracle:
// tests/unit/quant_bits_test.cc, tests/gpu/cuda_quant_test.cu).
#pragma once

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
  static constexpr int kBlockCols = 128;     // inputs per scale
  static constexpr int kBlockRows = 128;     // rows per scale
};
template <>
struct QuantTraits<WeightFormat::kFp4> {
  static constexpr int kValuesPerLoad = 32;  // two a byte
  static constexpr int kBlockCols = 32;
  static constexpr int kBlockRows = 1;
};

// Byte offset of element k (a multiple of the values per load) within a row of codes.
template <WeightFormat F>
__device__ __forceinline__ int64_t code_offset(int64_t k) {
  return F == WeightFormat::kFp4 ? k / 2 : k;
}

}  // namespace dsv4::cuda
