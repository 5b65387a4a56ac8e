// Sink attention over the sliding window ∪ compressed entries on CUDA (MQA: one shared latent, K = V).
//
// Grid: (T, head groups); one warp per head, the lanes splitting the head dimension. A key row is read
// once per warp and serves both as key and value; keys are processed four at a time (independent loads
// and warp reductions in flight) with an online softmax that starts from the sink (m = sink, l = 1).
// Every per-token range (window start, positions in the batch vs the ring, visible compressed entries,
// the indexer's selection) is read from device memory; the grid depends only on T and the head count.
// bf16 shapes the split-KV tensor-core kernel takes (attention_split.cu: any head count, head_dim % 32 up to
// 512; DSV4_SPLIT_ATTENTION=0 turns it off) go there instead; this kernel covers f32 and the other shapes.
// Packed fp8 ring / entry rows (--kv-cache-dtype fp8) are dequantised in registers as they are
// loaded (kv_fp8.cuh); the batch's own kv rows stay in the activation dtype (already round-tripped).
#include <type_traits>

#include "backend/cuda/attention_prefill.h"
#include "backend/cuda/attention_split.h"
#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/kv_fp8.cuh"

namespace dsv4::cuda {
namespace {

constexpr int kMaxWarps = 8;
constexpr int kKeysPerStep = 4;

using AttnArgs = SplitAttnArgs;  // the same per-token ranges

// Lane's k-th element of a D-vector. VEC: 8 consecutive elements per 16-byte access (D % 256 == 0);
// otherwise element k*32 + lane (masked beyond D).
template <bool VEC>
__device__ __forceinline__ int64_t lane_elem(int k, int lane) {
  return VEC ? (k / 8) * 256 + lane * 8 + (k % 8) : k * 32 + lane;
}

template <int EPL, bool VEC, typename T>
__device__ __forceinline__ void load_row(const T* row, int lane, int64_t D, float (&v)[EPL]) {
  if constexpr (VEC && sizeof(T) == 2) {
#pragma unroll
    for (int c = 0; c < EPL / 8; ++c) {
      const uint4 raw = *reinterpret_cast<const uint4*>(row + c * 256 + lane * 8);
      const bf16* b = reinterpret_cast<const bf16*>(&raw);
#pragma unroll
      for (int i = 0; i < 8; ++i) v[c * 8 + i] = to_float(b[i]);
    }
  } else if constexpr (VEC) {
#pragma unroll
    for (int c = 0; c < EPL / 8; ++c) {
      const float4 a = *reinterpret_cast<const float4*>(row + c * 256 + lane * 8);
      const float4 b = *reinterpret_cast<const float4*>(row + c * 256 + lane * 8 + 4);
      v[c * 8 + 0] = a.x, v[c * 8 + 1] = a.y, v[c * 8 + 2] = a.z, v[c * 8 + 3] = a.w;
      v[c * 8 + 4] = b.x, v[c * 8 + 5] = b.y, v[c * 8 + 6] = b.z, v[c * 8 + 7] = b.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < EPL; ++k) {
      const int64_t e = lane_elem<false>(k, lane);
      v[k] = e < D ? to_float(row[e]) : 0.0f;
    }
  }
}

// A packed kFp8Blocks row (8-byte aligned) at the lanes' elements of load_row.
template <int EPL, bool VEC>
__device__ __forceinline__ void load_packed_row(const uint8_t* row, int lane, int64_t D, int64_t rope,
                                                float (&v)[EPL]) {
  if constexpr (VEC) {
#pragma unroll
    for (int c = 0; c < EPL / 8; ++c) {
      float w[8];
      kvfp8_dev::load8_blocks(row, D - rope, rope, (c * 256 + lane * 8) / 8, w);
#pragma unroll
      for (int i = 0; i < 8; ++i) v[c * 8 + i] = w[i];
    }
  } else {
#pragma unroll
    for (int k = 0; k < EPL; ++k) {
      const int64_t e = lane_elem<false>(k, lane);
      v[k] = e < D ? kvfp8::element(row, KvStorage::kFp8Blocks, D, rope, e) : 0.0f;
    }
  }
}

// A key row: the batch's (T elements) or the state's (T elements, or packed fp8 with `rope` bf16 values).
struct KeyRef {
  const void* p;
  bool packed;
  int64_t rope;
};

template <int EPL, bool VEC, typename T>
__global__ void __launch_bounds__(kMaxWarps * 32)
    attention_kernel(T* __restrict__ out, const T* __restrict__ q, const T* __restrict__ kv,
                     const float* __restrict__ sinks, AttnArgs a) {
  pdl_wait();
  const int lane = threadIdx.x & 31;
  const int64_t t = blockIdx.x, h = static_cast<int64_t>(blockIdx.y) * (blockDim.x / 32) + (threadIdx.x >> 5);
  if (h >= a.heads) return;
  const int64_t D = a.D;
  T* o = out + (t * a.heads + h) * D;
  const int32_t pos = a.pos[t], slot = a.slot[t], start = a.start[t];
  if (slot < 0) {  // padding row: zeros, as the reference
#pragma unroll
    for (int k = 0; k < EPL; ++k) {
      const int64_t e = lane_elem<VEC>(k, lane);
      if (VEC || e < D) o[e] = from_float<T>(0.0f);
    }
    return;
  }
  float qv[EPL], acc[EPL];
  load_row<EPL, VEC>(q + (t * a.heads + h) * D, lane, D, qv);
#pragma unroll
  for (int k = 0; k < EPL; ++k) acc[k] = 0.0f;
  const int64_t n_win = min(static_cast<int64_t>(pos) + 1, a.window);
  int64_t n_comp = 0;
  if (a.rate > 0)
    n_comp = a.selected != nullptr ? a.topk : min(static_cast<int64_t>((pos + 1) / a.rate), a.entries.rows);
  const int64_t n = n_win + n_comp;
  // Key i: window positions pos-n_win+1 .. pos, then compressed entries, read through the sequence's page table
  // (null = an unused selection slot, or a missing page).
  auto key_row = [&](int64_t i) -> KeyRef {
    if (i < n_win) {
      const int64_t p = pos - n_win + 1 + i;
      if (p >= start) return {kv + (t - (pos - p)) * D, false, 0};
      return {a.ring.row<const char>(slot, p % a.ring.rows), a.ring.packed(), a.ring.rope_dim};
    }
    const int64_t c = i - n_win;
    const KeyRef none{nullptr, false, 0};
    if (a.selected == nullptr) return {a.entries.row<const char>(slot, c), a.entries.packed(), a.entries.rope_dim};
    const int32_t e = a.selected[t * a.topk + c];
    return e >= 0 ? KeyRef{a.entries.row<const char>(slot, e), a.entries.packed(), a.entries.rope_dim} : none;
  };
  float m = sinks[h], l = 1.0f;  // the sink: e^{sink - m} with m = sink
  for (int64_t base = 0; base < n; base += kKeysPerStep) {
    float kvv[kKeysPerStep][EPL], s[kKeysPerStep];
    bool valid[kKeysPerStep];
#pragma unroll
    for (int u = 0; u < kKeysPerStep; ++u) {
      const KeyRef row = base + u < n ? key_row(base + u) : KeyRef{nullptr, false, 0};
      valid[u] = row.p != nullptr;
      if (valid[u] && row.packed) {
        load_packed_row<EPL, VEC>(static_cast<const uint8_t*>(row.p), lane, D, row.rope, kvv[u]);
      } else if (valid[u]) {
        load_row<EPL, VEC>(static_cast<const T*>(row.p), lane, D, kvv[u]);
      } else {
#pragma unroll
        for (int k = 0; k < EPL; ++k) kvv[u][k] = 0.0f;
      }
      float d = 0;
#pragma unroll
      for (int k = 0; k < EPL; ++k) d = fmaf(qv[k], kvv[u][k], d);
      s[u] = d;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
#pragma unroll
      for (int u = 0; u < kKeysPerStep; ++u) s[u] += __shfl_xor_sync(0xffffffffu, s[u], off);
    }
    float m_new = m;
#pragma unroll
    for (int u = 0; u < kKeysPerStep; ++u) {
      s[u] *= a.scale;
      if (valid[u]) m_new = fmaxf(m_new, s[u]);
    }
    const float corr = expf(m - m_new);
    l *= corr;
#pragma unroll
    for (int k = 0; k < EPL; ++k) acc[k] *= corr;
#pragma unroll
    for (int u = 0; u < kKeysPerStep; ++u) {
      const float p = valid[u] ? expf(s[u] - m_new) : 0.0f;
      l += p;
#pragma unroll
      for (int k = 0; k < EPL; ++k) acc[k] = fmaf(p, kvv[u][k], acc[k]);
    }
    m = m_new;
  }
  const float inv = 1.0f / l;
#pragma unroll
  for (int k = 0; k < EPL; ++k) {
    const int64_t e = lane_elem<VEC>(k, lane);
    if (VEC || e < D) o[e] = from_float<T>(acc[k] * inv);
  }
}

template <int EPL, bool VEC, typename T>
void launch_attention(ExecContext& ctx, Tensor out, Tensor q, Tensor kv, Tensor sinks, const AttnArgs& a, int64_t T_) {
  const int warps = static_cast<int>(std::min<int64_t>(a.heads, kMaxWarps));
  const dim3 grid(static_cast<unsigned>(T_), static_cast<unsigned>((a.heads + warps - 1) / warps));
  check_launch(launch_kernel(attention_kernel<EPL, VEC, T>, grid, dim3(warps * 32), 0, stream_of(ctx), out.ptr<T>(),
                             q.ptr<T>(), kv.ptr<T>(), sinks.ptr<float>(), a),
               "attention");
}

}  // namespace

void attention(ExecContext& ctx, Tensor out, Tensor q, Tensor kv, const PagedRows& kv_ring,
               const CompressorState* compressed, Tensor selected, Tensor sinks, const BatchMeta& meta, int64_t window,
               float scale) {
  const int64_t T = meta.num_tokens, D = q.size(2);
  if (T == 0) return;
  const DType dt = q.dtype();
  for (const Tensor* t : {&out, &kv}) {
    DSV4_CHECK_ARG(t->dtype() == dt, "attention on CUDA: q, kv and out must share a dtype; q is ", q.describe(),
                   ", got ", t->describe());
  }
  // Packed rows: the fp8 cache's kFp8Blocks (the only packed format attention reads).
  auto rows_ok = [&](const PagedRows& p) {
    return p.packed() ? p.storage == KvStorage::kFp8Blocks && kvfp8::shape_ok(p.storage, p.width, p.rope_dim)
                      : p.dtype == dt;
  };
  DSV4_CHECK_ARG(rows_ok(kv_ring) && kv_ring.width == D, "attention on CUDA: kv ring rows of ", kv_ring.width, " ",
                 dtype_name(kv_ring.dtype), " vs q ", q.describe());
  if (compressed != nullptr) {
    DSV4_CHECK_ARG(rows_ok(compressed->entries) && compressed->entries.width == D,
                   "attention on CUDA: compressed entries of ", compressed->entries.width, " ",
                   dtype_name(compressed->entries.dtype), " vs q ", q.describe());
  }
  DSV4_CHECK_ARG(D <= 512, "attention on CUDA supports head_dim <= 512, got ", D);
  AttnArgs a{};
  a.pos = meta.pos.ptr<int32_t>();
  a.slot = meta.slot.ptr<int32_t>();
  a.start = meta.start.ptr<int32_t>();
  const bool use_selection = compressed != nullptr && selected.data() != nullptr;
  a.selected = use_selection ? selected.ptr<int32_t>() : nullptr;
  a.topk = use_selection ? selected.size(1) : 0;
  a.heads = q.size(1);
  a.D = D;
  a.ring = kv_ring;
  a.window = window;
  a.rate = compressed != nullptr ? compressed->rate : 0;
  if (compressed != nullptr) a.entries = compressed->entries;
  a.scale = scale;
  dispatch_float(dt, "attention", [&](auto tag) {
    using TT = decltype(tag);
    // 16-byte accesses need 16-byte aligned rows (arena allocations are 256-byte aligned; the state layout
    // aligns pages, arrays and rows to 16 bytes); this kernel's also need D % 256 == 0 (a lane's 8 elements per
    // 256), the split kernel's D % 8 (it checks D itself).
    auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    auto rows_aligned = [&](const PagedRows& p) {
      if (p.defined() && p.packed()) {  // 8-byte loads of packed rows (the state layout aligns them so)
        return reinterpret_cast<uintptr_t>(p.base) % 8 == 0 && p.page_bytes % 8 == 0 && p.offset % 8 == 0 &&
               p.row_bytes % 8 == 0;
      }
      return !p.defined() || (aligned(p.base) && p.page_bytes % 16 == 0 && p.offset % 16 == 0 && p.row_bytes % 16 == 0);
    };
    const bool aligned16 = aligned(q.data()) && aligned(kv.data()) && aligned(out.data()) && rows_aligned(a.ring) &&
                           rows_aligned(a.entries);
    const bool vec = D % 256 == 0 && aligned16;
    if constexpr (std::is_same_v<TT, bf16>) {
      // T is the split kernel's grid z; the prefill kernel (its grid x) takes any T.
      if (split_attention_supports(a.heads, D, aligned16) && (T <= 65535 || prefill_attention_supports(a, T))) {
        return split_attention(ctx, out.ptr<bf16>(), q.ptr<bf16>(), kv.ptr<bf16>(), sinks.ptr<float>(), a, T);
      }
    }
    if (vec && D == 512) return launch_attention<16, true, TT>(ctx, out, q, kv, sinks, a, T);
    if (vec && D == 256) return launch_attention<8, true, TT>(ctx, out, q, kv, sinks, a, T);
    if (D <= 32) return launch_attention<1, false, TT>(ctx, out, q, kv, sinks, a, T);
    if (D <= 64) return launch_attention<2, false, TT>(ctx, out, q, kv, sinks, a, T);
    if (D <= 128) return launch_attention<4, false, TT>(ctx, out, q, kv, sinks, a, T);
    if (D <= 256) return launch_attention<8, false, TT>(ctx, out, q, kv, sinks, a, T);
    return launch_attention<16, false, TT>(ctx, out, q, kv, sinks, a, T);
  });
}

}  // namespace dsv4::cuda
