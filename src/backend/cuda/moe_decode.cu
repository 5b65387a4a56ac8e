// The decode path of moe_experts on CUDA: weight-streaming GEMVs over (plan tile, output column) items.
//
// At decode T·k is a handful of rows and every touched expert has one or a few of them, so the cost is
// reading each touched expert's w1/w3/w2 from HBM once. A warp owns one output column of one plan tile (one
// expert's rows) at a time: it streams the weight row with 16-byte loads (UNROLL of them in flight per lane
// and matrix) and applies every activation row of the tile to it, CHUNK rows per pass, so rows of the same
// expert share one weight read. An expert has at most T rows (top-k picks it once per token; more rows would
// only take more passes), so CHUNK is T rounded up to a power of two (at most 8): at T = 1 the registers of
// unused row accumulators go to twice the loads in flight instead. Each lane accumulates its slice of K in
// fp32 in a fixed order (the same for every CHUNK and UNROLL) and a butterfly reduces the warp: no atomics,
// bit-identical run to run. The grid is as many blocks as stay resident (at most what the plan's tile
// capacity needs) and the warps walk the items actually planned (*num_tiles, read on the device).
#include <algorithm>

#include "backend/cuda/bf16_stream.cuh"
#include "backend/cuda/moe_plan.h"

namespace dsv4::cuda {
namespace {

constexpr int kDecodeWarps = 8;
constexpr int kDecodeThreads = 32 * kDecodeWarps;
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
      wv[u] = k < K ? load_streaming(wrow + k) : make_uint4(0, 0, 0, 0);
      if constexpr (GATED) w3v[u] = k < K ? load_streaming(w3row + k) : make_uint4(0, 0, 0, 0);
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

// out[r, n] = A[r] · W[e][n] for every row r of every planned tile (expert e) and column n. GATED: A rows are x
// gathered by token, w1 and w3 give g and u, and out = silu(min(g, L)) * clamp(u, -L, L), as the tiled kernel.
//
// Work items are (tile, column) pairs, tile-major, one per warp at a time: the grid holds as many warps as
// stay resident (the launcher sizes it from the occupancy), and warp g takes items g, g + warps, ... up to
// *num_tiles · N. So every warp streams weight rows from start to end, with no wave tail and no per-block
// start-up between them; the next item's tile entry is loaded while the current one streams.
// Resident blocks to aim for: the register budget of the warps that keep the loads in flight.
constexpr int min_blocks(bool gated) { return gated ? 2 : 3; }

template <bool GATED, bool VEC, int CHUNK, typename TO>
__global__ void __launch_bounds__(kDecodeThreads, min_blocks(GATED))
    moe_decode_kernel(TO* __restrict__ out, const bf16* __restrict__ a, const bf16* __restrict__ w,
                      const bf16* __restrict__ w3, MoePlan plan, int64_t N, int64_t K, float limit) {
  constexpr int UNROLL = unroll_for_chunk(CHUNK);
  pdl_wait();
  const int lane = threadIdx.x & 31;
  // 32-bit item arithmetic (the launcher checks max_tiles · N < 2^31): a 64-bit division is a call.
  const uint32_t warps = gridDim.x * kDecodeWarps, cols = static_cast<uint32_t>(N);
  const uint32_t items = static_cast<uint32_t>(*plan.num_tiles) * cols;
  uint32_t item = blockIdx.x * kDecodeWarps + (threadIdx.x >> 5);
  // tile_info holds the expert segment's end; a tile covers at most kPlanTileRows rows of it.
  auto tile_entry = [&](uint32_t it, int32_t& e, int32_t& row0, int32_t& row_end) {
    const uint32_t tile = it < items ? it / cols : 0;
    e = plan.tile_info[3 * tile], row0 = plan.tile_info[3 * tile + 1];
    row_end = min(plan.tile_info[3 * tile + 2], row0 + kPlanTileRows);
  };
  int32_t e, row0, row_end;
  tile_entry(item, e, row0, row_end);
  for (; item < items; item += warps) {
    const int64_t n = item % cols;
    const bf16* wrow = w + (static_cast<int64_t>(e) * N + n) * K;
    const bf16* w3row = GATED ? w3 + (static_cast<int64_t>(e) * N + n) * K : nullptr;
    const int32_t seg0 = row0, seg_end = row_end;
    tile_entry(item + warps, e, row0, row_end);  // the next item's, in flight during this one
    for (int32_t r0 = seg0; r0 < seg_end; r0 += CHUNK) {
      const int nr = min(CHUNK, seg_end - r0);
      const bf16* arow[CHUNK];
#pragma unroll
      for (int i = 0; i < CHUNK; ++i) {
        const int32_t r = r0 + min(i, nr - 1);  // rows past nr are never read; any valid address will do
        arow[i] = a + static_cast<int64_t>(GATED ? plan.token_of[r] : r) * K;
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

// Blocks of a warp-persistent launch: as many as stay resident, but no more than the items need.
template <typename Kernel>
unsigned persistent_blocks(Kernel kernel, int64_t max_items) {
  const int64_t resident =
      static_cast<int64_t>(resident_blocks_per_sm(kernel, kDecodeThreads)) * multiprocessor_count();
  const int64_t needed = (max_items + kDecodeWarps - 1) / kDecodeWarps;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(resident, needed)));
}

template <int CHUNK>
void launch_decode(cudaStream_t stream, bf16* act, float* y, const bf16* x, const bf16* w1, const bf16* w3,
                   const bf16* w2, const MoePlan& plan, int64_t max_tiles, int64_t H, int64_t I, float limit) {
  DSV4_CHECK(max_tiles * std::max(H, I) < (int64_t{1} << 31), kUnsupported, "moe_decode: ", max_tiles, " tiles of ",
             std::max(H, I), " columns exceed its 32-bit item index");
  const bool vec1 = H % kVecElems == 0 && aligned16(x) && aligned16(w1) && aligned16(w3);
  auto* k1 = vec1 ? moe_decode_kernel<true, true, CHUNK, bf16> : moe_decode_kernel<true, false, CHUNK, bf16>;
  check_launch(launch_kernel(k1, dim3(persistent_blocks(k1, max_tiles * I)), dim3(kDecodeThreads), 0, stream, act, x,
                             w1, w3, plan, I, H, limit),
               "moe_decode (w1/w3 + SwiGLU)");
  const bool vec2 = I % kVecElems == 0 && aligned16(act) && aligned16(w2);
  auto* k2 = vec2 ? moe_decode_kernel<false, true, CHUNK, float> : moe_decode_kernel<false, false, CHUNK, float>;
  check_launch(launch_kernel(k2, dim3(persistent_blocks(k2, max_tiles * H)), dim3(kDecodeThreads), 0, stream, y, act,
                             w2, static_cast<const bf16*>(nullptr), plan, H, I, limit),
               "moe_decode (w2)");
}

}  // namespace

void moe_decode_experts(cudaStream_t stream, bf16* act, float* y, const bf16* x, const bf16* w1, const bf16* w3,
                        const bf16* w2, const MoePlan& plan, int64_t max_tiles, int64_t tokens, int64_t H, int64_t I,
                        float limit) {
  if (tokens <= 1) return launch_decode<1>(stream, act, y, x, w1, w3, w2, plan, max_tiles, H, I, limit);
  if (tokens <= 2) return launch_decode<2>(stream, act, y, x, w1, w3, w2, plan, max_tiles, H, I, limit);
  if (tokens <= 4) return launch_decode<4>(stream, act, y, x, w1, w3, w2, plan, max_tiles, H, I, limit);
  launch_decode<kMaxRowChunk>(stream, act, y, x, w1, w3, w2, plan, max_tiles, H, I, limit);
}

}  // namespace dsv4::cuda
