// Token selection on the device: greedy argmax (ties to the lowest index, as the CPU reference) and sample_tokens —
// temperature, exact top-p and a Philox draw per row, one block per row, no host sync.
//
// sample_tokens never stores the V weights (129280 floats do not fit in shared memory); each pass over the row
// recomputes w = expf((logit - max) / T) from the logits (L2-resident after the first pass):
//  1. argmax pass: the greedy token, and the max of the softmax.
//  2. top-p < 1: the nucleus boundary by an MSB-first radix select over the weights' float bits (positive floats order
//     as their bits): 4 passes of 8-bit digits, each a per-warp shared histogram of integer masses over the candidates
//     that still match the chosen prefix; warp 0 scans the 256 bins from the top and keeps the digit where the mass
//     above + the bin reaches the target. The result is the exact boundary weight w* and the mass above it; if only
//     some of the tokens tied at w* are needed, a scan in index order keeps the lowest-index ones (the CPU's sort
//     order).
//  3. draw: each thread sums the nucleus mass of its lane (v = lane + 512 k), an exclusive block scan finds the lane
//     holding the point floor(mass * bits / 2^24), and a second scan over that lane's elements finds the token. Integer
//     masses make both scans exact, so exactly one thread claims.
#include <cooperative_groups.h>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/philox.h"

namespace dsv4::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = 512;
constexpr int kArgmaxBlocks = 8;  // blocks of one row's first pass (a portable cluster size)

__device__ __forceinline__ bool better(float v, int32_t i, float bv, int32_t bi) {
  return v > bv || (v == bv && i < bi);
}

// This thread's best (value, lowest index) over l[0, n) of a row whose element 0 has index `first`: 16-byte
// loads, four in flight, where the slice allows (a row of 129280 logits is a lot of loads for one block, so
// their latency, not the compares, is the cost), then the scalar tail. `better` is a total order on the
// non-NaN values and NaNs never win, so the visiting order does not matter. `nonfinite` is set when a value is a
// NaN or an infinity.
__device__ __forceinline__ void thread_argmax(const float* __restrict__ l, int64_t n, int64_t first, float& best,
                                              int32_t& bi, bool& nonfinite) {
  auto consider = [&](float x, int64_t v) {
    nonfinite = nonfinite || !isfinite(x);
    if (better(x, static_cast<int32_t>(first + v), best, bi)) best = x, bi = static_cast<int32_t>(first + v);
  };
  int64_t done = 0;
  if (reinterpret_cast<uintptr_t>(l) % 16 == 0) {
    const float4* l4 = reinterpret_cast<const float4*>(l);
    const int64_t n4 = n / 4;
    int64_t q = threadIdx.x;
    for (; q + 3 * kThreads < n4; q += 4 * kThreads) {
      float4 a[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) a[u] = __ldg(l4 + q + u * kThreads);
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int64_t v = 4 * (q + u * kThreads);
        consider(a[u].x, v), consider(a[u].y, v + 1), consider(a[u].z, v + 2), consider(a[u].w, v + 3);
      }
    }
    for (; q < n4; q += kThreads) {
      const float4 a = __ldg(l4 + q);
      consider(a.x, 4 * q), consider(a.y, 4 * q + 1), consider(a.z, 4 * q + 2), consider(a.w, 4 * q + 3);
    }
    done = 4 * n4;
  }
  for (int64_t v = done + threadIdx.x; v < n; v += kThreads) consider(l[v], v);
}

// (best, bi) of the whole block, the same on every thread (fixed order). s_value / s_index: kThreads / 32 each.
__device__ __forceinline__ void block_argmax(float& best, int32_t& bi, float* s_value, int32_t* s_index) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, off);
    const int32_t oi = __shfl_xor_sync(0xffffffffu, bi, off);
    if (better(ov, oi, best, bi)) best = ov, bi = oi;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) s_value[warp] = best, s_index[warp] = bi;
  __syncthreads();
  for (int w = 0; w < kThreads / 32; ++w) {
    if (better(s_value[w], s_index[w], best, bi)) best = s_value[w], bi = s_index[w];
  }
}

// One block per row.
__global__ void __launch_bounds__(kThreads)
    argmax_kernel(int32_t* __restrict__ out, const float* __restrict__ logits, int64_t V) {
  pdl_wait();
  __shared__ float sv[kThreads / 32];
  __shared__ int32_t si[kThreads / 32];
  float best = -INFINITY;
  int32_t bi = INT32_MAX;
  bool nonfinite = false;  // not reported by argmax
  thread_argmax(logits + static_cast<int64_t>(blockIdx.x) * V, V, 0, best, bi, nonfinite);
  block_argmax(best, bi, sv, si);
  if (threadIdx.x == 0) out[blockIdx.x] = bi == INT32_MAX ? 0 : bi;  // all-NaN row: token 0, as the reference
}

// ---- sample_tokens ----------------------------------------------------------------------------------
static_assert(kThreads == ops::kSampleLanes, "the draw order is lane-major over the block's threads");
constexpr int kWarps = kThreads / 32;
constexpr int kDigitBits = 8, kBins = 1 << kDigitBits;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float token_weight(float logit, float mx, float temperature) {
  return expf((logit - mx) / temperature);
}
__device__ __forceinline__ uint64_t token_mass(float w) { return __float2ull_rn(w * kSamplingMassScale); }

// Exclusive prefix sum over the block (blockDim.x == kThreads); *total gets the sum of all values.
__device__ __forceinline__ uint64_t block_exclusive_scan(uint64_t v, unsigned long long* warp_totals, uint64_t* total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  uint64_t incl = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const uint64_t n = __shfl_up_sync(kFullMask, incl, o);
    if (lane >= o) incl += n;
  }
  __syncthreads();  // a previous call may still be reading warp_totals
  if (lane == 31) warp_totals[warp] = incl;
  __syncthreads();
  uint64_t before = 0, sum = 0;
  for (int w = 0; w < kWarps; ++w) {
    const uint64_t t = warp_totals[w];
    if (w < warp) before += t;
    sum += t;
  }
  *total = sum;
  return before + incl - v;
}

// Clusters of kArgmaxBlocks blocks per row: the first pass (the argmax, all a greedy row needs) is split over
// the cluster's blocks and merged through distributed shared memory in rank order; the sampling passes then
// run on the cluster's first block alone.
__global__ void __cluster_dims__(kArgmaxBlocks, 1, 1) __launch_bounds__(kThreads)
    sample_tokens_kernel(int32_t* __restrict__ out, const float* __restrict__ logits,
                         const ops::TokenSamplingParams* __restrict__ params, ops::NucleusInfo* __restrict__ info,
                         int32_t* __restrict__ nonfinite_rows, int64_t V) {
  pdl_wait();
  __shared__ float s_cluster_best;
  __shared__ int32_t s_cluster_index;
  __shared__ int s_cluster_nonfinite;
  __shared__ unsigned long long s_hist[kWarps][kBins];
  __shared__ unsigned long long s_warp[kWarps];
  __shared__ float s_best[kWarps];
  __shared__ int32_t s_best_index[kWarps];
  __shared__ int s_count[kWarps];
  __shared__ uint32_t s_prefix;
  __shared__ unsigned long long s_above, s_point;
  __shared__ int64_t s_limit;
  __shared__ int s_lane;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row = blockIdx.x / kArgmaxBlocks;
  const int rank = static_cast<int>(blockIdx.x % kArgmaxBlocks);  // == the block's rank in its cluster
  const float* l = logits + row * V;
  const ops::TokenSamplingParams p = params[row];

  // 1. Argmax: the greedy token and the softmax's max. This block's slice of the row (a multiple of 4 long,
  // so every slice starts 16-byte aligned), then the cluster's slices merged in rank order by every block.
  const int64_t slice = ((V + kArgmaxBlocks - 1) / kArgmaxBlocks + 3) / 4 * 4;
  const int64_t begin = min(V, rank * slice), end = min(V, begin + slice);
  float best = -INFINITY;
  int32_t bi = INT32_MAX;
  bool thread_nonfinite = false;
  thread_argmax(l + begin, end - begin, begin, best, bi, thread_nonfinite);
  const int block_nonfinite = __syncthreads_or(thread_nonfinite ? 1 : 0);
  block_argmax(best, bi, s_best, s_best_index);
  if (tid == 0) s_cluster_best = best, s_cluster_index = bi, s_cluster_nonfinite = block_nonfinite;
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync();
  best = -INFINITY, bi = INT32_MAX;
  int row_nonfinite = 0;
  for (int r = 0; r < kArgmaxBlocks; ++r) {
    const float v = *cluster.map_shared_rank(&s_cluster_best, static_cast<unsigned>(r));
    const int32_t i = *cluster.map_shared_rank(&s_cluster_index, static_cast<unsigned>(r));
    row_nonfinite |= *cluster.map_shared_rank(&s_cluster_nonfinite, static_cast<unsigned>(r));
    if (better(v, i, best, bi)) best = v, bi = i;
  }
  cluster.sync();  // every block has read every other block's result: their shared memory may go
  if (rank != 0) return;
  if (nonfinite_rows != nullptr && tid == 0) nonfinite_rows[row] = row_nonfinite != 0 ? 1 : 0;
  if (!(p.temperature > 0.0f)) {
    // argmax_token: a NaN in column 0 is never beaten; elsewhere NaNs never win.
    if (tid == 0) out[row] = bi == INT32_MAX || isnan(l[0]) ? 0 : bi;
    return;
  }
  const float mx = best, T = p.temperature;

  // 2. The nucleus: tokens with weight bits > kstar, and those == kstar with index <= limit.
  uint32_t kstar = 0;
  int64_t limit = V;
  if (p.top_p < 1.0f) {
    uint32_t prefix = 0;
    uint64_t above = 0, target = 0;
    for (int shift = 32 - kDigitBits; shift >= 0; shift -= kDigitBits) {
      const uint32_t fixed = shift + kDigitBits >= 32 ? 0u : ~0u << (shift + kDigitBits);  // bits already chosen
      for (int i = tid; i < kWarps * kBins; i += kThreads) (&s_hist[0][0])[i] = 0;
      __syncthreads();
      for (int64_t v = tid; v < V; v += kThreads) {
        const float w = token_weight(l[v], mx, T);
        const uint32_t key = __float_as_uint(w);
        if ((key & fixed) == prefix) atomicAdd(&s_hist[warp][(key >> shift) & (kBins - 1)], token_mass(w));
      }
      __syncthreads();
      if (tid < kBins) {
        uint64_t sum = 0;
        for (int w = 0; w < kWarps; ++w) sum += s_hist[w][tid];
        s_hist[0][tid] = sum;  // each thread owns its column
      }
      __syncthreads();
      if (warp == 0) {
        // Lane i owns the 8 digits 255 - 8i ... 248 - 8i (descending order of weight).
        constexpr int kPerLane = kBins / 32;
        uint64_t own = 0;
        for (int j = 0; j < kPerLane; ++j) own += s_hist[0][kBins - 1 - kPerLane * lane - j];
        if (shift == 32 - kDigitBits) {  // first pass: every token matched, the bins hold the total
          uint64_t total = own;
#pragma unroll
          for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(kFullMask, total, o);
          const double want = ceil(static_cast<double>(p.top_p) * static_cast<double>(total));
          target = min(max(static_cast<uint64_t>(want), uint64_t{1}), total);
        }
        uint64_t cum = own;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
          const uint64_t n = __shfl_up_sync(kFullMask, cum, o);
          if (lane >= o) cum += n;
        }
        // above < target <= above + (mass in the prefix's range), so some lane reaches the target.
        const unsigned reach = __ballot_sync(kFullMask, above + cum >= target);
        if (lane == __ffs(reach) - 1) {
          uint64_t run = above + cum - own;
          for (int j = 0; j < kPerLane; ++j) {
            const int d = kBins - 1 - kPerLane * lane - j;
            const uint64_t h = s_hist[0][d];
            if (run + h >= target) {
              s_prefix = prefix | (static_cast<uint32_t>(d) << shift);
              s_above = run;
              break;
            }
            run += h;
          }
        }
        if (shift == 32 - kDigitBits && lane == 0) s_point = target;  // share the target with the block
      }
      __syncthreads();
      prefix = s_prefix;
      above = s_above;
      target = s_point;
    }
    kstar = prefix;
    // Tokens tied at the boundary weight: the CPU keeps the lowest-index ones until the target is reached.
    const uint64_t unit = token_mass(__uint_as_float(kstar));  // > 0: the chosen bin has mass
    const uint64_t tied = s_hist[0][kstar & (kBins - 1)] / unit;
    const uint64_t keep = (target - above + unit - 1) / unit;
    if (keep < tied) {
      int64_t seen = 0;
      for (int64_t base = 0; base < V; base += kThreads) {
        const int64_t v = base + tid;
        const bool is_tied = v < V && __float_as_uint(token_weight(l[v], mx, T)) == kstar;
        const unsigned ballot = __ballot_sync(kFullMask, is_tied);
        if (lane == 0) s_count[warp] = __popc(ballot);
        __syncthreads();
        int before = 0, in_tile = 0;
        for (int w = 0; w < kWarps; ++w) {
          if (w < warp) before += s_count[w];
          in_tile += s_count[w];
        }
        if (seen + in_tile >= static_cast<int64_t>(keep)) {  // block-uniform
          const int64_t rank = seen + before + __popc(ballot & ((1u << lane) - 1)) + 1;
          if (is_tied && rank == static_cast<int64_t>(keep)) s_limit = v;
          __syncthreads();
          limit = s_limit;
          break;
        }
        seen += in_tile;
        __syncthreads();
      }
    }
  }

  // 3. The draw: the lane holding the point, then the token within the lane.
  const uint64_t bits = sampling_bits24(p.seed, p.stream, p.counter);
  auto nucleus_mass = [&](int64_t v) -> uint64_t {
    const float w = token_weight(l[v], mx, T);
    const uint32_t key = __float_as_uint(w);
    return key > kstar || (key == kstar && v <= limit) ? token_mass(w) : 0;
  };
  uint64_t mine = 0;
  for (int64_t v = tid; v < V; v += kThreads) mine += nucleus_mass(v);
  uint64_t total = 0;
  uint64_t before = block_exclusive_scan(mine, s_warp, &total);
  if (info != nullptr && tid == 0) info[row] = {mx, kstar, limit, total};
  if (total == 0) {  // only for non-finite logits (outside the op's contract): the argmax, as greedy
    if (tid == 0) out[row] = bi == INT32_MAX ? 0 : bi;
    return;
  }
  const uint64_t point = __umul64hi(total, static_cast<uint64_t>(bits) << 40);  // floor(total * bits / 2^24)
  if (before <= point && point < before + mine) s_lane = tid, s_point = point - before;
  __syncthreads();
  const int64_t lane_of_point = s_lane;
  const uint64_t rest = s_point;
  const int64_t K = (V - lane_of_point + kThreads - 1) / kThreads;  // elements of that lane
  const int64_t chunk = (K + kThreads - 1) / kThreads;              // per thread, consecutive in k
  const int64_t k0 = min(K, tid * chunk), k1 = min(K, k0 + chunk);
  mine = 0;
  for (int64_t k = k0; k < k1; ++k) mine += nucleus_mass(lane_of_point + k * kThreads);
  before = block_exclusive_scan(mine, s_warp, &total);
  if (before <= rest && rest < before + mine) {
    uint64_t x = rest - before;
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t v = lane_of_point + k * kThreads;
      const uint64_t m = nucleus_mass(v);
      if (m > x) {
        out[row] = static_cast<int32_t>(v);
        break;
      }
      x -= m;
    }
  }
}

// ---- speculative decoding ------------------------------------------------------------------------------

// ids[i * (K + 1) + r] = drafts[(r - 1) * b + i] for r >= 1.
__global__ void verify_ids_kernel(int32_t* __restrict__ ids, const int32_t* __restrict__ drafts, int64_t b, int64_t K) {
  pdl_wait();
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= b * (K + 1)) return;
  const int64_t i = t / (K + 1), r = t % (K + 1);
  if (r > 0) ids[t] = drafts[(r - 1) * b + i];
}

// The token at point floor(total * bits / 2^24) of the masses mass(v), in lane-major order (the draw of
// sample_tokens, for any mass function): -1 when total is 0. Every thread of the block calls it; all get the token.
template <typename Mass>
__device__ int32_t block_draw_lane_major(int64_t V, uint32_t bits, Mass&& mass, unsigned long long* s_warp, int* s_lane,
                                         unsigned long long* s_point, int* s_token) {
  const int tid = threadIdx.x;
  uint64_t mine = 0;
  for (int64_t v = tid; v < V; v += kThreads) mine += mass(v);
  uint64_t total = 0;
  uint64_t before = block_exclusive_scan(mine, s_warp, &total);
  if (total == 0) return -1;
  const uint64_t point = __umul64hi(total, static_cast<uint64_t>(bits) << 40);  // floor(total * bits / 2^24)
  if (before <= point && point < before + mine) *s_lane = tid, *s_point = point - before;
  __syncthreads();
  const int64_t lane_of_point = *s_lane;
  const uint64_t rest = *s_point;
  const int64_t K = (V - lane_of_point + kThreads - 1) / kThreads;  // elements of that lane
  const int64_t chunk = (K + kThreads - 1) / kThreads;              // per thread, consecutive in k
  const int64_t k0 = min(K, tid * chunk), k1 = min(K, k0 + chunk);
  mine = 0;
  for (int64_t k = k0; k < k1; ++k) mine += mass(lane_of_point + k * kThreads);
  before = block_exclusive_scan(mine, s_warp, &total);
  if (before <= rest && rest < before + mine) {
    uint64_t x = rest - before;
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t v = lane_of_point + k * kThreads;
      const uint64_t m = mass(v);
      if (m > x) {
        *s_token = static_cast<int32_t>(v);
        break;
      }
      x -= m;
    }
  }
  __syncthreads();
  const int32_t token = *s_token;
  __syncthreads();  // every thread has read the shared results before a later call rewrites them
  return token;
}

// One block per sequence (ops::speculative_accept; backend/cpu/sample.cc is the reference). Thread 0 walks the
// drafts (O(1) each from the nuclei); on a sampled rejection the whole block draws from max(0, p - q).
__global__ void __launch_bounds__(kThreads)
    speculative_accept_kernel(int32_t* __restrict__ out, int32_t* __restrict__ counts, const float* __restrict__ tl,
                              const ops::NucleusInfo* __restrict__ tinfo, const int32_t* __restrict__ ttok,
                              const float* __restrict__ dl, const ops::NucleusInfo* __restrict__ dinfo,
                              const int32_t* __restrict__ dtok, const ops::TokenSamplingParams* __restrict__ params,
                              int64_t b, int64_t K, int64_t V) {
  pdl_wait();
  __shared__ unsigned long long s_warp[kWarps];
  __shared__ unsigned long long s_point;
  __shared__ int s_lane, s_token, s_accepted, s_rejected;
  const int tid = threadIdx.x;
  const int64_t i = blockIdx.x, row0 = i * (K + 1);
  const ops::TokenSamplingParams p = params[i];
  const bool sampled = p.temperature > 0.0f;
  auto prob = [&](const float* l, const ops::NucleusInfo& n, int64_t v) {
    return nucleus_probability(nucleus_mass(l[v], v, n.max, p.temperature, n.boundary, n.limit), n.total);
  };
  if (tid == 0) {
    int64_t a = 0;
    int rejected = 0;
    if (!sampled) {
      while (a < K && dtok[a * b + i] == ttok[row0 + a]) ++a;
    } else {
      for (; a < K; ++a) {
        const int32_t d = dtok[a * b + i];
        const uint32_t bits = sampling_bits24(p.seed, p.stream, philox_word_counter(p.counter + a, 2));
        if (!speculative_accepts(prob(tl + (row0 + a) * V, tinfo[row0 + a], d),
                                 prob(dl + (a * b + i) * V, dinfo[a * b + i], d), bits)) {
          rejected = 1;
          break;
        }
      }
    }
    s_accepted = static_cast<int>(a);
    s_rejected = rejected;
    s_token = ttok[row0 + a];  // greedy: the argmax of row a; sampled without rejection: row K's draw
  }
  __syncthreads();
  const int64_t a = s_accepted;
  int32_t next = s_token;
  if (s_rejected) {
    const float* pl = tl + (row0 + a) * V;
    const float* ql = dl + (a * b + i) * V;
    const ops::NucleusInfo pn = tinfo[row0 + a], qn = dinfo[a * b + i];
    const uint32_t bits = sampling_bits24(p.seed, p.stream, philox_word_counter(p.counter + a, 3));
    __syncthreads();  // s_token was read by every thread
    int32_t t = block_draw_lane_major(
        V, bits,
        [&](int64_t v) -> uint64_t {
          const uint64_t pv = prob(pl, pn, v), qv = prob(ql, qn, v);
          return pv > qv ? pv - qv : 0;
        },
        s_warp, &s_lane, &s_point, &s_token);
    if (t < 0)
      t = block_draw_lane_major(
          V, bits, [&](int64_t v) -> uint64_t { return prob(pl, pn, v); }, s_warp, &s_lane, &s_point, &s_token);
    if (t >= 0) next = t;
  }
  for (int64_t r = tid; r <= K; r += kThreads) {
    out[row0 + r] = r < a ? dtok[r * b + i] : (r == a ? next : -1);
  }
  if (tid == 0) counts[i] = static_cast<int32_t>(a + 1);
}

}  // namespace

void argmax(ExecContext& ctx, Tensor out, Tensor logits) {
  const int64_t R = logits.size(0), V = logits.size(1);
  if (R == 0) return;
  check_launch(launch_kernel(argmax_kernel, dim3(static_cast<unsigned>(R)), dim3(kThreads), 0, stream_of(ctx),
                             out.ptr<int32_t>(), logits.ptr<float>(), V),
               "argmax");
}

void sample_tokens(ExecContext& ctx, Tensor out, Tensor logits, Tensor params, Tensor info, Tensor nonfinite) {
  const int64_t R = logits.size(0), V = logits.size(1);
  if (R == 0) return;
  check_launch(
      launch_kernel(sample_tokens_kernel, dim3(static_cast<unsigned>(R * kArgmaxBlocks)), dim3(kThreads), 0,
                    stream_of(ctx), out.ptr<int32_t>(), logits.ptr<float>(),
                    reinterpret_cast<const ops::TokenSamplingParams*>(params.ptr<uint8_t>()),
                    info.data() != nullptr ? reinterpret_cast<ops::NucleusInfo*>(info.ptr<uint8_t>()) : nullptr,
                    nonfinite.data() != nullptr ? nonfinite.ptr<int32_t>() : nullptr, V),
      "sample_tokens");
}

void speculative_verify_ids(ExecContext& ctx, Tensor ids, Tensor drafts, int64_t K) {
  const int64_t T = ids.numel(), b = T / (K + 1);
  if (T == 0) return;
  check_launch(launch_kernel(verify_ids_kernel, dim3(static_cast<unsigned>((T + 255) / 256)), dim3(256), 0,
                             stream_of(ctx), ids.ptr<int32_t>(), drafts.ptr<int32_t>(), b, K),
               "speculative_verify_ids");
}

void speculative_accept(ExecContext& ctx, Tensor out, Tensor counts, Tensor target_logits, Tensor target_info,
                        Tensor target_tokens, Tensor draft_logits, Tensor draft_info, Tensor draft_tokens,
                        Tensor params) {
  const int64_t b = counts.numel(), K = out.numel() / b - 1, V = target_logits.size(1);
  check_launch(
      launch_kernel(speculative_accept_kernel, dim3(static_cast<unsigned>(b)), dim3(kThreads), 0, stream_of(ctx),
                    out.ptr<int32_t>(), counts.ptr<int32_t>(), target_logits.ptr<float>(),
                    reinterpret_cast<const ops::NucleusInfo*>(target_info.ptr<uint8_t>()), target_tokens.ptr<int32_t>(),
                    draft_logits.ptr<float>(), reinterpret_cast<const ops::NucleusInfo*>(draft_info.ptr<uint8_t>()),
                    draft_tokens.ptr<int32_t>(),
                    reinterpret_cast<const ops::TokenSamplingParams*>(params.ptr<uint8_t>()), b, K, V),
      "speculative_accept");
}

}  // namespace dsv4::cuda
