// The output side of the weight-streaming GEMVs (gemv.cu, quant_gemv.cu): rows of x padded to a power of two and
// the warp reduce-scatter that sums kRows x T' per-lane partials in one fixed tree.
#pragma once

#include "backend/cuda/common.cuh"

namespace dsv4::cuda {

// Rows of x padded to a power of two: the reduce-scatter halves the value count at each step.
constexpr int padded_tokens(int t) { return t <= 1 ? 1 : t <= 2 ? 2 : t <= 4 ? 4 : 8; }

// One halving step of warp_reduce_scatter at lane offset O over the first 2 * HALF values, then the rest.
template <int HALF, int O, int V>
__device__ __forceinline__ void reduce_scatter_step(float (&v)[V], int lane) {
  if constexpr (HALF >= 1) {
    const bool upper = (lane & O) != 0;
#pragma unroll
    for (int i = 0; i < HALF; ++i) {
      const float send = upper ? v[i] : v[i + HALF];
      const float keep = upper ? v[i + HALF] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, O);
    }
    reduce_scatter_step<HALF / 2, O / 2>(v, lane);
  }
}

// Sums each of the V values over the warp's 32 lanes (V a power of two <= 32). Recursive halving: at
// offset o a lane keeps the half of its values selected by (lane & o) and adds the partner's copy of that
// half, so after log2(V) steps lane l holds the partial of value l / (32 / V); butterflies over the
// remaining offsets complete it. Returns that sum (the same on every lane holding the value). Destroys v.
// Every value is summed in the same tree (lane pairs over offset 16, then 8, ..., 1) whatever V is, so a
// row's result does not depend on how many rows of x share the pass.
template <int V>
__device__ __forceinline__ float warp_reduce_scatter(float (&v)[V]) {
  static_assert(V >= 1 && V <= 32 && (V & (V - 1)) == 0, "V must be a power of two <= 32");
  reduce_scatter_step<V / 2, 16>(v, threadIdx.x & 31);
  float s = v[0];
#pragma unroll
  for (int b = 16 / V; b >= 1; b /= 2) s += __shfl_xor_sync(0xffffffffu, s, b);
  return s;
}

}  // namespace dsv4::cuda
