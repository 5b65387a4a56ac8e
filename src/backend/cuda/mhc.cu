// Manifold-constrained hyper-connections (mHC) on CUDA: hc_pre (mixing GEMV + Sinkhorn + collapse),
// hc_post and hc_head. Mixing logits, Sinkhorn and the collapse weights are fp32, as in the reference.
#include <algorithm>
#include <type_traits>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/cuda_ops.h"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;

// hc_pre / hc_head run as two kernels so that the N·H-long dot products with `fn` are spread over the GPU
// (at decode, reading one token's `fn`, (2+N)·N × N·H f32, is the whole cost, and one block per token
// cannot stream it fast enough):
//  1. hc_mix_partial_kernel, grid (K-chunks, token groups, row groups): each block reduces its chunk of the
//     flattened streams x [N*H] of TT tokens to RG of the ROWS dot products with `fn` (and the sum of
//     squares), and stores these fp32 partial sums to scratch. The TT tokens share every `fn` value
//     loaded; few rows per thread keep all of a thread's loads in flight at once.
//  2. hc_mix_finish_kernel, grid (H-slices [+ 1 for hc_pre], tokens): sums a token's partials over the
//     chunks in a fixed order, derives the collapse weights and collapses its H-slice; the extra block of
//     hc_pre writes post and runs the Sinkhorn on one warp (one lane per comb entry), beside the collapse.
// No atomics: every sum has a fixed order, so results are bit-reproducible (graph replay == eager).
constexpr int kPartialThreads = 128;
constexpr int kPartialWarps = kPartialThreads / 32;
constexpr int kFinishWarps = kThreads / 32;
constexpr int kMaxChunks = 128;     // per token: bounds the scratch (kMaxChunks * (ROWS + 1) floats)
constexpr int kTargetBlocks = 512;  // partial-kernel blocks to aim for (~4 per SM)

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

// hc_head: the N pre weights; hc_pre: pre, post and the N×N comb logits.
template <int N, bool HEAD>
constexpr int mix_rows() {
  return HEAD ? N : (2 + N) * N;
}

// Rows per partial block: all ROWS when TT tokens share each fn load; 8 at TT = 1 (few tokens, where the
// latency of a thread's loads is the cost).
template <int N, bool HEAD, int TT>
constexpr int row_group() {
  return TT == 1 && mix_rows<N, HEAD>() > 8 ? 8 : mix_rows<N, HEAD>();
}

// partial[t, chunk, k] = sum over the chunk of fn[k, i] * x[t, i] (k < ROWS), of x[t, i]² (k = ROWS), for
// the rows k of row group blockIdx.z (group 0 also stores the sum of squares).
template <int N, bool HEAD, int TT, typename TI>
__global__ void __launch_bounds__(kPartialThreads, 4)
    hc_mix_partial_kernel(float* __restrict__ partial, const TI* __restrict__ x, const float* __restrict__ fn,
                          int64_t T, int64_t width, int64_t chunk) {
  constexpr int ROWS = mix_rows<N, HEAD>(), V = ROWS + 1, RG = row_group<N, HEAD, TT>(), A = RG + 1;
  __shared__ float red[kPartialWarps][TT * A];
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * TT;
  const int k0 = blockIdx.z * RG;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * chunk, end = min(width, begin + chunk);
  // fn is a weight: at TT = 1 (few tokens) the first pass's values — at decode a thread's only pass — are loaded
  // before the wait, while the previous kernel finishes, so only x's loads remain on the critical path (at TT = 4
  // the 4 tokens' accumulators leave no registers for them).
  const int64_t first = begin + threadIdx.x;
  float f_first[RG] = {};
  if constexpr (TT == 1) {
#pragma unroll
    for (int r = 0; r < RG; ++r) f_first[r] = first < end && k0 + r < ROWS ? fn[(k0 + r) * width + first] : 0.0f;
  }
  pdl_wait();
  float acc[TT][A];  // RG dot products, then the sum of squares
#pragma unroll
  for (int j = 0; j < TT; ++j) {
#pragma unroll
    for (int r = 0; r < A; ++r) acc[j][r] = 0.0f;
  }
  // One pass at column i: fn's values from f_first (the prefetched first pass) or loaded row by row as they are used
  // (at TT = 4 all RG rows at once would not fit beside the accumulators).
  auto accumulate = [&](int64_t i, bool prefetched) {
    float v[TT];
#pragma unroll
    for (int j = 0; j < TT; ++j) {
      v[j] = t0 + j < T ? to_float(x[(t0 + j) * width + i]) : 0.0f;
      acc[j][RG] = fmaf(v[j], v[j], acc[j][RG]);
    }
#pragma unroll
    for (int r = 0; r < RG; ++r) {
      const float f = prefetched ? f_first[r] : k0 + r < ROWS ? fn[(k0 + r) * width + i] : 0.0f;
#pragma unroll
      for (int j = 0; j < TT; ++j) acc[j][r] = fmaf(f, v[j], acc[j][r]);
    }
  };
  int64_t i = first;
  if constexpr (TT == 1) {
    if (i < end) accumulate(i, true);
    i += kPartialThreads;
  }
  for (; i < end; i += kPartialThreads) accumulate(i, false);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int j = 0; j < TT; ++j) {
#pragma unroll
    for (int r = 0; r < A; ++r) {
      const float s = warp_sum(acc[j][r]);
      if (lane == 0) red[warp][j * A + r] = s;
    }
  }
  __syncthreads();
  const int64_t chunks = gridDim.x;
  for (int q = threadIdx.x; q < TT * A; q += kPartialThreads) {
    const int64_t t = t0 + q / A;
    const int r = q % A, k = r == RG ? ROWS : k0 + r;
    if (t >= T || (r == RG ? blockIdx.z != 0 : k >= ROWS)) continue;
    float s = 0;
#pragma unroll
    for (int w = 0; w < kPartialWarps; ++w) s += red[w][q];
    partial[(t * chunks + blockIdx.x) * V + k] = s;
  }
}

// One warp: post = 2σ(·) and comb = Sinkhorn(row softmax(·) + eps) of token t from its mixing logits mm
// (already multiplied by the rsqrt of the mean square). Lane i*N + j holds comb[i][j]; row and column
// sums run in ascending order, as in the CPU reference.
template <int N>
__device__ void hc_post_and_comb(float* __restrict__ post, float* __restrict__ comb, const float* mm,
                                 const float* __restrict__ base, const float* __restrict__ scale, int64_t t,
                                 float hc_eps, int sinkhorn_iters) {
  const int lane = threadIdx.x & 31, i = lane / N, j = lane % N;
  const bool live = lane < N * N;
  if (lane < N) post[t * N + lane] = 2.0f * sigmoidf(mm[N + lane] * scale[1] + base[N + lane]);
  float c = live ? mm[2 * N + lane] * scale[2] + base[2 * N + lane] : 0.0f;
  auto row_sum = [&](float v) {
    float s = 0;
#pragma unroll
    for (int jj = 0; jj < N; ++jj) s += __shfl_sync(0xffffffffu, v, i * N + jj);
    return s;
  };
  auto col_sum = [&](float v) {
    float s = 0;
#pragma unroll
    for (int ii = 0; ii < N; ++ii) s += __shfl_sync(0xffffffffu, v, ii * N + j);
    return s;
  };
  float mx = -INFINITY;  // row-wise softmax, then + eps
#pragma unroll
  for (int jj = 0; jj < N; ++jj) mx = fmaxf(mx, __shfl_sync(0xffffffffu, c, i * N + jj));
  c = expf(c - mx);
  c = c / row_sum(c) + hc_eps;
  for (int it = 0; it < sinkhorn_iters; ++it) {  // columns first; then (rows, columns) x (iters - 1)
    if (it > 0) c /= (row_sum(c) + hc_eps);
    c /= (col_sum(c) + hc_eps);
  }
  if (live) comb[t * N * N + lane] = c;
}

// Sums rows [k_begin, k_end) and row ROWS of token t's partials over the chunks into mm: one warp per row,
// lanes over the chunks, then a butterfly (a fixed order). All of a warp's loads are issued before its sums.
template <int V, int WARPS = kFinishWarps>
__device__ __forceinline__ void reduce_partials(float* mm, const float* __restrict__ pt, int chunks, int k_begin,
                                                int k_end) {
  constexpr int kRowsPerWarp = (V + WARPS - 1) / WARPS;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float s[kRowsPerWarp];
#pragma unroll
  for (int q = 0; q < kRowsPerWarp; ++q) {
    s[q] = 0.0f;
    const int k = warp + q * WARPS;
    if (k >= V || !((k >= k_begin && k < k_end) || k == V - 1)) continue;  // warp-uniform
#pragma unroll 4
    for (int c = lane; c < chunks; c += 32) s[q] += pt[c * V + k];
  }
#pragma unroll
  for (int q = 0; q < kRowsPerWarp; ++q) {
    const int k = warp + q * WARPS;
    const float v = warp_sum(s[q]);
    if (lane == 0 && k < V) mm[k] = v;
  }
}

// The weights a collapse block applies to its pre logits, loaded by the finish kernels before their wait (weights:
// no earlier kernel writes them): scale[0] and, in threads < N, base[thread].
struct PreWeights {
  float scale0, base;
};
__device__ __forceinline__ PreWeights load_pre_weights(const float* __restrict__ base, const float* __restrict__ scale,
                                                       int N) {
  return {scale[0], static_cast<int>(threadIdx.x) < N ? base[threadIdx.x] : 0.0f};
}

// Token t's collapse weights, in both finish kernels (every thread calls): the block reduces the partials it needs.
// hc_pre's mixer block takes the post / comb logits (rows N .. ROWS-1), writes post and comb and gets false; a
// collapse block takes the pre logits (rows 0 .. N-1) and gets true with pre[0 .. N) in shared memory.
template <int N, bool HEAD, int WARPS>
__device__ __forceinline__ bool collapse_weights(float* mm, float* pre, bool mixer, const float* partial_t, int chunks,
                                                 int64_t H, float eps, float* post, float* comb, const float* base,
                                                 const float* scale, PreWeights pw, int64_t t, float hc_eps,
                                                 int sinkhorn_iters) {
  constexpr int ROWS = mix_rows<N, HEAD>(), V = ROWS + 1;
  if (mixer) {
    reduce_partials<V, WARPS>(mm, partial_t, chunks, N, ROWS);
  } else {
    reduce_partials<V, WARPS>(mm, partial_t, chunks, 0, N);
  }
  __syncthreads();
  const float r = 1.0f / sqrtf(mm[ROWS] / static_cast<float>(N * H) + eps);
  if (mixer) {
    if (threadIdx.x < ROWS) mm[threadIdx.x] *= r;
    __syncthreads();
    if (threadIdx.x < 32) hc_post_and_comb<N>(post, comb, mm, base, scale, t, hc_eps, sinkhorn_iters);
    return false;
  }
  if (threadIdx.x < N) pre[threadIdx.x] = sigmoidf(mm[threadIdx.x] * r * pw.scale0 + pw.base) + hc_eps;
  __syncthreads();
  return true;
}

// Blocks (s < slices, t): token t's collapse weights from its partials and collapsed[t, h] =
// sum_i pre[i] * x[t, i, h] over H-slice s. hc_pre launches one more block per token, (slices, t), which
// writes post and comb instead.
template <int N, bool HEAD, typename TO, typename TI>
__global__ void __launch_bounds__(kThreads)
    hc_mix_finish_kernel(TO* __restrict__ collapsed, float* __restrict__ post, float* __restrict__ comb,
                         const float* __restrict__ partial, const TI* __restrict__ x, const float* __restrict__ base,
                         const float* __restrict__ scale, int64_t H, int chunks, int slices, float eps, float hc_eps,
                         int sinkhorn_iters) {
  constexpr int V = mix_rows<N, HEAD>() + 1;
  const PreWeights pw = load_pre_weights(base, scale, N);
  pdl_wait();
  __shared__ float mm[V];
  __shared__ float pre[N];
  const int64_t t = blockIdx.y;
  const bool mixer = !HEAD && static_cast<int>(blockIdx.x) == slices;
  if (!collapse_weights<N, HEAD, kFinishWarps>(mm, pre, mixer, partial + t * chunks * V, chunks, H, eps, post, comb,
                                               base, scale, pw, t, hc_eps, sinkhorn_iters)) {
    return;
  }
  const TI* xt = x + t * N * H;
  for (int64_t h = blockIdx.x * static_cast<int64_t>(kThreads) + threadIdx.x; h < H;
       h += static_cast<int64_t>(slices) * kThreads) {
    float a = 0;
#pragma unroll
    for (int i = 0; i < N; ++i) a = fmaf(pre[i], to_float(xt[i * H + h]), a);
    collapsed[t * H + h] = from_float<TO>(a);
  }
}

// hc_pre / hc_head with the RMSNorm that follows them (ops::HcNorm) fused in, for a few tokens (decode): block
// (0, t) collapses token t's whole row in registers, rounds it to the output dtype as the unfused pair stores it,
// sums the squares of the rounded values and writes rms_norm(row) * w — one launch fewer per call; hc_pre's
// block (1, t) writes post and comb as in hc_mix_finish_kernel. More tokens keep the two kernels: the sliced
// collapse spreads a prefill wider.
constexpr int kNormThreads = 1024;
constexpr int kNormPerThread = 8;  // rows of up to 8192 values
constexpr int64_t kNormMaxTokens = 64;

template <int N, bool HEAD, typename TO, typename TI>
__global__ void __launch_bounds__(kNormThreads)
    hc_mix_finish_norm_kernel(TO* __restrict__ out, float* __restrict__ post, float* __restrict__ comb,
                              const float* __restrict__ partial, const TI* __restrict__ x,
                              const float* __restrict__ base, const float* __restrict__ scale,
                              const float* __restrict__ norm_w, int64_t H, int chunks, float eps, float hc_eps,
                              int sinkhorn_iters, float norm_eps) {
  constexpr int V = mix_rows<N, HEAD>() + 1, WARPS = kNormThreads / 32;
  __shared__ float mm[V];
  __shared__ float pre[N];
  __shared__ float red[WARPS];
  __shared__ __align__(16) float ws[kNormThreads * kNormPerThread];
  // The weights, before the wait (no earlier kernel writes them): pre's in registers, and the norm's — all the
  // collapse block applies after its reduction — copied into shared memory by cp.async (rows of whole 16-byte
  // vectors; other rows read them after the reduction).
  const bool mixer = !HEAD && blockIdx.x == 1;
  const bool staged_w = !mixer && H % 4 == 0 && reinterpret_cast<uintptr_t>(norm_w) % 16 == 0;
  if (staged_w) {
    for (int64_t c = threadIdx.x; c < H / 4; c += kNormThreads) cp_async16(ws + 4 * c, norm_w + 4 * c, true);
    cp_async_commit();
  }
  const PreWeights pw = load_pre_weights(base, scale, N);
  pdl_wait();
  const int64_t t = blockIdx.y;
  if (!collapse_weights<N, HEAD, WARPS>(mm, pre, mixer, partial + t * chunks * V, chunks, H, eps, post, comb, base,
                                        scale, pw, t, hc_eps, sinkhorn_iters)) {
    return;
  }
  const TI* xt = x + t * N * H;
  float v[kNormPerThread];
  float ss = 0.0f;
#pragma unroll
  for (int q = 0; q < kNormPerThread; ++q) {
    const int64_t h = threadIdx.x + static_cast<int64_t>(q) * kNormThreads;
    float a = 0.0f;
    if (h < H) {
#pragma unroll
      for (int i = 0; i < N; ++i) a = fmaf(pre[i], to_float(xt[i * H + h]), a);
      a = to_float(from_float<TO>(a));
      ss = fmaf(a, a, ss);
    }
    v[q] = a;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  ss = warp_sum(ss);
  if (lane == 0) red[warp] = ss;
  if (staged_w) cp_async_wait_all();  // every thread's copies, visible to all after the barrier
  __syncthreads();
  ss = warp_sum(lane < WARPS ? red[lane] : 0.0f);  // every warp sums the 32 partials in the same order
  const float rstd = rsqrtf(ss / static_cast<float>(H) + norm_eps);
#pragma unroll
  for (int q = 0; q < kNormPerThread; ++q) {
    const int64_t h = threadIdx.x + static_cast<int64_t>(q) * kNormThreads;
    if (h < H) out[t * H + h] = from_float<TO>(v[q] * rstd * (staged_w ? ws[h] : norm_w[h]));
  }
}

// out[t, j] = post[t, j] * y[t] + sum_i comb[t, i, j] * x[t, i]
template <int N, typename TO, typename TY, typename TX>
__global__ void hc_post_kernel(TO* __restrict__ out, const TY* __restrict__ y, const TX* __restrict__ x,
                               const float* __restrict__ post, const float* __restrict__ comb, int64_t H) {
  pdl_wait();
  const int64_t t = blockIdx.y;
  __shared__ float P[N], C[N * N];
  if (threadIdx.x < N) P[threadIdx.x] = post[t * N + threadIdx.x];
  if (threadIdx.x < N * N) C[threadIdx.x] = comb[t * N * N + threadIdx.x];
  __syncthreads();
  for (int64_t h = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; h < H;
       h += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float xv[N];
#pragma unroll
    for (int i = 0; i < N; ++i) xv[i] = to_float(x[(t * N + i) * H + h]);
    const float yv = to_float(y[t * H + h]);
#pragma unroll
    for (int j = 0; j < N; ++j) {
      float a = P[j] * yv;
#pragma unroll
      for (int i = 0; i < N; ++i) a = fmaf(C[i * N + j], xv[i], a);
      out[(t * N + j) * H + h] = from_float<TO>(a);
    }
  }
}

// ---- prefill: T >= kPrefillTokens -------------------------------------------------------------------------------
// At prefill the per-token kernels above are far from their byte floors: every TT = 4 token block re-reads the whole
// `fn` (1.5 MB at H = 4096) from L2, and the finish / post kernels move 2-byte scalars, one block per token slice.
// These take over from kPrefillTokens tokens on (decode batches keep the kernels above unchanged), chosen on the
// host from the shapes alone; the sums keep a fixed order, so results stay bit-reproducible.
constexpr int64_t kPrefillTokens = 65;

// hc_mix_tiled_kernel: a SIMT f32 skinny GEMM, partial[t, chunk, k] = sum over the chunk of fn[k, i] * x[t, i]
// (the layout hc_mix_partial_kernel writes). Block (chunk, token tile) streams kTileK-wide tiles of x (64 tokens,
// stored as TI) and fn (ROWS rows) through a cp.async ring. A thread owns kTileTM tokens (g + 16 i), one half of the
// rows (h) and 8 of the 64 k of every tile (k-group s): each fn value it reads from shared memory feeds kTileTM * 4
// FMAs, each x value half the rows, and its accumulators stay few enough for 2 blocks per SM without spills. The 8
// k-groups' sums are added in a fixed order at the end (one shuffle, then 4 warps' worth through shared memory).
constexpr int kTileThreads = 256;
constexpr int kTileTokens = 64;
constexpr int kTileK = 64;
constexpr int kTileTM = 4;                                    // tokens per thread
constexpr int kTileGroups = kTileTokens / kTileTM;            // token groups g
constexpr int kTileKGroups = kTileThreads / kTileGroups / 2;  // k-groups s (times 2 row halves h)
constexpr int kTileKPer = kTileK / kTileKGroups;              // k per k-group and tile: 2 steps of 4
constexpr int kTileQuads = 4;                                 // warps holding the same outputs
static_assert(kTileGroups == 16 && kTileKGroups == 8 && kTileKPer == 8, "the thread map below");

// Rows per half, the odd row of an odd ROWS padded with zeros in shared memory (no divergent row loop).
template <int ROWS>
constexpr int half_rows() {
  return (ROWS + 1) / 2;
}

// bf16 keeps 3 stages in flight; f32 tiles are twice the size, 2 stages keep them under the 48 KB static limit.
template <typename TI>
constexpr int tile_stages() {
  return sizeof(TI) == 2 ? 3 : 2;
}

template <int ROWS, typename TI>
constexpr int tile_smem_bytes() {
  constexpr int stage = kTileTokens * kTileK * static_cast<int>(sizeof(TI)) + 2 * half_rows<ROWS>() * kTileK * 4;
  constexpr int red = kTileQuads * kTileTokens * (ROWS + 1) * 4;
  return std::max(tile_stages<TI>() * stage, red);
}

// Element offset of x (t, k) inside a stage's [64][64] tile: the 16-byte chunks of row t are XOR-swizzled so that
// the 8 token rows a half-warp (bf16, 8-byte reads) or a quarter-warp (f32, 16-byte reads) reads at one k hit
// distinct banks.
template <typename TI>
__device__ __forceinline__ int tile_offset(int t, int k) {
  constexpr int per_chunk = 16 / static_cast<int>(sizeof(TI));
  return t * kTileK + ((k / per_chunk) ^ (t & 7)) * per_chunk + k % per_chunk;
}

// 4 consecutive x values of a tile row (k a multiple of 4: never across a chunk) as floats.
__device__ __forceinline__ void tile_load4(const bf16* p, float (&v)[4]) {
  const uint2 u = *reinterpret_cast<const uint2*>(p);
  v[0] = __uint_as_float(u.x << 16);  // bf16 -> f32 is exact: the bits move up
  v[1] = __uint_as_float(u.x & 0xffff0000u);
  v[2] = __uint_as_float(u.y << 16);
  v[3] = __uint_as_float(u.y & 0xffff0000u);
}
__device__ __forceinline__ void tile_load4(const float* p, float (&v)[4]) {
  const float4 u = *reinterpret_cast<const float4*>(p);
  v[0] = u.x;
  v[1] = u.y;
  v[2] = u.z;
  v[3] = u.w;
}

// Stages x[t0 .., k0 ..) and fn[.., k0 ..) into one ring slot, zero past T and past `end`. VEC: 16-byte cp.async
// (rows and pointers 16-byte aligned: a 16-byte piece is then wholly inside or outside [0, end)); otherwise
// element-wise synchronous copies (odd widths), visible after the barrier that precedes their use all the same.
template <int ROWS, bool VEC, typename TI>
__device__ __forceinline__ void tile_issue(TI* __restrict__ xs, float* __restrict__ fs, const TI* __restrict__ x,
                                           const float* __restrict__ fn, int64_t T, int64_t width, int64_t t0,
                                           int64_t k0, int64_t end) {
  if constexpr (VEC) {
    constexpr int per_chunk = 16 / static_cast<int>(sizeof(TI)), row_chunks = kTileK / per_chunk;
    for (int q = threadIdx.x; q < kTileTokens * row_chunks; q += kTileThreads) {
      const int t = q / row_chunks, k = q % row_chunks * per_chunk;
      const bool valid = t0 + t < T && k0 + k < end;
      cp_async16(xs + tile_offset<TI>(t, k), valid ? x + (t0 + t) * width + k0 + k : x, valid);
    }
    for (int q = threadIdx.x; q < ROWS * (kTileK / 4); q += kTileThreads) {
      const int r = q / (kTileK / 4), k = q % (kTileK / 4) * 4;
      const bool valid = k0 + k < end;
      cp_async16(fs + r * kTileK + k, valid ? fn + r * width + k0 + k : fn, valid);
    }
  } else {  // not unrolled: the loads are for odd shapes, and the registers are the accumulators'
#pragma unroll 1
    for (int q = threadIdx.x; q < kTileTokens * kTileK; q += kTileThreads) {
      const int t = q / kTileK, k = q % kTileK;
      xs[tile_offset<TI>(t, k)] = t0 + t < T && k0 + k < end ? x[(t0 + t) * width + k0 + k] : from_float<TI>(0.0f);
    }
#pragma unroll 1
    for (int q = threadIdx.x; q < ROWS * kTileK; q += kTileThreads) {
      const int r = q / kTileK, k = q % kTileK;
      fs[r * kTileK + k] = k0 + k < end ? fn[r * width + k0 + k] : 0.0f;
    }
  }
}

template <int N, bool HEAD, bool VEC, typename TI>
__global__ void __launch_bounds__(kTileThreads, 2)
    hc_mix_tiled_kernel(float* __restrict__ partial, const TI* __restrict__ x, const float* __restrict__ fn, int64_t T,
                        int64_t width, int64_t chunk) {
  constexpr int ROWS = mix_rows<N, HEAD>(), V = ROWS + 1, RH = half_rows<ROWS>(), S = tile_stages<TI>();
  constexpr int kXStage = kTileTokens * kTileK, kFStage = 2 * RH * kTileK;
  __shared__ __align__(16) unsigned char smem[tile_smem_bytes<ROWS, TI>()];
  TI* xs = reinterpret_cast<TI*>(smem);
  float* fs = reinterpret_cast<float*>(smem + S * kXStage * sizeof(TI));
  if constexpr (2 * RH != ROWS) {  // the pad row; the barrier before the first tile's use orders it
    for (int q = threadIdx.x; q < S * kTileK; q += kTileThreads)
      fs[q / kTileK * kFStage + ROWS * kTileK + q % kTileK] = 0.0f;
  }
  pdl_wait();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // A half-warp holds 8 token groups x both row halves at one k-group: its x reads are 8 rows' pieces of one
  // 16-byte chunk column (distinct banks, each read by 2 lanes), its fn reads broadcasts of 2 addresses.
  const int h = lane & 1;
  const int g = ((lane >> 1) & 7) | ((warp & 1) << 3);
  const int s = (lane >> 4) | ((warp >> 1) << 1);
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTileTokens;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * chunk, end = min(width, begin + chunk);
  const int tiles = static_cast<int>((end - begin + kTileK - 1) / kTileK);
  float acc[kTileTM][RH + 1];  // the half's dot products, then the sum of squares
#pragma unroll
  for (int i = 0; i < kTileTM; ++i) {
#pragma unroll
    for (int r = 0; r <= RH; ++r) acc[i][r] = 0.0f;
  }
  for (int st = 0; st < S - 1; ++st) {
    if (st < tiles) {
      tile_issue<ROWS, VEC>(xs + st * kXStage, fs + st * kFStage, x, fn, T, width, t0, begin + st * kTileK, end);
    }
    cp_async_commit();
  }
  for (int it = 0; it < tiles; ++it) {
    cp_async_wait<S - 2>();
    __syncthreads();  // tile it is in; every thread is done with the slot refilled next
    const int next = it + S - 1;
    if (next < tiles) {
      tile_issue<ROWS, VEC>(xs + next % S * kXStage, fs + next % S * kFStage, x, fn, T, width, t0,
                            begin + static_cast<int64_t>(next) * kTileK, end);
    }
    cp_async_commit();
    const TI* xt = xs + it % S * kXStage;
    const float* ft = fs + it % S * kFStage + h * RH * kTileK;
#pragma unroll
    for (int j = 0; j < kTileKPer / 4; ++j) {
      const int k = s * kTileKPer + 4 * j;
      const int xoff = tile_offset<TI>(g, k);  // rows g + 16 i share the swizzle of row g
      float xv[kTileTM][4];
#pragma unroll
      for (int i = 0; i < kTileTM; ++i) {
        tile_load4(xt + xoff + i * kTileGroups * kTileK, xv[i]);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) acc[i][RH] = fmaf(xv[i][kk], xv[i][kk], acc[i][RH]);
      }
#pragma unroll
      for (int r = 0; r < RH; ++r) {
        const float4 f = *reinterpret_cast<const float4*>(ft + r * kTileK + k);
#pragma unroll
        for (int i = 0; i < kTileTM; ++i) {
          acc[i][r] = fmaf(f.x, xv[i][0], acc[i][r]);
          acc[i][r] = fmaf(f.y, xv[i][1], acc[i][r]);
          acc[i][r] = fmaf(f.z, xv[i][2], acc[i][r]);
          acc[i][r] = fmaf(f.w, xv[i][3], acc[i][r]);
        }
      }
    }
  }
  // The warp's 2 k-groups (lane bit 4), then the 4 warps of a token group and row half in order.
#pragma unroll
  for (int i = 0; i < kTileTM; ++i) {
#pragma unroll
    for (int r = 0; r <= RH; ++r) acc[i][r] += __shfl_xor_sync(0xffffffffu, acc[i][r], 16);
  }
  cp_async_wait<0>();  // only empty groups are left; the ring becomes the reduction buffer
  __syncthreads();
  float* red = reinterpret_cast<float*>(smem);  // [quad][token][V]
  if (lane < 16) {
#pragma unroll
    for (int i = 0; i < kTileTM; ++i) {
      float* o = red + ((warp >> 1) * kTileTokens + g + i * kTileGroups) * V;
#pragma unroll
      for (int r = 0; r < RH; ++r) {
        if (h * RH + r < ROWS) o[h * RH + r] = acc[i][r];
      }
      if (h == 0) o[ROWS] = acc[i][RH];  // both halves summed the squares; one stores them
    }
  }
  __syncthreads();
  const int64_t chunks = gridDim.x;
  for (int q = threadIdx.x; q < kTileTokens * V; q += kTileThreads) {
    const int64_t t = t0 + q / V;
    if (t >= T) break;  // q only grows
    float sum = red[q];
#pragma unroll
    for (int w = 1; w < kTileQuads; ++w) sum += red[w * kTileTokens * V + q];
    partial[(t * chunks + blockIdx.x) * V + q % V] = sum;
  }
}

// 8 consecutive elements as raw 32-bit words (loaded ahead of their use, 16 bytes at a time) and their conversions.
template <typename T>
struct Vec8 {
  static constexpr int kWords = 2 * static_cast<int>(sizeof(T));
  unsigned u[kWords];
};
template <typename T>
__device__ __forceinline__ Vec8<T> load8(const T* p) {
  Vec8<T> v;
#pragma unroll
  for (int j = 0; j < Vec8<T>::kWords / 4; ++j) {
    const uint4 w = reinterpret_cast<const uint4*>(p)[j];
    v.u[4 * j] = w.x;
    v.u[4 * j + 1] = w.y;
    v.u[4 * j + 2] = w.z;
    v.u[4 * j + 3] = w.w;
  }
  return v;
}
template <typename T>
__device__ __forceinline__ float elem8(const Vec8<T>& v, int e) {  // e a constant after unrolling
  if constexpr (sizeof(T) == 2) {
    return __uint_as_float(e % 2 == 0 ? v.u[e / 2] << 16 : v.u[e / 2] & 0xffff0000u);
  } else {
    return __uint_as_float(v.u[e]);
  }
}
template <typename T>
__device__ __forceinline__ void store8(T* p, const float (&a)[8]) {
  Vec8<T> v;
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    if constexpr (sizeof(T) == 2) {
      const unsigned b = __bfloat16_as_ushort(from_float<bf16>(a[e]));
      v.u[e / 2] = e % 2 == 0 ? b : v.u[e / 2] | b << 16;
    } else {
      v.u[e] = __float_as_uint(a[e]);
    }
  }
#pragma unroll
  for (int j = 0; j < Vec8<T>::kWords / 4; ++j) {
    reinterpret_cast<uint4*>(p)[j] = make_uint4(v.u[4 * j], v.u[4 * j + 1], v.u[4 * j + 2], v.u[4 * j + 3]);
  }
}

constexpr int kVecUnroll = 2;  // 8-element positions per thread per pass: all of a 4096-wide row's loads at once

// Threads per block of the vectorised per-token kernels: enough for one pass over a row of P positions.
inline int vec_threads(int64_t positions) {
  return static_cast<int>(
      std::clamp<int64_t>((positions + kVecUnroll * 32 - 1) / (kVecUnroll * 32) * 32, 32, kThreads));
}

// Row k of token t's partials summed over the chunks in order (both roles of the vectorised finish use it, so the
// mixer's and the collapse's mean square have the same bits).
template <int V>
__device__ __forceinline__ float chunk_sum(const float* __restrict__ pt, int chunks, int k) {
  float s = 0.0f;
#pragma unroll 8
  for (int c = 0; c < chunks; ++c) s += pt[c * V + k];
  return s;
}

// hc_mix_finish_kernel at prefill (H % 8 == 0): block mixer_blocks + t collapses token t with 16-byte loads, all
// issued before warp 0 derives the collapse weights from the partials; hc_pre's first mixer_blocks blocks write
// post and comb, one warp per token (a block per token would leave 7 warps idle through the serial Sinkhorn).
template <int N, bool HEAD, typename TO, typename TI>
__global__ void __launch_bounds__(kThreads)
    hc_mix_finish_vec_kernel(TO* __restrict__ collapsed, float* __restrict__ post, float* __restrict__ comb,
                             const float* __restrict__ partial, const TI* __restrict__ x,
                             const float* __restrict__ base, const float* __restrict__ scale, int64_t T, int64_t H,
                             int chunks, int mixer_blocks, float eps, float hc_eps, int sinkhorn_iters) {
  constexpr int ROWS = mix_rows<N, HEAD>(), V = ROWS + 1;
  static_assert(V <= 32, "one lane per partial row");
  pdl_wait();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (!HEAD && static_cast<int>(blockIdx.x) < mixer_blocks) {
    __shared__ float mms[kFinishWarps][V];
    const int64_t t = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + warp;
    if (t >= T) return;  // warp-uniform; this branch has no block barrier
    const float v = lane < V ? chunk_sum<V>(partial + t * chunks * V, chunks, lane) : 0.0f;
    const float r = 1.0f / sqrtf(__shfl_sync(0xffffffffu, v, ROWS) / static_cast<float>(N * H) + eps);
    if (lane < ROWS) mms[warp][lane] = v * r;
    __syncwarp();
    hc_post_and_comb<N>(post, comb, mms[warp], base, scale, t, hc_eps, sinkhorn_iters);
    return;
  }
  __shared__ float pre[N];
  const int64_t t = static_cast<int64_t>(blockIdx.x) - (HEAD ? 0 : mixer_blocks);
  const TI* xt = x + t * N * H;
  const int64_t P = H / 8;
  for (int64_t p0 = 0; p0 < P; p0 += static_cast<int64_t>(kVecUnroll) * blockDim.x) {
    Vec8<TI> xv[kVecUnroll][N];
#pragma unroll
    for (int u = 0; u < kVecUnroll; ++u) {
      const int64_t p = p0 + u * blockDim.x + threadIdx.x;
#pragma unroll
      for (int i = 0; i < N; ++i) {
        if (p < P) xv[u][i] = load8(xt + i * H + p * 8);
      }
    }
    if (p0 == 0) {  // block-uniform
      if (warp == 0) {
        const float v = lane < N || lane == ROWS ? chunk_sum<V>(partial + t * chunks * V, chunks, lane) : 0.0f;
        const float r = 1.0f / sqrtf(__shfl_sync(0xffffffffu, v, ROWS) / static_cast<float>(N * H) + eps);
        if (lane < N) pre[lane] = sigmoidf(v * r * scale[0] + base[lane]) + hc_eps;
      }
      __syncthreads();
    }
#pragma unroll
    for (int u = 0; u < kVecUnroll; ++u) {
      const int64_t p = p0 + u * blockDim.x + threadIdx.x;
      if (p >= P) continue;
      float a[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        a[e] = 0.0f;
#pragma unroll
        for (int i = 0; i < N; ++i) a[e] = fmaf(pre[i], elem8(xv[u][i], e), a[e]);
      }
      store8(collapsed + t * H + p * 8, a);
    }
  }
}

// hc_post_kernel at prefill (H % 8 == 0): block t does token t with 16-byte loads, issued before post and comb are
// staged.
template <int N, typename TO, typename TY, typename TX>
__global__ void __launch_bounds__(kThreads)
    hc_post_vec_kernel(TO* __restrict__ out, const TY* __restrict__ y, const TX* __restrict__ x,
                       const float* __restrict__ post, const float* __restrict__ comb, int64_t H) {
  pdl_wait();
  const int64_t t = blockIdx.x, P = H / 8;
  __shared__ float Ps[N], Cs[N * N];
  for (int64_t p0 = 0; p0 < P; p0 += static_cast<int64_t>(kVecUnroll) * blockDim.x) {
    Vec8<TX> xv[kVecUnroll][N];
    Vec8<TY> yv[kVecUnroll];
#pragma unroll
    for (int u = 0; u < kVecUnroll; ++u) {
      const int64_t p = p0 + u * blockDim.x + threadIdx.x;
      if (p < P) {
#pragma unroll
        for (int i = 0; i < N; ++i) xv[u][i] = load8(x + (t * N + i) * H + p * 8);
        yv[u] = load8(y + t * H + p * 8);
      }
    }
    if (p0 == 0) {  // block-uniform
      if (threadIdx.x < N) Ps[threadIdx.x] = post[t * N + threadIdx.x];
      if (threadIdx.x < N * N) Cs[threadIdx.x] = comb[t * N * N + threadIdx.x];
      __syncthreads();
    }
#pragma unroll
    for (int u = 0; u < kVecUnroll; ++u) {
      const int64_t p = p0 + u * blockDim.x + threadIdx.x;
      if (p >= P) continue;
#pragma unroll
      for (int j = 0; j < N; ++j) {
        float a[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) {  // the order of hc_post_kernel
          a[e] = Ps[j] * elem8(yv[u], e);
#pragma unroll
          for (int i = 0; i < N; ++i) a[e] = fmaf(Cs[i * N + j], elem8(xv[u][i], e), a[e]);
        }
        store8(out + (t * N + j) * H + p * 8, a);
      }
    }
  }
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Calls f(std::integral_constant<int, n>) for the supported stream counts.
template <typename F>
void dispatch_streams(int64_t n, F&& f) {
  switch (n) {
    case 1:
      return f(std::integral_constant<int, 1>{});
    case 2:
      return f(std::integral_constant<int, 2>{});
    case 3:
      return f(std::integral_constant<int, 3>{});
    case 4:
      return f(std::integral_constant<int, 4>{});
    default:
      fail(StatusCode::kUnsupported, "mHC on CUDA supports hc_mult 1..4, got ", n);
  }
}

// Grids from the shapes only (graph-capturable): about kTargetBlocks partial blocks, each chunk a multiple
// of the block width; several H-slices per token when there are few tokens.
template <bool HEAD>
void launch_mix(ExecContext& ctx, Tensor collapsed, Tensor post, Tensor comb, Tensor x, Tensor fn, Tensor base,
                Tensor scale, const ops::MhcParams& params, const ops::HcNorm& norm, const char* name) {
  const int64_t T = x.size(0), H = x.size(2);
  if (T == 0) return;
  DSV4_CHECK_ARG(ctx.scratch != nullptr && ctx.scratch->device() == Device::kCUDA, name,
                 " on CUDA needs a device scratch arena (ExecContext::scratch)");
  DSV4_CHECK_ARG(T <= 65535, name, ": at most 65535 tokens per call, got ", T);
  const int64_t width = x.size(1) * H;
  const bool prefill = T >= kPrefillTokens;
  const int tt = T >= 4 ? 4 : 1;  // tokens per partial block: 4 share each fn load; 1 wastes no work at T < 4
  // Partial blocks: TT-token groups (decode) or 64-token tiles (prefill), times chunks of the width, each a
  // multiple of the block's step (kPartialThreads values, or a kTileK tile).
  const int64_t step = prefill ? kTileK : kPartialThreads;
  const int64_t groups = prefill ? (T + kTileTokens - 1) / kTileTokens : (T + tt - 1) / tt;
  const int64_t max_chunks = std::min<int64_t>(kMaxChunks, (width + step - 1) / step);
  const int64_t want_chunks = std::clamp<int64_t>((kTargetBlocks + groups - 1) / groups, 1, max_chunks);
  const int64_t chunk = ((width + want_chunks - 1) / want_chunks + step - 1) / step * step;
  const int chunks = static_cast<int>((width + chunk - 1) / chunk);
  const unsigned slices =
      static_cast<unsigned>(std::clamp<int64_t>(std::min<int64_t>(blocks_for(H, kThreads), kTargetBlocks / T), 1, 64));
  const bool fused_norm = norm.weight.data() != nullptr && norm.weight.dtype() == DType::F32 &&
                          collapsed.dtype() == x.dtype() && T <= kNormMaxTokens && H <= kNormThreads * kNormPerThread;
  ArenaScope scope(*ctx.scratch);
  dispatch_streams(x.size(1), [&](auto nc) {
    constexpr int N = decltype(nc)::value;
    constexpr int V = mix_rows<N, HEAD>() + 1;
    Tensor partial = ctx.scratch->alloc(DType::F32, {T, chunks, V});
    dispatch_float(collapsed.dtype(), name, [&](auto o) {
      dispatch_float(x.dtype(), name, [&](auto i) {
        using TO = decltype(o);
        using TI = decltype(i);
        if (prefill) {
          const bool vec =
              width % (16 / static_cast<int64_t>(sizeof(TI))) == 0 && aligned16(x.data()) && aligned16(fn.data());
          auto tiled_kernel = vec ? hc_mix_tiled_kernel<N, HEAD, true, TI> : hc_mix_tiled_kernel<N, HEAD, false, TI>;
          check_launch(launch_kernel(tiled_kernel, dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(groups)),
                                     dim3(kTileThreads), 0, stream_of(ctx), partial.ptr<float>(), x.ptr<TI>(),
                                     fn.ptr<float>(), T, width, chunk),
                       name);
        } else {
          auto partial_kernel = tt == 4 ? hc_mix_partial_kernel<N, HEAD, 4, TI> : hc_mix_partial_kernel<N, HEAD, 1, TI>;
          const int row_groups = tt == 4 ? 1 : (V - 1 + row_group<N, HEAD, 1>() - 1) / row_group<N, HEAD, 1>();
          check_launch(launch_kernel(partial_kernel,
                                     dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(groups), row_groups),
                                     dim3(kPartialThreads), 0, stream_of(ctx), partial.ptr<float>(), x.ptr<TI>(),
                                     fn.ptr<float>(), T, width, chunk),
                       name);
        }
        if constexpr (std::is_same_v<TO, TI>) {  // the model's case; other pairs keep the two launches
          if (fused_norm) {
            const dim3 ngrid(HEAD ? 1 : 2, static_cast<unsigned>(T));
            check_launch(
                launch_kernel(hc_mix_finish_norm_kernel<N, HEAD, TO, TI>, ngrid, dim3(kNormThreads), 0, stream_of(ctx),
                              collapsed.ptr<TO>(), post.ptr<float>(), comb.ptr<float>(), partial.ptr<float>(),
                              x.ptr<TI>(), base.ptr<float>(), scale.ptr<float>(), norm.weight.ptr<float>(), H, chunks,
                              params.norm_eps, params.hc_eps, static_cast<int>(params.sinkhorn_iters), norm.eps),
                name);
            return;
          }
        }
        if (prefill && H % 8 == 0 && aligned16(x.data()) && aligned16(collapsed.data())) {
          const int threads = vec_threads(H / 8);
          const int64_t mixer_blocks = HEAD ? 0 : (T + threads / 32 - 1) / (threads / 32);
          check_launch(
              launch_kernel(hc_mix_finish_vec_kernel<N, HEAD, TO, TI>, dim3(static_cast<unsigned>(mixer_blocks + T)),
                            dim3(threads), 0, stream_of(ctx), collapsed.ptr<TO>(), post.ptr<float>(), comb.ptr<float>(),
                            partial.ptr<float>(), x.ptr<TI>(), base.ptr<float>(), scale.ptr<float>(), T, H, chunks,
                            static_cast<int>(mixer_blocks), params.norm_eps, params.hc_eps,
                            static_cast<int>(params.sinkhorn_iters)),
              name);
          return;
        }
        const dim3 fgrid(slices + (HEAD ? 0 : 1), static_cast<unsigned>(T));
        check_launch(
            launch_kernel(hc_mix_finish_kernel<N, HEAD, TO, TI>, fgrid, dim3(kThreads), 0, stream_of(ctx),
                          collapsed.ptr<TO>(), post.ptr<float>(), comb.ptr<float>(), partial.ptr<float>(), x.ptr<TI>(),
                          base.ptr<float>(), scale.ptr<float>(), H, chunks, static_cast<int>(slices), params.norm_eps,
                          params.hc_eps, static_cast<int>(params.sinkhorn_iters)),
            name);
      });
    });
  });
  // Unfused: the norm in its own launch, on the stored collapse.
  if (norm.weight.data() != nullptr && !fused_norm) rms_norm(ctx, collapsed, collapsed, norm.weight, norm.eps);
}

}  // namespace

void hc_pre(ExecContext& ctx, Tensor collapsed, Tensor post, Tensor comb, Tensor x, Tensor fn, Tensor base,
            Tensor scale, const ops::MhcParams& params, const ops::HcNorm& norm) {
  DSV4_CHECK_ARG(params.sinkhorn_iters >= 1, "hc_pre: hc_sinkhorn_iters must be >= 1");
  launch_mix<false>(ctx, collapsed, post, comb, x, fn, base, scale, params, norm, "hc_pre");
}

void hc_head(ExecContext& ctx, Tensor out, Tensor x, Tensor fn, Tensor base, Tensor scale, const ops::MhcParams& params,
             const ops::HcNorm& norm) {
  launch_mix<true>(ctx, out, Tensor(), Tensor(), x, fn, base, scale, params, norm, "hc_head");
}

void hc_post(ExecContext& ctx, Tensor out, Tensor y, Tensor x, Tensor post, Tensor comb) {
  const int64_t T = x.size(0), H = x.size(2);
  if (T == 0) return;
  dispatch_streams(x.size(1), [&](auto nc) {
    constexpr int N = decltype(nc)::value;
    dispatch_float(out.dtype(), "hc_post out", [&](auto o) {
      dispatch_float(y.dtype(), "hc_post y", [&](auto yv) {
        dispatch_float(x.dtype(), "hc_post x", [&](auto xv) {
          using TO = decltype(o);
          using TY = decltype(yv);
          using TX = decltype(xv);
          if (T >= kPrefillTokens && H % 8 == 0 && aligned16(out.data()) && aligned16(y.data()) &&
              aligned16(x.data())) {
            check_launch(launch_kernel(hc_post_vec_kernel<N, TO, TY, TX>, dim3(static_cast<unsigned>(T)),
                                       dim3(vec_threads(H / 8)), 0, stream_of(ctx), out.ptr<TO>(), y.ptr<TY>(),
                                       x.ptr<TX>(), post.ptr<float>(), comb.ptr<float>(), H),
                         "hc_post");
            return;
          }
          const dim3 grid(std::max(1u, std::min(blocks_for(H, kThreads), 64u)), static_cast<unsigned>(T));
          check_launch(launch_kernel(hc_post_kernel<N, TO, TY, TX>, grid, dim3(kThreads), 0, stream_of(ctx),
                                     out.ptr<TO>(), y.ptr<TY>(), x.ptr<TX>(), post.ptr<float>(), comb.ptr<float>(), H),
                       "hc_post");
        });
      });
    });
  });
}

}  // namespace dsv4::cuda
