// Mixture of experts on CUDA: routing (hash / top-k with selection-only bias) and the routed experts as
// grouped GEMMs over expert-sorted rows (prefill) or weight-streaming GEMVs (decode, moe_decode.cu).
//
// moe_experts never reads routing results on the host. A one-block planning kernel (none for one token: each pair
// is then its own tile, moe_plan.h) counts the P (token, expert) pairs per expert — T·k routed pairs, plus T pairs of
// the shared expert (the last one) when it runs here — gives each pair a row of the expert-sorted order and lists the
// row tiles of every expert; the two grouped GEMMs (w1/w3 with the SwiGLU epilogue, then w2) run on a grid sized from
// the capacity min(P, ceil(P / BM) + E) tiles, where tiles past the listed count exit at once. While the experts hold
// few rows each (moe_takes_decode_path) the decode path (moe_decode.cu) replaces the two GEMMs over the same plan. A
// combine kernel sums each token's k rows in routing order, then its shared row. Everything has a fixed size given T,
// so the whole sequence can be captured in a CUDA graph.
#include <mma.h>

#include <type_traits>

#include "backend/cuda/act_quant.h"
#include "backend/cuda/common.cuh"
#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/moe_gemm_fp8.cuh"
#include "backend/cuda/moe_gemm_wgmma.cuh"
#include "backend/cuda/moe_plan.h"
#include "backend/cuda/quant_decode.cuh"
#include "backend/cuda/quant_matrix.h"
#include "backend/cuda/quant_mma.cuh"
#include "dsv4/core/log.h"

namespace dsv4::cuda {
namespace {

// ---- routing ---------------------------------------------------------------------------------------
constexpr int kRouteWarps = 4;

struct RouteArgs {
  int64_t T, E, k;
  int scoring;  // ScoringFunc
  bool normalise;
  float scale;
};

__device__ __forceinline__ float softplusf(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

// One warp per token: scores into shared memory, k rounds of a warp arg-max (larger value, then lower
// index — the CPU reference's partial_sort order) over the unselected experts. The chosen experts stay in
// shared memory and the weights are formed there: the outputs are written once, never read back.
__global__ void moe_route_kernel(float* __restrict__ weights, int32_t* __restrict__ indices,
                                 const float* __restrict__ logits, const float* __restrict__ bias,
                                 const int32_t* __restrict__ tid2eid, const int32_t* __restrict__ ids, RouteArgs a) {
  pdl_wait();
  extern __shared__ float smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kRouteWarps + warp;
  if (t >= a.T) return;
  float* score = smem + warp * 2 * a.E;
  float* biased = score + a.E;
  int32_t* chosen = reinterpret_cast<int32_t*>(smem + kRouteWarps * 2 * a.E) + warp * a.k;
  const float* l = logits + t * a.E;
  if (a.scoring == static_cast<int>(ScoringFunc::kSoftmax)) {
    float mx = -INFINITY;
    for (int64_t e = lane; e < a.E; e += 32) mx = fmaxf(mx, l[e]);
    mx = warp_max(mx);
    float sum = 0;
    for (int64_t e = lane; e < a.E; e += 32) sum += (score[e] = expf(l[e] - mx));
    sum = warp_sum(sum);
    for (int64_t e = lane; e < a.E; e += 32) score[e] /= sum;
  } else if (a.scoring == static_cast<int>(ScoringFunc::kSigmoid)) {
    for (int64_t e = lane; e < a.E; e += 32) score[e] = 1.0f / (1.0f + expf(-l[e]));
  } else {
    for (int64_t e = lane; e < a.E; e += 32) score[e] = sqrtf(softplusf(l[e]));
  }
  if (tid2eid != nullptr) {
    for (int64_t i = lane; i < a.k; i += 32) chosen[i] = tid2eid[static_cast<int64_t>(ids[t]) * a.k + i];
  } else {
    // Each lane reads and marks only its own experts (e ≡ lane mod 32): no barrier inside the rounds.
    for (int64_t e = lane; e < a.E; e += 32) biased[e] = score[e] + (bias != nullptr ? bias[e] : 0.0f);
    for (int64_t i = 0; i < a.k; ++i) {
      float best = -INFINITY;
      int32_t best_e = INT32_MAX;
      for (int64_t e = lane; e < a.E; e += 32) {
        const float v = biased[e];
        if (v > best || (v == best && e < best_e)) best = v, best_e = static_cast<int32_t>(e);
      }
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, best, off);
        const int32_t oe = __shfl_xor_sync(0xffffffffu, best_e, off);
        if (ov > best || (ov == best && oe < best_e)) best = ov, best_e = oe;
      }
      // NaN marks a taken expert (never selected again); an all-NaN row (garbage logits) gives expert 0.
      if (lane == 0) chosen[i] = best_e == INT32_MAX ? 0 : best_e;
      if (best_e != INT32_MAX && (best_e & 31) == lane) biased[best_e] = NAN;
    }
  }
  __syncwarp();
  if (lane == 0) {  // the CPU reference's order: weights summed in selection order
    float sum = 0;
    for (int64_t i = 0; i < a.k; ++i) sum += score[chosen[i]];
    for (int64_t i = 0; i < a.k; ++i) {
      const int32_t e = chosen[i];
      indices[t * a.k + i] = e;
      weights[t * a.k + i] = (a.normalise ? score[e] / (sum + 1e-20f) : score[e]) * a.scale;
    }
  }
}

// ---- expert-sorted plan ----------------------------------------------------------------------------
constexpr int kBM = kPlanTileRows, kBN = 64, kBK = 32, kGemmThreads = 128;
using Plan = MoePlan;

// One block. Pairs p < routed_pairs are (p / k, indices[p]); pairs past them (the shared expert, when it runs
// here) are (p - routed_pairs, E - 1). Pairs of one expert get consecutive rows; their order inside the
// expert's segment follows the shared-memory atomics, which is harmless: every row is computed independently
// and the combine sums a token's rows in a fixed order.
__global__ void moe_plan_kernel(Plan plan, const int32_t* __restrict__ indices, int64_t routed_pairs, int64_t P,
                                int64_t k, int64_t E, int32_t tile_rows) {
  pdl_wait();
  extern __shared__ int32_t sh[];  // cnt[E], off[E + 1], cursor[E], tile_off[E + 1]
  int32_t* cnt = sh;
  int32_t* off = cnt + E;
  int32_t* cursor = off + E + 1;
  int32_t* tile_off = cursor + E;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0, cursor[e] = 0;
  __syncthreads();
  auto expert_of = [&](int64_t p) { return p < routed_pairs ? indices[p] : static_cast<int32_t>(E - 1); };
  for (int64_t p = threadIdx.x; p < P; p += blockDim.x) atomicAdd(&cnt[expert_of(p)], 1);
  __syncthreads();
  // Exclusive prefix sums of the rows and tiles per expert (was a serial loop over E on one thread): each
  // thread sums its contiguous run of experts, a block scan of the run totals gives the run's start, then
  // the run is written out. Blocks of 1024 threads: at most 32 warp totals.
  {
    __shared__ int32_t warp_rows[32], warp_tiles[32];
    const int64_t per = (E + blockDim.x - 1) / blockDim.x, e0 = min(E, threadIdx.x * per), e1 = min(E, e0 + per);
    auto tiles_of = [&](int32_t rows) { return (rows + tile_rows - 1) / tile_rows; };
    int32_t rows = 0, tiles = 0;
    for (int64_t e = e0; e < e1; ++e) rows += cnt[e], tiles += tiles_of(cnt[e]);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int32_t rows_incl = rows, tiles_incl = tiles;  // inclusive scan inside the warp
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int32_t r = __shfl_up_sync(0xffffffffu, rows_incl, o), t = __shfl_up_sync(0xffffffffu, tiles_incl, o);
      if (lane >= o) rows_incl += r, tiles_incl += t;
    }
    if (lane == 31) warp_rows[warp] = rows_incl, warp_tiles[warp] = tiles_incl;
    __syncthreads();
    int32_t o = rows_incl - rows, to = tiles_incl - tiles;
    for (int w = 0; w < warp; ++w) o += warp_rows[w], to += warp_tiles[w];
    for (int64_t e = e0; e < e1; ++e) {
      off[e] = o, tile_off[e] = to;
      o += cnt[e], to += tiles_of(cnt[e]);
    }
    if (threadIdx.x == blockDim.x - 1) {  // the last run ends at the totals
      off[E] = o, tile_off[E] = to;
      *plan.num_tiles = to;
    }
  }
  __syncthreads();
  for (int64_t p = threadIdx.x; p < P; p += blockDim.x) {
    const int32_t e = expert_of(p);
    const int32_t r = off[e] + atomicAdd(&cursor[e], 1);
    plan.row_of[p] = r;
    plan.token_of[r] = static_cast<int32_t>(p < routed_pairs ? p / k : p - routed_pairs);
  }
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    for (int32_t j = tile_off[e]; j < tile_off[e + 1]; ++j) {
      plan.tile_info[3 * j + 0] = static_cast<int32_t>(e);
      plan.tile_info[3 * j + 1] = off[e] + (j - tile_off[e]) * tile_rows;
      plan.tile_info[3 * j + 2] = off[e + 1];
    }
  }
}

// ---- grouped GEMM (bf16 tensor cores through WMMA, fp32 accumulation) ------------------------------
// out[r, n] = sum_k A[r, k] * W[e][n, k] for the rows r of one expert tile. GATED: A rows are gathered
// from x by token, two weights (w1, w3) give g and u, and the epilogue writes silu(min(g, L)) * clamp(u).
namespace wmma = nvcuda::wmma;

template <bool VEC>
__device__ __forceinline__ void load_tile(bf16 (*dst)[kBK + 8], const bf16* const* rows, int nrows, int64_t K,
                                          int64_t k0) {
  if constexpr (VEC) {  // K % 8 == 0 and 16-byte aligned rows: 8 elements per access
    for (int i = threadIdx.x; i < nrows * (kBK / 8); i += kGemmThreads) {
      const int r = i / (kBK / 8), c = (i % (kBK / 8)) * 8;
      uint4 v = make_uint4(0, 0, 0, 0);
      if (rows[r] != nullptr && k0 + c < K) v = *reinterpret_cast<const uint4*>(rows[r] + k0 + c);
      *reinterpret_cast<uint4*>(&dst[r][c]) = v;
    }
  } else {
    for (int i = threadIdx.x; i < nrows * kBK; i += kGemmThreads) {
      const int r = i / kBK, c = i % kBK;
      dst[r][c] = (rows[r] != nullptr && k0 + c < K) ? rows[r][k0 + c] : __float2bfloat16_rn(0.0f);
    }
  }
}

// The weights of the synchronous grouped GEMM: a bf16 stack [E, N, K] (quantised stacks: the quantised ring kernel
// below).
struct Bf16Stack {
  const bf16* w;
};

using AccFragment = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// One kBK-wide step of a warp's 32 x 32 output (A rows wm * 32.., B rows wn * 32.. of the [64][kBK + 8] tiles), in
// the k order every variant of the kernel shares (so each gives the same bits).
template <bool GATED, int G>
__device__ __forceinline__ void mma_step(AccFragment (&acc)[2][2], AccFragment (&acc3)[G][G], const bf16 (*As)[kBK + 8],
                                         const bf16 (*Bs)[kBK + 8], const bf16 (*B3s)[kBK + 8], int wm, int wn) {
#pragma unroll
  for (int kk = 0; kk < kBK; kk += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(fa[i], &As[wm * 32 + i * 16][kk], kBK + 8);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
      wmma::load_matrix_sync(fb, &Bs[wn * 32 + j * 16][kk], kBK + 8);
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::mma_sync(acc[i][j], fa[i], fb, acc[i][j]);
      if constexpr (GATED) {
        wmma::load_matrix_sync(fb, &B3s[wn * 32 + j * 16][kk], kBK + 8);
#pragma unroll
        for (int i = 0; i < 2; ++i) wmma::mma_sync(acc3[i][j], fa[i], fb, acc3[i][j]);
      }
    }
  }
}

template <bool GATED, int G>
__device__ __forceinline__ void zero_accumulators(AccFragment (&acc)[2][2], AccFragment (&acc3)[G][G]) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  }
  if constexpr (GATED) {
#pragma unroll
    for (int i = 0; i < G; ++i) {
#pragma unroll
      for (int j = 0; j < G; ++j) wmma::fill_fragment(acc3[i][j], 0.0f);
    }
  }
}

// The tile's end: the SwiGLU (GATED: g and u fragments share one layout, so it applies element by element), the
// fragments through the C tile in shared memory (Cs, free for it: every thread is past its last read of the
// operand tiles), the tile's valid rows and columns out.
template <bool GATED, typename TO, int G>
__device__ __forceinline__ void gemm_epilogue(TO* __restrict__ out, AccFragment (&acc)[2][2], AccFragment (&acc3)[G][G],
                                              float (*Cs)[kBN + 4], int wm, int wn, int32_t row0, int32_t row_end,
                                              int64_t n0, int64_t N, float limit) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      if constexpr (GATED) {
#pragma unroll
        for (int x = 0; x < acc[i][j].num_elements; ++x) {
          const float g = fminf(acc[i][j].x[x], limit);
          const float u = fminf(fmaxf(acc3[i][j].x[x], -limit), limit);
          acc[i][j].x[x] = g / (1.0f + expf(-g)) * u;
        }
      }
      wmma::store_matrix_sync(&Cs[wm * 32 + i * 16][wn * 32 + j * 16], acc[i][j], kBN + 4, wmma::mem_row_major);
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < kBM * kBN; i += kGemmThreads) {
    const int r = i / kBN, c = i % kBN;
    const int64_t n = n0 + c;
    if (row0 + r < row_end && n < N) out[static_cast<int64_t>(row0 + r) * N + n] = from_float<TO>(Cs[r][c]);
  }
}

template <bool GATED, bool VEC, typename TO, typename WT>
__global__ void __launch_bounds__(kGemmThreads) moe_gemm_kernel(TO* __restrict__ out, const bf16* __restrict__ a, WT w,
                                                                WT w3, Plan plan, int64_t N, int64_t K, float limit) {
  pdl_wait();
  int32_t e, row0, row_end;
  if (!plan_tile(plan, static_cast<int>(blockIdx.y), &e, &row0, &row_end)) return;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kBN;
  __shared__ __align__(128) bf16 As[kBM][kBK + 8];
  __shared__ __align__(128) bf16 Bs[kBN][kBK + 8];
  __shared__ __align__(128) bf16 B3s[GATED ? kBN : 1][kBK + 8];
  __shared__ __align__(128) float Cs[kBM][kBN + 4];
  __shared__ const bf16* arow[kBM];
  __shared__ const bf16* wrow[kBN];
  __shared__ const bf16* w3row[GATED ? kBN : 1];
  for (int i = threadIdx.x; i < kBM; i += kGemmThreads) {
    const int32_t r = row0 + i;
    arow[i] = r < row_end ? a + static_cast<int64_t>(GATED ? plan_token(plan, r) : r) * K : nullptr;
  }
  for (int i = threadIdx.x; i < kBN; i += kGemmThreads) {
    const int64_t n = n0 + i;
    wrow[i] = n < N ? w.w + (static_cast<int64_t>(e) * N + n) * K : nullptr;
    if constexpr (GATED) w3row[i] = n < N ? w3.w + (static_cast<int64_t>(e) * N + n) * K : nullptr;
  }
  const int warp = threadIdx.x >> 5, wm = warp >> 1, wn = warp & 1;  // 2 x 2 warps, 32 x 32 each
  AccFragment acc[2][2], acc3[GATED ? 2 : 1][GATED ? 2 : 1];
  zero_accumulators<GATED>(acc, acc3);
  __syncthreads();
  for (int64_t k0 = 0; k0 < K; k0 += kBK) {
    load_tile<VEC>(As, arow, kBM, K, k0);
    load_tile<VEC>(Bs, wrow, kBN, K, k0);
    if constexpr (GATED) load_tile<VEC>(B3s, w3row, kBN, K, k0);
    __syncthreads();
    mma_step<GATED>(acc, acc3, As, Bs, B3s, wm, wn);
    __syncthreads();
  }
  gemm_epilogue<GATED>(out, acc, acc3, Cs, wm, wn, row0, row_end, n0, N, limit);
}

// ---- wide tiles (prefill on aligned bf16 operands where wgmma is unavailable) ---------------------------------
// The fallback of moe_gemm_wgmma.cuh (which the driver's tensor maps make the default). Plans of kPlanWideTileRows-row
// tiles: a block computes 128 plan rows x 128 MMA columns — 64 weight rows of w1 and of w3 (GATED), or 128 of w2 as two
// 64-row B tiles — with 8 warps of 32 x 32 per B tile, mma.m16n8k16 operands loaded by ldmatrix from a kWideStages-deep
// cp.async ring. An expert's weights are read once per 128 of its rows (a 4,096-token Flash prefill has ~96 rows per
// routed expert, which 64-row tiles read twice), and each A tile feeds 128 columns (the A tiles, re-read from L2 by
// every column block, were half the shared-memory fill traffic at 64). Each output's sum runs over k in 16-wide steps
// in ascending order, one MMA each, like the WMMA kernel's.
constexpr int kWideBM = kPlanWideTileRows;
constexpr int kWideThreads = 256;
constexpr int kWideStages = 4;
constexpr int kWideTiles = 2;  // B tiles of kBN weight rows per block
constexpr int kLd = kBK + 8;   // padded tile rows (80 bytes): ldmatrix's eight row addresses fall in distinct banks
constexpr int kWideATile = kWideBM * kLd, kWideBTile = kBN * kLd;  // elements
static_assert(kWideThreads * 2 == kWideBM * (kBK / 8) && kWideThreads == kBN * (kBK / 8),
              "each thread copies two 16-byte chunks of the A tile and one of each bf16 B tile per step");

// Dynamic shared memory of one launch: kWideStages slots of [A tile, the B tiles].
constexpr int kWideSmemBytes = static_cast<int>(sizeof(bf16)) * kWideStages * (kWideATile + kWideTiles * kWideBTile);

// One kBK-wide step of a warp's 32 x 32 outputs per B tile: A rows wm * 32.. of `as`, B rows wn * 32.. of bt[m].
// ldmatrix.x4 gives A's four 8 x 8 quarters in the MMA's a0..a3 order (lane l addresses row l % 16, column
// 8 (l / 16)), and for B (stored [n][k], the MMA's column-major operand) b0, b1 of two adjacent 8-column tiles.
__device__ __forceinline__ void wide_mma_step(float (&acc)[kWideTiles][2][4][4], const bf16* as,
                                              const bf16* const (&bt)[kWideTiles], int wm, int wn, int lane) {
#pragma unroll
  for (int kk = 0; kk < kBK; kk += 16) {
    uint32_t af[2][4];
#pragma unroll
    for (int i = 0; i < 2; ++i) ldmatrix_x4(af[i], as + (wm * 32 + i * 16 + (lane & 15)) * kLd + kk + (lane >> 4) * 8);
#pragma unroll
    for (int m = 0; m < kWideTiles; ++m) {
#pragma unroll
      for (int jj = 0; jj < 2; ++jj) {
        uint32_t bfr[4];
        ldmatrix_x4(bfr, bt[m] + (wn * 32 + jj * 16 + (lane >> 4) * 8 + (lane & 7)) * kLd + kk + ((lane >> 3) & 1) * 8);
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          mma_bf16_16816(acc[m][i][2 * jj], af[i], bfr[0], bfr[1]);
          mma_bf16_16816(acc[m][i][2 * jj + 1], af[i], bfr[2], bfr[3]);
        }
      }
    }
  }
}

// Output columns of one block: 64 (GATED: w1 and w3 side by side) or 128.
template <bool GATED>
constexpr int wide_cols() {
  return GATED ? kBN : kWideTiles * kBN;
}

// w, w3: bf16 stacks [E, N, K]. B tile m holds weight rows n0 + 64 m.. of w (w3 for GATED's tile 1).
template <bool GATED, typename TO>
__global__ void __launch_bounds__(kWideThreads, 2)
    moe_gemm_wide_kernel(TO* __restrict__ out, const bf16* __restrict__ a, const bf16* __restrict__ w,
                         const bf16* __restrict__ w3, Plan plan, int64_t N, int64_t K, float limit) {
  extern __shared__ __align__(128) unsigned char wide_smem[];
  __shared__ const bf16* arow[kWideBM];
  pdl_wait();
  int32_t e, row0, row_end;
  if (!plan_tile(plan, static_cast<int>(blockIdx.y), &e, &row0, &row_end)) return;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * wide_cols<GATED>();
  const auto tile_row = [&](int m) { return n0 + (GATED ? 0 : kBN * m); };  // B tile m's first weight row
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wm = warp >> 1, wn = warp & 1;
  for (int i = tid; i < kWideBM; i += kWideThreads) {
    const int32_t r = row0 + i;
    arow[i] = r < row_end ? a + static_cast<int64_t>(GATED ? plan_token(plan, r) : r) * K : nullptr;
  }
  bf16* const smem = reinterpret_cast<bf16*>(wide_smem);
  constexpr int kSlot = kWideATile + kWideTiles * kWideBTile;  // elements per ring slot
  const auto a_tile = [&](int st) { return smem + st * kSlot; };
  // This thread's copies: A chunks (tid / 4, 8 (tid % 4)) and 64 rows below; B row tid / 4 of each tile, same chunk.
  const int cr = tid >> 2, cc = (tid & 3) * 8;
  const bf16* bsrc[kWideTiles] = {};
#pragma unroll
  for (int m = 0; m < kWideTiles; ++m) {
    const int64_t n = tile_row(m) + cr;
    if (n < N) bsrc[m] = (GATED && m == 1 ? w3 : w) + (static_cast<int64_t>(e) * N + n) * K;
  }
  __syncthreads();  // the row pointers
  const bf16* const asrc[2] = {arow[cr], arow[cr + 64]};
  const int64_t steps = (K + kBK - 1) / kBK;
  const auto issue = [&](int64_t t) {
    const int st = static_cast<int>(t % kWideStages);
    const int64_t k0 = t * kBK;
    const bool in_k = k0 + cc < K;  // K % 8 == 0: a chunk is wholly in or out
    bf16* as = a_tile(st);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const bool in = asrc[h] != nullptr && in_k;
      cp_async16(as + (cr + 64 * h) * kLd + cc, in ? asrc[h] + k0 + cc : a, in);
    }
#pragma unroll
    for (int m = 0; m < kWideTiles; ++m) {
      const bool in = bsrc[m] != nullptr && in_k;
      cp_async16(as + kWideATile + m * kWideBTile + cr * kLd + cc, in ? bsrc[m] + k0 + cc : a, in);
    }
  };
  float acc[kWideTiles][2][4][4] = {};
  for (int t = 0; t < kWideStages - 1; ++t) {  // a commit group per stage, empty past the last step
    if (t < steps) issue(t);
    cp_async_commit();
  }
  for (int64_t t = 0; t < steps; ++t) {
    // This thread's copies of step t, then everyone's; everyone is done with step t - 1 (its slot).
    cp_async_wait<kWideStages - 2>();
    __syncthreads();
    if (t + kWideStages - 1 < steps) issue(t + kWideStages - 1);
    cp_async_commit();
    const int st = static_cast<int>(t % kWideStages);
    const bf16* bt[kWideTiles];
#pragma unroll
    for (int m = 0; m < kWideTiles; ++m) bt[m] = a_tile(st) + kWideATile + m * kWideBTile;
    wide_mma_step(acc, a_tile(st), bt, wm, wn, lane);
  }
  cp_async_wait<0>();
  // Epilogue from the fragments: lane (g, t4) holds rows g and g + 8 of each 16-row tile, columns 2 t4, 2 t4 + 1 of
  // each 8-column tile. GATED: silu(min(g, L)) * clamp(u, -L, L) of tiles 0 (w1) and 1 (w3), as gemm_epilogue.
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = wm * 32 + i * 16 + g + 8 * half;
      if (row0 + r >= row_end) continue;
      TO* orow = out + static_cast<int64_t>(row0 + r) * N;
#pragma unroll
      for (int m = 0; m < (GATED ? 1 : kWideTiles); ++m) {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          float v[2] = {acc[m][i][j][2 * half], acc[m][i][j][2 * half + 1]};
          if constexpr (GATED) {
#pragma unroll
            for (int c = 0; c < 2; ++c) {
              const float gv = fminf(v[c], limit);
              const float u = fminf(fmaxf(acc[1][i][j][2 * half + c], -limit), limit);
              v[c] = gv / (1.0f + expf(-gv)) * u;
            }
          }
          store_pair(orow, tile_row(m) + wn * 32 + j * 8 + 2 * t4, N, v[0], v[1]);
        }
      }
    }
  }
}

// One product of the wide kernel over a plan of kPlanWideTileRows-row tiles (grid: the column blocks x the plan's
// tile bound).
template <bool GATED, typename TO>
void launch_wide(cudaStream_t s, TO* out, const bf16* a, const bf16* w, const bf16* w3, const Plan& plan,
                 int64_t max_tiles, int64_t N, int64_t K, float limit, const char* what) {
  constexpr auto kernel = moe_gemm_wide_kernel<GATED, TO>;
  allow_dynamic_shared<kernel>(kWideSmemBytes, "cudaFuncSetAttribute(moe_gemm_wide)");
  check_launch(launch_kernel(kernel, dim3(blocks_for(N, wide_cols<GATED>()), static_cast<unsigned>(max_tiles)),
                             dim3(kWideThreads), kWideSmemBytes, s, out, a, w, w3, plan, N, K, limit),
               what);
}

// The same grouped product for any operand dtypes (f32 activations / weights): fp32 FMA on 64 x 32
// output tiles, 32 x 8 threads with 8 rows each. Used when the tensor-core kernel's bf16 operands do not apply.
template <bool GATED, typename TA, typename TW, typename TO>
__global__ void __launch_bounds__(256)
    moe_gemm_simple_kernel(TO* __restrict__ out, const TA* __restrict__ a, const TW* __restrict__ w,
                           const TW* __restrict__ w3, Plan plan, int64_t N, int64_t K, float limit) {
  constexpr int kCols = 32, kK = 32;
  pdl_wait();
  int32_t e, row0, row_end;
  if (!plan_tile(plan, static_cast<int>(blockIdx.y), &e, &row0, &row_end)) return;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kCols;
  __shared__ float xs[kBM][kK + 1];
  __shared__ float ws[kCols][kK + 1];
  __shared__ float w3s[GATED ? kCols : 1][kK + 1];
  __shared__ const TA* arow[kBM];
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * 32 + tx;
  for (int i = tid; i < kBM; i += 256) {
    const int32_t r = row0 + i;
    arow[i] = r < row_end ? a + static_cast<int64_t>(GATED ? plan_token(plan, r) : r) * K : nullptr;
  }
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, acc3[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  __syncthreads();
  for (int64_t k0 = 0; k0 < K; k0 += kK) {
    const int64_t k = k0 + tx;
    for (int r = ty; r < kBM; r += 8) xs[r][tx] = (arow[r] != nullptr && k < K) ? to_float(arow[r][k]) : 0.0f;
    for (int r = ty; r < kCols; r += 8) {
      const int64_t n = n0 + r;
      const bool ok = n < N && k < K;
      ws[r][tx] = ok ? to_float(w[(static_cast<int64_t>(e) * N + n) * K + k]) : 0.0f;
      if constexpr (GATED) w3s[r][tx] = ok ? to_float(w3[(static_cast<int64_t>(e) * N + n) * K + k]) : 0.0f;
    }
    __syncthreads();
#pragma unroll 4
    for (int kk = 0; kk < kK; ++kk) {
      const float wv = ws[tx][kk];
      const float w3v = GATED ? w3s[tx][kk] : 0.0f;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float xv = xs[ty + 8 * i][kk];
        acc[i] = fmaf(xv, wv, acc[i]);
        if constexpr (GATED) acc3[i] = fmaf(xv, w3v, acc3[i]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int r = ty + 8 * i;
    const int64_t n = n0 + tx;
    if (row0 + r >= row_end || n >= N) continue;
    float v = acc[i];
    if constexpr (GATED) {
      const float g = fminf(acc[i], limit), u = fminf(fmaxf(acc3[i], -limit), limit);
      v = g / (1.0f + expf(-g)) * u;
    }
    out[static_cast<int64_t>(row0 + r) * N + n] = from_float<TO>(v);
  }
}

// out[t] = sum_i weights[t, i] * y[row of pair t*k + i] (+ y[row of pair routed_pairs + t], weight 1, with the
// shared expert); weights null: every weight 1 (--activation-quant fp8 applied them before w2)
template <typename TO>
__global__ void moe_combine_kernel(TO* __restrict__ out, const float* __restrict__ y, const float* __restrict__ weights,
                                   Plan plan, bool shared_expert, int64_t routed_pairs, int64_t k, int64_t H) {
  pdl_wait();
  const int64_t t = blockIdx.y;
  for (int64_t h = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; h < H;
       h += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float acc = 0;
    for (int64_t i = 0; i < k; ++i) {
      acc = fmaf(weights != nullptr ? weights[t * k + i] : 1.0f,
                 y[static_cast<int64_t>(plan_row(plan, t * k + i)) * H + h], acc);
    }
    if (shared_expert) acc += y[static_cast<int64_t>(plan_row(plan, routed_pairs + t)) * H + h];
    out[t * H + h] = from_float<TO>(acc);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void moe_route(ExecContext& ctx, Tensor weights, Tensor indices, Tensor logits, Tensor bias, Tensor tid2eid, Tensor ids,
               const ops::RouteParams& params) {
  RouteArgs a{};
  a.T = logits.size(0);
  a.E = logits.size(1);
  a.k = weights.size(1);
  a.scoring = static_cast<int>(params.scoring);
  a.normalise = params.norm_topk_prob;
  a.scale = params.routed_scaling_factor;
  if (a.T == 0) return;
  DSV4_CHECK_ARG(a.k <= a.E, "moe_route: top-", a.k, " of ", a.E, " experts");
  const size_t shared = (sizeof(float) * 2 * a.E + sizeof(int32_t) * a.k) * kRouteWarps;
  DSV4_CHECK(shared <= 48 * 1024, kUnsupported, "moe_route on CUDA supports at most ", 48 * 1024 / 32, " experts, got ",
             a.E);
  check_launch(launch_kernel(moe_route_kernel, dim3(blocks_for(a.T, kRouteWarps)), dim3(kRouteWarps * 32), shared,
                             stream_of(ctx), weights.ptr<float>(), indices.ptr<int32_t>(), logits.ptr<float>(),
                             bias.data() != nullptr ? bias.ptr<float>() : nullptr,
                             tid2eid.data() != nullptr ? tid2eid.ptr<int32_t>() : nullptr, ids.ptr<int32_t>(), a),
               "moe_route");
}

namespace {

// The routing plan of a moe_experts call in the scratch arena, built on the device (moe_plan_kernel).
struct Routing {
  Plan plan{};
  int64_t routed_pairs = 0, P = 0, max_tiles = 0;
};

// E counts every stacked expert, the shared one (last) included: the plan treats it as one more expert. One token
// needs no planning kernel (MoePlan::pair_experts): one launch fewer per MoE layer at b = 1 decode. Tiles of
// `tile_rows` rows: kPlanTileRows for the decode path and the WMMA kernel, kPlanWideTileRows for the wide kernel.
Routing plan_routes(Arena& A, cudaStream_t s, Tensor indices, int64_t T, int64_t E, bool shared_expert,
                    int32_t tile_rows) {
  const int64_t k = indices.size(1);
  Routing r;
  r.routed_pairs = T * k;
  r.P = r.routed_pairs + (shared_expert ? T : 0);
  if (T == 1) {
    r.max_tiles = r.P;
    r.plan.pair_experts = indices.ptr<int32_t>();
    r.plan.pairs = static_cast<int32_t>(r.P);
    r.plan.routed_pairs = static_cast<int32_t>(r.routed_pairs);
    r.plan.shared_expert = static_cast<int32_t>(E - 1);
    return r;
  }
  r.max_tiles = std::min<int64_t>(r.P, (r.P + tile_rows - 1) / tile_rows + E);
  r.plan.row_of = A.alloc(DType::I32, {r.P}).ptr<int32_t>();
  r.plan.token_of = A.alloc(DType::I32, {r.P}).ptr<int32_t>();
  r.plan.tile_info = A.alloc(DType::I32, {r.max_tiles, 3}).ptr<int32_t>();
  r.plan.num_tiles = A.alloc(DType::I32, {1}).ptr<int32_t>();
  const size_t plan_shared = sizeof(int32_t) * (4 * E + 2);
  DSV4_CHECK(plan_shared <= 48 * 1024, kUnsupported, "moe_experts on CUDA supports at most 3000 experts, got ", E);
  check_launch(launch_kernel(moe_plan_kernel, dim3(1), dim3(1024), plan_shared, s, r.plan, indices.ptr<int32_t>(),
                             r.routed_pairs, r.P, k, E, tile_rows),
               "moe_plan");
  return r;
}

// out[t] = the routing-weighted sum of the rows' expert outputs y [P, H] (+ the shared expert's row); with
// unit_weights the plain sum (the weights were applied before w2).
void combine(cudaStream_t s, Tensor out, const Routing& r, Tensor y, Tensor weights, int64_t T, int64_t k, int64_t H,
             bool shared_expert, bool unit_weights) {
  const dim3 grid3(std::max(1u, std::min(blocks_for(H, 256), 16u)), static_cast<unsigned>(T));
  dispatch_float(out.dtype(), "moe_experts out", [&](auto o) {
    using TO = decltype(o);
    check_launch(
        launch_kernel(moe_combine_kernel<TO>, grid3, dim3(256), 0, s, out.ptr<TO>(), y.ptr<float>(),
                      unit_weights ? nullptr : weights.ptr<float>(), r.plan, shared_expert, r.routed_pairs, k, H),
        "moe_combine");
  });
}

// The two wide products of bf16 stacks (w1, w3 [E, I, H], w2 [E, H, I]) on wgmma (moe_gemm_wgmma.cuh); false, and
// nothing launched, where the driver does not encode the stacks' tensor maps (the caller runs the mma.sync kernel).
bool wgmma_products(cudaStream_t s, bf16* act, float* y, const bf16* x, const bf16* w1, const bf16* w3, const bf16* w2,
                    int64_t E, const Plan& plan, int64_t max_tiles, int64_t H, int64_t I, float limit,
                    const MoeActQuant* aq) {
  CUtensorMap m13[2]{}, m2[2]{};
  const bool maps =
      dry_run() || (make_product_maps<true>(&m13[0], &m13[1], w1, w3, E, static_cast<int>(I), static_cast<int>(H)) &&
                    make_product_maps<false>(&m2[0], &m2[1], w2, w2, E, static_cast<int>(H), static_cast<int>(I)));
  if (!maps) {
    static const bool logged = [] {
      log_warn(
          "moe_experts: the CUDA driver encodes no tensor maps (cuTensorMapEncodeTiled); the MoE prefill runs on the "
          "slower mma.sync kernel");
      return true;
    }();
    (void)logged;
    return false;
  }
  launch_moe_gemm_wgmma<true>(s, act, x, m13[0], m13[1], plan, max_tiles, static_cast<int>(I), static_cast<int>(H),
                              limit, "moe_gemm_wgmma (w1/w3 + SwiGLU)");
  if (aq != nullptr) moe_act_round_trip(s, act, I, plan, *aq);
  launch_moe_gemm_wgmma<false>(s, y, static_cast<const bf16*>(act), m2[0], m2[1], plan, max_tiles, static_cast<int>(H),
                               static_cast<int>(I), limit, "moe_gemm_wgmma (w2)");
  return true;
}

// x's rows round-tripped (--activation-quant fp8) into a copy in `A`: every expert reads its input quantised.
Tensor quantized_copy(Arena& A, cudaStream_t s, Tensor x) {
  Tensor q = A.alloc(x.dtype(), x.shape());
  activation_round_trip_rows(s, x.dtype(), q.data(), x.data(), x.size(0), x.size(1));
  return q;
}

// With activation_quant: x round-tripped into scratch, the intermediate weighted and round-tripped between the
// products (act_quant.h), the combine unweighted.
void moe_experts_plain(ExecContext& ctx, Tensor out, Tensor x, Tensor indices, Tensor weights, Tensor w1, Tensor w2,
                       Tensor w3, float limit, bool shared_expert, bool activation_quant) {
  const int64_t T = x.size(0), H = x.size(1), k = indices.size(1), I = w1.size(1), E = w1.size(0);
  if (T == 0) return;
  DSV4_CHECK_ARG(w1.dtype() == w2.dtype() && w1.dtype() == w3.dtype(),
                 "moe_experts on CUDA: w1, w2 and w3 must share a dtype, got ", w1.describe(), ", ", w2.describe(),
                 ", ", w3.describe());
  DSV4_CHECK_ARG(ctx.scratch != nullptr && ctx.scratch->device() == Device::kCUDA,
                 "moe_experts on CUDA needs a device scratch arena (ExecContext::scratch)");
  Arena& A = *ctx.scratch;
  ArenaScope scope(A);
  const cudaStream_t s = stream_of(ctx);
  if (activation_quant) x = quantized_copy(A, s, x);
  // bf16 operands: tensor cores, the SwiGLU output stored bf16 (the w2 GEMM's operand); otherwise fp32 FMA
  // with an f32 intermediate. Past the decode path, 16-byte aligned rows take the wide kernel, others the WMMA one.
  const int64_t P = T * k + (shared_expert ? T : 0);
  const bool tensor_cores = x.dtype() == DType::BF16 && w1.dtype() == DType::BF16;
  const bool decode = tensor_cores && moe_takes_decode_path(P, E);
  const bool wide = tensor_cores && !decode && H % 8 == 0 && I % 8 == 0 && aligned16(x.data()) &&
                    aligned16(w1.data()) && aligned16(w3.data()) && aligned16(w2.data());
  Tensor act = A.alloc(tensor_cores ? DType::BF16 : DType::F32, {P, I});  // arena tensors are 16-byte aligned
  Tensor y = A.alloc(DType::F32, {P, H});
  const Routing r = plan_routes(A, s, indices, T, E, shared_expert, wide ? kPlanWideTileRows : kPlanTileRows);
  const int64_t max_tiles = r.max_tiles;
  const Plan& plan = r.plan;
  const MoeActQuant aq{weights.ptr<float>(), r.routed_pairs, P};
  const MoeActQuant* act_quant = activation_quant ? &aq : nullptr;
  if (decode) {
    moe_decode_experts(s, act.ptr<bf16>(), y.ptr<float>(), x.ptr<bf16>(), w1.ptr<bf16>(), w3.ptr<bf16>(),
                       w2.ptr<bf16>(), plan, max_tiles, T, H, I, limit, act_quant);
  } else if (wide && wgmma_products(s, act.ptr<bf16>(), y.ptr<float>(), x.ptr<bf16>(), w1.ptr<bf16>(), w3.ptr<bf16>(),
                                    w2.ptr<bf16>(), E, plan, max_tiles, H, I, limit, act_quant)) {
  } else if (wide) {
    launch_wide<true>(s, act.ptr<bf16>(), x.ptr<bf16>(), w1.ptr<bf16>(), w3.ptr<bf16>(), plan, max_tiles, I, H, limit,
                      "moe_gemm (w1/w3 + SwiGLU)");
    if (act_quant != nullptr) moe_act_round_trip(s, act.ptr<bf16>(), I, plan, aq);
    launch_wide<false>(s, y.ptr<float>(), act.ptr<bf16>(), w2.ptr<bf16>(), nullptr, plan, max_tiles, H, I, limit,
                       "moe_gemm (w2)");
  } else if (tensor_cores) {
    check_launch(launch_kernel(moe_gemm_kernel<true, false, bf16, Bf16Stack>,
                               dim3(blocks_for(I, kBN), static_cast<unsigned>(max_tiles)), dim3(kGemmThreads), 0, s,
                               act.ptr<bf16>(), x.ptr<bf16>(), Bf16Stack{w1.ptr<bf16>()}, Bf16Stack{w3.ptr<bf16>()},
                               plan, I, H, limit),
                 "moe_gemm (w1/w3 + SwiGLU)");
    if (act_quant != nullptr) moe_act_round_trip(s, act.ptr<bf16>(), I, plan, aq);
    check_launch(launch_kernel(moe_gemm_kernel<false, false, float, Bf16Stack>,
                               dim3(blocks_for(H, kBN), static_cast<unsigned>(max_tiles)), dim3(kGemmThreads), 0, s,
                               y.ptr<float>(), act.ptr<bf16>(), Bf16Stack{w2.ptr<bf16>()}, Bf16Stack{nullptr}, plan, H,
                               I, limit),
                 "moe_gemm (w2)");
  } else {
    dispatch_float(x.dtype(), "moe_experts x", [&](auto xt) {
      dispatch_float(w1.dtype(), "moe_experts weights", [&](auto wt) {
        using TA = decltype(xt);
        using TW = decltype(wt);
        check_launch(launch_kernel(moe_gemm_simple_kernel<true, TA, TW, float>,
                                   dim3(blocks_for(I, 32), static_cast<unsigned>(max_tiles)), dim3(32, 8), 0, s,
                                   act.ptr<float>(), x.ptr<TA>(), w1.ptr<TW>(), w3.ptr<TW>(), plan, I, H, limit),
                     "moe_gemm_simple (w1/w3 + SwiGLU)");
        if (act_quant != nullptr) moe_act_round_trip(s, act.ptr<float>(), I, plan, aq);
        check_launch(
            launch_kernel(moe_gemm_simple_kernel<false, float, TW, float>,
                          dim3(blocks_for(H, 32), static_cast<unsigned>(max_tiles)), dim3(32, 8), 0, s, y.ptr<float>(),
                          act.ptr<float>(), w2.ptr<TW>(), static_cast<const TW*>(nullptr), plan, H, I, limit),
            "moe_gemm_simple (w2)");
      });
    });
  }
  combine(s, out, r, y, weights, T, k, H, shared_expert, activation_quant);
}

QuantMatrix matrix_of(const QuantMatrices& m) { return {m.format, m.codes, m.scale, m.rows, m.cols}; }

QuantExperts experts_of(const Weight& w) {
  QuantExperts e;
  e.routed = matrix_of(w.quant());
  e.count = static_cast<int32_t>(w.quant().count);
  if (w.shared().count != 0) e.shared = matrix_of(w.shared());
  // The FP4 parts' widest row span (-1: some FP4 part not measured).
  const auto span = [](const QuantMatrices& m) { return m.format == WeightFormat::kFp4 ? m.fp4_row_span : 0; };
  const int32_t routed = span(w.quant()), shared = w.shared().count != 0 ? span(w.shared()) : 0;
  e.fp4_row_span = routed < 0 || shared < 0 ? -1 : std::max(routed, shared);
  return e;
}

// A quantised stack's values as a bf16 [E, rows, cols] tensor in `A` (the fallback for shapes the quantised decode
// kernel does not serve), one dequantize_to_bf16 per expert.
Tensor dequantized_stack(Arena& A, cudaStream_t s, const Weight& w) {
  const QuantMatrices &r = w.quant(), &sh = w.shared();
  Tensor t = A.alloc(DType::BF16, w.shape());
  const int64_t code = quant_code_bytes(r.format, r.rows, r.cols), scale = quant_scale_bytes(r.format, r.rows, r.cols);
  for (int64_t e = 0; e < r.count; ++e) {
    dequantize_to_bf16(s, QuantMatrix{r.format, r.codes + e * code, r.scale + e * scale, r.rows, r.cols},
                       t.select(0, e).data());
  }
  if (sh.count != 0) dequantize_to_bf16(s, matrix_of(sh), t.select(0, r.count).data());
  return t;
}

// Quantised stacks: moe_decode_experts_quant while the experts hold few rows (moe_takes_decode_path), the wgmma GEMM
// with dequantised B tiles past them (moe_gemm_experts_quant: prefill), else the stacks dequantised to bf16 in scratch
// and the bf16 path.
void moe_experts_quant(ExecContext& ctx, Tensor out, Tensor x, Tensor indices, Tensor weights, const Weight& w1,
                       const Weight& w2, const Weight& w3, float limit, bool shared_expert, bool activation_quant) {
  const int64_t T = x.size(0), H = x.size(1), k = indices.size(1), I = w1.size(1), E = w1.size(0);
  if (T == 0) return;
  DSV4_CHECK_ARG(w2.quantized() && w3.quantized(), "moe_experts on CUDA: w1, w2 and w3 must all be quantised, got ",
                 w1.describe(), ", ", w2.describe(), ", ", w3.describe());
  DSV4_CHECK_ARG(!shared_expert || (w1.shared().count == 1 && w2.shared().count == 1 && w3.shared().count == 1),
                 "moe_experts on CUDA: shared_expert with a quantised stack that holds no shared expert (",
                 w1.describe(), ")");
  DSV4_CHECK_ARG(ctx.scratch != nullptr && ctx.scratch->device() == Device::kCUDA,
                 "moe_experts on CUDA needs a device scratch arena (ExecContext::scratch)");
  const QuantExperts e1 = experts_of(w1), e2 = experts_of(w2), e3 = experts_of(w3);
  const cudaStream_t s = stream_of(ctx);
  Arena& A = *ctx.scratch;
  ArenaScope scope(A);
  if (!moe_decode_quant_supports(e1, e3, e2, x.data(), H, I)) {
    const Tensor v1 = dequantized_stack(A, s, w1), v2 = dequantized_stack(A, s, w2), v3 = dequantized_stack(A, s, w3);
    return moe_experts_plain(ctx, out, x, indices, weights, v1, v2, v3, limit, shared_expert, activation_quant);
  }
  // Many rows per expert (prefill): the wide tiled GEMM, each expert's weights read once per 128 of its rows
  // instead of once per 8.
  const bool decode = moe_takes_decode_path(T * k + (shared_expert ? T : 0), E);
  const Routing r = plan_routes(A, s, indices, T, E, shared_expert, decode ? kPlanTileRows : kPlanWideTileRows);
  Tensor act = A.alloc(DType::BF16, {r.P, I});
  Tensor y = A.alloc(DType::F32, {r.P, H});
  const MoeActQuant aq{weights.ptr<float>(), r.routed_pairs, r.P};
  if (activation_quant && !decode && moe_gemm_fp8_supports(e1, e3, e2, x.data(), H, I)) {
    // DeepSeek's act_quant as E4M3 codes + scales, and the products on E4M3 MMAs.
    Tensor x_codes = A.alloc(DType::U8, {T, H}), x_scales = A.alloc(DType::F32, {H / kF8BK, T});
    Tensor act_codes = A.alloc(DType::U8, {r.P, I}), act_scales = A.alloc(DType::F32, {I / kF8BK, r.P});
    activation_fp8_codes(s, x.dtype(), x.data(), H, T, H, T, x_codes.ptr<uint8_t>(), x_scales.ptr<float>());
    moe_gemm_experts_fp8(s, act.ptr<bf16>(), act_codes.ptr<uint8_t>(), act_scales.ptr<float>(), y.ptr<float>(),
                         x_codes.ptr<uint8_t>(), x_scales.ptr<float>(), T, e1, e3, e2, r.plan, r.max_tiles, H, I, limit,
                         aq);
    return combine(s, out, r, y, weights, T, k, H, shared_expert, activation_quant);
  }
  if (activation_quant) x = quantized_copy(A, s, x);
  if (!decode) {
    moe_gemm_experts_quant(s, act.ptr<bf16>(), y.ptr<float>(), x.ptr<bf16>(), e1, e3, e2, r.plan, r.max_tiles, H, I,
                           limit, activation_quant ? &aq : nullptr);
  } else {
    moe_decode_experts_quant(s, act.ptr<bf16>(), y.ptr<float>(), x.ptr<bf16>(), e1, e3, e2, r.plan, r.max_tiles, T, H,
                             I, limit, activation_quant ? &aq : nullptr);
  }
  combine(s, out, r, y, weights, T, k, H, shared_expert, activation_quant);
}

}  // namespace

bool moe_gemm_fp8_supports(const QuantExperts& w1, const QuantExperts& w3, const QuantExperts& w2, const void* x,
                           int64_t H, int64_t I) {
  static const bool enabled = [] {  // the A/B switch (env.cc's table checks its value at start-up)
    std::string v;
    return !env_string("DSV4_MOE_FP8", &v) || v != "0";
  }();
  const auto fp4_exact = [](const QuantExperts& w) {
    const bool fp4 =
        w.routed.format == WeightFormat::kFp4 || (w.shared.codes != nullptr && w.shared.format == WeightFormat::kFp4);
    return !fp4 || (w.fp4_row_span >= 0 && w.fp4_row_span <= kF8MaxSpan);
  };
  return enabled && moe_decode_quant_supports(w1, w3, w2, x, H, I) && H % kF8BK == 0 && I % kF8BK == 0 &&
         H <= INT32_MAX && I <= INT32_MAX && fp4_exact(w1) && fp4_exact(w3) && fp4_exact(w2);
}

void moe_gemm_experts_fp8(cudaStream_t stream, bf16* act, uint8_t* act_codes, float* act_scales, float* y,
                          const uint8_t* x_codes, const float* x_scales, int64_t tokens, const QuantExperts& w1,
                          const QuantExperts& w3, const QuantExperts& w2, const MoePlan& plan, int64_t max_tiles,
                          int64_t H, int64_t I, float limit, const MoeActQuant& aq) {
  DSV4_CHECK_ARG(moe_gemm_fp8_supports(w1, w3, w2, x_codes, H, I) && aligned16(act) && aligned16(act_codes),
                 "moe_gemm_experts_fp8: unsupported stacks (H=", H, " I=", I, ", formats ",
                 weight_format_name(w1.routed.format), " / ", weight_format_name(w1.shared.format), ", FP4 row spans ",
                 w1.fp4_row_span, " / ", w3.fp4_row_span, " / ", w2.fp4_row_span, ")");
  launch_moe_gemm_fp8<true>(stream, act, Fp8Activations{x_codes, x_scales, tokens}, w1, w3, plan, max_tiles,
                            static_cast<int>(I), static_cast<int>(H), limit);
  moe_act_fp8_codes(stream, act, I, plan, aq, act_codes, act_scales);
  launch_moe_gemm_fp8<false>(stream, y, Fp8Activations{act_codes, act_scales, aq.pairs}, w2, w2, plan, max_tiles,
                             static_cast<int>(H), static_cast<int>(I), limit);
}

void moe_gemm_experts_quant(cudaStream_t stream, bf16* act, float* y, const bf16* x, const QuantExperts& w1,
                            const QuantExperts& w3, const QuantExperts& w2, const MoePlan& plan, int64_t max_tiles,
                            int64_t H, int64_t I, float limit, const MoeActQuant* aq) {
  DSV4_CHECK_ARG(moe_decode_quant_supports(w1, w3, w2, x, H, I) && aligned16(act),
                 "moe_gemm_experts_quant: unsupported stacks (H=", H, " I=", I, ", formats ",
                 weight_format_name(w1.routed.format), " / ", weight_format_name(w1.shared.format), ")");
  launch_moe_gemm_wgmma_quant<true>(stream, act, x, w1, w3, plan, max_tiles, static_cast<int>(I), static_cast<int>(H),
                                    limit, "moe_gemm_wgmma quantised (w1/w3 + SwiGLU)");
  if (aq != nullptr) moe_act_round_trip(stream, act, I, plan, *aq);
  launch_moe_gemm_wgmma_quant<false>(stream, y, static_cast<const bf16*>(act), w2, w2, plan, max_tiles,
                                     static_cast<int>(H), static_cast<int>(I), limit, "moe_gemm_wgmma quantised (w2)");
}

void moe_experts(ExecContext& ctx, Tensor out, Tensor x, Tensor indices, Tensor weights, const Weight& w1,
                 const Weight& w2, const Weight& w3, float limit, bool shared_expert, bool activation_quant) {
  if (w1.quantized()) {
    return moe_experts_quant(ctx, out, x, indices, weights, w1, w2, w3, limit, shared_expert, activation_quant);
  }
  moe_experts_plain(ctx, out, x, indices, weights, w1.plain(), w2.plain(), w3.plain(), limit, shared_expert,
                    activation_quant);
}

}  // namespace dsv4::cuda
