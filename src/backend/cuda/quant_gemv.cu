// The decode GEMV on quantised weights (quant_matrix.h) and the dequantisation fallback for every other shape.
//
// Checked on an H200 on 2026-12-05 by tests/gpu/cuda_quant_test.cu and timed by bench/kernels/quant_gemv
// (scripts/gpu/run.sh quant; bench/RESULTS.md): 1.4-3.4x its HBM floor at T = 1..8.
//
// gemv.cu's structure with the weight stream narrowed: a warp owns kRows consecutive weight rows and one slice of
// K; each lane streams 16-byte loads of its rows' codes (16 E4M3 or 32 packed E2M1 values: 1 or 0.5 bytes a
// weight instead of 2), reads the scale byte of the load's block once (an FP8 128-block or the FP4 32-group holds
// a whole load), expands the codes in registers (quant_decode.cuh) with the scale applied, and applies every row
// of x to them with fp32 accumulation. The warp reduce-scatter and the slice-order sum over warps are gemv.cu's:
// bit-identical run to run, and each output row the same bits whatever T is (the split depends on N and K only).
//
// Cost per weight, to be measured: ~2 (FP8) or ~3.5 (FP4) decode instructions besides T FMAs, against half or a
// quarter of bf16's bytes, so FP4 at T >= 4 may be issue-bound rather than HBM-bound.
#include <algorithm>

#include "backend/cuda/gemv_reduce.cuh"
#include "backend/cuda/quant_decode.cuh"
#include "backend/cuda/quant_matrix.h"
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
constexpr int kRows = 4;                // weight rows per warp
constexpr int64_t kTargetWarps = 2048;  // as gemv.cu: ~16 warps on each of 132 SMs
// Loads in flight per lane and row, as many as fit in 128 registers next to the accumulators and one decoded group
// (ptxas, CUDA 13.0: no spills at T <= 4 but FP4's T = 3 (16 bytes); T = 5..8 spill 16-140 bytes, L1-resident: to
// measure). 16 warps x 32 lanes x 4 rows x U x 16 bytes: 32 KB in flight per SM at U = 1.
constexpr int unroll_for(int t) { return t <= 2 ? 2 : 1; }

struct QGemvParams {
  const uint8_t* codes;
  const uint8_t* scale;
  const bf16* x;
  void* out;
  int64_t N, K, ldx, ldo;
  int64_t code_row_bytes, scale_cols;
  int64_t group_codes, group_scales;  // bytes between the groups' codes and scales (grid.y = group)
  int64_t k_slice;                    // elements of K per warp (a multiple of the values per load)
  int k_splits;
  int out_f32;
};

template <WeightFormat F, int U>
__device__ __forceinline__ void load_codes_rows(uint4 (&wv)[U][kRows], const uint8_t* codes,
                                                const uint32_t (&woff)[kRows], int64_t k0, int64_t k_end) {
  constexpr int64_t kStep = 32 * QuantTraits<F>::kValuesPerLoad;
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t k = k0 + u * kStep;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      wv[u][r] = load_codes_if(codes + woff[r], code_offset<F>(k), k < k_end);
    }
  }
}

template <WeightFormat F, int T>
__global__ void __launch_bounds__(kThreads, 2) quant_gemv_kernel(QGemvParams p) {
  using Tr = QuantTraits<F>;
  constexpr int TP = padded_tokens(T), V = kRows * TP, U = unroll_for(T);
  constexpr int64_t kStep = 32 * Tr::kValuesPerLoad;
  __shared__ float partial[kWarps * V];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int slice = warp % p.k_splits, group = warp / p.k_splits, groups_per_block = kWarps / p.k_splits;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * groups_per_block + group) * kRows;
  // Group g (grouped_linear's block-diagonal projection) reads columns g*K.. of x and writes columns g*N.. of out.
  const int64_t g = blockIdx.y;
  const bf16* x = p.x + g * p.K;
  const uint8_t* codes = p.codes + g * p.group_codes;
  const uint8_t* scale = p.scale + g * p.group_scales;
  const int64_t k_begin = slice * p.k_slice, k_end = min(p.K, k_begin + p.k_slice);
  const bool active = row0 < p.N;
  // Row offsets in 32 bits (one group's matrix is far below 4 GB; quant_gemv checks it): fewer registers than
  // pointers.
  uint32_t woff[kRows], soff[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t n = min(row0 + r, p.N - 1);  // rows past N: read, unused
    woff[r] = static_cast<uint32_t>(n * p.code_row_bytes);
    soff[r] = static_cast<uint32_t>(n / Tr::kBlockRows * p.scale_cols);
  }

  float acc[V];  // acc[r * TP + t]
#pragma unroll
  for (int i = 0; i < V; ++i) acc[i] = 0.0f;
  const int64_t lane_k = k_begin + static_cast<int64_t>(lane) * Tr::kValuesPerLoad;
  const int64_t k_stop = active ? k_end : 0;
  uint4 wv[U][kRows];
  load_codes_rows<F, U>(wv, codes, woff, lane_k, k_stop);
  pdl_wait();  // x is the previous kernel's output
  for (int64_t k0 = lane_k; k0 < k_stop; k0 += U * kStep) {
    if (k0 != lane_k) load_codes_rows<F, U>(wv, codes, woff, k0, k_stop);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t k = k0 + u * kStep;
      if (k >= k_stop) break;
      float sc[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) sc[r] = e8m0_to_float(__ldg(scale + soff[r] + k / Tr::kBlockCols));
      auto apply = [&](auto group_tag) {
        constexpr int G = decltype(group_tag)::value;
        float wf[kRows][kBf16PerVec];
#pragma unroll
        for (int r = 0; r < kRows; ++r) decode_group<F, G>(wv[u][r], sc[r], wf[r]);
#pragma unroll
        for (int t = 0; t < T; ++t) {
          float xf[kBf16PerVec];
          unpack8(__ldg(reinterpret_cast<const uint4*>(x + t * p.ldx + k + G * kBf16PerVec)), xf);
#pragma unroll
          for (int r = 0; r < kRows; ++r) {
#pragma unroll
            for (int c = 0; c < kBf16PerVec; ++c) acc[r * TP + t] = fmaf(xf[c], wf[r][c], acc[r * TP + t]);
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

  const float sum = warp_reduce_scatter<V>(acc);
  constexpr int kLanesPerValue = 32 / V;
  if (lane % kLanesPerValue == 0) partial[warp * V + lane / kLanesPerValue] = sum;
  __syncthreads();
  if (threadIdx.x < groups_per_block * V) {
    const int rg = threadIdx.x / V, i = threadIdx.x % V, r = i / TP, t = i % TP;
    const int64_t n = (static_cast<int64_t>(blockIdx.x) * groups_per_block + rg) * kRows + r;
    if (t < T && n < p.N) {
      float s = partial[rg * p.k_splits * V + i];
      for (int j = 1; j < p.k_splits; ++j) s += partial[(rg * p.k_splits + j) * V + i];  // slice order
      const int64_t o = t * p.ldo + g * p.N + n;
      if (p.out_f32) {
        static_cast<float*>(p.out)[o] = s;
      } else {
        static_cast<bf16*>(p.out)[o] = from_float<bf16>(s);
      }
    }
  }
}

template <WeightFormat F>
void launch_format(cudaStream_t stream, const QGemvParams& p, dim3 grid, int64_t T) {
  auto go = [&](auto kernel) { check_launch(launch_kernel(kernel, grid, dim3(kThreads), 0, stream, p), "quant_gemv"); };
  switch (T) {
    case 1:
      return go(quant_gemv_kernel<F, 1>);
    case 2:
      return go(quant_gemv_kernel<F, 2>);
    case 3:
      return go(quant_gemv_kernel<F, 3>);
    case 4:
      return go(quant_gemv_kernel<F, 4>);
    case 5:
      return go(quant_gemv_kernel<F, 5>);
    case 6:
      return go(quant_gemv_kernel<F, 6>);
    case 7:
      return go(quant_gemv_kernel<F, 7>);
    default:
      return go(quant_gemv_kernel<F, 8>);
  }
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
  DSV4_CHECK_ARG(quant_code_bytes(w.format, w.N, w.K) < (int64_t{1} << 32), "quant_gemv: a ",
                 weight_format_name(w.format), " matrix [", w.N, ", ", w.K, "] of 4 GB or more");
  const int64_t vpl = values_per_load(w.format);
  const int64_t row_groups = (w.N + kRows - 1) / kRows;
  // As gemv.cu: split K over up to kWarps warps until the matrix alone fills ~kTargetWarps warps, keeping at
  // least two loads per lane in a slice.
  int k_splits = 1;
  while (k_splits < kWarps && row_groups * groups * k_splits < kTargetWarps && w.K / (2 * k_splits) >= 2 * 32 * vpl) {
    k_splits *= 2;
  }
  const int64_t loads = w.K / vpl, groups_per_block = kWarps / k_splits;
  QGemvParams p{};
  p.codes = w.codes, p.scale = w.scale;
  p.x = static_cast<const bf16*>(x), p.out = out;
  p.N = w.N, p.K = w.K, p.ldx = ldx, p.ldo = ldo;
  p.code_row_bytes = w.format == WeightFormat::kFp4 ? w.K / 2 : w.K;
  p.scale_cols = quant_scale_cols(w.format, w.K);
  p.group_codes = quant_code_bytes(w.format, w.N, w.K);
  p.group_scales = quant_scale_bytes(w.format, w.N, w.K);
  p.k_slice = (loads + k_splits - 1) / k_splits * vpl;
  p.k_splits = k_splits;
  p.out_f32 = out_f32 ? 1 : 0;
  const dim3 grid(static_cast<unsigned>((row_groups + groups_per_block - 1) / groups_per_block),
                  static_cast<unsigned>(groups));
  if (w.format == WeightFormat::kFp4) return launch_format<WeightFormat::kFp4>(stream, p, grid, T);
  launch_format<WeightFormat::kFp8Block>(stream, p, grid, T);
}

void dequantize_to_bf16(cudaStream_t stream, const QuantMatrix& w, void* out) {
  check_format(w, "dequantize_to_bf16");
  const int64_t total = w.N * w.K;
  constexpr int kBlock = 256;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + kBlock - 1) / kBlock, 65535 * 8));
  check_launch(launch_kernel(dequantize_kernel, dim3(blocks), dim3(kBlock), 0, stream, w,
                             quant_scale_cols(w.format, w.K), static_cast<bf16*>(out)),
               "dequantize_to_bf16");
}

}  // namespace dsv4::cuda
