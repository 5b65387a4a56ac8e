// Token selection on the device: greedy argmax (ties to the lowest index, as the CPU reference).
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ bool better(float v, int32_t i, float bv, int32_t bi) {
  return v > bv || (v == bv && i < bi);
}

// One block per row.
__global__ void __launch_bounds__(kThreads)
    argmax_kernel(int32_t* __restrict__ out, const float* __restrict__ logits, int64_t V) {
  pdl_wait();
  __shared__ float sv[kThreads / 32];
  __shared__ int32_t si[kThreads / 32];
  const float* l = logits + static_cast<int64_t>(blockIdx.x) * V;
  float best = -INFINITY;
  int32_t bi = INT32_MAX;
  for (int64_t v = threadIdx.x; v < V; v += kThreads) {
    const float x = l[v];
    if (better(x, static_cast<int32_t>(v), best, bi)) best = x, bi = static_cast<int32_t>(v);
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, off);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, bi, off);
    if (better(ov, oi, best, bi)) best = ov, bi = oi;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sv[warp] = best, si[warp] = bi;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) {
      if (better(sv[w], si[w], best, bi)) best = sv[w], bi = si[w];
    }
    out[blockIdx.x] = bi == INT32_MAX ? 0 : bi;  // all-NaN row: token 0, as the reference's first index
  }
}

}  // namespace

void argmax(ExecContext& ctx, Tensor out, Tensor logits) {
  const int64_t R = logits.size(0), V = logits.size(1);
  if (R == 0) return;
  check_launch(launch_kernel(argmax_kernel, dim3(static_cast<unsigned>(R)), dim3(kThreads), 0, stream_of(ctx),
                             out.ptr<int32_t>(), logits.ptr<float>(), V),
               "argmax");
}

}  // namespace dsv4::cuda
