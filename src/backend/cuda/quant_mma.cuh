// Quantised weight codes as bf16 operands of mma.m16n8k16 (quant_gemv.cu, moe_decode_quant.cu): a pair of codes
// becomes one bf16x2 register with a few logic ops (quant_bits.h, checked on the CPU on every code) and one bf16
// multiply that carries the scale, exactly wherever the weight is a bf16 normal. Converting each code to f32 and
// multiplying on the FMA pipe instead costs 2-6 instructions a weight on the conversion and FMA pipes, which held
// the register GEMVs to 40-60% of HBM bandwidth.
#pragma once

#include <cstdint>

#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/mma.cuh"
#include "backend/cuda/quant_bits.h"
#include "backend/cuda/quant_decode.cuh"
#include "backend/cuda/quant_matrix.h"
#include "dsv4/io/quantization.h"

namespace dsv4::cuda {

__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// The multiplier(s) of one E8M0 scale byte for the pair bits of format F.
template <WeightFormat F>
struct PairScale {
  uint32_t mul, mul_high;
  bool high;  // a second factor (scales beyond bf16's largest power of two)
  __device__ __forceinline__ explicit PairScale(uint8_t s) {
    if constexpr (F == WeightFormat::kFp4) {
      mul = e2m1_bf16_scale_bits(s), mul_high = e2m1_bf16_scale_high_bits(s), high = s > 128;
    } else {
      mul = e4m3_bf16_scale_bits(s), mul_high = e4m3_bf16_scale_high_bits(s), high = s > 134;
    }
  }
  // kMayBeHigh false: the caller has checked !high (every real checkpoint's scales), one multiply.
  template <bool kMayBeHigh = true>
  __device__ __forceinline__ uint32_t apply(uint32_t bits) const {
    const uint32_t w = bf16x2_mul(bits, mul);
    if constexpr (kMayBeHigh) return high ? bf16x2_mul(w, mul_high) : w;
    return w;
  }
};

// Codes a and a + 4 of a word of 8 E2M1 codes (a < 4), scaled: the weights of those two k positions.
template <bool kMayBeHigh = true>
__device__ __forceinline__ uint32_t fp4_pair(uint32_t word, int a, const PairScale<WeightFormat::kFp4>& s) {
  return s.template apply<kMayBeHigh>(e2m1_pair_to_bf16x2_bits(word, a));
}

// Codes (0, 2) (odd = false) or (1, 3) of a word of 4 E4M3 codes, scaled.
template <bool kMayBeHigh = true>
__device__ __forceinline__ uint32_t fp8_pair(uint32_t word, bool odd, const PairScale<WeightFormat::kFp8Block>& s) {
  return s.template apply<kMayBeHigh>(e4m3_pair_to_bf16x2_bits(word, odd));
}

// Eight consecutive values of a row as bf16 in k order (one 16-byte chunk of a bf16 tile): the 8 E2M1 codes of
// `word`, or the 8 E4M3 codes of words w0, w1. The pair helpers give codes (a, a + 4) of an E2M1 word and (0, 2),
// (1, 3) of an E4M3 word, so byte permutes put them back in order.
template <bool kMayBeHigh = true>
__device__ __forceinline__ uint4 e2m1_chunk(uint32_t word, const PairScale<WeightFormat::kFp4>& s) {
  uint32_t p[4];
#pragma unroll
  for (int a = 0; a < 4; ++a) p[a] = fp4_pair<kMayBeHigh>(word, a, s);
  return make_uint4(__byte_perm(p[0], p[1], 0x5410), __byte_perm(p[2], p[3], 0x5410), __byte_perm(p[0], p[1], 0x7632),
                    __byte_perm(p[2], p[3], 0x7632));
}
template <bool kMayBeHigh = true>
__device__ __forceinline__ uint4 e4m3_chunk(uint32_t w0, uint32_t w1, const PairScale<WeightFormat::kFp8Block>& s) {
  const uint32_t e0 = fp8_pair<kMayBeHigh>(w0, false, s), o0 = fp8_pair<kMayBeHigh>(w0, true, s);
  const uint32_t e1 = fp8_pair<kMayBeHigh>(w1, false, s), o1 = fp8_pair<kMayBeHigh>(w1, true, s);
  return make_uint4(__byte_perm(e0, o0, 0x5410), __byte_perm(e0, o0, 0x7632), __byte_perm(e1, o1, 0x5410),
                    __byte_perm(e1, o1, 0x7632));
}

// Where expert e's matrix of a quantised stack lives (the shared expert: index `count`, its own format).
struct QuantSlice {
  const uint8_t* codes;
  const uint8_t* scale;
  int64_t row_bytes, scale_cols;
  bool fp4;
};
__device__ __forceinline__ QuantSlice quant_slice(const QuantExperts& q, int32_t e, int64_t N, int64_t K) {
  const bool shared = e >= q.count;
  const bool fp4 = (shared ? q.shared.format : q.routed.format) == WeightFormat::kFp4;
  const int64_t ex = shared ? 0 : e;
  const int64_t row_bytes = fp4 ? K / 2 : K;
  const int64_t scale_cols = fp4 ? (K + kFp4Group - 1) / kFp4Group : (K + kFp8Block - 1) / kFp8Block;
  const int64_t scale_rows = fp4 ? N : (N + kFp8Block - 1) / kFp8Block;
  return {(shared ? q.shared.codes : q.routed.codes) + ex * N * row_bytes,
          (shared ? q.shared.scale : q.routed.scale) + ex * scale_rows * scale_cols, row_bytes, scale_cols, fp4};
}

// One warp step over a 16-row tile: lane (g = lane / 4, t4 = lane % 4) holds one 16-byte load of codes of rows g and
// g + 8 at k = t4 * kLaneValues of the step, and the same k range of its activation row(s).
template <WeightFormat F>
struct MmaStep {
  static constexpr int kLaneValues = QuantTraits<F>::kValuesPerLoad;  // 16 (E4M3) or 32 (E2M1)
  static constexpr int kK = 4 * kLaneValues;                          // K per step
  static constexpr int kXVecs = kLaneValues / kBf16PerVec;            // 16-byte loads of x per lane and token
};

// The MMAs of word i (of 4) of this lane's loads of rows g (wg) and g + 8 (wh), under their scales, against the
// lane's activations xv[j] of each column tile j (8 rows of x): FP8 word i holds codes 4i .. 4i + 3, one MMA in k
// order (0, 2), (1, 3); FP4 word i codes 8i .. 8i + 7, two MMAs over pairs (a, a + 4). The activations are paired
// in the same order with byte permutes.
template <WeightFormat F, int NT>
__device__ __forceinline__ void word_mma(float (&acc)[NT][4], uint32_t wg, uint32_t wh, const PairScale<F>& sg,
                                         const PairScale<F>& sh, const uint4 (&xv)[NT][MmaStep<F>::kXVecs], int i) {
  if constexpr (F == WeightFormat::kFp8Block) {
    const uint32_t A[4] = {fp8_pair(wg, false, sg), fp8_pair(wh, false, sh), fp8_pair(wg, true, sg),
                           fp8_pair(wh, true, sh)};
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const uint4 v = xv[j][i / 2];                                       // values 8 (i / 2) .. + 7
      const uint32_t x0 = (i & 1) ? v.z : v.x, x1 = (i & 1) ? v.w : v.y;  // values 4i, 4i+1 | 4i+2, 4i+3
      mma_bf16_16816(acc[j], A, __byte_perm(x0, x1, 0x5410), __byte_perm(x0, x1, 0x7632));
    }
  } else {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int a0 = 2 * half, a1 = 2 * half + 1;
      const uint32_t A[4] = {fp4_pair(wg, a0, sg), fp4_pair(wh, a0, sh), fp4_pair(wg, a1, sg), fp4_pair(wh, a1, sh)};
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const uint4 v = xv[j][i];  // (x[a], x[a + 4]): words a / 2 and a / 2 + 2, halves a % 2
        const uint32_t lo = half ? v.y : v.x, hi = half ? v.w : v.z;
        mma_bf16_16816(acc[j], A, __byte_perm(lo, hi, 0x5410), __byte_perm(lo, hi, 0x7632));
      }
    }
  }
}

// The 4 words of each row's load, all MMAs of one step.
template <WeightFormat F, int NT>
__device__ __forceinline__ void step_mma(float (&acc)[NT][4], const uint4& cg, const uint4& ch, const PairScale<F>& sg,
                                         const PairScale<F>& sh, const uint4 (&xv)[NT][MmaStep<F>::kXVecs]) {
  const uint32_t wg[4] = {cg.x, cg.y, cg.z, cg.w}, wh[4] = {ch.x, ch.y, ch.z, ch.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) word_mma<F, NT>(acc, wg[i], wh[i], sg, sh, xv, i);
}

// ---- a warp's ring of code stages ------------------------------------------------------------------------------
// The tensor-core kernels stream a 16-row tile's codes through a per-warp cp.async ring. A stage holds 128 bytes of
// each row (two MMA steps: 128 E4M3 or 256 E2M1 values), copied so that every warp instruction reads four whole
// 128-byte lines (lane L copies 16-byte chunk L % 8 of rows 4i + L / 8): the MMA layout's own loads (16 rows x 4
// lanes x 16 bytes a step) asked L2 for 64-byte pieces, twice the requests per byte, and streamed ~25% slower
// (H100). The MMA lanes then read their chunks from shared memory after a __syncwarp.
constexpr int kRingRowBytes = 128;
constexpr int kRingStageBytes = 16 * kRingRowBytes;  // one matrix's 16 rows

// Chunk c (16 bytes) of tile row r within a stage: XOR-swizzled by the row's parity, so that a quarter-warp of MMA
// lanes (rows g, g + 1, chunks t4 or 4 + t4) reads eight distinct bank groups.
__device__ __forceinline__ int ring_offset(int r, int c) { return r * kRingRowBytes + ((c ^ ((r & 1) << 2)) << 4); }

// One matrix's stage: bytes [off, off + 128) of tile rows n0 .. n0 + 15 of the matrix at `rows` (row n at
// rows + n * row_bytes; rows past N read row N - 1), chunks at or past byte `end` zero-filled.
__device__ __forceinline__ void ring_copy(uint8_t* stage, const uint8_t* rows, int64_t row_bytes, int64_t n0, int64_t N,
                                          int64_t off, int64_t end) {
  const int lane = threadIdx.x & 31, c = lane & 7;
  const int64_t o = off + 16 * c;
  const bool in = o < end;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = 4 * i + (lane >> 3);
    cp_async16_stream(stage + ring_offset(r, c), rows + min(n0 + r, N - 1) * row_bytes + (in ? o : 0), in);
  }
}

// MMA lane (g, t4)'s codes of MMA step `half` of a stage: rows g and g + 8, chunk 4 half + t4.
__device__ __forceinline__ void ring_read(const uint8_t* stage, int half, uint4& cg, uint4& ch) {
  const int lane = threadIdx.x & 31, g = lane >> 2, c = 4 * half + (lane & 3);
  cg = *reinterpret_cast<const uint4*>(stage + ring_offset(g, c));
  ch = *reinterpret_cast<const uint4*>(stage + ring_offset(g + 8, c));
}

// A stage covers kStageK values of each row: 128 (E4M3) or 256 (E2M1), two MMA steps.
template <WeightFormat F>
constexpr int64_t kStageK = 2 * MmaStep<F>::kK;

// The k of this lane's values in MMA step `half` of the stage at k_stage.
template <WeightFormat F>
__device__ __forceinline__ int64_t stage_lane_k(int64_t k_stage, int half) {
  return k_stage + half * MmaStep<F>::kK + (threadIdx.x & 3) * MmaStep<F>::kLaneValues;
}

// This lane's activations of one stage: x[step][column tile], from xrow[j] (this lane's row of x in column tile j;
// null: none) through L1, zeros at or past k_end.
template <WeightFormat F, int NT>
struct StageX {
  uint4 x[2][NT][MmaStep<F>::kXVecs];
  __device__ __forceinline__ void load(const bf16* const (&xrow)[NT], int64_t k_stage, int64_t k_end) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t k = stage_lane_k<F>(k_stage, half);
#pragma unroll
      for (int j = 0; j < NT; ++j) {
#pragma unroll
        for (int v = 0; v < MmaStep<F>::kXVecs; ++v) {
          x[half][j][v] = xrow[j] != nullptr && k < k_end
                              ? __ldg(reinterpret_cast<const uint4*>(xrow[j] + k + v * kBf16PerVec))
                              : make_uint4(0, 0, 0, 0);
        }
      }
    }
  }
};

// The scale bytes of rows g and g + 8 (scale rows srow) for one stage: [step][row].
template <WeightFormat F>
struct StageScales {
  uint8_t s[2][2];
  __device__ __forceinline__ void load(const uint8_t* const (&srow)[2], int64_t k_stage, int64_t k_end) {
    if constexpr (F == WeightFormat::kFp4) {  // one per 32 values: the lane's load in each step
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t k = stage_lane_k<F>(k_stage, half);
        const int64_t col = k < k_end ? k / QuantTraits<F>::kBlockCols : 0;
        s[half][0] = __ldg(srow[0] + col), s[half][1] = __ldg(srow[1] + col);
      }
    } else {  // one 128 x 128 block: the whole stage, rows g and g + 8 alike
      const uint8_t b = __ldg(srow[0] + k_stage / QuantTraits<F>::kBlockCols);
      s[0][0] = s[0][1] = s[1][0] = s[1][1] = b;
    }
  }
};

// acc += one matrix's products of a stage (its codes in the ring stage `stage`).
template <WeightFormat F, int NT>
__device__ __forceinline__ void stage_mma(float (&acc)[NT][4], const uint8_t* stage, const StageScales<F>& sc,
                                          const StageX<F, NT>& x) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    uint4 cg, ch;
    ring_read(stage, half, cg, ch);
    step_mma<F, NT>(acc, cg, ch, PairScale<F>(sc.s[half][0]), PairScale<F>(sc.s[half][1]), x.x[half]);
  }
}

}  // namespace dsv4::cuda
