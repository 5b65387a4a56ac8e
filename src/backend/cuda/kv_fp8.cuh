// Device side of the packed fp8 cache rows (--kv-cache-dtype fp8; layouts and scalar codec: dsv4/ops/kv_fp8.h).
// UNVERIFIED ON GPU: written and compiled (sm_90a) in a session without a GPU; the codec itself is the header's
// host/device code that the CPU tests check bit for bit against the CPU round trip (tests/unit/kv_cache_test.cc).
//
// Writers pack a row with a whole block (every thread calls, uniformly): a warp per 64-value block of the no-RoPE
// part (lanes hold 2 values; the amax is a warp max, NaN-ignoring as the CPU's std::max), then the RoPE part as
// bf16; kFp8Row rows are packed by warp 0 alone (128 values: 4 per lane). Readers dequantise 8 values at a time into
// registers: row bytes are 8-byte aligned (kFp8Blocks) or 4-byte aligned (kFp8Row), so the loads are 8 / 4 bytes.
#pragma once

#include "backend/cuda/common.cuh"
#include "dsv4/ops/kv_fp8.h"

namespace dsv4::cuda::kvfp8_dev {

using namespace dsv4::kvfp8;

// Quantises the 64-value block b of a kFp8Blocks row with one warp: x0 / x1 are the lane's values lane and lane + 32
// (0 past the block's n values). Returns the block's exponent; *c0 / *c1 the codes.
__device__ __forceinline__ int quantise_block_warp(float x0, float x1, uint8_t* c0, uint8_t* c1) {
  float m = fmaxf(fabsf(x0), fabsf(x1));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  const int e = block_exponent(fmaxf(m, kAmaxFloor));
  const float s = pow2(e);
  *c0 = e4m3_encode(divide(x0, s));
  *c1 = e4m3_encode(divide(x1, s));
  return e;
}

// The kFp8Row scale of `width` values read by warp 0 (lanes stride 32); every lane gets it.
template <typename Get>
__device__ __forceinline__ float row_scale_warp(int64_t width, Get get) {
  const int lane = threadIdx.x & 31;
  float m = 0.0f;
  for (int64_t i = lane; i < width; i += 32) m = fmaxf(m, fabsf(get(i)));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  return row_scale(m);
}

// Packs the row get(0 .. width) into `dst` (row_bytes(storage, width, rope) bytes, padding zeroed). Called by every
// thread of the block (blockDim.x a multiple of 32); get(i) may be called more than once per i.
template <typename Get>
__device__ void pack_row_block(uint8_t* dst, KvStorage storage, int64_t width, int64_t rope, Get get) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int64_t bytes = row_bytes(storage, width, rope);
  if (storage == KvStorage::kFp8Row) {
    if (warp == 0) {
      const float s = row_scale_warp(width, get);
      for (int64_t i = lane; i < width; i += 32) dst[i] = e4m3_encode(divide(get(i), s));
      if (lane == 0) {
        const uint32_t bits = __float_as_uint(s);
        for (int k = 0; k < 4; ++k) dst[width + k] = static_cast<uint8_t>(bits >> (8 * k));  // little-endian fp32
      }
      for (int64_t i = width + 4 + lane; i < bytes; i += 32) dst[i] = 0;
    }
    return;
  }
  const int64_t plain = width - rope, nb = blocks_of(plain);
  uint8_t* scales = dst + plain + 2 * rope;
  for (int64_t b = warp; b < nb; b += warps) {
    const int64_t lo = b * kBlock, n = min(kBlock, plain - lo);
    const float x0 = lane < n ? get(lo + lane) : 0.0f, x1 = lane + 32 < n ? get(lo + lane + 32) : 0.0f;
    uint8_t c0, c1;
    const int e = quantise_block_warp(x0, x1, &c0, &c1);
    if (lane < n) dst[lo + lane] = c0;
    if (lane + 32 < n) dst[lo + lane + 32] = c1;
    if (lane == 0) scales[b] = static_cast<uint8_t>(e + 127);
  }
  uint16_t* r = reinterpret_cast<uint16_t*>(dst + plain);
  for (int64_t i = threadIdx.x; i < rope; i += blockDim.x) r[i] = bf16_bits(get(plain + i));
  for (int64_t i = plain + 2 * rope + nb + threadIdx.x; i < bytes; i += blockDim.x) dst[i] = 0;
}

// 8 codes at `p` (4-byte aligned) dequantised with scale s.
__device__ __forceinline__ void load8_codes(const uint8_t* p, float s, float (&v)[8]) {
  const uint32_t a = *reinterpret_cast<const uint32_t*>(p), b = *reinterpret_cast<const uint32_t*>(p + 4);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[i] = e4m3_value(static_cast<uint8_t>(a >> (8 * i))) * s;
    v[4 + i] = e4m3_value(static_cast<uint8_t>(b >> (8 * i))) * s;
  }
}

// Values 8c .. 8c + 7 of a kFp8Blocks row (8-byte aligned; plain % 8 == 0, so 8 values never straddle a block or
// the rope boundary).
__device__ __forceinline__ void load8_blocks(const uint8_t* row, int64_t plain, int64_t rope, int64_t c,
                                             float (&v)[8]) {
  const int64_t e = 8 * c;
  if (e < plain) {
    const int sb = scale_bytes(row, plain, rope)[e / kBlock];
    return load8_codes(row + e, pow2(sb - 127), v);
  }
  const uint2 raw = *reinterpret_cast<const uint2*>(row + plain + 2 * (e - plain));  // 8-byte aligned
  const uint2 raw2 = *reinterpret_cast<const uint2*>(row + plain + 2 * (e - plain) + 8);
  const uint32_t w[4] = {raw.x, raw.y, raw2.x, raw2.y};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = bf16_value(static_cast<uint16_t>(w[i] & 0xffffu));
    v[2 * i + 1] = bf16_value(static_cast<uint16_t>(w[i] >> 16));
  }
}

// Values 8c .. 8c + 7 of a kFp8Row row (4-byte aligned; width % 8 == 0), given its scale.
__device__ __forceinline__ void load8_row(const uint8_t* row, float s, int64_t c, float (&v)[8]) {
  load8_codes(row + 8 * c, s, v);
}
__device__ __forceinline__ float row_scale_of(const uint8_t* row, int64_t width) {
  return *reinterpret_cast<const float*>(row + width);  // 4-byte aligned: width % 8 == 0, rows of 4k bytes
}

}  // namespace dsv4::cuda::kvfp8_dev
