// Device helpers shared by the CUDA kernels: element types, conversions, reductions and dtype dispatch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "backend/cuda/launch.h"
#include "dsv4/core/exec_context.h"
#include "dsv4/core/tensor.h"

namespace dsv4::cuda {

using bf16 = __nv_bfloat16;

// ---- conversions -----------------------------------------------------------------------------
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float v) {
  return __float2bfloat16_rn(v);  // round-to-nearest-even, as the host's float_to_bf16
}

// Two adjacent outputs of one row (columns n, n + 1) of an f32 or bf16 matrix of N columns: one 8- or 4-byte store
// where N is even (aligned), else each in range alone.
template <typename TO>
__device__ __forceinline__ void store_pair(TO* __restrict__ row, int64_t n, int64_t N, float v0, float v1) {
  if (n + 1 < N && N % 2 == 0) {
    if constexpr (std::is_same_v<TO, float>) {
      *reinterpret_cast<float2*>(row + n) = make_float2(v0, v1);
    } else {
      *reinterpret_cast<__nv_bfloat162*>(row + n) = __floats2bfloat162_rn(v0, v1);
    }
    return;
  }
  if (n < N) row[n] = from_float<TO>(v0);
  if (n + 1 < N) row[n + 1] = from_float<TO>(v1);
}

// ---- reductions --------------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024). Every thread gets the result.
// `scratch` holds 33 values; the function may be called repeatedly with the same scratch.
template <typename V>
__device__ __forceinline__ V block_sum(V v, V* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // a previous call may still be reading scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    V s = lane < warps ? scratch[lane] : V(0);
    s = warp_sum(s);
    if (lane == 0) scratch[32] = s;
  }
  __syncthreads();
  return scratch[32];
}

// ---- host side ---------------------------------------------------------------------------------
inline cudaStream_t stream_of(const ExecContext& ctx) { return static_cast<cudaStream_t>(ctx.stream); }

// Throws a dsv4::Error for a failed launch (launchers return Status; ops throw).
inline void check_launch(const Status& s, const char* kernel) {
  if (!s.is_ok()) throw Error(s.code(), str_cat(kernel, ": ", s.message()));
}

inline unsigned blocks_for(int64_t work, int threads) { return static_cast<unsigned>((work + threads - 1) / threads); }

// Calls f(float{}) or f(bf16{}) for a floating tensor dtype (the element type as a tag value).
template <typename F>
decltype(auto) dispatch_float(DType t, const char* what, F&& f) {
  switch (t) {
    case DType::F32:
      return f(float{});
    case DType::BF16:
      return f(bf16{});
    default:
      fail(StatusCode::kInvalidArgument, what, ": unsupported dtype ", dtype_name(t), " on CUDA");
  }
}

}  // namespace dsv4::cuda
