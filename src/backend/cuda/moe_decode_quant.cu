// The decode path of moe_experts on quantised expert stacks (quant_matrix.h): moe_decode.cu's kernel with the
// weight stream narrowed to FP8 / FP4 codes, expanded in registers (quant_decode.cuh).
//
// Checked by tests/gpu/cuda_quant_test.cu (CudaQuant.MoeDecode*, scripts/gpu/run.sh quant): the register path on an
// H200 on 2026-12-05 (memcheck and racecheck clean), the tensor-core FP4 path below on an H100 the same day.
//
// As moe_decode.cu: one block owns kOutPerBlock output columns of one plan tile (one expert's rows), each warp
// streams whole weight rows (16-byte loads of codes, UNROLL in flight per lane and matrix) and applies every
// activation row of the tile to them, CHUNK rows per pass; fp32 accumulation in a fixed per-lane order and a
// butterfly per value: deterministic. The tile's expert picks the format: indices below the stack's count are
// the routed experts (one format), index `count` the shared expert (its own format and allocation), so the
// plan and its indexing are moe_decode.cu's.
//
// FP4 tiles (DeepSeek's routed experts) run on tensor cores instead: expanding E2M1 to f32 and multiplying on the
// FMA pipe cost ~6 instructions a weight, which held the kernel to ~40% of HBM bandwidth (H100, 2026-12-05). The
// block's 8 warps split K and each computes all 16 of the block's rows for up to 8 of the tile's rows at a time with
// mma.m16n8k16 (bf16, f32 accumulation): a lane streams 16 bytes (32 codes, one scale group) of rows g and g + 8
// (g = lane / 4) at k offset 32 (lane % 4) of each 128-wide step, turns code pairs (a, a + 4) into bf16x2 with two
// logic ops and one bf16 multiply that also applies the group's scale (quant_mma.cuh, quant_bits.h: exact), and gathers
// the activations of the same k order with byte permutes; the warps' partial sums meet in shared memory in warp order.
// Every sum has a fixed order that does not depend on how many rows share a pass: deterministic.
#include "backend/cuda/act_quant.h"
#include "backend/cuda/quant_decode.cuh"
#include "backend/cuda/quant_matrix.h"
#include "backend/cuda/quant_mma.cuh"
#include "dsv4/core/log.h"

namespace dsv4::cuda {
namespace {

constexpr int kDecodeWarps = 8;
constexpr int kDecodeThreads = 32 * kDecodeWarps;
constexpr int kOutPerWarp = 2;
constexpr int kOutPerBlock = kDecodeWarps * kOutPerWarp;
constexpr int kMaxRowChunk = 8;
constexpr int unroll_for_chunk(int chunk) { return chunk <= 2 ? 4 : 2; }

// The codes and scale rows of weight row n of expert e, and the format, of one stack.
struct RowRef {
  const uint8_t* codes;
  const uint8_t* scale;
  WeightFormat format;
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
  r.format = format;
  return r;
}

// acc[i] (+ acc3[i]) = this lane's part of arow[i] · w (· w3) for the first nr rows.
template <WeightFormat F, bool GATED, int CHUNK, int UNROLL>
__device__ __forceinline__ void dot_rows_quant(float (&acc)[CHUNK], float (&acc3)[CHUNK],
                                               const bf16* const (&arow)[CHUNK], int nr, const RowRef& w,
                                               const RowRef& w3, int64_t K) {
  using Tr = QuantTraits<F>;
  constexpr int64_t kStep = 32 * Tr::kValuesPerLoad;
  const int lane = threadIdx.x & 31;
  for (int64_t k0 = static_cast<int64_t>(lane) * Tr::kValuesPerLoad; k0 < K; k0 += kStep * UNROLL) {
    uint4 wv[UNROLL], w3v[UNROLL];
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int64_t k = k0 + u * kStep;
      wv[u] = load_codes_if(w.codes, code_offset<F>(k), k < K);
      if constexpr (GATED) w3v[u] = load_codes_if(w3.codes, code_offset<F>(k), k < K);
    }
#pragma unroll
    for (int u = 0; u < UNROLL; ++u) {
      const int64_t k = k0 + u * kStep;
      if (k >= K) break;
      const float sc = e8m0_to_float(__ldg(w.scale + k / Tr::kBlockCols));
      const float sc3 = GATED ? e8m0_to_float(__ldg(w3.scale + k / Tr::kBlockCols)) : 0.0f;
      auto apply = [&](auto group_tag) {
        constexpr int G = decltype(group_tag)::value;
        float wf[2][kBf16PerVec];  // w, w3
        decode_group<F, G>(wv[u], sc, wf[0]);
        if constexpr (GATED) decode_group<F, G>(w3v[u], sc3, wf[1]);
#pragma unroll
        for (int i = 0; i < CHUNK; ++i) {
          if (i >= nr) break;
          float xf[kBf16PerVec];
          unpack8(__ldg(reinterpret_cast<const uint4*>(arow[i] + k + G * kBf16PerVec)), xf);
#pragma unroll
          for (int c = 0; c < kBf16PerVec; ++c) {
            acc[i] = fmaf(xf[c], wf[0][c], acc[i]);
            if constexpr (GATED) acc3[i] = fmaf(xf[c], wf[1][c], acc3[i]);
          }
        }
      };
      apply(std::integral_constant<int, 0>{});
      apply(std::integral_constant<int, 1>{});
      if constexpr (Tr::kGroups == 4) {
        apply(std::integral_constant<int, 2>{});
        apply(std::integral_constant<int, 3>{});
      }
    }
  }
}

// ---- tensor-core FP4 path ------------------------------------------------------------------------------------
constexpr int kMmaRows = 16;    // weight rows per block (= kOutPerBlock): one MMA row tile
constexpr int kMmaTokens = 8;   // activation rows per pass: the MMA's n
constexpr int kMmaStepK = 128;  // K per warp step: 4 lanes x 32 codes
static_assert(kMmaRows == kOutPerBlock, "the FP4 and FP8 tiles of one launch share its grid");

// One 128-wide K step of one warp for matrices w (and w3): codes of rows g, g + 8 at k = k0 + 32 (lane % 4).
struct Fp4Lane {
  uint4 c[2][2];  // [matrix][row g, row g + 8]
  uint8_t s[2][2];
};

template <bool GATED>
__device__ __forceinline__ void fp4_load(Fp4Lane& L, const RowRef (&w)[2][2], int64_t k, int64_t K) {
#pragma unroll
  for (int m = 0; m < (GATED ? 2 : 1); ++m) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      // Lanes past K read their row's first codes and scale and discard them (load_codes_if's reason).
      const bool in = k < K;
      L.c[m][h] = load_codes_if(w[m][h].codes, k / 2, in);
      const uint8_t sc = __ldg(w[m][h].scale + (in ? k / kFp4Group : 0));
      L.s[m][h] = in ? sc : static_cast<uint8_t>(127);
    }
  }
}

// acc[m] += this step's products for activation words xw (the lane's 32 values of its token's row, zeros past it).
template <bool GATED>
__device__ __forceinline__ void fp4_step(float (&acc)[2][1][4], const Fp4Lane& L, const uint4 (&xw)[1][4]) {
#pragma unroll
  for (int m = 0; m < (GATED ? 2 : 1); ++m) {
    step_mma<WeightFormat::kFp4, 1>(acc[m], L.c[m][0], L.c[m][1], PairScale<WeightFormat::kFp4>(L.s[m][0]),
                                    PairScale<WeightFormat::kFp4>(L.s[m][1]), xw);
  }
}

// The FP4 tile of moe_decode_quant_kernel: rows n0 .. n0 + 15 of expert e for the tile's rows [row0, row_end).
template <bool GATED, typename TO>
__device__ void fp4_tile_mma(TO* __restrict__ out, const bf16* __restrict__ a, const QuantExperts& w,
                             const QuantExperts& w3, const MoePlan& plan, int32_t e, int32_t row0, int32_t row_end,
                             int64_t N, int64_t K, float limit) {
  __shared__ float red[kDecodeWarps][2][kMmaRows][kMmaTokens];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kMmaRows;
  RowRef rows[2][2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int64_t n = min(n0 + g + 8 * h, N - 1);  // rows past N: read, never stored
    rows[0][h] = row_of(w, e, n);
    rows[1][h] = GATED ? row_of(w3, e, n) : rows[0][h];
  }
  const int64_t steps = (K + kMmaStepK - 1) / kMmaStepK;
  for (int32_t r0 = row0; r0 < row_end; r0 += kMmaTokens) {
    const int nr = min(kMmaTokens, row_end - r0);
    // This lane's activation row (the MMA column g): zeros past the tile's rows.
    const bf16* xrow = nullptr;
    if (g < nr) xrow = a + static_cast<int64_t>(GATED ? plan_token(plan, r0 + g) : r0 + g) * K;
    float acc[2][1][4] = {};
    // One step's loads in flight per warp (64 bytes a lane, 128 gated) at 16 warps an SM: ~32-64 KB per SM, the
    // bytes HBM latency needs; a second buffer spilled at the 128 registers two blocks an SM allow.
    for (int64_t step = warp; step < steps; step += kDecodeWarps) {
      const int64_t k = step * kMmaStepK + 32 * t4;
      Fp4Lane cur;
      fp4_load<GATED>(cur, rows, k, K);
      uint4 xw[1][4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        xw[0][i] =
            xrow != nullptr && k < K ? __ldg(reinterpret_cast<const uint4*>(xrow + k + 8 * i)) : make_uint4(0, 0, 0, 0);
      }
      fp4_step<GATED>(acc, cur, xw);
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

// out[r, n] = A[r] · W[e][n] for the rows r of one plan tile and kOutPerBlock columns n (moe_decode_kernel).
// Three blocks an SM (at most 80 registers; the gated register path spills 8-16 bytes): with two, the FP4 tiles ran
// at 51% of DRAM bandwidth at 23% occupancy (ncu, H100, b = 16), and more loads in flight per warp (a next-step
// prefetch, TMA-staged tiles) made them slower, not faster (bench/results/twentieth_2026-12-06).
template <bool GATED, int CHUNK, typename TO>
__global__ void __launch_bounds__(kDecodeThreads, 3)
    moe_decode_quant_kernel(TO* __restrict__ out, const bf16* __restrict__ a, QuantExperts w, QuantExperts w3,
                            MoePlan plan, int64_t N, int64_t K, float limit) {
  constexpr int UNROLL = unroll_for_chunk(CHUNK);
  pdl_wait();
  int32_t e, row0, row_end;
  if (!plan_tile(plan, static_cast<int>(blockIdx.y), &e, &row0, &row_end)) return;
  row_end = min(row_end, row0 + kPlanTileRows);
  // FP4 tiles (w1 and w3 of an expert share a format: moe_decode_quant_supports) on tensor cores; the block is
  // uniform, so every warp takes the same branch.
  const bool fp4 = (e >= w.count ? w.shared.format : w.routed.format) == WeightFormat::kFp4;
  if (fp4) return fp4_tile_mma<GATED, TO>(out, a, w, w3, plan, e, row0, row_end, N, K, limit);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int j = 0; j < kOutPerWarp; ++j) {
    const int64_t n = static_cast<int64_t>(blockIdx.x) * kOutPerBlock + j * kDecodeWarps + warp;
    if (n >= N) return;
    const RowRef wr = row_of(w, e, n);
    const RowRef w3r = GATED ? row_of(w3, e, n) : wr;
    for (int32_t r0 = row0; r0 < row_end; r0 += CHUNK) {
      const int nr = min(CHUNK, row_end - r0);
      const bf16* arow[CHUNK];
#pragma unroll
      for (int i = 0; i < CHUNK; ++i) {
        const int32_t r = r0 + min(i, nr - 1);
        arow[i] = a + static_cast<int64_t>(GATED ? plan_token(plan, r) : r) * K;
      }
      float acc[CHUNK], acc3[CHUNK];
#pragma unroll
      for (int i = 0; i < CHUNK; ++i) acc[i] = 0.0f, acc3[i] = 0.0f;
      // w1 and w3 of one expert share a format (moe_decode_quant_supports checks it).
      if (wr.format == WeightFormat::kFp4) {
        dot_rows_quant<WeightFormat::kFp4, GATED, CHUNK, UNROLL>(acc, acc3, arow, nr, wr, w3r, K);
      } else {
        dot_rows_quant<WeightFormat::kFp8Block, GATED, CHUNK, UNROLL>(acc, acc3, arow, nr, wr, w3r, K);
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

template <int CHUNK>
void launch_decode(cudaStream_t stream, bf16* act, float* y, const bf16* x, const QuantExperts& w1,
                   const QuantExperts& w3, const QuantExperts& w2, const MoePlan& plan, int64_t max_tiles, int64_t H,
                   int64_t I, float limit, const MoeActQuant* aq) {
  const dim3 grid1(blocks_for(I, kOutPerBlock), static_cast<unsigned>(max_tiles));
  check_launch(launch_kernel(moe_decode_quant_kernel<true, CHUNK, bf16>, grid1, dim3(kDecodeThreads), 0, stream, act, x,
                             w1, w3, plan, I, H, limit),
               "moe_decode_quant (w1/w3 + SwiGLU)");
  if (aq != nullptr) moe_act_round_trip(stream, act, I, plan, *aq);
  const dim3 grid2(blocks_for(H, kOutPerBlock), static_cast<unsigned>(max_tiles));
  check_launch(launch_kernel(moe_decode_quant_kernel<false, CHUNK, float>, grid2, dim3(kDecodeThreads), 0, stream, y,
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
  if (tokens <= 1) return launch_decode<1>(stream, act, y, x, w1, w3, w2, plan, max_tiles, H, I, limit, aq);
  if (tokens <= 2) return launch_decode<2>(stream, act, y, x, w1, w3, w2, plan, max_tiles, H, I, limit, aq);
  if (tokens <= 4) return launch_decode<4>(stream, act, y, x, w1, w3, w2, plan, max_tiles, H, I, limit, aq);
  launch_decode<kMaxRowChunk>(stream, act, y, x, w1, w3, w2, plan, max_tiles, H, I, limit, aq);
}

}  // namespace dsv4::cuda
