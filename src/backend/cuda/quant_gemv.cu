// The decode GEMV on quantised weights (quant_matrix.h) and the dequantisation fallback for every other shape.
//
// On tensor cores: a warp owns 16 consecutive weight rows (the m of mma.m16n8k16) and one slice of K, and applies
// up to 16 rows of x (two MMA column tiles of 8) to them. The codes stream through a per-warp cp.async ring
// (quant_mma.cuh: 128 bytes of each row a stage, copied as whole 128-byte lines, kStages - 1 stages in flight
// whatever the registers); the MMA lane (g = lane / 4, t4 = lane % 4) reads its 16-byte chunks of rows g and g + 8
// back from shared memory, turns code pairs into bf16 pairs with a few logic ops and one bf16 multiply that carries
// the scale (exact), and pairs its row of x (8j + g) in the same k order with byte permutes. The activations, which
// every warp reads alike, come through L1: L1-bypassing copies made every warp of the GPU hammer the same few L2
// lines (3x slower at T = 4, H100).
//
// The warps' partial sums meet in shared memory in slice order: bit-identical run to run, and each output row the
// same bits whatever T is (the split depends on N, K and groups only; an MMA's column does not depend on the others).
//
// Against the register GEMV it replaced (every code expanded to f32 and multiplied on the FMA pipe, 4 rows a warp),
// H100, bench_quant_gemv: the same time at T = 1 (a CSA layer's six FP8 projections 56.0 vs 53.9 us; the 33.6 MB
// ones 14.4-14.7 vs 13.7-14.9 us), 1.8x faster at T = 8, and T = 9..16 no longer take the dequantise fallback (a
// Flash-slice decode step at b = 16: 3.39 vs 4.74 ms).
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>

#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/quant_decode.cuh"
#include "backend/cuda/quant_matrix.h"
#include "backend/cuda/quant_mma.cuh"
#include "dsv4/core/log.h"

namespace dsv4::cuda {

int64_t quant_scale_cols(WeightFormat f, int64_t K) {
  const int64_t block = f == WeightFormat::kFp4 ? kFp4Group : kFp8Block;
  return (K + block - 1) / block;
}

int64_t quant_code_bytes(WeightFormat f, int64_t N, int64_t K) { return f == WeightFormat::kFp4 ? N * (K / 2) : N * K; }

int64_t quant_scale_bytes(WeightFormat f, int64_t N, int64_t K) {
  const int64_t rows = f == WeightFormat::kFp4 ? N : (N + kFp8Block - 1) / kFp8Block;
  return rows * quant_scale_cols(f, K);
}

namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kTileRows = 16;           // weight rows per warp: the MMA's m
constexpr int kTileTokens = 8;          // rows of x per MMA: its n
constexpr int kStages = 4;              // stages of codes in a warp's ring (quant_mma.cuh): 3 in flight, 6 KB
constexpr int64_t kTargetWarps = 2048;  // ~16 warps on each of 132 SMs
static_assert(kQuantGemvMaxTokens <= 2 * kTileTokens, "two MMA column tiles at most");

constexpr int kRingBytes = kWarps * kStages * kRingStageBytes;  // 64 KB a block

struct QGemvParams {
  const uint8_t* codes;
  const uint8_t* scale;
  const bf16* x;
  void* out;
  int64_t N, K, ldx, ldo;
  int64_t code_row_bytes, scale_cols;
  int64_t group_codes, group_scales;  // bytes between the groups' codes and scales (grid.y = group)
  int64_t k_slice;                    // elements of K per warp (a multiple of a ring stage's)
  int k_splits;
  int T;
  int out_f32;
};

template <WeightFormat F, int NT>
__global__ void __launch_bounds__(kThreads, 2) quant_gemv_kernel(QGemvParams p) {
  using Tr = QuantTraits<F>;
  constexpr int64_t kK = kStageK<F>;
  extern __shared__ __align__(16) uint8_t ring[];
  __shared__ float partial[kWarps][kTileRows][NT * kTileTokens];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
  const int slice = warp % p.k_splits, tile_in_block = warp / p.k_splits, tiles_per_block = kWarps / p.k_splits;
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * tiles_per_block + tile_in_block) * kTileRows;
  // Group gi (grouped_linear's block-diagonal projection) reads columns gi*K.. of x and writes columns gi*N.. of out.
  const int64_t gi = blockIdx.y;
  const uint8_t* codes = p.codes + gi * p.group_codes;
  const uint8_t* scale = p.scale + gi * p.group_scales;
  const int64_t k_begin = slice * p.k_slice, k_end = min(p.K, k_begin + p.k_slice);
  const int stages = n0 < p.N && k_end > k_begin ? static_cast<int>((k_end - k_begin + kK - 1) / kK) : 0;
  // Rows past N are read, never stored.
  const uint8_t* srow[2];  // the scale rows of the MMA rows g and g + 8 (FP8: one 128-row block, n0's)
#pragma unroll
  for (int h = 0; h < 2; ++h) srow[h] = scale + min(n0 + g + 8 * h, p.N - 1) / Tr::kBlockRows * p.scale_cols;
  // This lane's rows of x: row 8j + g of column tile j, none past T (its B operand stays zero).
  const bf16* xrow[NT];
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int t = kTileTokens * j + g;
    xrow[j] = t < p.T ? p.x + gi * p.K + static_cast<int64_t>(t) * p.ldx : nullptr;
  }
  uint8_t* const mine = ring + warp * kStages * kRingStageBytes;
  auto slot = [&](int s) { return mine + (s % kStages) * kRingStageBytes; };
  auto k_of = [&](int s) { return k_begin + s * kK; };
  const int64_t end_byte = code_offset<F>(k_end);  // chunks past the slice (past K) zero-fill
  auto copy = [&](int s) {
    if (s < stages) ring_copy(slot(s), codes, p.code_row_bytes, n0, p.N, code_offset<F>(k_of(s)), end_byte);
  };

  // Weights are static: their first copies go out before the wait for x (the previous kernel's output).
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    copy(s);
    cp_async_commit();
  }
  StageScales<F> sc_next;
  if (stages > 0) sc_next.load(srow, k_of(0), k_end);
  pdl_wait();
  float acc[NT][4] = {};
  for (int s = 0; s < stages; ++s) {
    StageX<F, NT> x;
    x.load(xrow, k_of(s), k_end);
    const StageScales<F> sc = sc_next;
    if (s + 1 < stages) sc_next.load(srow, k_of(s + 1), k_end);
    cp_async_wait<kStages - 2>();  // stage s has landed: this lane's copies,
    __syncwarp();                  // and the warp's (and every lane is done with stage s - 1's slot)
    copy(s + kStages - 1);         // into stage s - 1's slot
    cp_async_commit();
    stage_mma<F, NT>(acc, slot(s), sc, x);
  }

  // C fragments: (row g, columns 2 t4, 2 t4 + 1) in acc[j][0..1], row g + 8 in acc[j][2..3].
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    const int c = kTileTokens * j + 2 * t4;
    partial[warp][g][c] = acc[j][0], partial[warp][g][c + 1] = acc[j][1];
    partial[warp][g + 8][c] = acc[j][2], partial[warp][g + 8][c + 1] = acc[j][3];
  }
  __syncthreads();
  // Outputs of the block, row fastest (coalesced): the slices of each row tile summed in slice order.
  const int outputs = tiles_per_block * kTileRows * p.T;
  for (int i = threadIdx.x; i < outputs; i += kThreads) {
    const int r = i % kTileRows, tb = (i / kTileRows) % tiles_per_block, t = i / (kTileRows * tiles_per_block);
    const int64_t n = (static_cast<int64_t>(blockIdx.x) * tiles_per_block + tb) * kTileRows + r;
    if (n >= p.N) continue;
    float v = partial[tb * p.k_splits][r][t];
    for (int js = 1; js < p.k_splits; ++js) v += partial[tb * p.k_splits + js][r][t];
    const int64_t o = t * p.ldo + gi * p.N + n;
    if (p.out_f32) {
      static_cast<float*>(p.out)[o] = v;
    } else {
      static_cast<bf16*>(p.out)[o] = from_float<bf16>(v);
    }
  }
}

template <WeightFormat F, int NT>
void launch_tiles(cudaStream_t stream, const QGemvParams& p, dim3 grid) {
  constexpr int shared = kRingBytes;
  allow_dynamic_shared<quant_gemv_kernel<F, NT>>(shared, "cudaFuncSetAttribute(quant_gemv)");
  check_launch(launch_kernel(quant_gemv_kernel<F, NT>, grid, dim3(kThreads), shared, stream, p), "quant_gemv");
}

template <WeightFormat F>
void launch_format(cudaStream_t stream, const QGemvParams& p, dim3 grid) {
  if (p.T <= kTileTokens) return launch_tiles<F, 1>(stream, p, grid);
  launch_tiles<F, 2>(stream, p, grid);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int64_t values_per_load(WeightFormat f) { return f == WeightFormat::kFp4 ? 32 : 16; }

// ---- dequantisation ----------------------------------------------------------------------------------------

__constant__ float kE2m1Values[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                      -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

__global__ void dequantize_kernel(QuantMatrix w, int64_t scale_cols, bf16* out) {
  pdl_wait();
  const int64_t total = w.N * w.K;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = i / w.K, k = i % w.K;
    float v, s;
    if (w.format == WeightFormat::kFp4) {
      const uint8_t byte = w.codes[n * (w.K / 2) + k / 2];
      v = kE2m1Values[(k & 1) ? byte >> 4 : byte & 0xf];
      s = e8m0_to_float(w.scale[n * scale_cols + k / kFp4Group]);
    } else {
      const __half_raw raw = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(w.codes[i]), __NV_E4M3);
      v = __half2float(__half(raw));
      s = e8m0_to_float(w.scale[n / kFp8Block * scale_cols + k / kFp8Block]);
    }
    out[i] = from_float<bf16>(v * s);
  }
}

// Rows of whole 8-value chunks (K % 8 == 0, codes 8-byte and out 16-byte aligned): a thread turns 8 codes into one
// 16-byte store with quant_mma.cuh's exact pair conversions (the scalar kernel above spent a 64-bit division and a
// 2-byte store on every value: ~40% of HBM bandwidth on the prefill's dense FP8 weights). grid.x covers a row's
// chunks, grid.y strides over rows.
template <WeightFormat F>
__global__ void dequantize_chunks_kernel(const uint8_t* __restrict__ codes, const uint8_t* __restrict__ scale,
                                         int64_t N, int64_t K, int64_t scale_cols, bf16* __restrict__ out) {
  pdl_wait();
  const int64_t k = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 8;
  if (k >= K) return;
  for (int64_t n = blockIdx.y; n < N; n += gridDim.y) {
    uint4 v;
    if constexpr (F == WeightFormat::kFp4) {
      const uint32_t word = __ldg(reinterpret_cast<const uint32_t*>(codes + n * (K / 2) + k / 2));
      v = e2m1_chunk(word, PairScale<F>(__ldg(scale + n * scale_cols + k / kFp4Group)));
    } else {
      const uint2 w = __ldg(reinterpret_cast<const uint2*>(codes + n * K + k));
      v = e4m3_chunk(w.x, w.y, PairScale<F>(__ldg(scale + n / kFp8Block * scale_cols + k / kFp8Block)));
    }
    *reinterpret_cast<uint4*>(out + n * K + k) = v;
  }
}

__global__ void e8m0_scales_to_f32_kernel(const uint8_t* __restrict__ scale, float* __restrict__ out, int64_t n) {
  pdl_wait();
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = e8m0_to_float(scale[i]);
  }
}

void check_format(const QuantMatrix& w, const char* what) {
  DSV4_CHECK_ARG(w.format == WeightFormat::kFp8Block || w.format == WeightFormat::kFp4, what, ": format ",
                 weight_format_name(w.format), " is not a quantised one");
  DSV4_CHECK_ARG(w.N >= 1 && w.K >= 1 && (w.format != WeightFormat::kFp4 || w.K % 2 == 0), what, ": shape [", w.N, ", ",
                 w.K, "] (FP4 needs an even K)");
}

}  // namespace

bool quant_gemv_supports(const QuantMatrix& w, const void* x, int64_t ldx, int64_t T, int64_t groups) {
  if (w.format != WeightFormat::kFp8Block && w.format != WeightFormat::kFp4) return false;
  // Groups of an FP8 matrix must not share 128-row scale blocks; each group's codes stay 16-byte aligned.
  const bool groups_ok =
      groups == 1 || (groups >= 1 && groups <= 65535 && (w.format == WeightFormat::kFp4 || w.N % kFp8Block == 0) &&
                      quant_code_bytes(w.format, w.N, w.K) % 16 == 0);
  return groups_ok && T >= 1 && T <= kQuantGemvMaxTokens && w.N >= 1 && w.K >= 1 &&
         w.K % values_per_load(w.format) == 0 && aligned16(w.codes) && w.scale != nullptr && aligned16(x) &&
         ldx % kBf16PerVec == 0;
}

void quant_gemv(cudaStream_t stream, const QuantMatrix& w, const void* x, int64_t ldx, void* out, bool out_f32,
                int64_t ldo, int64_t T, int64_t groups) {
  DSV4_CHECK_ARG(quant_gemv_supports(w, x, ldx, T, groups), "quant_gemv: unsupported operands (",
                 weight_format_name(w.format), " N=", w.N, " K=", w.K, " T=", T, " groups=", groups, ")");
  const int64_t stage_k = 8 * values_per_load(w.format);  // kStageK
  const int64_t row_tiles = (w.N + kTileRows - 1) / kTileRows, total_stages = (w.K + stage_k - 1) / stage_k;
  // Split K over up to kWarps warps until the matrix alone fills ~kTargetWarps warps, keeping at least 2 stages per
  // warp.
  int k_splits = 1;
  while (k_splits < kWarps && row_tiles * groups * k_splits < kTargetWarps && total_stages >= 4 * k_splits) {
    k_splits *= 2;
  }
  const int64_t tiles_per_block = kWarps / k_splits;
  QGemvParams p{};
  p.codes = w.codes, p.scale = w.scale;
  p.x = static_cast<const bf16*>(x), p.out = out;
  p.N = w.N, p.K = w.K, p.ldx = ldx, p.ldo = ldo;
  p.code_row_bytes = w.format == WeightFormat::kFp4 ? w.K / 2 : w.K;
  p.scale_cols = quant_scale_cols(w.format, w.K);
  p.group_codes = quant_code_bytes(w.format, w.N, w.K);
  p.group_scales = quant_scale_bytes(w.format, w.N, w.K);
  p.k_slice = (total_stages + k_splits - 1) / k_splits * stage_k;
  p.k_splits = k_splits;
  p.T = static_cast<int>(T);
  p.out_f32 = out_f32 ? 1 : 0;
  const dim3 grid(static_cast<unsigned>((row_tiles + tiles_per_block - 1) / tiles_per_block),
                  static_cast<unsigned>(groups));
  if (w.format == WeightFormat::kFp4) return launch_format<WeightFormat::kFp4>(stream, p, grid);
  launch_format<WeightFormat::kFp8Block>(stream, p, grid);
}

void e8m0_scales_to_f32(cudaStream_t stream, const uint8_t* scale, int64_t n, float* out) {
  if (n == 0) return;
  constexpr int kBlock = 256;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + kBlock - 1) / kBlock, 1024));
  check_launch(launch_kernel(e8m0_scales_to_f32_kernel, dim3(blocks), dim3(kBlock), 0, stream, scale, out, n),
               "e8m0_scales_to_f32");
}

void dequantize_to_bf16(cudaStream_t stream, const QuantMatrix& w, void* out) {
  check_format(w, "dequantize_to_bf16");
  const int64_t total = w.N * w.K;
  constexpr int kBlock = 256;
  const int64_t scale_cols = quant_scale_cols(w.format, w.K);
  if (w.K % 8 == 0 && reinterpret_cast<uintptr_t>(w.codes) % 8 == 0 && aligned16(out)) {
    const dim3 grid(static_cast<unsigned>((w.K / 8 + kBlock - 1) / kBlock),
                    static_cast<unsigned>(std::min<int64_t>(w.N, 65535)));
    bf16* const o = static_cast<bf16*>(out);
    if (w.format == WeightFormat::kFp4) {
      check_launch(launch_kernel(dequantize_chunks_kernel<WeightFormat::kFp4>, grid, dim3(kBlock), 0, stream, w.codes,
                                 w.scale, w.N, w.K, scale_cols, o),
                   "dequantize_to_bf16");
    } else {
      check_launch(launch_kernel(dequantize_chunks_kernel<WeightFormat::kFp8Block>, grid, dim3(kBlock), 0, stream,
                                 w.codes, w.scale, w.N, w.K, scale_cols, o),
                   "dequantize_to_bf16");
    }
    return;
  }
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + kBlock - 1) / kBlock, 65535 * 8));
  check_launch(
      launch_kernel(dequantize_kernel, dim3(blocks), dim3(kBlock), 0, stream, w, scale_cols, static_cast<bf16*>(out)),
      "dequantize_to_bf16");
}

}  // namespace dsv4::cuda
