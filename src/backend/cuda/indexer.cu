// Lightning indexer top-k on CUDA.
//
// score[t, s] = sum_h relu(q[t,h] · k[s]) * softmax_scale * w[t,h] over the visible entries
// s < min((pos+1)/rate, entry capacity), then the exact top-k in the CPU reference's order: descending score,
// ties to the lower index. Every score becomes a 64-bit order key (order-preserving bits of the score, then
// ~index), all distinct, so "the k largest keys" is one well-defined set whatever the processing order.
//
// Tensor-core path (BF16 keys, the default; heads <= 128, Di <= 128):
// - Scoring: a block holds TQ queries (TQ * heads rows padded to 16-row MMA tiles, at most 8 tiles: one per
//   warp, the query's q split into bf16 hi + lo parts held in registers — two MMAs per step, ~16 mantissa
//   bits, so the scores match the fp32 reference to ~1e-5 relative) and walks key tiles of 64 entries that
//   arrive in shared memory by cp.async, double-buffered, read through the page table. relu, the head weights
//   and the sum over a tile's 16 heads happen in registers and shuffles; the per-query sum over head tiles in
//   a fixed order (graph replays and chunked prefill give bit-identical scores).
// - Running top-k, fused: per query a buffer of the best k so far plus `cap` candidates in shared memory and a
//   threshold (the k-th best key so far); a scored entry is appended only when its key beats the threshold.
//   When the buffer nears full, a most-significant-digit radix select (8-bit digits, shared-memory
//   histograms, one shared atomic per key) finds the k-th largest key exactly, the k keys at or above it are
//   bitonic-sorted and kept, and the threshold rises. Appends and gathers are warp-aggregated (one shared atomic
//   per warp). Memory is O(TQ * (k + cap)) per block whatever
//   the context, so prefill never holds the T x S score matrix; with random-like scores only ~k ln(S/k) entries ever
//   pass the threshold.
// - Decode (few queries, long contexts): the entries of each query are split over `splits` blocks (grid x),
//   each keeping the exact top-k of its range; the per-split keys go to a workspace (allocated by the caller
//   outside the graph's eager region) and a merge kernel, one block per query, runs the same running top-k
//   over them. The top-k of the union of per-range top-ks is the global top-k, so the set is exact. A query whose
//   entries fit one split (short contexts under a graph sized for long ones) is finished by that split alone:
//   the idle splits leave at once and the merge skips it.
// SIMT path (F32 keys, or shapes beyond the MMA tiles): one block per query scores in fp32 on CUDA cores with
// the same running top-k.
// FP8 keys (KvStorage::kFp8Row: E4M3 codes and one fp32 scale per entry; H200 2026-12-05): the tensor-core path
// dequantises the codes alone into the bf16 key tile (exact: e4m3 values are bf16 values) and multiplies each entry's
// head-weighted relu sum by its scale (relu(s x) = s relu(x) for s > 0); the SIMT path scores e4m3(code) * s in
// fp32, as the CPU reference's round-tripped keys.
// FP4 keys (--kv-cache-dtype fp8, KvStorage::kFp4Rotated: Hadamard-rotated, E2M1 per 32 with power-of-two scales):
// codes times their scale are bf16 values, so the key tile holds them exactly; the query arrives rotated and
// round-tripped (kv_round_trip), so its bf16 hi part is exact and its lo part zero: one MMA per step, not two.
// The grid depends only on T and the entry capacity (capture-safe); visibility is per query, read from the
// device BatchMeta.
#include <algorithm>
#include <type_traits>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/indexer.h"
#include "backend/cuda/kv_fp8.cuh"
#include "backend/cuda/mma.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 64;                 // key entries per shared-memory tile
constexpr int kMaxQueries = 8;            // queries per block (one MMA row tile each at most)
constexpr int64_t kSplitSlots = 512;      // decode: T * splits blocks
constexpr int64_t kMaxSplits = 128;       // blocks per query
constexpr int64_t kMinSplitEntries = 64;  // entries per split at least (one tile: 32k context, 128 blocks)
constexpr int64_t kSplitMaxTokens = 64;   // queries beyond which no split is needed (enough blocks)
// The merge runs one block per query, alone on its SM at decode: its radix passes, sort stages and offers are
// chains of dependent shared-memory steps, and with 8 warps (2 per scheduler) an H100 issued once per 4.2 cycles
// (ncu, 32k context). 32 warps hide that latency and split each pass four ways further.
constexpr int kMergeThreads = 1024;

__host__ __device__ inline int64_t padded_topk(int64_t topk) {  // the bitonic sort's power of two
  int64_t p = 1;
  while (p < topk) p <<= 1;
  return p;
}

// Descending order of the key = descending score, then ascending index (the CPU's order). -0 is +0.
__device__ __forceinline__ uint64_t order_key(float score, int64_t s) {
  const uint32_t u = __float_as_uint(score == 0.0f ? 0.0f : score);
  const uint32_t k = (u & 0x80000000u) != 0 ? ~u : (u | 0x80000000u);  // larger float, larger k
  return (static_cast<uint64_t>(k) << 32) | (0xffffffffu - static_cast<uint32_t>(s));
}
// Splits that hold entries for a query of `visible` entries: at least kMinSplitEntries each (the merge reads
// only theirs).
__host__ __device__ inline int64_t effective_splits(int64_t visible, int64_t splits) {
  const int64_t need = (visible + kMinSplitEntries - 1) / kMinSplitEntries;
  return need < 1 ? 1 : (need < splits ? need : splits);
}
__device__ __forceinline__ int32_t key_index(uint64_t key) {
  return static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(key));
}

// Appends `key` to list[*count ...] for the lanes with `take`, one atomic per warp. Every lane of the warp calls.
__device__ __forceinline__ void append_warp(uint64_t* list, uint32_t* count, uint64_t key, bool take) {
  const unsigned takers = __ballot_sync(0xffffffffu, take);
  if (takers == 0) return;
  const int lane = threadIdx.x & 31, leader = __ffs(takers) - 1;
  uint32_t at = 0;
  if (lane == leader) at = atomicAdd(count, static_cast<uint32_t>(__popc(takers)));
  at = __shfl_sync(0xffffffffu, at, leader);
  if (take) list[at + __popc(takers & ((1u << lane) - 1))] = key;
}

// The bitonic stages (k, j) with j < 32 of every 32-element segment a warp owns, for k = k_first .. k_last (powers of
// two): the segment lives in the warp's registers, one key a lane, and each stage is one shuffle — no barrier. Lanes
// past `padded` (padded < 32) exchange zeros among themselves and store nothing. Block-wide (NT threads).
template <int NT>
__device__ __forceinline__ void bitonic_warp_stages(uint64_t* a, int64_t padded, int64_t k_first, int64_t k_last) {
  const int lane = threadIdx.x & 31;
  for (int64_t base = threadIdx.x - lane; base < padded; base += NT) {  // warp-uniform
    const int64_t i = base + lane;
    uint64_t x = i < padded ? a[i] : 0;
    for (int64_t k = k_first; k <= k_last; k <<= 1) {
      const bool descending = (i & k) == 0;
      for (int j = static_cast<int>(k < 32 ? k >> 1 : 16); j > 0; j >>= 1) {
        const uint64_t y = __shfl_xor_sync(0xffffffffu, x, j);
        // Of the pair (i, i ^ j) the lower index keeps the larger key in a descending run, the upper the smaller.
        x = ((lane & j) == 0) == descending ? (x > y ? x : y) : (x < y ? x : y);
      }
    }
    if (i < padded) a[i] = x;
  }
}

// Sorts a[0, padded) descending (padded a power of two) by a bitonic network. Block-wide (NT threads); the caller's
// writes to `a` must be behind a barrier; ends with one. Stages with j < 32 run in registers (bitonic_warp_stages),
// the others through shared memory, a pair a thread: 15 barriers for 512 keys where one barrier a stage took 45.
template <int NT>
__device__ void bitonic_sort_descending(uint64_t* a, int64_t padded) {
  bitonic_warp_stages<NT>(a, padded, 2, padded < 32 ? padded : 32);
  __syncthreads();
  for (int64_t k = 64; k <= padded; k <<= 1) {
    for (int64_t j = k >> 1; j >= 32; j >>= 1) {
      for (int64_t q = threadIdx.x; q < padded / 2; q += NT) {
        const int64_t i = ((q & ~(j - 1)) << 1) | (q & (j - 1)), p = i | j;  // the q-th pair of this stage
        const uint64_t x = a[i], y = a[p];
        if ((i & k) == 0 ? x < y : x > y) a[i] = y, a[p] = x;
      }
      __syncthreads();
    }
    bitonic_warp_stages<NT>(a, padded, k, k);
    __syncthreads();
  }
}

// Writes the `topk` largest of the order keys keys[0, n) (n > topk) to cand[0, topk) in descending order.
// `cand` holds `padded` (a power of two >= topk) keys. Block-wide (NT threads); ends with a barrier.
template <int NT>
__device__ void select_topk(const uint64_t* keys, int64_t n, int64_t topk, uint64_t* cand, int64_t padded) {
  // Two histograms, alternating: a pass clears the next pass's while it counts (two barriers a pass, not three).
  __shared__ uint32_t hists[2][256];
  __shared__ uint32_t digit_sh, remaining_sh, exact_sh, count_sh;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  // Radix select: after each pass, `prefix` (the bits under `mask`) is the k-th largest key's prefix and
  // `remaining` how many keys with exactly that prefix belong to the top k.
  uint64_t prefix = 0, mask = 0;
  uint32_t remaining = static_cast<uint32_t>(topk);
  for (int i = threadIdx.x; i < 256; i += NT) hists[0][i] = 0;
  __syncthreads();
  for (int shift = 56, pass = 0; shift >= 0; shift -= 8, ++pass) {
    uint32_t* hist = hists[pass & 1];
    for (int i = threadIdx.x; i < 256; i += NT) hists[(pass + 1) & 1][i] = 0;  // read by the previous pass's scan
    // One shared atomic per key: on an H200 the warp-aggregated count (ballot + match_any per key, one atomic per
    // digit and warp) cost 6-22 us more per Flash-slice decode step from 32k to 1M context (bench/RESULTS.md).
    for (int64_t s = threadIdx.x; s < n; s += NT) {
      const uint64_t c = keys[s];
      if ((c & mask) == prefix) atomicAdd(&hist[static_cast<uint32_t>(c >> shift) & 0xff], 1u);
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
  for (int64_t i = topk + threadIdx.x; i < padded; i += NT) cand[i] = 0;
  __syncthreads();
  for (int64_t base = 0; base < n; base += NT) {
    const int64_t s = base + threadIdx.x;
    const uint64_t c = s < n ? keys[s] : 0;
    append_warp(cand, &count_sh, c, s < n && (c & mask) >= prefix);
  }
  __syncthreads();
  bitonic_sort_descending<NT>(cand, padded);
  __syncthreads();
}

// The running top-k of up to kMaxQueries queries of one block: per query `buf` [topk + cap] order keys (the
// kept best, then appended candidates), its fill `n` and the threshold `thr` (0 until the first selection:
// every real key is > 0). offer() is warp-wide (one atomic per warp), compact() and finish() block-wide (uniform
// arguments) over the NT threads of the block.
template <int NT>
struct RunningTopK {
  uint64_t* buf;   // [queries, topk + cap]
  uint64_t* sort;  // [padded]
  uint32_t* n;     // [queries]
  uint64_t* thr;   // [queries]
  int64_t topk, cap, padded;

  __device__ uint64_t* of(int q) const { return buf + q * (topk + cap); }
  __device__ void reset(int queries) const {
    for (int q = threadIdx.x; q < queries; q += NT) n[q] = 0, thr[q] = 0;
  }
  // Every lane of the warp calls, all for the same query q; key 0 = none.
  __device__ void offer(int q, uint64_t key) const { append_warp(of(q), &n[q], key, key > thr[q]); }
  // Keeps the best topk of query q when fewer than `room` free places remain. Call after a barrier.
  __device__ void compact(int q, int64_t room) const {
    const int64_t count = n[q];
    if (count + room <= topk + cap) return;
    uint64_t* b = of(q);
    select_topk<NT>(b, count, topk, sort, padded);
    for (int64_t r = threadIdx.x; r < topk; r += NT) b[r] = sort[r];
    __syncthreads();
    if (threadIdx.x == 0) n[q] = static_cast<uint32_t>(topk), thr[q] = b[topk - 1];
    __syncthreads();
  }
  // The final best keys of query q, descending, in sort[0, topk) (fewer: padded with 0); returns how many.
  // Call after a barrier.
  __device__ int64_t finish(int q) const {
    const int64_t count = n[q];
    const uint64_t* b = of(q);
    if (count > topk) {
      select_topk<NT>(b, count, topk, sort, padded);
      return topk;
    }
    // At most topk keys: sort them (keys already kept by a selection are sorted, appended ones are not), in the
    // smallest power of two that holds them (a decode split of 64 entries sorts 64 keys, not topk's 512).
    for (int64_t i = threadIdx.x; i < padded; i += NT) sort[i] = i < count ? b[i] : 0;
    __syncthreads();
    bitonic_sort_descending<NT>(sort, padded_topk(count));
    return count;
  }
};

struct ScoreArgs {
  int32_t* out;  // [T, topk] (splits == 1)
  uint64_t* ws;  // [T, splits, topk] order keys (splits > 1)
  const float* q;
  const float* w;
  PagedRows keys;
  const int32_t* pos_of;
  const int32_t* slot_of;
  int64_t T, heads, Di, rate, topk, cap;
  int tq;      // queries per block
  int mtq;     // 16-row head tiles per query
  int splits;  // blocks per query (grid x)
  float scale;
  bool vec;  // key rows are 16-byte aligned and Di % 8 == 0: cp.async
  bool fp8;  // packed kFp8Row keys (4-byte aligned rows, Di % 8 == 0)
  bool fp4;  // packed kFp4Rotated keys (4-byte aligned rows, Di % 8 == 0)
};

// Shared memory of the score kernel for KS k-steps (Dp = 16 KS).
__host__ __device__ inline int64_t key_stride(int ks) { return 16 * ks + 8; }  // bf16 per row: +16 B, no conflicts
// Order keys (buffers, then the sort's), rounded to 16 bytes: the key tiles after them take cp.async.
__host__ __device__ inline int64_t key_words(int tq, int64_t topk, int64_t cap) {
  return (tq * (topk + cap) + padded_topk(topk) + 1) / 2 * 2;
}
__host__ __device__ inline size_t score_shared_bytes(int ks, int tq, int64_t topk, int64_t cap) {
  return sizeof(uint64_t) * static_cast<size_t>(key_words(tq, topk, cap)) +
         sizeof(bf16) * static_cast<size_t>(2 * kTile * key_stride(ks)) +  // key tiles
         sizeof(float) * static_cast<size_t>(kMaxQueries * kTile) +        // per head-tile sums
         sizeof(int32_t) * static_cast<size_t>(2 * kTile) +                // absent-page flags
         sizeof(float) * static_cast<size_t>(2 * kTile);                   // fp8 keys' scales
}

// The block's queries, staged once in fp32 at the start of the same shared memory (before any key or tile is there).
__host__ __device__ inline size_t q_stage_bytes(int tq, int64_t heads, int64_t Di) {
  return sizeof(float) * static_cast<size_t>(tq * heads * Di);
}

template <int KS>
__global__ void __launch_bounds__(kThreads, 2) indexer_score_kernel(ScoreArgs a) {
  pdl_wait();
  extern __shared__ __align__(16) uint64_t smem64[];
  const int64_t padded = padded_topk(a.topk);
  uint64_t* bufs = smem64;
  uint64_t* sortbuf = bufs + a.tq * (a.topk + a.cap);
  bf16* ktile = reinterpret_cast<bf16*>(smem64 + key_words(a.tq, a.topk, a.cap));  // [2][kTile][key_stride]
  float* part = reinterpret_cast<float*>(ktile + 2 * kTile * key_stride(KS));      // [mt][kTile]
  int32_t* absent = reinterpret_cast<int32_t*>(part + kMaxQueries * kTile);        // [2][kTile]
  float* kscale = reinterpret_cast<float*>(absent + 2 * kTile);                    // [2][kTile] (fp8 keys)
  __shared__ uint32_t n_sh[kMaxQueries];
  __shared__ uint64_t thr_sh[kMaxQueries];
  __shared__ int64_t vis_sh[kMaxQueries], lo_sh[kMaxQueries], hi_sh[kMaxQueries];
  __shared__ int32_t slot_sh[kMaxQueries], act_sh[kMaxQueries];
  const RunningTopK<kThreads> top{bufs, sortbuf, n_sh, thr_sh, a.topk, a.cap, padded};
  constexpr int64_t KSTR = 16 * KS + 8;

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, c = lane & 3;
  const int split = static_cast<int>(blockIdx.x);
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * a.tq;
  if (threadIdx.x < a.tq) {
    const int64_t t = t0 + threadIdx.x;
    const int32_t slot = t < a.T ? a.slot_of[t] : -1;
    const int64_t visible = slot < 0 ? 0 : min(static_cast<int64_t>((a.pos_of[t] + 1) / a.rate), a.keys.rows);
    // This split's share of the visible entries, in whole tiles (splits past the context's need stay idle).
    const int64_t eff = effective_splits(visible, a.splits);
    const int64_t per = (visible + eff * kTile - 1) / (eff * kTile) * kTile;
    slot_sh[threadIdx.x] = slot;
    vis_sh[threadIdx.x] = visible;
    lo_sh[threadIdx.x] = split < eff ? min(visible, split * per) : visible;
    hi_sh[threadIdx.x] = split < eff ? min(visible, split * per + per) : visible;
  }
  if (a.splits > 1) {
    // A decode graph sizes its splits for the longest context; at a short one most blocks have nothing to score.
    // They leave before the set-up (the decision is the same for the whole block).
    __syncthreads();
    bool idle = true;
    for (int qi = 0; qi < a.tq; ++qi) {
      idle = idle && (t0 + qi >= a.T || vis_sh[qi] <= a.topk || split >= effective_splits(vis_sh[qi], a.splits));
    }
    if (idle) return;
  }
  // This warp's MMA row tile: query qi, heads hb .. hb + 15; q split into bf16 hi + lo in registers. The head weights
  // load first (their latency hides behind the staging); the block's q rows (contiguous in q) arrive in shared
  // memory by coalesced loads, all in flight at once, and the fragments are read from there: loaded straight into
  // the fragments, the 64 scattered loads per thread ran in ~16 dependent rounds (ncu: ~60% of a decode split's
  // stall samples at one tile).
  const int mt_count = a.tq * a.mtq;
  const int mt = warp % mt_count, nsub = warp / mt_count, nstep = kWarps / mt_count;
  const int qi_w = mt / a.mtq, hb = (mt % a.mtq) * 16;
  const int64_t tw = t0 + qi_w;
  float wg = 0, wg8 = 0;
  if (tw < a.T) {
    if (hb + g < a.heads) wg = a.w[tw * a.heads + hb + g] * a.scale;
    if (hb + g + 8 < a.heads) wg8 = a.w[tw * a.heads + hb + g + 8] * a.scale;
  }
  float* qstage = reinterpret_cast<float*>(smem64);  // [tq, heads, Di]
  {
    const int64_t n = (min(static_cast<int64_t>(a.tq), a.T - t0)) * a.heads * a.Di;
    const float* src = a.q + t0 * a.heads * a.Di;
    if (n % 4 == 0 && (reinterpret_cast<uintptr_t>(src) & 15) == 0) {
      for (int64_t i = threadIdx.x; i < n / 4; i += kThreads) {
        reinterpret_cast<float4*>(qstage)[i] = reinterpret_cast<const float4*>(src)[i];
      }
    } else {
      for (int64_t i = threadIdx.x; i < n; i += kThreads) qstage[i] = src[i];
    }
  }
  __syncthreads();
  uint32_t ahi[KS][4], alo[KS][4];
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t head = hb + g + 8 * (r & 1), col = ks * 16 + 2 * c + 8 * (r >> 1);
      float x0 = 0, x1 = 0;
      if (tw < a.T && head < a.heads) {
        const float* qrow = qstage + (qi_w * a.heads + head) * a.Di;
        if (col < a.Di) x0 = qrow[col];
        if (col + 1 < a.Di) x1 = qrow[col + 1];
      }
      const float h0 = __bfloat162float(__float2bfloat16_rn(x0)), h1 = __bfloat162float(__float2bfloat16_rn(x1));
      ahi[ks][r] = pack_bf16(h0, h1);
      alo[ks][r] = pack_bf16(x0 - h0, x1 - h1);
    }
  }
  __syncthreads();  // the staging area becomes the key buffers and tiles

  top.reset(a.tq);
  // Columns Di .. 16 KS of the key tiles are read as zeros and never written by the loads (the stride's last 8
  // columns are never read): with Di = 16 KS there is nothing to clear.
  if (a.Di < 16 * KS) {
    for (int i = threadIdx.x; i < 2 * kTile * KSTR; i += kThreads) ktile[i] = __float2bfloat16_rn(0.0f);
  }
  __syncthreads();
  // Queries with every visible entry selected: index order (-1 padded), written by the merge when split.
  if (a.splits == 1) {
    for (int qi = 0; qi < a.tq && t0 + qi < a.T; ++qi) {
      if (vis_sh[qi] > a.topk) continue;
      int32_t* sel = a.out + (t0 + qi) * a.topk;
      for (int64_t k = threadIdx.x; k < a.topk; k += kThreads) sel[k] = k < vis_sh[qi] ? static_cast<int32_t>(k) : -1;
    }
  }

  // One pass per distinct slot among the block's queries (adjacent tokens mostly share one sequence).
  for (int p = 0; p < a.tq; ++p) {
    const int32_t slot = slot_sh[p];
    bool first = slot >= 0;
    for (int o = 0; o < p; ++o) first = first && slot_sh[o] != slot;
    if (!first) continue;
    int64_t lo = INT64_MAX, hi = 0;
    for (int o = 0; o < a.tq; ++o) {
      const bool act = slot_sh[o] == slot && vis_sh[o] > a.topk;
      if (threadIdx.x == 0) act_sh[o] = act ? 1 : 0;
      if (act && lo_sh[o] < hi_sh[o]) lo = min(lo, lo_sh[o]), hi = max(hi, hi_sh[o]);
    }
    const int64_t tiles = lo < hi ? (hi - lo + kTile - 1) / kTile : 0;
    auto load = [&](int64_t tile, int stage) {
      const int64_t base = lo + tile * kTile;
      bf16* dst = ktile + stage * kTile * KSTR;
      if (a.fp8 || a.fp4) {  // codes -> bf16 through registers (exact), an fp8 entry's scale aside
        const int chunks = static_cast<int>(a.Di / 8);
        for (int i = threadIdx.x; i < kTile * chunks; i += kThreads) {
          const int e = i / chunks, ch = i % chunks;
          const int64_t s = base + e;
          const uint8_t* row = s < hi ? a.keys.row<const uint8_t>(slot, s) : nullptr;
          uint4 packed = make_uint4(0, 0, 0, 0);
          if (row != nullptr) {
            float v[8];
            if (a.fp4) {
              kvfp8_dev::load8_fp4(row, a.Di, ch, v);  // E2M1 values times their group's power of two
            } else {
              kvfp8_dev::load8_row(row, 1.0f, ch, v);
            }
            uint32_t* w = reinterpret_cast<uint32_t*>(&packed);
#pragma unroll
            for (int j = 0; j < 4; ++j) w[j] = pack_bf16(v[2 * j], v[2 * j + 1]);
          }
          *reinterpret_cast<uint4*>(dst + e * KSTR + ch * 8) = packed;
          if (ch == 0) {
            absent[stage * kTile + e] = s < hi && row == nullptr ? 1 : 0;
            if (a.fp8) kscale[stage * kTile + e] = row != nullptr ? kvfp8_dev::row_scale_of(row, a.Di) : 0.0f;
          }
        }
      } else if (a.vec) {
        const int chunks = static_cast<int>(a.Di / 8);
        for (int i = threadIdx.x; i < kTile * chunks; i += kThreads) {
          const int e = i / chunks, ch = i % chunks;
          const int64_t s = base + e;
          const bf16* row = s < hi ? a.keys.row<bf16>(slot, s) : nullptr;
          cp_async16(dst + e * KSTR + ch * 8, row != nullptr ? row + ch * 8 : a.keys.base, row != nullptr);
          if (ch == 0) absent[stage * kTile + e] = s < hi && row == nullptr ? 1 : 0;
        }
      } else {
        for (int i = threadIdx.x; i < kTile * a.Di; i += kThreads) {
          const int e = static_cast<int>(i / a.Di), d = static_cast<int>(i % a.Di);
          const int64_t s = base + e;
          const bf16* row = s < hi ? a.keys.row<bf16>(slot, s) : nullptr;
          dst[e * KSTR + d] = row != nullptr ? row[d] : __float2bfloat16_rn(0.0f);
          if (d == 0) absent[stage * kTile + e] = s < hi && row == nullptr ? 1 : 0;
        }
      }
      cp_async_commit();
    };
    __syncthreads();  // act_sh
    if (tiles > 0) load(0, 0);
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int stage = static_cast<int>(tile & 1);
      if (tile + 1 < tiles) {
        load(tile + 1, stage ^ 1);
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      const bf16* kt = ktile + stage * kTile * KSTR;
      for (int j = nsub; j < kTile / 8; j += nstep) {  // n-tiles of 8 entries
        float d[4] = {0, 0, 0, 0};
        const bf16* krow = kt + (j * 8 + g) * KSTR + 2 * c;
#pragma unroll
        for (int ks = 0; ks < KS; ++ks) {
          const uint32_t b0 = *reinterpret_cast<const uint32_t*>(krow + ks * 16);
          const uint32_t b1 = *reinterpret_cast<const uint32_t*>(krow + ks * 16 + 8);
          mma_bf16_16816(d, ahi[ks], b0, b1);
          if (!a.fp4) mma_bf16_16816(d, alo[ks], b0, b1);  // an FP4 query's lo part is zero: adds +0 exactly
        }
        float v0 = fmaf(fmaxf(d[0], 0.0f), wg, fmaxf(d[2], 0.0f) * wg8);
        float v1 = fmaf(fmaxf(d[1], 0.0f), wg, fmaxf(d[3], 0.0f) * wg8);
#pragma unroll
        for (int o = 4; o < 32; o <<= 1) {
          v0 += __shfl_xor_sync(0xffffffffu, v0, o);
          v1 += __shfl_xor_sync(0xffffffffu, v1, o);
        }
        if (a.fp8) {  // the entries' scales (the MMAs saw the bare codes)
          v0 *= kscale[stage * kTile + j * 8 + 2 * c];
          v1 *= kscale[stage * kTile + j * 8 + 2 * c + 1];
        }
        if (g == 0) part[mt * kTile + j * 8 + 2 * c] = v0, part[mt * kTile + j * 8 + 2 * c + 1] = v1;
      }
      __syncthreads();
      const int64_t base = lo + tile * kTile;
      // kTile is a multiple of 32: the lanes of a warp share one query and run the same rounds.
      for (int i = threadIdx.x; i < a.tq * kTile; i += kThreads) {
        const int qi = i / kTile, e = i % kTile;
        const int64_t s = base + e;
        uint64_t key = 0;
        if (act_sh[qi] != 0 && s >= lo_sh[qi] && s < hi_sh[qi]) {
          float score = 0;
          for (int m = 0; m < a.mtq; ++m) score += part[(qi * a.mtq + m) * kTile + e];
          // A key page the scheduler never gave (a bug) ranks below every real score instead of as a zero key.
          key = order_key(absent[stage * kTile + e] != 0 ? -INFINITY : score, s);
        }
        top.offer(qi, key);
      }
      __syncthreads();
      for (int qi = 0; qi < a.tq; ++qi) {
        if (act_sh[qi] != 0) top.compact(qi, kTile);
      }
    }
    __syncthreads();
  }
  // Results: the selection (one split) or this split's best keys (the merge takes the union).
  for (int qi = 0; qi < a.tq; ++qi) {
    if (t0 + qi >= a.T || vis_sh[qi] <= a.topk || split >= effective_splits(vis_sh[qi], a.splits)) continue;
    const int64_t got = top.finish(qi);
    const int64_t t = t0 + qi;
    if (a.splits == 1 || effective_splits(vis_sh[qi], a.splits) == 1) {  // the selection itself (no merge)
      for (int64_t r = threadIdx.x; r < a.topk; r += kThreads) a.out[t * a.topk + r] = key_index(sortbuf[r]);
    } else {
      // The merge reads ranks < min(topk, entries per split) of each split: only those are written.
      const int64_t eff = effective_splits(vis_sh[qi], a.splits);
      const int64_t ranks = min(a.topk, (vis_sh[qi] + eff * kTile - 1) / (eff * kTile) * kTile);
      uint64_t* dst = a.ws + (t * a.splits + split) * a.topk;
      for (int64_t r = threadIdx.x; r < ranks; r += kThreads) dst[r] = r < got ? sortbuf[r] : 0;
    }
    __syncthreads();
  }
}

// One block per query: the exact top-k of the union of the splits' best keys (0 = no key).
__global__ void __launch_bounds__(kMergeThreads)
    indexer_merge_kernel(int32_t* __restrict__ out, const uint64_t* __restrict__ ws, const int32_t* __restrict__ pos_of,
                         const int32_t* __restrict__ slot_of, int64_t rows, int64_t rate, int64_t topk, int64_t cap,
                         int splits) {
  pdl_wait();
  extern __shared__ __align__(16) uint64_t smem64[];
  __shared__ uint32_t n_sh[1];
  __shared__ uint64_t thr_sh[1];
  const int64_t padded = padded_topk(topk);
  const RunningTopK<kMergeThreads> top{smem64, smem64 + topk + cap, n_sh, thr_sh, topk, cap, padded};
  const int64_t t = blockIdx.x;
  const int32_t slot = slot_of[t];
  const int64_t visible = slot < 0 ? 0 : min(static_cast<int64_t>((pos_of[t] + 1) / rate), rows);
  int32_t* sel = out + t * topk;
  if (visible <= topk) {
    for (int64_t k = threadIdx.x; k < topk; k += kMergeThreads) sel[k] = k < visible ? static_cast<int32_t>(k) : -1;
    return;
  }
  if (effective_splits(visible, splits) == 1) return;  // one split held every entry: it wrote the selection
  top.reset(1);
  __syncthreads();
  // Split sp holds the best min(topk, its range) keys of its range, descending (zeros past its count). Read
  // rank-major — row r = every split's r-th best key — as many rows per round as the buffer has room for; once
  // the last row read lies wholly at or below the threshold, so does every later row (each split's list
  // descends), and the selection is final.
  __shared__ unsigned long long rowmax_sh, bound_sh;
  const uint64_t* src = ws + t * splits * topk;
  const int64_t eff = effective_splits(visible, splits);
  const int64_t per = (visible + eff * kTile - 1) / (eff * kTile) * kTile;
  const int64_t ranks = min(topk, per);
  // A starting threshold: with r = ceil(topk / eff), each split's r-th best key is at or below r keys of its own
  // list, so at least eff * r >= topk keys of the union are at or above the smallest of them (a split with fewer than
  // r keys gives 0: no bound). Keys below it cannot be selected and are never appended: at 32k context (128 splits of
  // 64 entries, all kept) the selection then runs over the keys at or above every split's 4th best, not all 8,192.
  const int64_t r_bound = (topk + eff - 1) / eff;
  if (threadIdx.x == 0) bound_sh = ~0ull;
  __syncthreads();
  if (r_bound <= ranks) {
    for (int64_t sp = threadIdx.x; sp < eff; sp += kMergeThreads) atomicMin(&bound_sh, src[sp * topk + r_bound - 1]);
  }
  __syncthreads();
  if (threadIdx.x == 0 && r_bound <= ranks && bound_sh != 0 && bound_sh != ~0ull) thr_sh[0] = bound_sh - 1;
  for (int64_t r0 = 0; r0 < ranks;) {
    __syncthreads();  // the previous round's rowmax_sh reads
    if (threadIdx.x == 0) rowmax_sh = 0;
    __syncthreads();
    const int64_t room = topk + cap - static_cast<int64_t>(n_sh[0]);
    const int64_t rows_now = max(int64_t{1}, min(ranks - r0, room / eff));
    // Key i of the round is split i / rows_now's rank r0 + i % rows_now: a warp reads consecutive ranks of a split
    // (coalesced; the splits' lists lie topk keys apart), and each thread issues its loads before offering any.
    // 32-bit index arithmetic: a round holds at most topk + cap keys (a 64-bit division per key was most of this
    // kernel's instructions).
    constexpr int kLoads = 4;
    const uint32_t per_split = static_cast<uint32_t>(rows_now), round_keys = static_cast<uint32_t>(rows_now * eff);
    const uint64_t* round_src = src + r0;
    // Every lane runs every round (warp-wide offer).
    for (uint32_t b = 0; b < round_keys; b += kLoads * kMergeThreads) {
      uint64_t key[kLoads];
      bool last_rank[kLoads];
#pragma unroll
      for (int j = 0; j < kLoads; ++j) {
        const uint32_t i = b + j * kMergeThreads + threadIdx.x, sp = i / per_split, r = i - sp * per_split;
        key[j] = i < round_keys ? round_src[static_cast<int64_t>(sp) * topk + r] : 0;
        last_rank[j] = r == per_split - 1;
      }
#pragma unroll
      for (int j = 0; j < kLoads; ++j) {
        top.offer(0, key[j]);
        if (key[j] != 0 && last_rank[j]) atomicMax(&rowmax_sh, static_cast<unsigned long long>(key[j]));
      }
    }
    r0 += rows_now;
    __syncthreads();
    top.compact(0, eff);  // room for at least one more row
    if (thr_sh[0] != 0 && rowmax_sh <= thr_sh[0]) break;
  }
  __syncthreads();
  top.finish(0);
  for (int64_t r = threadIdx.x; r < topk; r += kMergeThreads) sel[r] = key_index(top.sort[r]);
}

// ---- SIMT path ----------------------------------------------------------------------------------
__host__ __device__ inline int64_t align2(int64_t floats) { return (floats + 1) / 2 * 2; }  // 8-byte aligned

// One block per query, fp32 on CUDA cores: the query's heads in shared memory, the visible keys scored in
// chunks of up to `chunk` entries; the best k so far and the chunk's keys go through select_topk.
template <typename TK>
__global__ void __launch_bounds__(kThreads)
    indexer_topk_simt_kernel(int32_t* __restrict__ out, const float* __restrict__ q, const float* __restrict__ w,
                             PagedRows keys, const int32_t* __restrict__ pos_of, const int32_t* __restrict__ slot_of,
                             int64_t heads, int64_t Di, int64_t rate, int64_t chunk, int64_t topk,
                             float softmax_scale) {
  pdl_wait();
  extern __shared__ float smem[];
  const int64_t qs = Di + 1;      // padded query row: lanes read different heads without conflicts
  float* qsh = smem;              // [heads, Di + 1]
  float* wsh = qsh + heads * qs;  // [heads]
  float* ksh = wsh + heads;       // [kWarps, Di]: each warp's current key
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
      if constexpr (std::is_same_v<TK, uint8_t>) {  // a packed row: the values the CPU's round trip gives
        for (int64_t d = lane; d < Di; d += 32) {
          kw[d] = K != nullptr ? kvfp8::element(K, keys.storage, Di, 0, d) : 0.0f;
        }
      } else {
        for (int64_t d = lane; d < Di; d += 32) kw[d] = K != nullptr ? to_float(K[d]) : 0.0f;
      }
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
    select_topk<kThreads>(best, total, topk, cand, padded);  // ends with a barrier
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

constexpr size_t kSelectStaticShared = 3072;  // select_topk's histograms and scalars, the per-query scalars

int64_t floor_pow2(int64_t v) {
  int64_t p = 1;
  while (p * 2 <= v) p *= 2;
  return p;
}

// Blocks per query for T queries (1 = no split).
int64_t split_count(int64_t T) {
  return T > kSplitMaxTokens ? 1 : floor_pow2(std::min<int64_t>(kMaxSplits, kSplitSlots / std::max<int64_t>(T, 1)));
}

template <typename F>
void set_shared(F* kernel, size_t shared, const char* what) {
  if (shared > 48 * 1024) {
    throw_if_error(cuda_status(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)), what));
  }
}

void launch_score(int ks, dim3 grid, size_t shared, cudaStream_t stream, const ScoreArgs& a) {
  auto go = [&](auto kernel) {
    set_shared(kernel, shared, "cudaFuncSetAttribute(indexer_score)");
    check_launch(launch_kernel(kernel, grid, dim3(kThreads), shared, stream, a), "indexer_score");
  };
  switch (ks) {
    case 1:
      return go(indexer_score_kernel<1>);
    case 2:
      return go(indexer_score_kernel<2>);
    case 3:
      return go(indexer_score_kernel<3>);
    case 4:
      return go(indexer_score_kernel<4>);
    case 5:
      return go(indexer_score_kernel<5>);
    case 6:
      return go(indexer_score_kernel<6>);
    case 7:
      return go(indexer_score_kernel<7>);
    case 8:
      return go(indexer_score_kernel<8>);
    default:
      DSV4_CHECK(false, kUnsupported, "indexer_topk on CUDA: no score kernel for ", ks, " k-steps");
  }
}

void indexer_topk_simt(ExecContext& ctx, Tensor out, Tensor q, Tensor w, const CompressorState& keys,
                       const BatchMeta& meta, float softmax_scale) {
  const int64_t T = meta.num_tokens, heads = q.size(1), Di = q.size(2), topk = out.size(1);
  const size_t fixed = sizeof(float) * static_cast<size_t>(align2(heads * (Di + 1) + heads + kWarps * Di)) +
                       sizeof(uint64_t) * static_cast<size_t>(topk + padded_topk(topk));
  const size_t budget = static_cast<size_t>(max_shared_optin()) - kSelectStaticShared;
  DSV4_CHECK(fixed + sizeof(uint64_t) * 256 <= budget, kUnsupported, "indexer_topk on CUDA: a ", heads, "x", Di,
             " query and top-", topk, " need ", fixed, " bytes of shared memory; the device allows ", budget);
  const int64_t chunk = std::max<int64_t>(
      1, std::min({int64_t{4096}, keys.entries.rows, static_cast<int64_t>((budget - fixed) / sizeof(uint64_t))}));
  const size_t shared = fixed + sizeof(uint64_t) * static_cast<size_t>(chunk);
  auto launch = [&](auto k) {
    using TK = decltype(k);
    set_shared(indexer_topk_simt_kernel<TK>, shared, "cudaFuncSetAttribute(indexer_topk)");
    check_launch(launch_kernel(indexer_topk_simt_kernel<TK>, dim3(static_cast<unsigned>(T)), dim3(kThreads), shared,
                               stream_of(ctx), out.ptr<int32_t>(), q.ptr<float>(), w.ptr<float>(), keys.entries,
                               meta.pos.ptr<int32_t>(), meta.slot.ptr<int32_t>(), heads, Di, keys.rate, chunk, topk,
                               softmax_scale),
                 "indexer_topk");
  };
  if (keys.entries.packed()) return launch(uint8_t{});
  dispatch_float(keys.entries.dtype, "indexer keys", launch);
}

}  // namespace

int64_t indexer_workspace_bytes(int64_t tokens, int64_t topk) {
  const int64_t splits = split_count(tokens);
  return splits > 1 ? tokens * splits * topk * static_cast<int64_t>(sizeof(uint64_t)) : 0;
}

void indexer_topk(ExecContext& ctx, Tensor out, Tensor q, Tensor w, const CompressorState& keys, const BatchMeta& meta,
                  float softmax_scale, Tensor workspace) {
  const int64_t T = meta.num_tokens, heads = q.size(1), Di = q.size(2), topk = out.size(1);
  const int64_t rows = keys.entries.rows;
  if (T == 0) return;
  const PagedRows& kr = keys.entries;
  DSV4_CHECK_ARG(!kr.packed() || ((kr.storage == KvStorage::kFp8Row || kr.storage == KvStorage::kFp4Rotated) &&
                                  kvfp8::shape_ok(kr.storage, Di, 0)),
                 "indexer_topk on CUDA: packed keys must be fp8 rows of a multiple of 8 values or fp4 rows a power "
                 "of two wide, got ",
                 Di, " values");
  const bool packed_tiles = kr.packed() && Di % 8 == 0 && kr.row_bytes % 4 == 0 && kr.offset % 4 == 0 &&
                            kr.page_bytes % 4 == 0 && reinterpret_cast<uintptr_t>(kr.base) % 4 == 0;
  if ((kr.dtype != DType::BF16 && !packed_tiles) || heads > 128 || Di > 128 || topk > (int64_t{1} << 16)) {
    return indexer_topk_simt(ctx, out, q, w, keys, meta, softmax_scale);
  }
  ScoreArgs a{};
  a.out = out.ptr<int32_t>();
  a.q = q.ptr<float>();
  a.w = w.ptr<float>();
  a.keys = kr;
  a.pos_of = meta.pos.ptr<int32_t>();
  a.slot_of = meta.slot.ptr<int32_t>();
  a.T = T, a.heads = heads, a.Di = Di, a.rate = keys.rate, a.topk = topk, a.scale = softmax_scale;
  const int ks = static_cast<int>((Di + 15) / 16);
  a.mtq = static_cast<int>(floor_pow2(2 * ((heads + 15) / 16) - 1));  // next power of two of the head tiles
  a.fp8 = packed_tiles && kr.storage == KvStorage::kFp8Row;
  a.fp4 = packed_tiles && kr.storage == KvStorage::kFp4Rotated;
  a.vec = !packed_tiles && Di % 8 == 0 && kr.row_bytes % 16 == 0 && kr.offset % 16 == 0 && kr.page_bytes % 16 == 0 &&
          reinterpret_cast<uintptr_t>(kr.base) % 16 == 0;
  // Decode: split each query's entries over blocks when the caller gave the workspace for it and the capacity
  // is long enough to matter.
  int64_t splits = std::min(split_count(T), floor_pow2(std::max<int64_t>(1, rows / kMinSplitEntries)));
  if (splits > 1 && workspace.numel() * static_cast<int64_t>(dtype_size(workspace.dtype())) <
                        T * splits * topk * static_cast<int64_t>(sizeof(uint64_t))) {
    splits = 1;  // no (or too small a) workspace: one block per query group
  }
  a.splits = static_cast<int>(splits);
  a.ws = splits > 1 ? static_cast<uint64_t*>(workspace.data()) : nullptr;
  // Prefill: several queries per block share each key tile (MMA rows = queries x heads, at most 8 tiles).
  a.tq = splits == 1 && T >= 512 ? kWarps / a.mtq : 1;
  const size_t budget = static_cast<size_t>(max_shared_optin()) - kSelectStaticShared;
  a.cap = std::max<int64_t>(2 * kTile, 2048 / a.tq);
  while (score_shared_bytes(ks, a.tq, topk, a.cap) > budget && a.cap > kTile) a.cap /= 2;
  const size_t shared = std::max(score_shared_bytes(ks, a.tq, topk, a.cap), q_stage_bytes(a.tq, heads, Di));
  DSV4_CHECK(shared <= budget, kUnsupported, "indexer_topk on CUDA: top-", topk, " needs ", shared,
             " bytes of shared memory; the device allows ", budget);
  const dim3 grid(static_cast<unsigned>(splits), static_cast<unsigned>((T + a.tq - 1) / a.tq));
  launch_score(ks, grid, shared, stream_of(ctx), a);
  if (splits == 1) return;
  int64_t cap = 16384;  // most decode merges (splits x topk keys) in one round
  auto merge_bytes = [&](int64_t c) { return sizeof(uint64_t) * static_cast<size_t>(topk + c + padded_topk(topk)); };
  while (merge_bytes(cap) > budget && cap > kMergeThreads) cap /= 2;
  DSV4_CHECK(merge_bytes(cap) <= budget, kUnsupported, "indexer_topk on CUDA: top-", topk, " needs ", merge_bytes(cap),
             " bytes of shared memory; the device allows ", budget);
  set_shared(indexer_merge_kernel, merge_bytes(cap), "cudaFuncSetAttribute(indexer_merge)");
  check_launch(launch_kernel(indexer_merge_kernel, dim3(static_cast<unsigned>(T)), dim3(kMergeThreads),
                             merge_bytes(cap), stream_of(ctx), out.ptr<int32_t>(), a.ws, a.pos_of, a.slot_of, rows,
                             keys.rate, topk, cap, a.splits),
               "indexer_merge");
}

void indexer_topk(ExecContext& ctx, Tensor out, Tensor q, Tensor w, const CompressorState& keys, const BatchMeta& meta,
                  float softmax_scale) {
  indexer_topk(ctx, out, q, w, keys, meta, softmax_scale, Tensor());
}

}  // namespace dsv4::cuda
