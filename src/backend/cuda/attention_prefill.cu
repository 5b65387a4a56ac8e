// Sink attention for prefill-sized batches of the model's layout (64 query heads a block, head dim 512, MQA with
// K = V), on mma.m16n8k16 with the output in registers.
//
// split_attention gives a block 16 heads of one batch row: at prefill every key row is staged four times (once per
// head group), S, P and O pass through shared memory, and one 200 KB block an SM loads a 128-key tile, waits, then
// computes — ~91 TFLOP/s, a third of a Flash 4,096-token prefill on an H100 (2026-12-07). Here a block owns one batch
// row and 64 heads, so a key row is staged once for all of them:
// - Keys (attention_keys.cuh: window, then HCA entries or the CSA selection, -1 slots masked) arrive 32 rows a tile
//   by cp.async into a three-stage ring; tile j + 2 is in flight while tile j is computed.
// - Warp w owns heads 16 (w % 4) .. + 15 and head-dim columns 256 (w / 4) .. + 255. S = Q·Kᵀ: each warp of a pair
//   (w, w + 4) multiplies its half of the head dim and the two partial 16 × 32 tiles meet in shared memory (a named
//   barrier for the pair); both add them (the same sum either way: addition commutes), so both hold the same S and
//   run the same online softmax on it in registers.
// - O += P·V with P split into bf16 hi + lo parts (two MMAs, ~16 mantissa bits: as split_attention, the
//   probabilities lose nothing measurable against the fp32 reference); P's MMA fragments are the S accumulators'
//   registers (no shared-memory round trip), V's come from the key tile by ldmatrix.trans. O (16 × 256 fp32 a warp)
//   stays in registers; the sink joins at the end as in split_attention's merge.
// A tile whose rows are all absent (CSA's unused selection slots) is skipped: the same result as masking it.
// Every sum has a fixed order and there are no atomics: graph replays are bit-identical.
#include <cmath>
#include <string>

#include "backend/cuda/attention_keys.cuh"
#include "backend/cuda/attention_prefill.h"
#include "backend/cuda/cp_async.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mma.cuh"
#include "dsv4/core/log.h"

namespace dsv4::cuda {
namespace {

constexpr int kHeadsPerBlock = 64;
constexpr int kD = 512;
constexpr int kHalf = kD / 2;  // head-dim columns of one warp's O
constexpr int kKeys = 32;      // keys per tile
constexpr int kStages = 3;
constexpr int kThreads = 256;
constexpr int kLd = kD + 8;  // padded rows (elements): ldmatrix's eight row addresses fall in distinct banks
constexpr int kQBytes = kHeadsPerBlock * kLd * 2;
constexpr int kTileElems = kKeys * kLd;
constexpr int kExchangeFloats = 16 * 32;  // one warp's partial S tile: 16 values a lane
constexpr int kAhead = kStages + 1;       // tiles whose row addresses are resolved (two in flight, one being resolved)
constexpr int kSmemBytes = kQBytes + kStages * kTileElems * 2 + (kThreads / 32) * kExchangeFloats * 4 +
                           kAhead * kKeys * static_cast<int>(sizeof(void*)) + kStages * kKeys;
static_assert(kThreads == kKeys * 8 && kD / 8 == 8 * 8, "a tile row is copied by 8 threads, 8 vectors each");

__device__ __forceinline__ void pair_barrier(int id) {  // the 64 threads of warps w and w + 4
  asm volatile("bar.sync %0, 64;\n" ::"r"(id) : "memory");
}

__device__ __forceinline__ uint32_t bits_of(__nv_bfloat162 v) { return *reinterpret_cast<const uint32_t*>(&v); }

// One 8-key tile's probabilities (p[0], p[1] of row g; p[2], p[3] of row g + 8) as halves of P's A fragments:
// hi = bf16(p), lo = bf16(p - hi).
__device__ __forceinline__ void split_probs(const float (&p)[4], uint32_t& hi_g, uint32_t& hi_g8, uint32_t& lo_g,
                                            uint32_t& lo_g8) {
  const __nv_bfloat162 h01 = __floats2bfloat162_rn(p[0], p[1]), h23 = __floats2bfloat162_rn(p[2], p[3]);
  hi_g = bits_of(h01), hi_g8 = bits_of(h23);
  lo_g = bits_of(__floats2bfloat162_rn(p[0] - __low2float(h01), p[1] - __high2float(h01)));
  lo_g8 = bits_of(__floats2bfloat162_rn(p[2] - __low2float(h23), p[3] - __high2float(h23)));
}

__global__ void __launch_bounds__(kThreads, 1)
    prefill_attention_kernel(bf16* __restrict__ out, const bf16* __restrict__ q, const bf16* __restrict__ kv,
                             const float* __restrict__ sinks, SplitAttnArgs a) {
  extern __shared__ __align__(128) unsigned char smem[];
  bf16* qs = reinterpret_cast<bf16*>(smem);
  bf16* ks = reinterpret_cast<bf16*>(smem + kQBytes);
  float* sx = reinterpret_cast<float*>(smem + kQBytes + kStages * kTileElems * 2);
  const bf16** rows =
      reinterpret_cast<const bf16**>(smem + kQBytes + kStages * kTileElems * 2 + (kThreads / 32) * kExchangeFloats * 4);
  uint8_t* valid = reinterpret_cast<uint8_t*>(rows + kAhead * kKeys);

  pdl_wait();
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int hg = warp & 3, half = warp >> 2;  // the warp's 16 heads and 256 head-dim columns
  const int g = lane >> 2, t4 = lane & 3;
  const int64_t t = blockIdx.x, h0 = static_cast<int64_t>(blockIdx.y) * kHeadsPerBlock;
  const int32_t pos = a.pos[t], slot = a.slot[t], start = a.start[t];
  bf16* o_rows = out + (t * a.heads + h0) * kD;
  if (slot < 0) {  // padding row: zeros, as the reference
    for (int i = tid; i < kHeadsPerBlock * kD / 8; i += kThreads) {
      reinterpret_cast<uint4*>(o_rows)[i] = make_uint4(0, 0, 0, 0);
    }
    return;
  }
  const bf16* q_rows = q + (t * a.heads + h0) * kD;
  for (int i = tid; i < kHeadsPerBlock * (kD / 8); i += kThreads) {
    const int r = i / (kD / 8), c = i % (kD / 8);
    cp_async16(qs + r * kLd + c * 8, q_rows + r * kD + c * 8, true);
  }
  const int64_t n_win = window_keys(a, pos), n = n_win + compressed_keys(a, pos);
  const int tiles = static_cast<int>((n + kKeys - 1) / kKeys);
  // A key row's address takes two dependent loads (the CSA selection, then the page table), so it is resolved ahead of
  // its copies: thread r < 32 owns row r of every tile; in iteration j it loads tile j + 4's entry index, resolves
  // tile j + 3's address from the index it loaded an iteration before, and publishes that address in `rows` after the
  // tile's compute; the copies of tile j + 2 read theirs from `rows` (published in iteration j - 1).
  auto index_of = [&](int j) -> int32_t {  // -1: a window key or past the list
    const int64_t i = static_cast<int64_t>(j) * kKeys + tid;
    return i >= n_win && i < n ? entry_index(a, t, i - n_win) : -1;
  };
  auto address_of = [&](int j, int32_t e) -> const bf16* {
    const int64_t i = static_cast<int64_t>(j) * kKeys + tid;
    if (i >= n) return nullptr;
    uint8_t kind;
    const void* row =
        i < n_win ? window_key(a, kv, t, pos, pos - n_win + 1 + i, start, slot, &kind) : entry_row(a, slot, e);
    return static_cast<const bf16*>(row);
  };
  // Tile j's rows into stage st: thread tid copies vectors tid % 8 + 8 v of row tid / 8 (a warp: four rows' 128-byte
  // spans per copy); absent rows are zero-filled (from any readable address) and marked in `valid`.
  auto load_tile = [&](int j, int st) {
    const int r = tid >> 3, c0 = tid & 7;
    const bf16* row = rows[(j % kAhead) * kKeys + r];
    bf16* dst = ks + st * kTileElems + r * kLd;
#pragma unroll
    for (int v = 0; v < kD / 64; ++v) {
      const int c = c0 + 8 * v;
      cp_async16(dst + c * 8, row != nullptr ? row + c * 8 : q_rows, row != nullptr);
    }
    if (c0 == 0) valid[st * kKeys + r] = row != nullptr ? 1 : 0;
  };
  const bool resolver = tid < kKeys;
  int32_t next_index = -1;
  if (resolver) {
#pragma unroll
    for (int j = 0; j < kAhead - 1; ++j) rows[j * kKeys + tid] = address_of(j, index_of(j));
    next_index = index_of(kAhead - 1);
  }
  __syncthreads();
  load_tile(0, 0);
  cp_async_commit();  // with Q
  if (tiles > 1) load_tile(1, 1);
  cp_async_commit();

  float o[kHalf / 8][4] = {};  // rows g, g + 8 of the warp's heads; columns 8 nt + 2 t4, + 1 of its half
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
  const bf16* q_lane = qs + (hg * 16 + (lane & 15)) * kLd + half * kHalf + (lane >> 4) * 8;
  const int k_row = (lane & 7) + ((lane >> 4) << 3), k_col = half * kHalf + ((lane >> 3) & 1) * 8;
  const int v_row = (lane & 7) + ((lane >> 3) & 1) * 8, v_col = half * kHalf + (lane >> 4) * 8;
  float* s_mine = sx + warp * kExchangeFloats;
  const float* s_other = sx + (warp ^ 4) * kExchangeFloats;
  // One tile: S = Q·Kᵀ, the online softmax over its present keys (vt), O += P·V.
  auto attend = [&](const bf16* kt, const uint8_t* vt) {
    // S = Q·Kᵀ over this warp's half of the head dim: four 8-key accumulators, 16 steps each.
    float s[4][4] = {};
#pragma unroll
    for (int kk = 0; kk < kHalf / 16; ++kk) {
      uint32_t af[4];
      ldmatrix_x4(af, q_lane + kk * 16);
#pragma unroll
      for (int kp = 0; kp < 2; ++kp) {
        uint32_t bfr[4];  // b0, b1 of keys 16 kp .. + 7, then of keys 16 kp + 8 .. + 15
        ldmatrix_x4(bfr, kt + (kp * 16 + k_row) * kLd + k_col + kk * 16);
        mma_bf16_16816(s[2 * kp], af, bfr[0], bfr[1]);
        mma_bf16_16816(s[2 * kp + 1], af, bfr[2], bfr[3]);
      }
    }
    // The pair's halves meet: both warps hold the whole S.
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s_mine[(nt * 4 + e) * 32 + lane] = s[nt][e];
    }
    pair_barrier(1 + hg);
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nt][e] += s_other[(nt * 4 + e) * 32 + lane];
    }

    // Online softmax of rows g (values e = 0, 1) and g + 8 (e = 2, 3) over the tile's present keys.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const bool ok = vt[nt * 8 + 2 * t4 + c] != 0;
        s[nt][c] = ok ? s[nt][c] * a.scale : -INFINITY;
        s[nt][2 + c] = ok ? s[nt][2 + c] * a.scale : -INFINITY;
        mx[0] = fmaxf(mx[0], s[nt][c]);
        mx[1] = fmaxf(mx[1], s[nt][2 + c]);
      }
    }
    float corr[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m_run[r], mx[r]);
      corr[r] = m_new == -INFINITY ? 1.f : expf(m_run[r] - m_new);
      m_run[r] = m_new;
    }
    float sum[2] = {0.f, 0.f};
    uint32_t phi[2][4], plo[2][4];  // A fragments of the tile's two 16-key steps
#pragma unroll
    for (int nt = 0; nt < 4; ++nt) {
      float p[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        p[e] = s[nt][e] == -INFINITY ? 0.f : expf(s[nt][e] - m_run[e >> 1]);
        sum[e >> 1] += p[e];
      }
      const int step = nt >> 1, at = (nt & 1) * 2;  // a0/a1: keys 0-7 of the step, a2/a3: keys 8-15
      split_probs(p, phi[step][at], phi[step][at + 1], plo[step][at], plo[step][at + 1]);
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 1);
      sum[r] += __shfl_xor_sync(0xffffffffu, sum[r], 2);
      l_run[r] = l_run[r] * corr[r] + sum[r];
    }
#pragma unroll
    for (int nt = 0; nt < kHalf / 8; ++nt) {
      o[nt][0] *= corr[0], o[nt][1] *= corr[0];
      o[nt][2] *= corr[1], o[nt][3] *= corr[1];
    }

    // O += P·V, V = the key tile (rows = keys): b0, b1 of two 8-column tiles per ldmatrix.trans.
#pragma unroll
    for (int step = 0; step < 2; ++step) {
#pragma unroll
      for (int dp = 0; dp < kHalf / 16; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, kt + (step * 16 + v_row) * kLd + v_col + dp * 16);
        mma_bf16_16816(o[2 * dp], phi[step], b[0], b[1]);
        mma_bf16_16816(o[2 * dp], plo[step], b[0], b[1]);
        mma_bf16_16816(o[2 * dp + 1], phi[step], b[2], b[3]);
        mma_bf16_16816(o[2 * dp + 1], plo[step], b[2], b[3]);
      }
    }
  };
  for (int j = 0; j < tiles; ++j) {
    cp_async_wait<1>();  // tile j (and Q) landed for this thread's copies
    __syncthreads();     // ... and everyone's; tile j - 1's stage and exchange tiles consumed
    if (j + 2 < tiles) load_tile(j + 2, (j + 2) % kStages);
    cp_async_commit();
    const bf16* ahead = nullptr;  // tile j + 3's row of a resolver, published below
    if (resolver && j + 3 < tiles) {
      ahead = address_of(j + 3, next_index);
      next_index = index_of(j + 4);
    }
    const int st = j % kStages;
    const uint8_t* vt = valid + st * kKeys;
    const uint32_t* vw = reinterpret_cast<const uint32_t*>(vt);
    uint32_t any = 0;
#pragma unroll
    for (int w = 0; w < kKeys / 4; ++w) any |= vw[w];
    if (any != 0) attend(ks + st * kTileElems, vt);  // block-uniform: a tile without keys is skipped
    if (resolver) rows[((j + 3) % kAhead) * kKeys + tid] = ahead;
  }

  cp_async_wait<0>();

  // The sink joins the denominator: as split_attention's merge of one part, out = (w O) / l.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int head = hg * 16 + g + 8 * r;
    const float sink = sinks[h0 + head];
    const float m = fmaxf(sink, m_run[r]);
    const float w = expf(m_run[r] - m);  // 0 without keys (m_run = -inf)
    const float inv = 1.f / (expf(sink - m) + l_run[r] * w);
    bf16* orow = o_rows + head * kD + half * kHalf + 2 * t4;
#pragma unroll
    for (int nt = 0; nt < kHalf / 8; ++nt) {
      *reinterpret_cast<__nv_bfloat162*>(orow + nt * 8) =
          __floats2bfloat162_rn((w * o[nt][2 * r]) * inv, (w * o[nt][2 * r + 1]) * inv);
    }
  }
}

}  // namespace

bool prefill_attention_supports(const SplitAttnArgs& a, int64_t T) {
  static const bool enabled = [] {
    std::string v;
    if (!env_string("DSV4_PREFILL_ATTENTION", &v) || v == "1") return true;
    if (v == "0") return false;
    fail(StatusCode::kInvalidArgument,
         "DSV4_PREFILL_ATTENTION must be 1 (the default) or 0 (split_attention for every batch), not '", v, "'");
  }();
  return enabled && a.heads % kHeadsPerBlock == 0 && a.heads / kHeadsPerBlock <= 65535 && a.D == kD &&
         !a.ring.packed() && !a.entries.packed() && T >= kPrefillAttentionMinTokens && T <= 0x7fffffff;
}

void prefill_attention(ExecContext& ctx, bf16* out, const bf16* q, const bf16* kv, const float* sinks,
                       const SplitAttnArgs& a, int64_t T) {
  DSV4_CHECK_ARG(prefill_attention_supports(a, T), "prefill_attention: unsupported shape (heads ", a.heads, ", D ", a.D,
                 ", T ", T, ")");
  static const bool configured = [] {
    throw_if_error(cuda_status(
        cudaFuncSetAttribute(prefill_attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes),
        "cudaFuncSetAttribute(prefill_attention)"));
    return true;
  }();
  (void)configured;
  const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>(a.heads / kHeadsPerBlock));
  check_launch(
      launch_kernel(prefill_attention_kernel, grid, dim3(kThreads), kSmemBytes, stream_of(ctx), out, q, kv, sinks, a),
      "prefill_attention");
}

}  // namespace dsv4::cuda
