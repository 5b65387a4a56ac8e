// The decode path of moe_experts on quantised expert stacks (quant_matrix.h): moe_decode.cu's plan and grid with the
// weight stream narrowed to FP8 / FP4 codes, multiplied on tensor cores.
//
// Checked by tests/gpu/cuda_quant_test.cu (CudaQuant.MoeDecode*, scripts/gpu/run.sh quant).
//
// A block owns 16 weight rows (n0 = 16 blockIdx.x) of one plan tile's expert (blockIdx.y); the tile's expert picks the
// format: indices below the stack's count are the routed experts (one format), index `count` the shared expert (its
// own format and allocation), so the plan and its indexing are moe_decode.cu's. The block's 8 warps split K and each
// computes all 16 rows for up to 8 of the tile's rows at a time with mma.m16n8k16 (bf16, f32 accumulation): a lane
// streams 16 bytes (32 E2M1 codes, one scale group, or 16 E4M3 codes) of rows g and g + 8 (g = lane / 4) at k offset
// (lane % 4) times that of each step, turns code pairs into bf16x2 with a few logic ops and one bf16 multiply that also
// applies the scale (quant_mma.cuh, quant_bits.h: exact), and gathers the activations of the same k order with byte
// permutes; the warps' partial sums meet in shared memory in warp order. Every sum has a fixed order that does not
// depend on how many rows share a pass: deterministic.
//
// Both formats take this path: the FP8 tiles (DeepSeek's shared expert; "-Base" checkpoints' routed experts) ran on
// the FMA pipe until 2026-12-06 (every code expanded to f32, ~3 instructions a weight); at b = 16 the shared expert's
// tile, launched last in the grid, was the tail of every launch (Flash MoE layer 642 -> 491 us on tensor cores, H100).
#include "backend/cuda/act_quant.h"
#include "backend/cuda/quant_decode.cuh"
#include "backend/cuda/quant_matrix.h"
#include "backend/cuda/quant_mma.cuh"
#include "dsv4/core/log.h"

namespace dsv4::cuda {
namespace {

constexpr int kDecodeWarps = 8;
constexpr int kDecodeThreads = 32 * kDecodeWarps;
constexpr int kMmaRows = 16;   // weight rows per block: one MMA row tile
constexpr int kMmaTokens = 8;  // activation rows per pass: the MMA's n

// The codes and scale rows of weight row n of expert e of one stack.
struct RowRef {
  const uint8_t* codes;
  const uint8_t* scale;
};

__device__ __forceinline__ RowRef row_of(const QuantExperts& s, int32_t e, int64_t n) {
  // Scalars selected one by one: a reference to either QuantMatrix of the kernel parameter would copy it to the
  // stack.
  const bool shared = e >= s.count;
  const WeightFormat format = shared ? s.shared.format : s.routed.format;
  const int64_t N = shared ? s.shared.N : s.routed.N, K = shared ? s.shared.K : s.routed.K;
  const int64_t ex = shared ? 0 : e;
  const bool fp4 = format == WeightFormat::kFp4;
  const int64_t row_bytes = fp4 ? K / 2 : K;
  const int64_t scale_cols = fp4 ? (K + kFp4Group - 1) / kFp4Group : (K + kFp8Block - 1) / kFp8Block;
  const int64_t scale_rows = fp4 ? N : (N + kFp8Block - 1) / kFp8Block;
  RowRef r;
  r.codes = (shared ? s.shared.codes : s.routed.codes) + (ex * N + n) * row_bytes;
  r.scale = (shared ? s.shared.scale : s.routed.scale) + ex * scale_rows * scale_cols +
            (fp4 ? n : n / kFp8Block) * scale_cols;
  return r;
}

// One K step of one warp for matrices w (and w3): the lane's 16-byte load of codes of rows g, g + 8 at
// k = step * kK + kLaneValues (lane % 4) (MmaStep<F>), and their scale bytes.
struct LaneCodes {
  uint4 c[2][2];  // [matrix][row g, row g + 8]
  uint8_t s[2][2];
};

template <WeightFormat F, bool GATED>
__device__ __forceinline__ void load_lane(LaneCodes& L, const RowRef (&w)[2][2], int64_t k, int64_t K) {
#pragma unroll
  for (int m = 0; m < (GATED ? 2 : 1); ++m) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      // Lanes past K read their row's first codes and scale and discard them (load_codes_if's reason).
      const bool in = k < K;
      L.c[m][h] = load_codes_if(w[m][h].codes, code_offset<F>(k), in);
      const uint8_t sc = __ldg(w[m][h].scale + (in ? k / QuantTraits<F>::kBlockCols : 0));
      L.s[m][h] = in ? sc : static_cast<uint8_t>(127);
    }
  }
}

// rows n0 .. n0 + 15 of expert e for the tile's rows [row0, row_end), format F.
template <WeightFormat F, bool GATED, typename TO>
__device__ __forceinline__ void tile_mma(TO* __restrict__ out, float (&red)[kDecodeWarps][2][kMmaRows][kMmaTokens],
                                         const bf16* __restrict__ a, const QuantExperts& w, const QuantExperts& w3,
                                         const MoePlan& plan, int32_t e, int32_t row0, int32_t row_end, int64_t N,
                                         int64_t K, float limit) {
  using Step = MmaStep<F>;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kMmaRows;
  RowRef rows[2][2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t n = min(n0 + g + 8 * h, N - 1);  // rows past N: read, never stored
    rows[0][h] = row_of(w, e, n);
    rows[1][h] = GATED ? row_of(w3, e, n) : rows[0][h];
  }
  const int64_t steps = (K + Step::kK - 1) / Step::kK;
  for (int32_t r0 = row0; r0 < row_end; r0 += kMmaTokens) {
    const int nr = min(kMmaTokens, row_end - r0);
    // This lane's activation row (the MMA column g): zeros past the tile's rows.
    const bf16* xrow = nullptr;
    if (g < nr) xrow = a + static_cast<int64_t>(GATED ? plan_token(plan, r0 + g) : r0 + g) * K;
    float acc[2][1][4] = {};
    // One step's loads in flight per warp (64 bytes a lane, 128 gated) at 24 warps an SM; a second buffer (a
    // next-step prefetch) was slower (bench/results/twentieth_2026-12-06).
    for (int64_t step = warp; step < steps; step += kDecodeWarps) {
      const int64_t k = step * Step::kK + Step::kLaneValues * t4;
      LaneCodes cur;
      load_lane<F, GATED>(cur, rows, k, K);
      uint4 xw[1][Step::kXVecs];
#pragma unroll
      for (int i = 0; i < Step::kXVecs; ++i) {
        xw[0][i] = xrow != nullptr && k < K ? __ldg(reinterpret_cast<const uint4*>(xrow + k + kBf16PerVec * i))
                                            : make_uint4(0, 0, 0, 0);
      }
#pragma unroll
      for (int m = 0; m < (GATED ? 2 : 1); ++m) {
        step_mma<F, 1>(acc[m], cur.c[m][0], cur.c[m][1], PairScale<F>(cur.s[m][0]), PairScale<F>(cur.s[m][1]), xw);
      }
    }
    // C fragment: (row g, columns 2 t4, 2 t4 + 1) in acc[.][0..1], (row g + 8, same columns) in acc[.][2..3].
#pragma unroll
    for (int m = 0; m < (GATED ? 2 : 1); ++m) {
      red[warp][m][g][2 * t4] = acc[m][0][0];
      red[warp][m][g][2 * t4 + 1] = acc[m][0][1];
      red[warp][m][g + 8][2 * t4] = acc[m][0][2];
      red[warp][m][g + 8][2 * t4 + 1] = acc[m][0][3];
    }
    __syncthreads();
    if (threadIdx.x < kMmaRows * kMmaTokens) {
      const int row = threadIdx.x / kMmaTokens, col = threadIdx.x % kMmaTokens;
      const int64_t n = n0 + row;
      float v = 0.0f, v3 = 0.0f;
#pragma unroll
      for (int wi = 0; wi < kDecodeWarps; ++wi) {
        v += red[wi][0][row][col];
        if constexpr (GATED) v3 += red[wi][1][row][col];
      }
      if (col < nr && n < N) {
        if constexpr (GATED) {
          const float gate = fminf(v, limit);
          const float up = fminf(fmaxf(v3, -limit), limit);
          v = gate / (1.0f + expf(-gate)) * up;
        }
        out[static_cast<int64_t>(r0 + col) * N + n] = from_float<TO>(v);
      }
    }
    __syncthreads();
  }
}

// out[r, n] = A[r] · W[e][n] for the rows r of one plan tile and 16 columns n (moe_decode_kernel). Three blocks an SM
// (at most 80 registers): with two, the FP4 tiles ran at 51% of DRAM bandwidth at 23% occupancy (ncu, H100, b = 16),
// and more loads in flight per warp (a next-step prefetch, TMA-staged tiles) made them slower, not faster
// (bench/results/twentieth_2026-12-06).
template <bool GATED, typename TO>
__global__ void __launch_bounds__(kDecodeThreads, 3)
    moe_decode_quant_kernel(TO* __restrict__ out, const bf16* __restrict__ a, QuantExperts w, QuantExperts w3,
                            MoePlan plan, int64_t N, int64_t K, float limit) {
  __shared__ float red[kDecodeWarps][2][kMmaRows][kMmaTokens];
  pdl_wait();
  int32_t e, row0, row_end;
  if (!plan_tile(plan, static_cast<int>(blockIdx.y), &e, &row0, &row_end)) return;
  row_end = min(row_end, row0 + kPlanTileRows);
  // w1 and w3 of an expert share a format (moe_decode_quant_supports); the block is uniform, so every warp takes the
  // same branch.
  const bool fp4 = (e >= w.count ? w.shared.format : w.routed.format) == WeightFormat::kFp4;
  if (fp4) return tile_mma<WeightFormat::kFp4, GATED, TO>(out, red, a, w, w3, plan, e, row0, row_end, N, K, limit);
  tile_mma<WeightFormat::kFp8Block, GATED, TO>(out, red, a, w, w3, plan, e, row0, row_end, N, K, limit);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

bool matrix_ok(const QuantMatrix& m, int64_t N, int64_t K) {
  if (m.format != WeightFormat::kFp8Block && m.format != WeightFormat::kFp4) return false;
  const int64_t vpl = m.format == WeightFormat::kFp4 ? 32 : 16;
  // Every expert slice 16-byte aligned: the codes of one expert are N * K (FP8) or N * K / 2 (FP4) bytes.
  return m.N == N && m.K == K && K % vpl == 0 && m.codes != nullptr && m.scale != nullptr && aligned16(m.codes) &&
         quant_code_bytes(m.format, N, K) % 16 == 0;
}

bool stack_ok(const QuantExperts& s, int64_t N, int64_t K) {
  return s.count >= 0 && (s.count == 0 || matrix_ok(s.routed, N, K)) &&
         (s.shared.codes == nullptr || matrix_ok(s.shared, N, K));
}

void launch_decode(cudaStream_t stream, bf16* act, float* y, const bf16* x, const QuantExperts& w1,
                   const QuantExperts& w3, const QuantExperts& w2, const MoePlan& plan, int64_t max_tiles, int64_t H,
                   int64_t I, float limit, const MoeActQuant* aq) {
  const dim3 grid1(blocks_for(I, kMmaRows), static_cast<unsigned>(max_tiles));
  check_launch(launch_kernel(moe_decode_quant_kernel<true, bf16>, grid1, dim3(kDecodeThreads), 0, stream, act, x, w1,
                             w3, plan, I, H, limit),
               "moe_decode_quant (w1/w3 + SwiGLU)");
  if (aq != nullptr) moe_act_round_trip(stream, act, I, plan, *aq);
  const dim3 grid2(blocks_for(H, kMmaRows), static_cast<unsigned>(max_tiles));
  check_launch(launch_kernel(moe_decode_quant_kernel<false, float>, grid2, dim3(kDecodeThreads), 0, stream, y,
                             static_cast<const bf16*>(act), w2, w2, plan, H, I, limit),
               "moe_decode_quant (w2)");
}

}  // namespace

bool moe_decode_quant_supports(const QuantExperts& w1, const QuantExperts& w3, const QuantExperts& w2, const void* x,
                               int64_t H, int64_t I) {
  const bool same_layout = w1.count == w3.count && w1.count == w2.count && w1.routed.format == w3.routed.format &&
                           (w1.shared.codes == nullptr) == (w3.shared.codes == nullptr) &&
                           (w1.shared.codes == nullptr) == (w2.shared.codes == nullptr) &&
                           (w1.shared.codes == nullptr || w1.shared.format == w3.shared.format);
  return same_layout && stack_ok(w1, I, H) && stack_ok(w3, I, H) && stack_ok(w2, H, I) && aligned16(x) &&
         I % kBf16PerVec == 0 && H % kBf16PerVec == 0;
}

void moe_decode_experts_quant(cudaStream_t stream, bf16* act, float* y, const bf16* x, const QuantExperts& w1,
                              const QuantExperts& w3, const QuantExperts& w2, const MoePlan& plan, int64_t max_tiles,
                              int64_t tokens, int64_t H, int64_t I, float limit, const MoeActQuant* aq) {
  DSV4_CHECK_ARG(moe_decode_quant_supports(w1, w3, w2, x, H, I) && aligned16(act),
                 "moe_decode_experts_quant: unsupported stacks (H=", H, " I=", I, ", formats ",
                 weight_format_name(w1.routed.format), " / ", weight_format_name(w1.shared.format), ")");
  (void)tokens;  // every pass takes 8 rows: the result does not depend on it
  launch_decode(stream, act, y, x, w1, w3, w2, plan, max_tiles, H, I, limit, aq);
}

}  // namespace dsv4::cuda
