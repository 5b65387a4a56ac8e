// The decode path of moe_experts on CUDA: weight-streaming GEMVs over (plan tile, output block).
//
// At decode T·k is a handful of rows and every touched expert has one or a few of them, so the cost is
// reading each touched expert's w1/w3/w2 from HBM once. One block owns kOutPerBlock output columns of one
// plan tile (one expert's rows); each warp streams whole weight rows with 16-byte loads (UNROLL of them in
// flight per lane and matrix) and applies every activation row of the tile to them, CHUNK rows per pass,
// so rows of the same expert share one weight read. An expert has at most T rows (top-k picks it once per
// token; more rows would only take more passes), so CHUNK is T rounded up to a power of two (at most 8): at
// T = 1 the registers of unused row accumulators go to twice the loads in flight instead. Each lane
// accumulates its slice of K in fp32 in a fixed order (the same for every CHUNK and UNROLL) and a butterfly
// reduces the warp: no atomics, bit-identical run to run. The grid is sized from the plan's tile capacity;
// blocks of tiles past *num_tiles exit at once.
#include "backend/cuda/act_quant.h"
#include "backend/cuda/bf16_stream.cuh"
#include "backend/cuda/moe_plan.h"

namespace dsv4::cuda {
namespace {

constexpr int kDecodeWarps = 8;
constexpr int kDecodeThreads = 32 * kDecodeWarps;
constexpr int kOutPerWarp = 2;  // output columns per warp (one after the other)
constexpr int kOutPerBlock = kDecodeWarps * kOutPerWarp;
constexpr int kMaxRowChunk = 8;  // activation rows applied to one pass over a weight row, at most
constexpr int kVecElems = kBf16PerVec;
// Loads in flight per lane and weight matrix for CHUNK activation rows per pass.
constexpr int unroll_for_chunk(int chunk) { return chunk <= 2 ? 8 : 4; }

// acc[i] (+ acc3[i]) = this lane's part of arow[i] · wrow (· w3row) for the first nr rows, 16-byte accesses.
template <bool GATED, int CHUNK, int UNROLL>
__device__ __forceinline__ void dot_rows_vec(float (&acc)[CHUNK], float (&acc3)[CHUNK],
                                             const bf16* const (&arow)[CHUNK], int nr, const bf16* wrow,
                                             const bf16* w3row, int64_t K) {
  constexpr int64_t kStep = 32 * kVecElems;
  const int lane = threadIdx.x & 31;
  for (int64_t k0 = static_cast<int64_t>(lane) * kVecElems; k0 < K; k0 += kStep * UNROLL) {
    uint4 wv[UNROLL], w3v[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int64_t k = k0 + u * kStep;
      wv[u] = load_streaming_if(wrow, k, k < K);
      if constexpr (GATED) w3v[u] = load_streaming_if(w3row, k, k < K);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int64_t k = k0 + u * kStep;
      if (k >= K) break;
      float wf[kVecElems], w3f[kVecElems];
      unpack8(wv[u], wf);
      if constexpr (GATED) unpack8(w3v[u], w3f);
#pragma unroll
      for (int i = 0; i < CHUNK; ++i) {
        if (i >= nr) break;
        float xf[kVecElems];
        unpack8(__ldg(reinterpret_cast<const uint4*>(arow[i] + k)), xf);
#pragma unroll
        for (int c = 0; c < kVecElems; ++c) {
          acc[i] = fmaf(xf[c], wf[c], acc[i]);
          if constexpr (GATED) acc3[i] = fmaf(xf[c], w3f[c], acc3[i]);
        }
      }
    }
  }
}

// The same with element accesses: any K, any alignment.
template <bool GATED, int CHUNK, int UNROLL>
__device__ __forceinline__ void dot_rows_scalar(float (&acc)[CHUNK], float (&acc3)[CHUNK],
                                                const bf16* const (&arow)[CHUNK], int nr, const bf16* wrow,
                                                const bf16* w3row, int64_t K) {
  const int lane = threadIdx.x & 31;
  for (int64_t k0 = lane; k0 < K; k0 += 32 * UNROLL) {
    float wf[UNROLL], w3f[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int64_t k = k0 + u * 32;
      wf[u] = k < K ? to_float(wrow[k]) : 0.0f;
      if constexpr (GATED) w3f[u] = k < K ? to_float(w3row[k]) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int64_t k = k0 + u * 32;
      if (k >= K) break;
#pragma unroll
      for (int i = 0; i < CHUNK; ++i) {
        if (i >= nr) break;
        const float xv = to_float(arow[i][k]);
        acc[i] = fmaf(xv, wf[u], acc[i]);
        if constexpr (GATED) acc3[i] = fmaf(xv, w3f[u], acc3[i]);
      }
    }
  }
}

// out[r, n] = A[r] · W[e][n] for the rows r of one plan tile and kOutPerBlock columns n. GATED: A rows are x
// gathered by token, w1 and w3 give g and u, and out = silu(min(g, L)) * clamp(u, -L, L), as the tiled kernel.
template <bool GATED, bool VEC, int CHUNK, typename TO>
__global__ void __launch_bounds__(kDecodeThreads)
    moe_decode_kernel(TO* __restrict__ out, const bf16* __restrict__ a, const bf16* __restrict__ w,
                      const bf16* __restrict__ w3, MoePlan plan, int64_t N, int64_t K, float limit) {
  constexpr int UNROLL = unroll_for_chunk(CHUNK);
  pdl_wait();
  int32_t e, row0, row_end;
  if (!plan_tile(plan, static_cast<int>(blockIdx.y), &e, &row0, &row_end)) return;
  row_end = min(row_end, row0 + kPlanTileRows);  // the segment's end; a tile covers at most kPlanTileRows rows of it
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int j = 0; j < kOutPerWarp; ++j) {
    const int64_t n = static_cast<int64_t>(blockIdx.x) * kOutPerBlock + j * kDecodeWarps + warp;
    if (n >= N) return;
    const bf16* wrow = w + (static_cast<int64_t>(e) * N + n) * K;
    const bf16* w3row = GATED ? w3 + (static_cast<int64_t>(e) * N + n) * K : nullptr;
    for (int32_t r0 = row0; r0 < row_end; r0 += CHUNK) {
      const int nr = min(CHUNK, row_end - r0);
      const bf16* arow[CHUNK];
#pragma unroll
      for (int i = 0; i < CHUNK; ++i) {
        const int32_t r = r0 + min(i, nr - 1);  // rows past nr are never read; any valid address will do
        arow[i] = a + static_cast<int64_t>(GATED ? plan_token(plan, r) : r) * K;
      }
      float acc[CHUNK], acc3[CHUNK];
#pragma unroll
      for (int i = 0; i < CHUNK; ++i) acc[i] = 0.0f, acc3[i] = 0.0f;
      if constexpr (VEC) {
        dot_rows_vec<GATED, CHUNK, UNROLL>(acc, acc3, arow, nr, wrow, w3row, K);
      } else {
        dot_rows_scalar<GATED, CHUNK, UNROLL>(acc, acc3, arow, nr, wrow, w3row, K);
      }
#pragma unroll
      for (int i = 0; i < CHUNK; ++i) {
        if (i >= nr) break;
        float v = warp_sum(acc[i]);
        if constexpr (GATED) {
          const float g = fminf(v, limit);
          const float u = fminf(fmaxf(warp_sum(acc3[i]), -limit), limit);
          v = g / (1.0f + expf(-g)) * u;
        }
        if (lane == i) out[static_cast<int64_t>(r0 + i) * N + n] = from_float<TO>(v);
      }
    }
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

namespace {

template <int CHUNK>
void launch_decode(cudaStream_t stream, bf16* act, float* y, const bf16* x, const bf16* w1, const bf16* w3,
                   const bf16* w2, const MoePlan& plan, int64_t max_tiles, int64_t H, int64_t I, float limit,
                   const MoeActQuant* aq) {
  const bool vec1 = H % kVecElems == 0 && aligned16(x) && aligned16(w1) && aligned16(w3);
  const dim3 grid1(blocks_for(I, kOutPerBlock), static_cast<unsigned>(max_tiles));
  check_launch(
      launch_kernel(vec1 ? moe_decode_kernel<true, true, CHUNK, bf16> : moe_decode_kernel<true, false, CHUNK, bf16>,
                    grid1, dim3(kDecodeThreads), 0, stream, act, x, w1, w3, plan, I, H, limit),
      "moe_decode (w1/w3 + SwiGLU)");
  if (aq != nullptr) moe_act_round_trip(stream, act, I, plan, *aq);
  const bool vec2 = I % kVecElems == 0 && aligned16(act) && aligned16(w2);
  const dim3 grid2(blocks_for(H, kOutPerBlock), static_cast<unsigned>(max_tiles));
  check_launch(
      launch_kernel(vec2 ? moe_decode_kernel<false, true, CHUNK, float> : moe_decode_kernel<false, false, CHUNK, float>,
                    grid2, dim3(kDecodeThreads), 0, stream, y, act, w2, static_cast<const bf16*>(nullptr), plan, H, I,
                    limit),
      "moe_decode (w2)");
}

}  // namespace

void moe_decode_experts(cudaStream_t stream, bf16* act, float* y, const bf16* x, const bf16* w1, const bf16* w3,
                        const bf16* w2, const MoePlan& plan, int64_t max_tiles, int64_t tokens, int64_t H, int64_t I,
                        float limit, const MoeActQuant* aq) {
  if (tokens <= 1) return launch_decode<1>(stream, act, y, x, w1, w3, w2, plan, max_tiles, H, I, limit, aq);
  if (tokens <= 2) return launch_decode<2>(stream, act, y, x, w1, w3, w2, plan, max_tiles, H, I, limit, aq);
  if (tokens <= 4) return launch_decode<4>(stream, act, y, x, w1, w3, w2, plan, max_tiles, H, I, limit, aq);
  launch_decode<kMaxRowChunk>(stream, act, y, x, w1, w3, w2, plan, max_tiles, H, I, limit, aq);
}

}  // namespace dsv4::cuda
