// Device side of the packed fp8 cache rows (--kv-cache-dtype fp8; layouts and scalar codec: dsv4/ops/kv_fp8.h).
// Run on an H200 (fp8 rows, 2026-12-05) and an H100 (the FP4 indexer rows, 2026-12-05, CudaKvFp8.*: bit-exact
// round trips and entries vs the CPU, memcheck clean); the codec itself is the headers' host/device code that the
// CPU tests check bit for bit against the CPU round trip (tests/unit/kv_fp8_test.cc, kv_fp4_test.cc).
//
// Writers pack a row with a whole block (every thread calls, uniformly): a warp per 64-value block of the no-RoPE
// part (lanes hold 2 values; the amax is a warp max, NaN-ignoring as the CPU's std::max), then the RoPE part as
// bf16; kFp8Row and kFp4Rotated rows are packed by warp 0 alone (128 values: 4 per lane). Readers dequantise 8 values
// at a time into registers: row bytes are 8-byte aligned (kFp8Blocks) or 4-byte aligned (kFp8Row, kFp4Rotated), so
// the loads are 8 / 4 bytes.
#pragma once

#include <type_traits>

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

// ---- kFp4Rotated (dsv4/ops/kv_fp4.h): one warp per row, lane l holding values l V .. l V + V - 1 ----------------
// V = max(1, n / 32); with n < 32 lanes n .. 31 hold zeros and never meet the others (partners differ in bits < n).

// kvfp4::rotate, stage by stage in the host's order: the low stages inside a lane, the rest between lanes (partner
// lane ^ h / V). Every value meets the same partner in the same f32 addition or subtraction as on the host, so the
// results are the host's, bit for bit.
template <int V>
__device__ __forceinline__ void fp4_rotate_warp(float (&v)[V], int64_t n) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int h = 1; h < V; h *= 2) {
#pragma unroll
    for (int i = 0; i < V; ++i) {
      if ((i & h) == 0) {
        const float a = v[i], b = v[i + h];
        v[i] = a + b;
        v[i + h] = a - b;
      }
    }
  }
  for (int64_t h = V; h < n; h *= 2) {
    const int step = static_cast<int>(h / V);
    const bool high = (lane & step) != 0;  // this lane holds the b of a + b / a - b
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const float other = __shfl_xor_sync(0xffffffffu, v[i], step);
      v[i] = high ? other - v[i] : v[i] + other;
    }
  }
  const float s = kvfp4::rotation_scale(n);
#pragma unroll
  for (int i = 0; i < V; ++i) v[i] *= s;
}

// Rotates the lane's values and quantises them: codes and the exponent of the lane's group.
template <int V>
__device__ __forceinline__ int fp4_rotated_codes_warp(float (&v)[V], int64_t n, uint8_t (&c)[V]) {
  fp4_rotate_warp<V>(v, n);
  float m = 0.0f;
#pragma unroll
  for (int i = 0; i < V; ++i) m = fmaxf(m, fabsf(v[i]));  // NaN-ignoring, as the CPU's std::max
  const int lanes = static_cast<int>(kvfp4::group_of(n) / V);
  for (int o = 1; o < lanes; o <<= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  const int e = kvfp4::group_exponent(m);
  const float s = kvfp4::pow2(e);
#pragma unroll
  for (int i = 0; i < V; ++i) c[i] = kvfp4::e2m1_encode(divide(v[i], s));
  return e;
}

// The values get(0 .. n) of a row, loaded for fp4_rotated_codes_warp.
template <int V, typename Get>
__device__ __forceinline__ void fp4_load_warp(float (&v)[V], int64_t n, Get get) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int i = 0; i < V; ++i) {
    const int64_t e = static_cast<int64_t>(lane) * V + i;
    v[i] = e < n ? get(e) : 0.0f;
  }
}

// Packs the row get(0 .. n) as kFp4Rotated into `dst` (kvfp4::row_bytes(n) bytes, padding zeroed); one warp.
template <int V, typename Get>
__device__ void pack_fp4_rotated_warp(uint8_t* dst, int64_t n, Get get) {
  const int lane = threadIdx.x & 31;
  float v[V];
  uint8_t c[V];
  fp4_load_warp<V>(v, n, get);
  const int e = fp4_rotated_codes_warp<V>(v, n, c);
  const int64_t first = static_cast<int64_t>(lane) * V, g = kvfp4::group_of(n);
  if constexpr (V >= 2) {
#pragma unroll
    for (int i = 0; i < V; i += 2) dst[(first + i) / 2] = static_cast<uint8_t>(c[i] | (c[i + 1] << 4));
  } else {
    const int high = __shfl_down_sync(0xffffffffu, static_cast<int>(c[0]), 1);
    if (first < n && (lane & 1) == 0) dst[first / 2] = static_cast<uint8_t>(c[0] | (high << 4));
  }
  if (first < n && first % g == 0) dst[n / 2 + first / g] = static_cast<uint8_t>(e + 127);
  for (int64_t i = n / 2 + n / g + lane; i < kvfp4::row_bytes(n); i += 32) dst[i] = 0;
}

// Calls f with the lane count template argument V of a row of n values (n a power of two <= 256): the packers on the
// device, the round trip's launch on the host.
template <typename F>
__host__ __device__ __forceinline__ void with_fp4_lanes(int64_t n, F f) {
  if (n <= 32) return f(std::integral_constant<int, 1>{});
  if (n == 64) return f(std::integral_constant<int, 2>{});
  if (n == 128) return f(std::integral_constant<int, 4>{});
  return f(std::integral_constant<int, 8>{});
}

// Values 8c .. 8c + 7 of a kFp4Rotated row of n values (4-byte aligned; n % 8 == 0, so 8 values share a group).
__device__ __forceinline__ void load8_fp4(const uint8_t* row, int64_t n, int64_t c, float (&v)[8]) {
  const uint32_t w = *reinterpret_cast<const uint32_t*>(row + 4 * c);
  const float s = kvfp4::pow2(static_cast<int>(row[n / 2 + 8 * c / kvfp4::group_of(n)]) - 127);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = kvfp4::e2m1_value(static_cast<uint8_t>((w >> (4 * i)) & 0xFu)) * s;
}

// Packs the row get(0 .. width) into `dst` (row_bytes(storage, width, rope) bytes, padding zeroed). Called by every
// thread of the block (blockDim.x a multiple of 32); get(i) may be called more than once per i.
template <typename Get>
__device__ void pack_row_block(uint8_t* dst, KvStorage storage, int64_t width, int64_t rope, Get get) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int64_t bytes = row_bytes(storage, width, rope);
  if (storage == KvStorage::kFp4Rotated) {
    if (warp == 0)
      with_fp4_lanes(width, [&](auto lanes) { pack_fp4_rotated_warp<decltype(lanes)::value>(dst, width, get); });
    return;
  }
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

// 8 codes (a: the first four, b: the next four, little-endian) dequantised with scale s.
__device__ __forceinline__ void decode8_codes(uint32_t a, uint32_t b, float s, float (&v)[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[i] = e4m3_value(static_cast<uint8_t>(a >> (8 * i))) * s;
    v[4 + i] = e4m3_value(static_cast<uint8_t>(b >> (8 * i))) * s;
  }
}

// 8 codes at `p` (4-byte aligned) dequantised with scale s.
__device__ __forceinline__ void load8_codes(const uint8_t* p, float s, float (&v)[8]) {
  decode8_codes(*reinterpret_cast<const uint32_t*>(p), *reinterpret_cast<const uint32_t*>(p + 4), s, v);
}

// Values 8c .. 8c + 7 of a kFp8Blocks row in two steps, so that a reader can have many rows' loads in flight before it
// waits on any (one round trip of memory latency per batch instead of one per 8 values): fetch8_blocks issues the
// loads — 8 codes and their block's scale byte, or 8 bf16 of the RoPE part — and decode8 turns them into values.
// The row is 8-byte aligned; plain % 8 == 0, so 8 values never straddle a block or the rope boundary.
struct Raw8 {
  uint32_t w[4];  // the codes in w[0 .. 1]; or 8 bf16 (scale < 0)
  int scale;      // the block's scale byte; -1: the RoPE part
};

__device__ __forceinline__ Raw8 fetch8_blocks(const uint8_t* row, int64_t plain, int64_t rope, int64_t c) {
  const int64_t e = 8 * c;
  Raw8 r;
  if (e < plain) {
    r.scale = scale_bytes(row, plain, rope)[e / kBlock];
    const uint2 codes = *reinterpret_cast<const uint2*>(row + e);
    r.w[0] = codes.x, r.w[1] = codes.y, r.w[2] = 0, r.w[3] = 0;
    return r;
  }
  const uint2 lo = *reinterpret_cast<const uint2*>(row + plain + 2 * (e - plain));
  const uint2 hi = *reinterpret_cast<const uint2*>(row + plain + 2 * (e - plain) + 8);
  r.w[0] = lo.x, r.w[1] = lo.y, r.w[2] = hi.x, r.w[3] = hi.y;
  r.scale = -1;
  return r;
}

__device__ __forceinline__ void decode8(const Raw8& r, float (&v)[8]) {
  if (r.scale >= 0) return decode8_codes(r.w[0], r.w[1], pow2(r.scale - 127), v);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = bf16_value(static_cast<uint16_t>(r.w[i] & 0xffffu));
    v[2 * i + 1] = bf16_value(static_cast<uint16_t>(r.w[i] >> 16));
  }
}

__device__ __forceinline__ void load8_blocks(const uint8_t* row, int64_t plain, int64_t rope, int64_t c,
                                             float (&v)[8]) {
  decode8(fetch8_blocks(row, plain, rope, c), v);
}

// Values 8c .. 8c + 7 of a kFp8Row row (4-byte aligned; width % 8 == 0), given its scale.
__device__ __forceinline__ void load8_row(const uint8_t* row, float s, int64_t c, float (&v)[8]) {
  load8_codes(row + 8 * c, s, v);
}
__device__ __forceinline__ float row_scale_of(const uint8_t* row, int64_t width) {
  return *reinterpret_cast<const float*>(row + width);  // 4-byte aligned: width % 8 == 0, rows of 4k bytes
}

}  // namespace dsv4::cuda::kvfp8_dev
