// Kernel-lab variants of moe_decode_quant (backend/cuda/moe_decode_quant.cu) on quant_gemv.cu's design: every tile
// on tensor cores (FP4 routed and FP8 shared experts alike), codes through a per-warp cp.async ring of whole
// 128-byte lines (quant_mma.cuh), x through L1, one or two MMA column tiles of plan rows a pass. Session 17 ran two of
// them as replacements of the library kernel and both lost at b = 1 on an H100 (one Flash layer: 64.7-70.6 and
// 62.2 us against the library's 55.2; bench/RESULTS.md); here they sit beside it so that one call times them all on
// the same data and checks their outputs against it (bench_quant_gemv --moe-variants), and the ncu suite can count
// what they do differently (NCU_KERNELS=regex:moe).
//
// A variant is (row tiles a block, warps along K per tile, how a tile's warps share its stages):
//   ring-1x8      one tile of 16 rows a block, 8 warps along K, contiguous slices (session 17, call 4)
//   ring-4x2      four tiles a block, 2 warps along K, contiguous slices (call 6)
//   ring-1x8-il   ring-1x8 with the stages dealt out in turn (warp w: stages w, w + 8, ...): a block reads 8
//                 adjacent lines of each row at a time, as the library kernel's interleaved K steps do
//   ring-4x2-il   ring-4x2 interleaved
//
// UNVERIFIED ON GPU: written in session 17 after its device time ran out.
#pragma once

#include "backend/cuda/moe_plan.h"
#include "backend/cuda/quant_matrix.h"
#include "backend/cuda/quant_mma.cuh"

namespace dsv4::lab {

using cuda::bf16;
using cuda::MoePlan;
using cuda::QuantExperts;

constexpr int kRingWarps = 8;
constexpr int kRingThreads = 32 * kRingWarps;
constexpr int kRingTileRows = 16;
constexpr int kRingTokens = 8;
constexpr int kRingStages = 3;

struct RingVariant {
  const char* name;
  int tiles, splits;
  bool interleave;
};
inline constexpr RingVariant kRingVariants[] = {
    {"ring-1x8", 1, 8, false}, {"ring-4x2", 4, 2, false}, {"ring-1x8-il", 1, 8, true}, {"ring-4x2-il", 4, 2, true}};

// Expert e's matrix of one stack: codes row 0, scale rows, the row strides.
struct ExpertMatrix {
  const uint8_t* codes;
  const uint8_t* scale;
  int64_t row_bytes, scale_cols;
  bool fp4;
  __device__ __forceinline__ const uint8_t* scale_row(int64_t n) const {
    return scale + (fp4 ? n : n / kFp8Block) * scale_cols;
  }
};

__device__ __forceinline__ ExpertMatrix expert_matrix(const QuantExperts& s, int32_t e) {
  const bool shared = e >= s.count;
  const bool fp4 = (shared ? s.shared.format : s.routed.format) == WeightFormat::kFp4;
  const int64_t N = shared ? s.shared.N : s.routed.N, K = shared ? s.shared.K : s.routed.K;
  const int64_t ex = shared ? 0 : e;
  ExpertMatrix m;
  m.fp4 = fp4;
  m.row_bytes = fp4 ? K / 2 : K;
  m.scale_cols = fp4 ? (K + kFp4Group - 1) / kFp4Group : (K + kFp8Block - 1) / kFp8Block;
  const int64_t scale_rows = fp4 ? N : (N + kFp8Block - 1) / kFp8Block;
  m.codes = (shared ? s.shared.codes : s.routed.codes) + ex * N * m.row_bytes;
  m.scale = (shared ? s.shared.scale : s.routed.scale) + ex * scale_rows * m.scale_cols;
  return m;
}

template <bool GATED, int NT>
using RingPartials = float[kRingWarps][GATED ? 2 : 1][kRingTileRows][NT * kRingTokens];

template <WeightFormat F, bool GATED, int NT, int TILES, int SPLITS, bool IL, typename TO>
__device__ __forceinline__ void ring_tile(TO* __restrict__ out, const bf16* __restrict__ a, const QuantExperts& w,
                                          const QuantExperts& w3, const MoePlan& plan, int32_t e, int32_t row0,
                                          int32_t row_end, int64_t N, int64_t K, float limit, uint8_t* ring,
                                          RingPartials<GATED, NT>& red) {
  using namespace cuda;
  constexpr int M = GATED ? 2 : 1;
  constexpr int64_t kK = kStageK<F>;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
  const int tile = warp / SPLITS, slice = warp % SPLITS;
  const int64_t block_n0 = static_cast<int64_t>(blockIdx.x) * TILES * kRingTileRows;
  const int64_t n0 = block_n0 + tile * kRingTileRows;
  ExpertMatrix mat[M];
  const uint8_t* srow[M][2];
#pragma unroll
  for (int m = 0; m < M; ++m) {
    mat[m] = expert_matrix(m == 0 ? w : w3, e);
#pragma unroll
    for (int h = 0; h < 2; ++h) srow[m][h] = mat[m].scale_row(min(n0 + g + 8 * h, N - 1));
  }
  const int64_t total = (K + kK - 1) / kK, per_warp = (total + SPLITS - 1) / SPLITS;
  int stages = 0;
  if (n0 < N) {
    stages = IL ? (slice < total ? static_cast<int>((total - slice + SPLITS - 1) / SPLITS) : 0)
                : static_cast<int>(max(int64_t{0}, min(total, slice * per_warp + per_warp) - slice * per_warp));
  }
  auto k_of = [&](int s) { return (IL ? slice + static_cast<int64_t>(s) * SPLITS : slice * per_warp + s) * kK; };
  uint8_t* const mine = ring + warp * kRingStages * M * kRingStageBytes;
  auto slot = [&](int s, int m) { return mine + ((s % kRingStages) * M + m) * kRingStageBytes; };
  const int64_t row_bytes = code_offset<F>(K);
  auto copy = [&](int s) {
    if (s >= stages) return;
#pragma unroll
    for (int m = 0; m < M; ++m)
      ring_copy(slot(s, m), mat[m].codes, row_bytes, n0, N, code_offset<F>(k_of(s)), row_bytes);
  };

  for (int32_t r0 = row0; r0 < row_end; r0 += NT * kRingTokens) {
    const int nr = min(NT * kRingTokens, row_end - r0);
    const bf16* xrow[NT];
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int32_t r = r0 + kRingTokens * j + g;
      xrow[j] = r < row_end ? a + static_cast<int64_t>(GATED ? plan_token(plan, r) : r) * K : nullptr;
    }
#pragma unroll
    for (int s = 0; s < kRingStages - 1; ++s) {
      copy(s);
      cp_async_commit();
    }
    StageScales<F> sc_next[M];
    if (stages > 0) {
#pragma unroll
      for (int m = 0; m < M; ++m) sc_next[m].load(srow[m], k_of(0), K);
    }
    float acc[M][NT][4] = {};
    for (int s = 0; s < stages; ++s) {
      StageX<F, NT> x;
      x.load(xrow, k_of(s), K);
      StageScales<F> sc[M];
#pragma unroll
      for (int m = 0; m < M; ++m) {
        sc[m] = sc_next[m];
        if (s + 1 < stages) sc_next[m].load(srow[m], k_of(s + 1), K);
      }
      cp_async_wait<kRingStages - 2>();
      __syncwarp();
      copy(s + kRingStages - 1);
      cp_async_commit();
#pragma unroll
      for (int m = 0; m < M; ++m) stage_mma<F, NT>(acc[m], slot(s, m), sc[m], x);
    }
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const int col = kRingTokens * j + 2 * t4;
        red[warp][m][g][col] = acc[m][j][0], red[warp][m][g][col + 1] = acc[m][j][1];
        red[warp][m][g + 8][col] = acc[m][j][2], red[warp][m][g + 8][col + 1] = acc[m][j][3];
      }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < TILES * kRingTileRows * NT * kRingTokens; i += kRingThreads) {
      const int row = i % (TILES * kRingTileRows), col = i / (TILES * kRingTileRows);
      const int tb = row / kRingTileRows, r = row % kRingTileRows;
      const int64_t n = block_n0 + row;
      float v = 0.0f, v3 = 0.0f;
#pragma unroll
      for (int js = 0; js < SPLITS; ++js) {
        v += red[tb * SPLITS + js][0][r][col];
        if constexpr (GATED) v3 += red[tb * SPLITS + js][M - 1][r][col];
      }
      if (col < nr && n < N) {
        if constexpr (GATED) {
          const float gate = fminf(v, limit);
          const float up = fminf(fmaxf(v3, -limit), limit);
          v = gate / (1.0f + expf(-gate)) * up;
        }
        out[static_cast<int64_t>(r0 + col) * N + n] = cuda::from_float<TO>(v);
      }
    }
    __syncthreads();
  }
}

template <bool GATED, int NT, int TILES, int SPLITS, bool IL, typename TO>
__global__ void __launch_bounds__(kRingThreads, 2)
    ring_moe_kernel(TO* __restrict__ out, const bf16* __restrict__ a, QuantExperts w, QuantExperts w3, MoePlan plan,
                    int64_t N, int64_t K, float limit) {
  static_assert(TILES * SPLITS == kRingWarps, "a block's warps cover its tiles");
  extern __shared__ __align__(16) uint8_t ring[];
  __shared__ RingPartials<GATED, NT> red;
  cuda::pdl_wait();
  int32_t e, row0, row_end;
  if (!cuda::plan_tile(plan, static_cast<int>(blockIdx.y), &e, &row0, &row_end)) return;
  row_end = min(row_end, row0 + cuda::kPlanTileRows);
  if ((e >= w.count ? w.shared.format : w.routed.format) == WeightFormat::kFp4) {
    return ring_tile<WeightFormat::kFp4, GATED, NT, TILES, SPLITS, IL, TO>(out, a, w, w3, plan, e, row0, row_end, N, K,
                                                                           limit, ring, red);
  }
  ring_tile<WeightFormat::kFp8Block, GATED, NT, TILES, SPLITS, IL, TO>(out, a, w, w3, plan, e, row0, row_end, N, K,
                                                                       limit, ring, red);
}

template <bool GATED, int NT, int TILES, int SPLITS, bool IL, typename TO>
void launch_ring(cudaStream_t st, int64_t max_tiles, TO* out, const bf16* a, const QuantExperts& w,
                 const QuantExperts& w3, const MoePlan& plan, int64_t N, int64_t K, float limit) {
  constexpr int shared = kRingWarps * kRingStages * (GATED ? 2 : 1) * cuda::kRingStageBytes;
  auto* kernel = ring_moe_kernel<GATED, NT, TILES, SPLITS, IL, TO>;
  cuda::allow_dynamic_shared<ring_moe_kernel<GATED, NT, TILES, SPLITS, IL, TO>>(shared, "ring_moe_kernel");
  const dim3 grid(cuda::blocks_for(N, TILES * kRingTileRows), static_cast<unsigned>(max_tiles));
  cuda::check_launch(
      cuda::launch_kernel(kernel, grid, dim3(kRingThreads), shared, st, out, a, w, w3, plan, N, K, limit),
      "ring_moe_kernel");
}

template <int TILES, int SPLITS, bool IL>
void ring_decode(cudaStream_t st, bf16* act, float* y, const bf16* x, const QuantExperts& w1, const QuantExperts& w3,
                 const QuantExperts& w2, const MoePlan& plan, int64_t max_tiles, int64_t tokens, int64_t H, int64_t I,
                 float limit) {
  if (tokens <= kRingTokens) {
    launch_ring<true, 1, TILES, SPLITS, IL>(st, max_tiles, act, x, w1, w3, plan, I, H, limit);
    launch_ring<false, 1, TILES, SPLITS, IL>(st, max_tiles, y, static_cast<const bf16*>(act), w2, w2, plan, H, I,
                                             limit);
  } else {
    launch_ring<true, 2, TILES, SPLITS, IL>(st, max_tiles, act, x, w1, w3, plan, I, H, limit);
    launch_ring<false, 2, TILES, SPLITS, IL>(st, max_tiles, y, static_cast<const bf16*>(act), w2, w2, plan, H, I,
                                             limit);
  }
}

// moe_decode_experts_quant's contract (act [P, I] bf16, y [P, H] f32 per expert-sorted row) with variant v.
inline void ring_moe_decode(int v, cudaStream_t st, bf16* act, float* y, const bf16* x, const QuantExperts& w1,
                            const QuantExperts& w3, const QuantExperts& w2, const MoePlan& plan, int64_t max_tiles,
                            int64_t tokens, int64_t H, int64_t I, float limit) {
  switch (v) {
    case 0:
      return ring_decode<1, 8, false>(st, act, y, x, w1, w3, w2, plan, max_tiles, tokens, H, I, limit);
    case 1:
      return ring_decode<4, 2, false>(st, act, y, x, w1, w3, w2, plan, max_tiles, tokens, H, I, limit);
    case 2:
      return ring_decode<1, 8, true>(st, act, y, x, w1, w3, w2, plan, max_tiles, tokens, H, I, limit);
    default:
      return ring_decode<4, 2, true>(st, act, y, x, w1, w3, w2, plan, max_tiles, tokens, H, I, limit);
  }
}

}  // namespace dsv4::lab
