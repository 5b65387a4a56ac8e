// KV compressor (CSA/HCA) on CUDA: entry emission from the batch rows and the per-position state ring,
// and the position-indexed ring stores (compressor raw kv/gate, sliding-window kv).
//
// Every per-token quantity (position, slot, chunk start/end) is read from the device BatchMeta; the grid
// is one block per batch row, and rows that close no window (or are padding) return at once.
#include <type_traits>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/kv_fp8.cuh"
#include "backend/cuda/rope.cuh"

namespace dsv4::cuda {
namespace {

// Meta pointers bundled for kernels.
struct MetaPtrs {
  const int32_t* pos;
  const int32_t* slot;
  const int32_t* start;
  const int32_t* end;
};

MetaPtrs meta_ptrs(const BatchMeta& m) {
  return {m.pos.ptr<int32_t>(), m.slot.ptr<int32_t>(), m.start.ptr<int32_t>(), m.end.ptr<int32_t>()};
}

// Row of a per-position quantity at position q for batch row t: the batch row if the position is part of
// this forward (q >= start), else the state ring (through the sequence's page table).
__device__ __forceinline__ const float* position_row(const float* batch, int64_t t, int32_t pos, int32_t start,
                                                     int32_t slot, int64_t q, const PagedRows& ring, int64_t width) {
  if (q >= start) return batch + (t - (pos - q)) * width;
  return ring.row<float>(slot, q % ring.rows);
}

// One block per batch row; threads over the entry's D channels. Softmax over the window's tokens per
// channel (online, fp32), RMSNorm over the entry, RoPE at the window's first position, store. TE = uint8_t: the
// --kv-cache-dtype fp8 entries, packed by the block (kv_fp8.cuh) in entries.storage's layout.
template <typename TE>
__global__ void compressor_emit_kernel(PagedRows entries, const float* __restrict__ kv, const float* __restrict__ gate,
                                       PagedRows raw_kv, PagedRows raw_gate, const float* __restrict__ ape,
                                       const float* __restrict__ norm_w, const float* __restrict__ inv_freq,
                                       MetaPtrs meta, int64_t rate, int64_t D, bool overlap, int64_t rope_dim,
                                       float attention_factor, float eps) {
  pdl_wait();
  extern __shared__ float entry[];  // [D]
  __shared__ float scratch[33];
  const int64_t t = blockIdx.x;
  const int32_t pos = meta.pos[t], slot = meta.slot[t], start = meta.start[t];
  if (slot < 0 || (pos + 1) % rate != 0) return;
  const int64_t j = (pos + 1) / rate - 1;
  // Positions are checked against max_model_len on the host, which sizes the entry capacity, and the scheduler
  // allocates the pages a step writes; a row past the store or in a missing page would be a caller bug, and
  // writing nothing is the safe choice inside a kernel.
  if (j >= entries.rows) return;
  TE* out = entries.row<TE>(slot, j);
  if (out == nullptr) return;
  const int64_t width = (overlap ? 2 : 1) * D;
  float ss = 0;
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) {
    float m = -INFINITY, l = 0, acc = 0;
    auto take = [&](int64_t q, int64_t i, int64_t c) {
      const float* kr = position_row(kv, t, pos, start, slot, q, raw_kv, width);
      const float* gr = position_row(gate, t, pos, start, slot, q, raw_gate, width);
      if (kr == nullptr || gr == nullptr) return;  // a ring page the scheduler never gave: a bug, never a crash
      const float logit = gr[c] + ape[i * width + c];
      const float m_new = fmaxf(m, logit);
      const float corr = expf(m - m_new), e = expf(logit - m_new);
      l = l * corr + e;
      acc = acc * corr + e * kr[c];
      m = m_new;
    };
    if (overlap && j >= 1) {
      for (int64_t i = 0; i < rate; ++i) take((j - 1) * rate + i, i, d);
    }
    for (int64_t i = 0; i < rate; ++i) take(j * rate + i, i, (overlap ? D : 0) + d);
    const float v = acc / l;
    entry[d] = v;
    ss = fmaf(v, v, ss);
  }
  ss = block_sum(ss, scratch);  // also orders the entry[] writes before the rotation below
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(D) + eps);
  for (int64_t d = threadIdx.x; d < D; d += blockDim.x) entry[d] = norm_w[d] * (entry[d] * inv);
  __syncthreads();
  const int64_t half = rope_dim / 2;
  float* r = entry + (D - rope_dim);
  for (int64_t i = threadIdx.x; i < half; i += blockDim.x) {
    float c, s;
    rope_cos_sin(inv_freq[i], static_cast<float>(j * rate), attention_factor, false, &c, &s);
    const float x0 = r[2 * i], x1 = r[2 * i + 1];
    r[2 * i] = x0 * c - x1 * s;
    r[2 * i + 1] = x1 * c + x0 * s;
  }
  __syncthreads();
  if constexpr (std::is_same_v<TE, uint8_t>) {
    kvfp8_dev::pack_row_block(out, entries.storage, D, entries.rope_dim, [&](int64_t i) { return entry[i]; });
  } else {
    for (int64_t d = threadIdx.x; d < D; d += blockDim.x) out[d] = from_float<TE>(entry[d]);
  }
}

// Up to kMaxRingStores ring stores per launch (blockIdx.z picks one): batch row t goes into the ring of its slot at
// position % ring, if it is among the sequence's last `ring` positions of this forward (so two rows of one sequence
// never share a ring entry). Element types are read per store (F32 or BF16 each side); a packed fp8 ring
// (--kv-cache-dtype fp8) is written by the x = 0 block of its row alone (one block packs a row).
constexpr int kMaxRingStores = 8;
struct RingStoreBatch {
  PagedRows ring[kMaxRingStores];
  const void* rows[kMaxRingStores];
  bool rows_bf16[kMaxRingStores];
};

// WARP_ROWS (forwards of kRingWarpRowsMin tokens or more, no packed ring): a warp per batch row, 8 rows a block. At
// prefill sizes most rows are not among their sequence's last ring positions and store nothing; a block per row
// made an 8,192-token tiny prefill schedule 5 x 8,192 blocks that mostly exit at once (38 µs a launch on an H100).
// Packed rings keep a block per row (the row's fp8 blocks are packed by the whole block).
constexpr int64_t kRingWarpRowsMin = 256;
constexpr int kRingWarpRows = 8;  // rows (warps) a block

template <bool WARP_ROWS>
__global__ void ring_stores_kernel(RingStoreBatch b, MetaPtrs meta, int64_t T) {
  // The metadata and the page table are written before the forward (host copies), never by the kernel this one
  // overlaps under PDL: the destination row is found before the wait, hiding the table lookup's latency. Every
  // block still waits before it exits (the chain's ordering needs it), and writes only after the wait.
  const int z = static_cast<int>(blockIdx.z);
  const PagedRows& ring = b.ring[z];
  const int64_t t = WARP_ROWS ? static_cast<int64_t>(blockIdx.y) * kRingWarpRows + threadIdx.x / 32 : blockIdx.y;
  char* dst = nullptr;
  if (t < T) {
    const int32_t pos = meta.pos[t], slot = meta.slot[t], end = meta.end[t];
    dst = slot < 0 || pos < end - ring.rows ? nullptr : ring.row<char>(slot, pos % ring.rows);
  }
  pdl_wait();
  if (dst == nullptr) return;  // not among the last ring positions, padding, or a page never given (a bug)
  const int64_t width = ring.width;
  const int64_t first = WARP_ROWS ? threadIdx.x % 32 : blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = WARP_ROWS ? 32 : static_cast<int64_t>(gridDim.x) * blockDim.x;
  if (!WARP_ROWS && ring.packed()) {
    if (blockIdx.x != 0) return;
    const float* s32 = static_cast<const float*>(b.rows[z]) + t * width;
    const bf16* s16 = static_cast<const bf16*>(b.rows[z]) + t * width;
    const bool in_bf16 = b.rows_bf16[z];
    kvfp8_dev::pack_row_block(reinterpret_cast<uint8_t*>(dst), ring.storage, width, ring.rope_dim,
                              [&](int64_t i) { return in_bf16 ? to_float(s16[i]) : s32[i]; });
    return;
  }
  const bool src_bf16 = b.rows_bf16[z], dst_bf16 = ring.dtype == DType::BF16;
  const float* src32 = static_cast<const float*>(b.rows[z]) + t * width;
  const bf16* src16 = static_cast<const bf16*>(b.rows[z]) + t * width;
  for (int64_t i = first; i < width; i += stride) {
    const float v = src_bf16 ? to_float(src16[i]) : src32[i];
    if (dst_bf16) {
      reinterpret_cast<bf16*>(dst)[i] = from_float<bf16>(v);
    } else {
      reinterpret_cast<float*>(dst)[i] = v;
    }
  }
}

}  // namespace

void compressor_emit(ExecContext& ctx, CompressorState& st, Tensor kv, Tensor gate, Tensor ape, Tensor norm_w,
                     const RopeTable& rope, const BatchMeta& meta, float eps) {
  const int64_t T = meta.num_tokens, D = st.dim;
  if (T == 0) return;
  DSV4_CHECK_ARG(st.raw_kv.dtype == DType::F32 && st.raw_gate.dtype == DType::F32,
                 "compressor_emit on CUDA: the raw rings must be F32");
  for (const Tensor* t : {&kv, &gate, &ape, &norm_w}) {
    DSV4_CHECK_ARG(t->dtype() == DType::F32,
                   "compressor_emit on CUDA: kv, gate, the raw rings, ape and norm must be "
                   "F32, got ",
                   t->describe());
  }
  DSV4_CHECK_ARG(rope.rope_dim <= D && rope.rope_dim % 2 == 0, "compressor_emit: rope_dim ", rope.rope_dim,
                 " vs entry dim ", D);
  const int threads = D >= 256 ? 256 : static_cast<int>((D + 31) / 32 * 32);
  auto launch = [&](auto e) {
    using TE = decltype(e);
    check_launch(
        launch_kernel(compressor_emit_kernel<TE>, dim3(static_cast<unsigned>(T)), dim3(threads), D * sizeof(float),
                      stream_of(ctx), st.entries, kv.ptr<float>(), gate.ptr<float>(), st.raw_kv, st.raw_gate,
                      ape.ptr<float>(), norm_w.ptr<float>(), rope.inv_freq.ptr<float>(), meta_ptrs(meta), st.rate, D,
                      st.overlap, rope.rope_dim, rope.attention_factor, eps),
        "compressor_emit");
  };
  if (st.entries.packed()) {
    DSV4_CHECK_ARG(st.entries.storage != KvStorage::kFp8Blocks || st.entries.rope_dim == rope.rope_dim,
                   "compressor_emit on CUDA: packed entries keep ", st.entries.rope_dim, " rope values, the rope has ",
                   rope.rope_dim);
    return launch(uint8_t{});
  }
  dispatch_float(st.entries.dtype, "compressor entries", launch);
}

void ring_stores(ExecContext& ctx, const std::vector<ops::RingStore>& stores, const BatchMeta& meta) {
  const int64_t T = meta.num_tokens;
  if (T == 0) return;
  for (size_t first = 0; first < stores.size(); first += kMaxRingStores) {
    const size_t n = std::min(stores.size() - first, static_cast<size_t>(kMaxRingStores));
    RingStoreBatch b{};
    int64_t width = 1;
    bool packed = false;
    for (size_t i = 0; i < n; ++i) {
      const ops::RingStore& s = stores[first + i];
      b.ring[i] = s.ring;
      b.rows[i] = s.rows.data();
      b.rows_bf16[i] = s.rows.dtype() == DType::BF16;
      width = std::max(width, s.ring.width);
      packed = packed || s.ring.packed();
    }
    if (T >= kRingWarpRowsMin && !packed) {
      const dim3 grid(1, static_cast<unsigned>((T + kRingWarpRows - 1) / kRingWarpRows), static_cast<unsigned>(n));
      check_launch(launch_kernel(ring_stores_kernel<true>, grid, dim3(32 * kRingWarpRows), 0, stream_of(ctx), b,
                                 meta_ptrs(meta), T),
                   "ring_stores");
      continue;
    }
    const dim3 grid(std::max(1u, std::min(blocks_for(width, 256), 16u)), static_cast<unsigned>(T),
                    static_cast<unsigned>(n));
    check_launch(launch_kernel(ring_stores_kernel<false>, grid, dim3(256), 0, stream_of(ctx), b, meta_ptrs(meta), T),
                 "ring_stores");
  }
}

}  // namespace dsv4::cuda
