// Lightning indexer top-k on CUDA.
//
// One block per query token. The query's heads live in shared memory; the visible keys (read through the
// sequence's page table) are scored in chunks of up to `chunk` entries:
// score[s] = sum_h relu(q_h · k_s) * softmax_scale * w_h for s < min((pos+1)/rate, entry capacity). Every score
// becomes a 64-bit order key (order-preserving bits of the score, ~index), all distinct, so the exact top-k in
// the CPU reference's order (descending score, ties to the lower index) is kept as a running set: the best k
// so far and the chunk's keys go through a most-significant-digit radix select (8-bit digits, shared-memory
// histograms) that finds the k-th largest key exactly, and the k keys at or above it are gathered and
// bitonic-sorted. Memory stays O(chunk + k) per query whatever the context. Visibility is per query, read from
// the device BatchMeta; the grid depends only on T.
#include <algorithm>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kChunk = 4096;         // order keys scored per selection pass (decode)
constexpr int64_t kPrefillChunk = 1024;  // … with 256 or more queries

constexpr size_t kSelectStaticShared = sizeof(uint32_t) * (256 + 4);  // select_topk's histogram and scalars

__host__ __device__ inline int64_t padded_topk(int64_t topk) {  // the bitonic sort's power of two
  int64_t p = 1;
  while (p < topk) p <<= 1;
  return p;
}
__host__ __device__ inline int64_t align2(int64_t floats) { return (floats + 1) / 2 * 2; }  // 8-byte aligned

// Descending order of the key = descending score, then ascending index (the CPU's order). -0 is +0.
__device__ __forceinline__ uint64_t order_key(float score, int64_t s) {
  const uint32_t u = __float_as_uint(score == 0.0f ? 0.0f : score);
  const uint32_t k = (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);  // larger float, larger k
  return (static_cast<uint64_t>(k) << 32) | (0xffffffffu - static_cast<uint32_t>(s));
}

// Writes the `topk` largest of the order keys keys[0, n) (n > topk) to cand[0, topk) in descending order.
// `cand` holds `padded` (a power of two >= topk) keys.
__device__ void select_topk(const uint64_t* keys, int64_t n, int64_t topk, uint64_t* cand, int64_t padded) {
  __shared__ uint32_t hist[256];
  __shared__ uint32_t digit_sh, remaining_sh, exact_sh, count_sh;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // Radix select: after each pass, `prefix` (the bits under `mask`) is the k-th largest key's prefix and
  // `remaining` how many keys with exactly that prefix belong to the top k.
  uint64_t prefix = 0, mask = 0;
  uint32_t remaining = static_cast<uint32_t>(topk);
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += kThreads) hist[i] = 0;
    __syncthreads();
    for (int64_t s = threadIdx.x; s < n; s += kThreads) {
      const uint64_t c = keys[s];
      if ((c & mask) == prefix) atomicAdd(&hist[(c >> shift) & 0xff], 1u);
    }
    __syncthreads();
    if (warp == 0) {  // the digit where the count from the top reaches `remaining`: lane l owns 8 bins
      uint32_t cnt[8], local = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) local += cnt[j] = hist[255 - 8 * lane - j];
      uint32_t incl = local;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const uint32_t v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
      }
      const unsigned reach = __ballot_sync(0xffffffffu, incl >= remaining);
      if (lane == __ffs(reach) - 1) {
        uint32_t above = incl - local;
        for (int j = 0; j < 8; ++j) {
          if (above + cnt[j] >= remaining) {
            digit_sh = 255 - 8 * lane - j;
            remaining_sh = remaining - above;
            exact_sh = cnt[j] == remaining - above ? 1 : 0;
            break;
          }
          above += cnt[j];
        }
      }
    }
    __syncthreads();
    prefix |= static_cast<uint64_t>(digit_sh) << shift;
    mask |= uint64_t{0xff} << shift;
    remaining = remaining_sh;
    if (exact_sh != 0) break;  // every key with this prefix is in: the set is decided (keys are distinct)
  }
  // Gather the top k (any order: the sort fixes it), pad with 0 (below every key), sort descending.
  if (threadIdx.x == 0) count_sh = 0;
  for (int64_t i = topk + threadIdx.x; i < padded; i += kThreads) cand[i] = 0;
  __syncthreads();
  for (int64_t s = threadIdx.x; s < n; s += kThreads) {
    const uint64_t c = keys[s];
    if ((c & mask) >= prefix) cand[atomicAdd(&count_sh, 1u)] = c;
  }
  __syncthreads();
  for (int64_t k = 2; k <= padded; k <<= 1) {
    for (int64_t j = k >> 1; j > 0; j >>= 1) {
      for (int64_t i = threadIdx.x; i < padded; i += kThreads) {
        const int64_t p = i ^ j;
        if (p > i) {
          const uint64_t a = cand[i], b = cand[p];
          if ((i & k) == 0 ? a < b : a > b) cand[i] = b, cand[p] = a;
        }
      }
      __syncthreads();
    }
  }
  __syncthreads();
}

template <typename TK>
__global__ void __launch_bounds__(kThreads)
    indexer_topk_kernel(int32_t* __restrict__ out, const float* __restrict__ q, const float* __restrict__ w,
                        PagedRows keys, const int32_t* __restrict__ pos_of, const int32_t* __restrict__ slot_of,
                        int64_t heads, int64_t Di, int64_t rate, int64_t chunk, int64_t topk, float softmax_scale) {
  pdl_wait();
  extern __shared__ float smem[];
  const int64_t qs = Di + 1;       // padded query row: lanes read different heads without conflicts
  float* qsh = smem;               // [heads, Di + 1]
  float* wsh = qsh + heads * qs;   // [heads]
  float* ksh = wsh + heads;        // [kWarps, Di]: each warp's current key
  const int64_t padded = padded_topk(topk);
  // [topk + chunk] order keys: the best topk so far, then the current chunk's; then the selection's candidates.
  uint64_t* best = reinterpret_cast<uint64_t*>(smem + align2(heads * qs + heads + kWarps * Di));
  uint64_t* cand = best + topk + chunk;
  const int64_t t = blockIdx.x;
  const int32_t pos = pos_of[t], slot = slot_of[t];
  int32_t* sel = out + t * topk;
  const int64_t visible = slot < 0 ? 0 : min(static_cast<int64_t>((pos + 1) / rate), keys.rows);
  if (visible <= topk) {  // every visible entry, in index order
    for (int64_t k = threadIdx.x; k < topk; k += kThreads) sel[k] = k < visible ? static_cast<int32_t>(k) : -1;
    return;
  }
  for (int64_t i = threadIdx.x; i < heads * Di; i += kThreads) qsh[(i / Di) * qs + i % Di] = q[t * heads * Di + i];
  for (int64_t h = threadIdx.x; h < heads; h += kThreads) wsh[h] = w[t * heads + h] * softmax_scale;
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* kw = ksh + warp * Di;
  int64_t kept = 0;  // keys in best[0, kept)
  for (int64_t base = 0; base < visible; base += chunk) {
    const int64_t n = min(chunk, visible - base);
    for (int64_t s = base + warp; s < base + n; s += kWarps) {
      const TK* K = keys.row<TK>(slot, s);
      for (int64_t d = lane; d < Di; d += 32) kw[d] = K != nullptr ? to_float(K[d]) : 0.0f;
      __syncwarp();
      float acc = 0;
      for (int64_t h = lane; h < heads; h += 32) {
        const float* qh = qsh + h * qs;
        float dot = 0;
        for (int64_t d = 0; d < Di; ++d) dot = fmaf(qh[d], kw[d], dot);
        acc = fmaf(fmaxf(dot, 0.0f), wsh[h], acc);
      }
      acc = warp_sum(acc);
      // A key page the scheduler never gave (a bug) ranks below every real score instead of as a zero key.
      if (lane == 0) best[kept + (s - base)] = order_key(K != nullptr ? acc : -INFINITY, s);
      __syncwarp();  // kw is rewritten for the next key
    }
    __syncthreads();
    const int64_t total = kept + n;
    if (total <= topk) {
      kept = total;
      continue;
    }
    select_topk(best, total, topk, cand, padded);  // ends with a barrier
    for (int64_t r = threadIdx.x; r < topk; r += kThreads) best[r] = cand[r];
    kept = topk;
    __syncthreads();
  }
  // The last chunk always ran a selection (visible > topk), so cand[0, topk) is the sorted top k.
  for (int64_t r = threadIdx.x; r < topk; r += kThreads) {
    sel[r] = static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(cand[r]));
  }
}

int max_shared_optin() {
  static const int bytes = [] {
    int dev = 0, v = 0;
    throw_if_error(cuda_status(cudaGetDevice(&dev), "cudaGetDevice"));
    throw_if_error(cuda_status(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
                               "cudaDeviceGetAttribute(max shared memory per block)"));
    return v;
  }();
  return bytes;
}

}  // namespace

void indexer_topk(ExecContext& ctx, Tensor out, Tensor q, Tensor w, const CompressorState& keys, const BatchMeta& meta,
                  float softmax_scale) {
  const int64_t T = meta.num_tokens, heads = q.size(1), Di = q.size(2), topk = out.size(1);
  const int64_t max_entries = keys.entries.rows;
  if (T == 0) return;
  // Floats (query, weights, one key per warp), then the order keys (best topk + a chunk) and the selection's
  // candidates (8-byte aligned). The chunk is kChunk entries (fewer when the capacity or shared memory is
  // smaller): large enough that short contexts take one pass, small enough that several blocks share an SM.
  const size_t fixed = sizeof(float) * static_cast<size_t>(align2(heads * (Di + 1) + heads + kWarps * Di)) +
                       sizeof(uint64_t) * static_cast<size_t>(topk + padded_topk(topk));
  const size_t budget = static_cast<size_t>(max_shared_optin()) - kSelectStaticShared;
  DSV4_CHECK(fixed + sizeof(uint64_t) * 256 <= budget, kUnsupported, "indexer_topk on CUDA: a ", heads, "x", Di,
             " query and top-", topk, " need ", fixed, " bytes of shared memory; the device allows ", budget);
  // Many queries (prefill): a smaller chunk, so that more blocks share an SM; few (decode): fewer passes.
  const int64_t want = T >= 256 ? kPrefillChunk : kChunk;
  const int64_t chunk =
      std::max<int64_t>(1, std::min({want, max_entries, static_cast<int64_t>((budget - fixed) / sizeof(uint64_t))}));
  const size_t shared = fixed + sizeof(uint64_t) * static_cast<size_t>(chunk);
  dispatch_float(keys.entries.dtype, "indexer keys", [&](auto k) {
    using TK = decltype(k);
    if (shared > 48 * 1024) {
      throw_if_error(
          cuda_status(cudaFuncSetAttribute(indexer_topk_kernel<TK>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(shared)),
                      "cudaFuncSetAttribute(indexer_topk)"));
    }
    check_launch(launch_kernel(indexer_topk_kernel<TK>, dim3(static_cast<unsigned>(T)), dim3(kThreads), shared,
                               stream_of(ctx), out.ptr<int32_t>(), q.ptr<float>(), w.ptr<float>(),
                               keys.entries, meta.pos.ptr<int32_t>(), meta.slot.ptr<int32_t>(), heads, Di, keys.rate,
                               chunk, topk, softmax_scale),
                 "indexer_topk");
  });
}

}  // namespace dsv4::cuda
