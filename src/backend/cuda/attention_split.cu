// Split-KV sink attention on tensor cores (flash-decoding for MQA with K = V).
//
// Grid (NC, ceil(heads / 16), T), clusters of NC blocks along x. A block owns 16 query heads of one token
// and the NC-th part of that token's key set (window from the batch rows / the slot's ring ∪ HCA entries or
// the indexer's selection, −1 skipped). Keys pass through shared memory 128 rows at a time (one tile per
// block for decode key sets up to 1024) and serve as both K and V (MQA: one row feeds the 16 heads):
// S = Q·Kᵀ on bf16 MMAs with fp32 accumulation, an online softmax per head, O += P·V with P split into
// bf16 hi + lo parts (two MMAs, ~16 mantissa bits: the probabilities lose nothing measurable against the
// fp32 reference). The kernel is latency-bound, so every global read is issued before it is waited on:
// Q and the key rows arrive by cp.async (absent keys zero-filled), the sinks are read up front.
//
// The NC partials (max, sum, O) stay in the blocks' shared memory; after a cluster barrier each block
// merges a slice of the head dimension over the NC partials in rank order through distributed shared
// memory, adds the sink and stores bf16. No global scratch: the op runs inside an eager region of a
// breakable graph, which replays without the forward's arena allocations (an arena allocation there
// would alias live activations). No atomics and a fixed merge order, so graph replays are bit-identical.
//
// NC: the most parts of 8, 4, 2 whose blocks still fit one wave (one block a multiprocessor: the key tile's shared
// memory), else 1 (no split): decode at b <= 4 splits 8 ways, b = 16 (64 token-head groups on Flash) 2 ways — 8 ways
// there queued four waves of short blocks, 60 us a launch on the H100 (2026-12-06).
//
// Shapes: the model's (heads % 16 == 0, head_dim % 64 == 0: Flash 64 × 512, Pro 128 × 512) compile
// without any masking. Other head counts (the default tiny model's 4, test fixtures' 4) and head dims that
// are multiples of 32 run a second instantiation: a head group short of 16 heads fills its missing MMA
// rows with zero queries (cp.async zero-fill), which cost nothing extra on the tensor cores, produce
// finite scores (0) and are never stored; the Q·Kᵀ chains skip the 16-column steps past D. The valid
// heads' arithmetic is the same as in a full group, so the results are exact and deterministic alike.
//
// --kv-cache-dtype fp8: ring and entry rows may be packed fp8 (kFp8Blocks, kv_fp8.cuh). Such a
// row is loaded 8 values at a time (8-byte loads), dequantised in registers and stored to the key tile as bf16 —
// exactly: an e4m3 value times a power of two is a bf16 value, so the MMAs see the cache's values unrounded. The
// batch's own rows (bf16, already round-tripped) keep cp.async.
#include <cooperative_groups.h>
#include <mma.h>

#include <cmath>
#include <string>

#include "backend/cuda/attention_keys.cuh"
#include "backend/cuda/attention_prefill.h"
#include "backend/cuda/attention_split.h"
#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/kv_fp8.cuh"
#include "dsv4/core/log.h"

namespace dsv4::cuda {
namespace {

namespace cg = cooperative_groups;
namespace wmma = nvcuda::wmma;

constexpr int kHeads = 16;  // query heads per block: one MMA row tile
constexpr int kKeys = 128;  // keys per shared-memory tile
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kSplit = 8;                  // key chunks per (token, head group) when splitting: a portable cluster size
constexpr int kMaxTilesPerWarp = 4;        // head-dim tiles of 16 per warp in P·V (D <= 512)
constexpr int kFetchBatch = 4;             // packed key vectors a thread loads before it decodes the first
constexpr int64_t kPackedMinTokens = 256;  // split_attention_packed_kernel from this many batch rows (prefill)

// Shared-memory carve-up for head dim D. Rows are padded by 16 bytes so that MMA tile loads of
// consecutive rows fall into different banks.
struct Layout {
  int ldq, lds, ldp, ldo;                                    // row strides (elements): Q/K (bf16), S (f32), P, O (f32)
  int q, k, s, sp, phi, plo, o, m, l, w, rows, kind, total;  // byte offsets
};

__host__ __device__ constexpr int align128(int n) { return (n + 127) / 128 * 128; }

__host__ __device__ inline Layout layout_for(int D) {
  Layout L{};
  L.ldq = D + 8, L.lds = kKeys + 4, L.ldp = kKeys + 8, L.ldo = D + 4;
  int at = 0;
  auto take = [&at](int bytes) {
    const int here = at;
    at = align128(at + bytes);
    return here;
  };
  L.q = take(kHeads * L.ldq * 2);
  L.k = take(kKeys * L.ldq * 2);
  L.s = take(kHeads * L.lds * 4);
  L.sp = take(kWarps * 16 * 16 * 4);  // S = Q·Kᵀ split over warps: one 16 × 16 partial tile a warp
  L.phi = take(kHeads * L.ldp * 2);
  L.plo = take(kHeads * L.ldp * 2);
  L.o = take(kHeads * L.ldo * 4);
  L.m = take(kHeads * 4);
  L.l = take(kHeads * 4);
  L.w = take(kHeads * (kSplit + 1) * 4);  // merge weight per (head, chunk), then 1 / denominator
  L.rows = take(kKeys * 8);
  L.kind = take(kKeys);  // per key row: 0 plain bf16, 1 packed ring row, 2 packed entry row
  L.total = at;
  return L;
}

// The block's shared memory (layout_for).
struct Smem {
  bf16 *qs, *ks, *phi, *plo;
  float *ss, *sp, *os, *ms, *ls, *ws;
  const void** rows;
  uint8_t* kind;
  int32_t* kpos = nullptr;  // split_attention_packed_kernel's per-key admission (its own static arrays: the layout
  uint8_t* kcls = nullptr;  // of split_attention_kernel stays as it was)
};

__device__ __forceinline__ Smem carve(unsigned char* smem, const Layout& L) {
  Smem m;
  m.qs = reinterpret_cast<bf16*>(smem + L.q);
  m.ks = reinterpret_cast<bf16*>(smem + L.k);
  m.ss = reinterpret_cast<float*>(smem + L.s);
  m.sp = reinterpret_cast<float*>(smem + L.sp);
  m.phi = reinterpret_cast<bf16*>(smem + L.phi);
  m.plo = reinterpret_cast<bf16*>(smem + L.plo);
  m.os = reinterpret_cast<float*>(smem + L.o);
  m.ms = reinterpret_cast<float*>(smem + L.m);
  m.ls = reinterpret_cast<float*>(smem + L.l);
  m.ws = reinterpret_cast<float*>(smem + L.w);
  m.rows = reinterpret_cast<const void**>(smem + L.rows);
  m.kind = smem + L.kind;
  return m;
}

// One tile of `cnt` keys whose rows (s.rows, s.kind) the caller has set: the rows into s.ks (packed fp8 ones
// dequantised, absent ones zero-filled from `zero_src`, any readable address), S = Q·Kᵀ, the online softmax of each
// of the 16 query rows over the keys that `visible(row, key)` admits (and that have a row), O += P·V. Starts with a
// block barrier (the rows visible, the previous tile's K and P consumed); the caller may set the next tile's rows as
// soon as it returns. `first`: the block's first tile, which starts from O = 0, m = −∞, l = 0 without reading them
// (s.os need not be initialised; the same arithmetic as a rescale of zeros, so the same results).
template <bool kAnyShape, typename Visible>
__device__ __forceinline__ void attend_tile(const Smem& s, const Layout& L, const SplitAttnArgs& a, int D, int cnt,
                                            bool first, const bf16* zero_src, Visible visible) {
  const int tid = threadIdx.x, warp = tid >> 5;
  const int vecs = D / 8;           // 16-byte vectors per row
  __syncthreads();                  // rows visible; the previous tile's K and P consumed
  const int nks = (cnt + 15) / 16;  // 16-key steps: rows past cnt up to 16 * nks are zero-filled
  const int tile_vecs = nks * 16 * vecs;
  auto copy_row_vec = [&](int r, int c, const void* src) {  // a bf16 row's vector (absent: zero-filled)
    cp_async16(s.ks + r * L.ldq + c * 8, src != nullptr ? static_cast<const bf16*>(src) + c * 8 : zero_src,
               src != nullptr);
  };
  if (!a.ring.packed() && !a.entries.packed()) {  // bf16 cache (grid-uniform): every row by cp.async
    for (int i = tid; i < tile_vecs; i += kThreads) copy_row_vec(i / vecs, i % vecs, s.rows[i / vecs]);
  } else {
    // Packed fp8 rows are dequantised through registers: kFetchBatch vectors' loads are issued before the first is
    // decoded (one memory round trip per batch, where one per vector made ~20 serial round trips a thread at 640
    // keys); the other rows go by cp.async.
    for (int i0 = tid; i0 < tile_vecs; i0 += kThreads * kFetchBatch) {
      kvfp8_dev::Raw8 raw[kFetchBatch];
      bool packed[kFetchBatch];
#pragma unroll
      for (int b = 0; b < kFetchBatch; ++b) {
        const int i = i0 + b * kThreads, r = i / vecs, c = i % vecs;
        const void* src = i < tile_vecs ? s.rows[r] : nullptr;
        packed[b] = src != nullptr && s.kind[r] != 0;
        if (packed[b]) {
          const int64_t rope = s.kind[r] == 1 ? a.ring.rope_dim : a.entries.rope_dim;
          raw[b] = kvfp8_dev::fetch8_blocks(static_cast<const uint8_t*>(src), D - rope, rope, c);
        } else if (i < tile_vecs) {
          copy_row_vec(r, c, src);
        }
      }
#pragma unroll
      for (int b = 0; b < kFetchBatch; ++b) {
        if (!packed[b]) continue;
        const int i = i0 + b * kThreads, r = i / vecs, c = i % vecs;
        float v[8];
        kvfp8_dev::decode8(raw[b], v);
        uint4 bits;
        uint32_t* w = reinterpret_cast<uint32_t*>(&bits);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const __nv_bfloat162 two = __floats2bfloat162_rn(v[2 * j], v[2 * j + 1]);
          w[j] = *reinterpret_cast<const uint32_t*>(&two);
        }
        *reinterpret_cast<uint4*>(s.ks + r * L.ldq + c * 8) = bits;
      }
    }
  }
  cp_async_wait_all();
  __syncthreads();

  // S = Q·Kᵀ in kChains independent accumulators per warp over its part of the head dim (MMA latency, not throughput,
  // bounds a single chain), summed in a fixed order. With few 16-key steps (decode's short key lists: a step or two a
  // block) one warp would chain all D / 16 MMAs of a step while the others wait; there `parts` warps (a power of two,
  // parts · nks <= kWarps) take one D / parts slice each of a step and their partial tiles are added in part order.
  constexpr int kChains = 4;  // D % 64 == 0: the D / 16 steps are a multiple of 4; else steps past D skipped
  const int parts = kAnyShape || D % 512 != 0 ? 1 : nks == 1 ? 8 : nks == 2 ? 4 : nks <= 4 ? 2 : 1;
  const int ks = warp / parts, part = warp % parts, span = D / parts;  // the warp's key step and head-dim slice
  if (ks < nks) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kChains];
#pragma unroll
    for (int c = 0; c < kChains; ++c) wmma::fill_fragment(acc[c], 0.f);
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> fb;
    for (int kk = part * span; kk < (part + 1) * span; kk += 16 * kChains) {
#pragma unroll
      for (int c = 0; c < kChains; ++c) {
        if (kAnyShape && kk + 16 * c >= D) break;  // D % 64 == 32: the last pass has two steps
        wmma::load_matrix_sync(fa, s.qs + kk + 16 * c, L.ldq);
        wmma::load_matrix_sync(fb, s.ks + ks * 16 * L.ldq + kk + 16 * c, L.ldq);
        wmma::mma_sync(acc[c], fa, fb, acc[c]);
      }
    }
#pragma unroll
    for (int e = 0; e < acc[0].num_elements; ++e) {
      acc[0].x[e] = (acc[0].x[e] + acc[1].x[e]) + (acc[2].x[e] + acc[3].x[e]);
    }
    if (parts == 1) {
      wmma::store_matrix_sync(s.ss + ks * 16, acc[0], L.lds, wmma::mem_row_major);
    } else {
      wmma::store_matrix_sync(s.sp + warp * 256, acc[0], 16, wmma::mem_row_major);
    }
  }
  if (parts > 1) {
    __syncthreads();
    for (int i = tid; i < nks * 256; i += kThreads) {
      const int step = i >> 8, e = i & 255;
      float v = 0.f;
      for (int p = 0; p < parts; ++p) v += s.sp[(step * parts + p) * 256 + e];
      s.ss[(e >> 4) * L.lds + step * 16 + (e & 15)] = v;
    }
  }
  __syncthreads();

  // Online softmax: a half warp per query row, up to 8 keys per thread (those of the nks key steps: P·V reads no
  // other); O's row rescaled by the correction.
  {
    const int h = tid >> 4, j = tid & 15;
    const float m_old = first ? -INFINITY : s.ms[h], l_old = first ? 0.f : s.ls[h];
    float sv[kKeys / 16], mx = -INFINITY;
#pragma unroll
    for (int u = 0; u < kKeys / 16; ++u) {
      const int key = j + 16 * u;
      sv[u] = u < nks && s.rows[key] != nullptr && visible(h, key) ? s.ss[h * L.lds + key] * a.scale : -INFINITY;
      mx = fmaxf(mx, sv[u]);
    }
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    const float m_new = fmaxf(m_old, mx);
    const float corr = m_new == -INFINITY ? 1.f : expf(m_old - m_new);
    float sum = 0.f;
#pragma unroll
    for (int u = 0; u < kKeys / 16; ++u) {
      if (u >= nks) break;
      const int key = j + 16 * u;
      const float p = sv[u] == -INFINITY ? 0.f : expf(sv[u] - m_new);
      sum += p;
      const bf16 hi = __float2bfloat16_rn(p);
      s.phi[h * L.ldp + key] = hi;
      s.plo[h * L.ldp + key] = __float2bfloat16_rn(p - __bfloat162float(hi));
    }
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    __syncwarp();  // every lane of the row has read m_old / l_old
    if (j == 0) s.ms[h] = m_new, s.ls[h] = l_old * corr + sum;
    if (!first && corr != 1.f) {
      for (int d = j; d < D; d += 16) s.os[h * L.ldo + d] *= corr;
    }
  }
  __syncthreads();

  // O += P·V (P = hi + lo): warp w owns the head-dim tiles w, w + 8, ... (accumulators in registers
  // across the key steps).
  {
    const int tiles = D / 16;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kMaxTilesPerWarp];
#pragma unroll
    for (int i = 0; i < kMaxTilesPerWarp; ++i) {
      const int nt = warp + i * kWarps;
      if (first) {
        wmma::fill_fragment(acc[i], 0.f);
      } else if (nt < tiles) {
        wmma::load_matrix_sync(acc[i], s.os + nt * 16, L.ldo, wmma::mem_row_major);
      }
    }
    wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> ahi, alo;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> fb;
    for (int k = 0; k < nks; ++k) {
      wmma::load_matrix_sync(ahi, s.phi + k * 16, L.ldp);
      wmma::load_matrix_sync(alo, s.plo + k * 16, L.ldp);
#pragma unroll
      for (int i = 0; i < kMaxTilesPerWarp; ++i) {
        const int nt = warp + i * kWarps;
        if (nt < tiles) {
          wmma::load_matrix_sync(fb, s.ks + k * 16 * L.ldq + nt * 16, L.ldq);
          wmma::mma_sync(acc[i], ahi, fb, acc[i]);
          wmma::mma_sync(acc[i], alo, fb, acc[i]);
        }
      }
    }
#pragma unroll
    for (int i = 0; i < kMaxTilesPerWarp; ++i) {
      const int nt = warp + i * kWarps;
      if (nt < tiles) wmma::store_matrix_sync(s.os + nt * 16, acc[i], L.ldo, wmma::mem_row_major);
    }
  }
}

// Four values times f, rounded to bf16, stored as one 8-byte vector.
__device__ __forceinline__ void store_bf16x4(bf16* dst, float4 v, float f) {
  const __nv_bfloat162 lo2 = __floats2bfloat162_rn(v.x * f, v.y * f);
  const __nv_bfloat162 hi2 = __floats2bfloat162_rn(v.z * f, v.w * f);
  uint2 packed;
  packed.x = *reinterpret_cast<const uint32_t*>(&lo2);
  packed.y = *reinterpret_cast<const uint32_t*>(&hi2);
  *reinterpret_cast<uint2*>(dst) = packed;
}

// kAnyShape false: heads % 16 == 0 and D % 64 == 0, no masks. true: any heads >= 1 (the last group's
// rows past `heads` are zero queries, not stored) and D % 32 == 0. Both kernels are bounded to 128 registers (two
// blocks an SM where the shared memory allows, as at the tiny model's D = 64): attend_tile's batched fp8 loads took
// them to 168-218 unbounded.
template <int NC, bool kAnyShape>
__global__ void __cluster_dims__(NC, 1, 1) __launch_bounds__(kThreads, 2)
    split_attention_kernel(bf16* __restrict__ out, const bf16* __restrict__ q, const bf16* __restrict__ kv,
                           const float* __restrict__ sinks, SplitAttnArgs a) {
  pdl_wait();
  extern __shared__ __align__(128) unsigned char smem[];
  const int D = static_cast<int>(a.D);
  const Layout L = layout_for(D);
  const Smem sm = carve(smem, L);
  bf16* qs = sm.qs;
  float *os = sm.os, *ms = sm.ms, *ls = sm.ls, *ws = sm.ws;
  const void** rows = sm.rows;
  uint8_t* kind = sm.kind;

  const int tid = threadIdx.x;
  const int rank = static_cast<int>(blockIdx.x);  // grid.x == NC: the block's rank in its cluster
  const int64_t h0 = static_cast<int64_t>(blockIdx.y) * kHeads, t = blockIdx.z;
  const int cols = D / NC, c0 = rank * cols;  // this block's slice of the head dim in the merge
  // The group's real heads: 16 unless the head count is not a multiple of 16 (then the last group has fewer).
  const int hv = kAnyShape ? static_cast<int>(min(static_cast<int64_t>(kHeads), a.heads - h0)) : kHeads;
  bf16* o_out = out + (t * a.heads + h0) * D;
  // Q and the sinks depend on nothing per-step: in flight while the metadata arrives.
  const float sink = tid < hv ? sinks[h0 + tid] : 0.f;
  const int vecs = D / 8;  // 16-byte vectors per row
  const bf16* qsrc = q + (t * a.heads + h0) * D;
  for (int i = tid; i < kHeads * vecs; i += kThreads) {
    const int r = i / vecs, c = i % vecs;
    const bool real = !kAnyShape || r < hv;  // rows past the group's heads: zero queries (nothing read)
    cp_async16(qs + r * L.ldq + c * 8, real ? qsrc + r * D + c * 8 : qsrc, real);  // waited for with the first key tile
  }
  const int32_t pos = a.pos[t], slot = a.slot[t], start = a.start[t];
  if (slot < 0) {  // padding row (the same for the whole cluster): zeros, as the reference
    for (int i = tid; i < hv * cols; i += kThreads) o_out[(i / cols) * D + c0 + i % cols] = from_float<bf16>(0.f);
    cp_async_wait_all();
    return;
  }

  // This block's keys: [k_begin, k_end) of the token's key list (window positions pos-n_win+1 .. pos,
  // then compressed entries), cut into NC parts of a multiple of 16 keys.
  const int64_t n_win = window_keys(a, pos);
  const int64_t n = n_win + compressed_keys(a, pos);
  const int64_t per = ((n + NC - 1) / NC + 15) / 16 * 16;
  const int64_t k_begin = min(n, rank * per), k_end = min(n, k_begin + per);
  // Rows of the state through the sequence's page table; null: an unused selection slot (or a missing page).
  // *k: the row's kind (see Layout::kind).
  auto key_row = [&](int64_t i, uint8_t* k) -> const void* {
    if (i < n_win) return window_key(a, kv, t, pos, pos - n_win + 1 + i, start, slot, k);
    return entry_key(a, t, slot, i - n_win, k);
  };

  // A block without keys merges (m, l, O) = (−∞, 0, 0); otherwise its first tile sets them.
  if (k_begin >= k_end) {
    for (int i = tid; i < kHeads * L.ldo; i += kThreads) os[i] = 0.f;
  }
  if (tid < kHeads) ms[tid] = -INFINITY, ls[tid] = 0.f;

  for (int64_t kb = k_begin; kb < k_end; kb += kKeys) {
    const int cnt = static_cast<int>(min(static_cast<int64_t>(kKeys), k_end - kb));
    if (tid < kKeys) {
      uint8_t k = 0;
      rows[tid] = tid < cnt ? key_row(kb + tid, &k) : nullptr;
      kind[tid] = k;
    }
    attend_tile<kAnyShape>(sm, L, a, D, cnt, kb == k_begin, qsrc, [](int, int) { return true; });
  }
  cp_async_wait_all();  // a block without keys still has Q in flight

  // Merge the NC partials in rank order: weights per (head, chunk) first, then this block's columns.
  if constexpr (NC > 1) {
    cg::this_cluster().sync();  // every block's (m, l, O) complete and visible across the cluster
  } else {
    __syncthreads();
  }
  auto part = [&](float* local, int r) -> const float* {
    if constexpr (NC > 1) {
      return cg::this_cluster().map_shared_rank(local, static_cast<unsigned>(r));
    } else {
      return local;
    }
  };
  if (tid < kHeads) {
    const int h = tid;
    float mr[NC], lr[NC];  // the chunks' (max, sum), fetched together
#pragma unroll
    for (int r = 0; r < NC; ++r) mr[r] = part(ms, r)[h], lr[r] = part(ls, r)[h];
    float m = sink;
#pragma unroll
    for (int r = 0; r < NC; ++r) m = fmaxf(m, mr[r]);
    float l = expf(sink - m);  // the sink joins the denominator only
#pragma unroll
    for (int r = 0; r < NC; ++r) {
      const float w = expf(mr[r] - m);  // 0 for a chunk without keys (m = -inf)
      ws[h * (kSplit + 1) + r] = w;
      l += lr[r] * w;
    }
    ws[h * (kSplit + 1) + kSplit] = 1.f / l;
  }
  __syncthreads();
  const int quads = cols / 4;
  for (int i = tid; i < hv * quads; i += kThreads) {
    const int h = i / quads, d = c0 + (i % quads) * 4;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int r = 0; r < NC; ++r) {
      const float w = ws[h * (kSplit + 1) + r];
      const float4 v = *reinterpret_cast<const float4*>(part(os, r) + h * L.ldo + d);
      acc.x = fmaf(w, v.x, acc.x), acc.y = fmaf(w, v.y, acc.y);
      acc.z = fmaf(w, v.z, acc.z), acc.w = fmaf(w, v.w, acc.w);
    }
    store_bf16x4(o_out + h * D + d, acc, ws[h * (kSplit + 1) + kSplit]);
  }
  if constexpr (NC > 1) cg::this_cluster().sync();  // keep this block's shared memory alive for the others
}

// Prefill with few heads (heads <= 8: the default tiny model's 4): one block serves G = 16 / heads consecutive batch
// rows, their heads stacked into the 16 MMA rows (row r = token r / heads, head r % heads), where a block per token
// left 12 of 16 rows as zero queries and made 8,192 blocks of one 128-key tile for an 8,192-token prompt. When the G
// rows are consecutive positions of one sequence ("shared" keys) the block's key list is the union of their windows
// (window + G - 1 positions), then HCA's entries visible to the last row, or the rows' CSA selections one after
// another; otherwise each row's own list in turn. Each key carries what admits it (KeyClass), checked per query row in
// the softmax. No split, no cluster.
enum KeyClass : uint8_t {
  kWindowKey = 0,  // kpos = position p: visible to a row whose window [lo, pos] holds p
  kEntryKey = 1,   // kpos = HCA entry c: visible to a row with more than c visible entries
  kOwnedKey = 2,   // kpos = the block row (token) whose own key it is
};

__global__ void __launch_bounds__(kThreads, 2)
    split_attention_packed_kernel(bf16* __restrict__ out, const bf16* __restrict__ q, const bf16* __restrict__ kv,
                                  const float* __restrict__ sinks, SplitAttnArgs a, int64_t T, int tokens_per_block) {
  pdl_wait();
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int32_t tpos[kHeads], tlo[kHeads], tcomp[kHeads], tbeg[kHeads + 1];
  __shared__ float wsum[kHeads], winv[kHeads];
  __shared__ bool shared_flag;
  __shared__ int32_t key_pos[kKeys];
  __shared__ uint8_t key_cls[kKeys];
  const int D = static_cast<int>(a.D);
  const Layout L = layout_for(D);
  Smem sm = carve(smem, L);
  sm.kpos = key_pos, sm.kcls = key_cls;
  const int tid = threadIdx.x, G = tokens_per_block, heads = static_cast<int>(a.heads);
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * G;
  const int gn = static_cast<int>(min(static_cast<int64_t>(G), T - t0));  // the block's batch rows
  const int rows_used = gn * heads;
  const int vecs = D / 8;
  const bf16* qsrc = q + t0 * heads * D;  // the block's rows are consecutive [T, heads, D] rows
  for (int i = tid; i < kHeads * vecs; i += kThreads) {
    const int r = i / vecs, c = i % vecs;
    const bool real = r < rows_used;
    cp_async16(sm.qs + r * L.ldq + c * 8, real ? qsrc + r * D + c * 8 : qsrc, real);
  }
  // Per block row g: its window [tlo, tpos] and visible HCA entries (empty for padding rows and rows past T).
  const int32_t slot0 = a.slot[t0], start0 = a.start[t0], pos0 = a.pos[t0];
  if (tid < kHeads) {
    const int g = tid;
    int32_t lo = 1, hi = 0, comp = 0, count = 0;
    const int32_t slot_g = g < gn ? a.slot[t0 + g] : -1, pos_g = g < gn ? a.pos[t0 + g] : 0;
    // Shared keys: every row of the block real, of one sequence, at consecutive positions of one chunk.
    const bool same = g >= gn || (slot_g == slot0 && a.start[t0 + g] == start0 && pos_g == pos0 + g);
    const bool all_same = __all_sync(0x0000ffffu, same);
    if (g == 0) shared_flag = all_same && slot0 >= 0;
    if (slot_g >= 0) {
      const int64_t n_win = min(static_cast<int64_t>(pos_g) + 1, a.window);
      lo = static_cast<int32_t>(pos_g - n_win + 1), hi = pos_g;
      if (a.rate > 0) {
        comp = static_cast<int32_t>(
            a.selected != nullptr ? a.topk : min(static_cast<int64_t>((pos_g + 1) / a.rate), a.entries.rows));
      }
      count = static_cast<int32_t>(n_win) + comp;
    }
    tlo[g] = lo, tpos[g] = hi, tcomp[g] = comp;
    // Own-list offsets (the separate mode): an exclusive scan over the 16 lanes.
    int32_t incl = count;
    for (int o = 1; o < kHeads; o <<= 1) {
      const int32_t v = __shfl_up_sync(0x0000ffffu, incl, o);
      if (g >= o) incl += v;
    }
    tbeg[g] = incl - count;
    if (g == kHeads - 1) tbeg[kHeads] = incl;
  }
  if (tid < kHeads) sm.ms[tid] = -INFINITY, sm.ls[tid] = 0.f;
  __syncthreads();  // tlo / tpos / tcomp / tbeg / shared_flag
  const bool shared_keys = shared_flag;

  const int64_t last = pos0 + gn - 1;
  const int64_t lo0 = tlo[0];
  const int64_t n_wu = shared_keys ? last - lo0 + 1 : 0;  // the union of the rows' windows
  int64_t n_keys = tbeg[kHeads];
  if (shared_keys) {
    const int64_t comp = a.rate == 0 ? 0 : a.selected != nullptr ? static_cast<int64_t>(gn) * a.topk : tcomp[gn - 1];
    n_keys = n_wu + comp;
  }
  // Key i of the block's list: its row (null: none), kind (Layout::kind), class and kpos.
  auto key_of = [&](int64_t i, uint8_t* kind, uint8_t* cls, int32_t* kp) -> const void* {
    if (shared_keys) {
      if (i < n_wu) {
        const int64_t p = lo0 + i;
        *cls = kWindowKey, *kp = static_cast<int32_t>(p);
        return window_key(a, kv, t0, pos0, p, start0, slot0, kind);
      }
      const int64_t j = i - n_wu;
      if (a.selected == nullptr) {
        *cls = kEntryKey, *kp = static_cast<int32_t>(j);
        return entry_key(a, t0, slot0, j, kind);
      }
      const int g = static_cast<int>(j / a.topk);
      *cls = kOwnedKey, *kp = g;
      return entry_key(a, t0 + g, slot0, j % a.topk, kind);
    }
    int g = 0;
    while (tbeg[g + 1] <= i) ++g;
    *cls = kOwnedKey, *kp = g;
    const int64_t t = t0 + g, j = i - tbeg[g], n_win = tpos[g] - tlo[g] + 1;
    if (j < n_win) return window_key(a, kv, t, a.pos[t], tlo[g] + j, a.start[t], a.slot[t], kind);
    return entry_key(a, t, a.slot[t], j - n_win, kind);
  };
  auto visible = [&](int r, int key) {
    const int g = r / heads;
    if (g >= gn) return false;
    const int32_t kp = sm.kpos[key];
    switch (sm.kcls[key]) {
      case kWindowKey:
        return tlo[g] <= kp && kp <= tpos[g];
      case kEntryKey:
        return kp < tcomp[g];
      default:
        return kp == g;
    }
  };
  for (int64_t kb = 0; kb < n_keys; kb += kKeys) {
    const int cnt = static_cast<int>(min(static_cast<int64_t>(kKeys), n_keys - kb));
    if (tid < kKeys) {
      uint8_t kind = 0, cls = kOwnedKey;
      int32_t kp = -1;
      sm.rows[tid] = tid < cnt ? key_of(kb + tid, &kind, &cls, &kp) : nullptr;
      sm.kind[tid] = kind, sm.kcls[tid] = cls, sm.kpos[tid] = kp;
    }
    attend_tile<true>(sm, L, a, D, cnt, kb == 0, qsrc, visible);
  }
  if (n_keys == 0) {  // (m, l, O) = (−∞, 0, 0); otherwise the first tile set them
    for (int i = tid; i < kHeads * L.ldo; i += kThreads) sm.os[i] = 0.f;
  }
  cp_async_wait_all();  // a block without keys still has Q in flight
  __syncthreads();
  // Each row's sink joins the denominator only; a row without keys gets zeros (padding rows, as the reference).
  if (tid < kHeads) {
    const int r = tid;
    const float sink = r < rows_used ? sinks[r % heads] : 0.f;
    const float m = fmaxf(sink, sm.ms[r]);
    const float w = expf(sm.ms[r] - m);  // 0 for a row without keys (m = -inf)
    wsum[r] = w;
    winv[r] = 1.f / (expf(sink - m) + sm.ls[r] * w);
  }
  __syncthreads();
  bf16* o_out = out + t0 * heads * D;
  const int quads = D / 4;
  for (int i = tid; i < rows_used * quads; i += kThreads) {
    const int r = i / quads, d = (i % quads) * 4;
    store_bf16x4(o_out + r * D + d, *reinterpret_cast<const float4*>(sm.os + r * L.ldo + d), wsum[r] * winv[r]);
  }
}

int64_t head_groups(int64_t heads) { return (heads + kHeads - 1) / kHeads; }

template <int NC, bool kAnyShape>
void launch_split(ExecContext& ctx, bf16* out, const bf16* q, const bf16* kv, const float* sinks,
                  const SplitAttnArgs& a, int64_t T) {
  // The largest layout (D = 512), once per instantiation: smaller head dims need less.
  static const bool configured = [] {
    throw_if_error(cuda_status(cudaFuncSetAttribute(split_attention_kernel<NC, kAnyShape>,
                                                    cudaFuncAttributeMaxDynamicSharedMemorySize, layout_for(512).total),
                               "cudaFuncSetAttribute(split_attention)"));
    return true;
  }();
  (void)configured;
  const size_t shared = static_cast<size_t>(layout_for(static_cast<int>(a.D)).total);
  const dim3 grid(NC, static_cast<unsigned>(head_groups(a.heads)), static_cast<unsigned>(T));
  check_launch(launch_kernel(split_attention_kernel<NC, kAnyShape>, grid, dim3(kThreads), shared, stream_of(ctx), out,
                             q, kv, sinks, a),
               "split_attention");
}

}  // namespace

bool split_attention_supports(int64_t heads, int64_t D, bool aligned16) {
  // D % 32: 16-byte rows, whole 16-column MMA steps, and D / kSplit merge columns in groups of 4.
  if (!(aligned16 && D % 32 == 0 && D >= 32 && D <= 512 && heads > 0 && head_groups(heads) <= 65535)) return false;
  // Every supported shape takes this kernel (validated on H200: the model's 16-head groups and the zero-padded
  // ones, D % 64 != 0 included). DSV4_SPLIT_ATTENTION=0 sends everything to the warp kernel, for A/B timing.
  static const bool enabled = [] {
    std::string v;
    if (!env_string("DSV4_SPLIT_ATTENTION", &v) || v == "1") return true;
    if (v == "0") return false;
    fail(StatusCode::kInvalidArgument, "DSV4_SPLIT_ATTENTION must be 1 (the default) or 0 (warp kernel only), not '", v,
         "'");
  }();
  return enabled;
}

void split_attention(ExecContext& ctx, bf16* out, const bf16* q, const bf16* kv, const float* sinks,
                     const SplitAttnArgs& a, int64_t T) {
  if (prefill_attention_supports(a, T)) return prefill_attention(ctx, out, q, kv, sinks, a, T);
  if (const int tokens = split_attention_tokens_per_block(a.heads, T); tokens > 1) {
    static const bool configured = [] {
      throw_if_error(
          cuda_status(cudaFuncSetAttribute(split_attention_packed_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           layout_for(512).total),
                      "cudaFuncSetAttribute(split_attention_packed)"));
      return true;
    }();
    (void)configured;
    const size_t shared = static_cast<size_t>(layout_for(static_cast<int>(a.D)).total);
    const dim3 grid(static_cast<unsigned>((T + tokens - 1) / tokens));
    check_launch(launch_kernel(split_attention_packed_kernel, grid, dim3(kThreads), shared, stream_of(ctx), out, q, kv,
                               sinks, a, T, tokens),
                 "split_attention_packed");
    return;
  }
  const int parts = split_attention_parts(T * head_groups(a.heads), multiprocessor_count());
  auto launch = [&](auto any_shape) {
    constexpr bool kAny = decltype(any_shape)::value;
    switch (parts) {
      case 8:
        return launch_split<8, kAny>(ctx, out, q, kv, sinks, a, T);
      case 4:
        return launch_split<4, kAny>(ctx, out, q, kv, sinks, a, T);
      case 2:
        return launch_split<2, kAny>(ctx, out, q, kv, sinks, a, T);
      default:
        return launch_split<1, kAny>(ctx, out, q, kv, sinks, a, T);
    }
  };
  // The model's shapes (16-head groups, D % 64 == 0) compile without masks.
  if (a.heads % kHeads == 0 && a.D % 64 == 0) return launch(std::false_type{});
  launch(std::true_type{});
}

int split_attention_tokens_per_block(int64_t heads, int64_t T) {
  return heads <= kHeads / 2 && T >= kPackedMinTokens ? static_cast<int>(kHeads / heads) : 1;
}

int split_attention_parts(int64_t blocks, int multiprocessors) {
  for (int nc = kSplit; nc > 1; nc /= 2) {
    if (blocks * nc <= multiprocessors) return nc;
  }
  return 1;
}

}  // namespace dsv4::cuda
