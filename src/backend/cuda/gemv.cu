// The weight-streaming GEMV of cuda::linear / grouped_linear at small T (see gemv.h).
//
// Work split: a warp owns kRows consecutive weight rows (output columns) and one slice of K. Each lane
// streams 16-byte pieces of its kRows rows (unroll_for(T) pieces per row in flight, L1 bypassed, the first batch
// issued before the PDL wait since no earlier kernel writes weights) and applies every row of x to them:
// one x load serves kRows weight rows, one weight load serves T rows of x. Lanes accumulate in fp32 in a
// fixed order. A warp reduce-scatter (kRows·T' values over 32 lanes, 31 shuffles at most) leaves each
// (row, token) sum on some lanes; warps that split K meet in shared memory and one thread per output sums
// their partials in slice order. Nothing depends on timing: bit-identical run to run.
//
// Grid: (blocks of kWarps / k_splits row groups, matrices × batch). k_splits (1, 2, 4 or 8 warps of a block on
// one row group) is picked from each matrix's shape alone so that it would fill ~kTargetWarps warps on its
// own, enough to keep every SM streaming even for N = 512 (the result then also does not depend on the card
// or on the other matrices of a gemv_many launch). Up to kMaxGemvMatrices projections of the same x share
// one launch (one launch latency instead of several for the small projections of a decode step).
#include <algorithm>
#include <string>

#include "backend/cuda/bf16_stream.cuh"
#include "backend/cuda/gemv.h"
#include "backend/cuda/gemv_reduce.cuh"
#include "dsv4/core/log.h"

namespace dsv4::cuda {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kRows = 4;                           // weight rows per warp: one x load serves all of them
constexpr int kWarpStep = 32 * kBf16PerVec;        // elements of K a warp covers with one load per lane
constexpr int64_t kTargetWarps = 2048;             // ~16 warps on each of 132 SMs
constexpr int64_t kMinSliceElems = 2 * kWarpStep;  // K per warp when splitting: at least 2 loads per lane

// Loads in flight per lane and weight row, as many as fit next to the accumulators in the 128 registers of
// two resident blocks per SM (ptxas: 118-128 registers, no spills): 16 warps with 2-4 KB in flight each.
constexpr int unroll_for(int t) { return t <= 2 ? 4 : t <= 4 ? 2 : 1; }

struct GemvMatrix {
  const bf16* w;
  void* out;
  int64_t N, ldw, ldo;
  int64_t k_slice;  // elements of K per warp (a multiple of kBf16PerVec)
  int k_splits;     // warps sharing one row group, each on its own slice of K
  int out_f32;      // out is float (else bf16)
  unsigned blocks;  // blocks of this matrix along the grid's x (the grid has the largest count)
};

struct GemvParams {
  const bf16* x;
  int64_t K, ldx, stride_x, stride_w, stride_o;  // strides: between the batches of a grouped projection
  int batch;
  GemvMatrix m[kMaxGemvMatrices];
};

// p.m[i] with constant indices only (a dynamically indexed kernel parameter would go through local memory).
__device__ __forceinline__ GemvMatrix matrix_of(const GemvParams& p, int i) {
  GemvMatrix m = p.m[0];
#pragma unroll
  for (int j = 1; j < kMaxGemvMatrices; ++j) {
    if (j == i) m = p.m[j];
  }
  return m;
}

// The next U pieces of this lane's kRows weight rows from element k0 on (zeros past k_end).
template <int U>
__device__ __forceinline__ void load_weights(uint4 (&wv)[U][kRows], const bf16* const (&wrow)[kRows], int64_t k0,
                                             int64_t k_end) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t k = k0 + static_cast<int64_t>(u) * kWarpStep;
#pragma unroll
    for (int r = 0; r < kRows; ++r) wv[u][r] = load_streaming_if(wrow[r], k, k < k_end);
  }
}

template <int T>
__global__ void __launch_bounds__(kThreads, 2) gemv_kernel(GemvParams p) {
  constexpr int TP = padded_tokens(T), V = kRows * TP, U = unroll_for(T);
  __shared__ float partial[kWarps * V];  // [warp][value], warp = row group * k_splits + slice
  const GemvMatrix M = matrix_of(p, static_cast<int>(blockIdx.y) / p.batch);
  if (blockIdx.x >= M.blocks) return;  // the whole block: a smaller matrix of a gemv_many launch
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int slice = warp % M.k_splits, group = warp / M.k_splits, groups_per_block = kWarps / M.k_splits;
  const int64_t b = blockIdx.y % p.batch;
  const bf16* x = p.x + b * p.stride_x;
  const bf16* w = M.w + b * p.stride_w;
  const int64_t out_offset = b * p.stride_o;

  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * groups_per_block + group) * kRows;
  const int64_t k_begin = slice * M.k_slice, k_end = min(p.K, k_begin + M.k_slice);
  const bool active = row0 < M.N;  // a row group past N (last block) only joins the reduction
  const bf16* wrow[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) wrow[r] = w + min(row0 + r, M.N - 1) * M.ldw;  // rows past N: read, unused
  const bf16* xrow[T];
#pragma unroll
  for (int t = 0; t < T; ++t) xrow[t] = x + t * p.ldx;

  float acc[V];  // acc[r * TP + t]: this lane's part of x[t] · w[row0 + r]
#pragma unroll
  for (int i = 0; i < V; ++i) acc[i] = 0.0f;
  const int64_t lane_k = k_begin + static_cast<int64_t>(lane) * kBf16PerVec;
  const int64_t k_stop = active ? k_end : 0;
  uint4 wv[U][kRows];
  load_weights<U>(wv, wrow, lane_k, k_stop);
  pdl_wait();  // x is the previous kernel's output
  for (int64_t k0 = lane_k; k0 < k_stop; k0 += static_cast<int64_t>(U) * kWarpStep) {
    if (k0 != lane_k) load_weights<U>(wv, wrow, k0, k_stop);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t k = k0 + static_cast<int64_t>(u) * kWarpStep;
      if (k >= k_stop) break;
      float wf[kRows][kBf16PerVec];
#pragma unroll
      for (int r = 0; r < kRows; ++r) unpack8(wv[u][r], wf[r]);
#pragma unroll
      for (int t = 0; t < T; ++t) {
        float xf[kBf16PerVec];
        unpack8(__ldg(reinterpret_cast<const uint4*>(xrow[t] + k)), xf);
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
#pragma unroll
          for (int c = 0; c < kBf16PerVec; ++c) acc[r * TP + t] = fmaf(xf[c], wf[r][c], acc[r * TP + t]);
        }
      }
    }
  }

  // After the reduce-scatter lane l holds value i = l / (32 / V), i.e. (r, t) = (i / TP, i % TP).
  const float sum = warp_reduce_scatter<V>(acc);
  constexpr int kLanesPerValue = 32 / V;
  if (lane % kLanesPerValue == 0) partial[warp * V + lane / kLanesPerValue] = sum;
  __syncthreads();
  if (threadIdx.x < groups_per_block * V) {
    const int g = threadIdx.x / V, i = threadIdx.x % V, r = i / TP, t = i % TP;
    const int64_t n = (static_cast<int64_t>(blockIdx.x) * groups_per_block + g) * kRows + r;
    if (t < T && n < M.N) {
      float s = partial[g * M.k_splits * V + i];
      for (int j = 1; j < M.k_splits; ++j) s += partial[(g * M.k_splits + j) * V + i];  // slice order
      const int64_t o = out_offset + t * M.ldo + n;
      if (M.out_f32) {
        static_cast<float*>(M.out)[o] = s;
      } else {
        static_cast<bf16*>(M.out)[o] = from_float<bf16>(s);
      }
    }
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// 0: off, 1: the measured policy of gemv_serves (the default), 2: any size and T <= kGemvMaxTokens.
int gemv_mode() {
  static const int mode = [] {
    std::string v;
    if (!env_string("DSV4_GEMV", &v)) return 1;
    if (v == "0" || v == "1" || v == "2") return v[0] - '0';
    fail(StatusCode::kInvalidArgument,
         "DSV4_GEMV must be 0 (cuBLASLt only), 1 (GEMV where it wins, the default) or 2 (GEMV for every T <= ",
         kGemvMaxTokens, " and size), not '", v, "'");
  }();
  return mode;
}

template <int T>
void launch_tokens(cudaStream_t stream, const GemvParams& p, dim3 grid) {
  check_launch(launch_kernel(gemv_kernel<T>, grid, dim3(kThreads), 0, stream, p), "gemv");
}

// The work split of one matrix (see the top of the file): a function of its shape only.
GemvMatrix matrix_for(const GemmArgs& g) {
  const int64_t row_groups = (g.N + kRows - 1) / kRows;
  int k_splits = 1;
  while (k_splits < kWarps && row_groups * g.batch * k_splits < kTargetWarps &&
         g.K / (2 * k_splits) >= kMinSliceElems) {
    k_splits *= 2;
  }
  const int64_t vecs = g.K / kBf16PerVec, groups_per_block = kWarps / k_splits;
  GemvMatrix m;
  m.w = static_cast<const bf16*>(g.w);
  m.out = g.out;
  m.N = g.N, m.ldw = g.ldw, m.ldo = g.ldo;
  m.k_slice = (vecs + k_splits - 1) / k_splits * kBf16PerVec;
  m.k_splits = k_splits;
  m.out_f32 = g.out_type == DType::F32;
  m.blocks = static_cast<unsigned>((row_groups + groups_per_block - 1) / groups_per_block);
  return m;
}

void launch(cudaStream_t stream, const GemmArgs* gs, int n) {
  const GemmArgs& g = gs[0];
  GemvParams p{};
  p.x = static_cast<const bf16*>(g.x);
  p.K = g.K, p.ldx = g.ldx;
  p.stride_x = g.batch > 1 ? g.stride_x : 0;
  p.stride_w = g.batch > 1 ? g.stride_w : 0;
  p.stride_o = g.batch > 1 ? g.stride_o : 0;
  p.batch = static_cast<int>(g.batch);
  unsigned blocks = 0;
  for (int i = 0; i < n; ++i) {
    p.m[i] = matrix_for(gs[i]);
    blocks = std::max(blocks, p.m[i].blocks);
  }
  const dim3 grid(blocks, static_cast<unsigned>(n * g.batch));
  switch (g.M) {
    case 1:
      return launch_tokens<1>(stream, p, grid);
    case 2:
      return launch_tokens<2>(stream, p, grid);
    case 3:
      return launch_tokens<3>(stream, p, grid);
    case 4:
      return launch_tokens<4>(stream, p, grid);
    case 5:
      return launch_tokens<5>(stream, p, grid);
    case 6:
      return launch_tokens<6>(stream, p, grid);
    case 7:
      return launch_tokens<7>(stream, p, grid);
    default:
      return launch_tokens<8>(stream, p, grid);
  }
}

}  // namespace

bool gemv_supports(const GemmArgs& g, int64_t max_tokens) {
  const bool batched = g.batch > 1;
  return g.x_type == DType::BF16 && g.w_type == DType::BF16 &&
         (g.out_type == DType::F32 || g.out_type == DType::BF16) && g.M >= 1 && g.M <= max_tokens &&
         g.M <= kGemvMaxTokens && g.N >= 1 && g.K >= 1 && g.batch >= 1 && g.K % kBf16PerVec == 0 && aligned16(g.x) &&
         aligned16(g.w) && g.ldx % kBf16PerVec == 0 && g.ldw % kBf16PerVec == 0 &&
         (!batched || (g.stride_x % kBf16PerVec == 0 && g.stride_w % kBf16PerVec == 0));
}

bool gemv_serves(const GemmArgs& g) {
  const int mode = gemv_mode();
  if (mode == 0 || !gemv_supports(g)) return false;
  if (mode == 2) return true;
  const int64_t weight_bytes = g.N * g.K * g.batch * 2;
  return weight_bytes <= kGemvMaxWeightBytes && (g.M <= kGemvAnySizeTokens || weight_bytes <= kGemvSmallWeightBytes);
}

void gemv(cudaStream_t stream, const GemmArgs& g) {
  DSV4_CHECK_ARG(gemv_supports(g), "gemv: unsupported operands (M=", g.M, " N=", g.N, " K=", g.K, ")");
  DSV4_CHECK_ARG(g.batch <= 65535, "gemv: ", g.batch, " batches");
  launch(stream, &g, 1);
}

void gemv_many(cudaStream_t stream, const GemmArgs* gs, int n) {
  DSV4_CHECK_ARG(n >= 1 && n <= kMaxGemvMatrices, "gemv_many: ", n, " matrices (1 to ", kMaxGemvMatrices, ")");
  for (int i = 0; i < n; ++i) {
    const GemmArgs& g = gs[i];
    DSV4_CHECK_ARG(
        gemv_supports(g) && g.batch == 1 && g.x == gs[0].x && g.M == gs[0].M && g.K == gs[0].K && g.ldx == gs[0].ldx,
        "gemv_many: matrix ", i, " (M=", g.M, " N=", g.N, " K=", g.K,
        ") is not a supported unbatched projection of the first one's x");
  }
  launch(stream, gs, n);
}

}  // namespace dsv4::cuda
