// The RMSNorm family (rms_norm.h): every RMSNorm of the engine and of the C API.
//
// Two paths. Short rows (up to 2 KB, and whatever the row kernels cannot take: mixed dtypes, no weight,
// the fused rope) run the one-pass small-row kernel at the end of this file: one block per row, a few
// values per thread. Long rows run the row kernels below, which also serve the MTP draft layer's fused
// norms: the work is a list of rows of H elements: first the T "e" rows (inputs_embeds, masked by position,
// normalised with enorm_w), then the T*hc "h" rows (prev_hidden, normalised with hnorm_w). prev_hidden is
// [T, hc, H] contiguous, so h row i is simply prev + i*H, and its output is h_out + i*h_out_stride: the two
// output layouts and the shared-head norm (no e rows) differ only in strides, so one kernel serves all.
//
// The op is memory-bound (read (1+hc)*T*H + 2H, write (1+hc)*T*H elements), and each row needs its whole
// sum of squares before any output, so a row stays on chip between the two. The register kernel holds
// it in registers: a block normalises one (or two) rows of one kind per step, each thread keeping
// `vecs_per_thread` 16-byte vectors; it issues every load of a step (activations, position, weights)
// before using any, so a step costs one memory round trip and one block reduction (warp shuffles, one
// barrier, shuffles again). The launch shape is the whole tuning space: at small T few threads per
// vector keep the per-thread chains short (latency); at large T fewer, fatter blocks per row keep more
// bytes in flight per SM (bandwidth). The heuristic in launch_rows comes from the kernel lab's sweeps
// (bench/kernels/rms_norm/, results in bench/RESULTS.md), which also timed and dropped a cp.async shared-memory
// pipeline and cluster-split rows (register and bulk kernels alike). Up to 4 rows per SM the bulk kernel
// does better: one block per row, whose thread 0 loads the whole row into shared memory with one bulk
// asynchronous copy (TMA) while the others read the weights, so a row costs one instruction to fetch and
// no registers while in flight. Where registers limit how many rows an SM holds at once, a late-weight
// instance of the register kernel (weights read after the reduction) trades one L1 read for ~30% fewer
// registers. Rows that are not 16-byte aligned (odd H) take a scalar two-pass kernel.
//
// Launches use programmatic dependent launch unless DSV4_PDL=0 (launch.h): each kernel waits
// (griddepcontrol.wait) before its first memory access and lets the next grid launch as soon as its own
// loads are issued, so back-to-back launches, captured graphs included, overlap one launch latency.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <type_traits>
#include <utility>

#include "backend/cuda/common.cuh"
#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/mbarrier.cuh"
#include "backend/cuda/rms_norm.h"
#include "backend/cuda/rope.cuh"

namespace dsv4::cuda {
namespace {

// Everything a kernel needs, in bytes so that one kernel serves every layout.
struct RmsNormRows {
  const char* e_in;       // e rows: inputs_embeds [num_e_rows, H]
  const void* positions;  // [num_e_rows] int32 (int64 when positions_int64); e row t is zeroed when 0
  const char* h_in;       // h rows: [num_h_rows, H]
  const char* e_weight;
  const char* h_weight;
  char* e_out;
  char* h_out;
  int64_t num_e_rows;
  int64_t num_h_rows;
  int64_t num_e_tiles;  // tiles never mix e and h rows: tiles [0, num_e_tiles) hold e rows
  int64_t num_tiles;
  int64_t hidden;         // elements per row
  int64_t row_bytes;      // hidden * element size (input rows are packed)
  int64_t e_out_stride;   // bytes between the outputs of consecutive e rows
  int64_t e_copy_stride;  // bytes between the copies of one e row (the eh layout writes hc copies)
  int64_t h_out_stride;   // bytes between the outputs of consecutive h rows
  int32_t e_copies;
  int32_t positions_int64;
  int32_t num_vecs;        // 16-byte vectors per row (vector kernels)
  int32_t pdl;             // 0: launched without PDL; else the RmsNormTrigger at which the next grid may launch
  int32_t stages;          // bulk kernel: depth of the shared-memory row ring
  int32_t rows_per_group;  // bulk kernel: > 0: block b owns rows [b * this, (b + 1) * this); 0: rows b + i * grid
  float inv_hidden;
  float eps;
};

// ---- element <-> float conversions on 16-byte vectors ----------------------------------------------
template <typename T>
struct Vec16;

template <>
struct Vec16<float> {
  static constexpr int kElems = 4;
  __device__ __forceinline__ static void to_float(const uint4& v, float (&f)[kElems]) {
    f[0] = __uint_as_float(v.x);
    f[1] = __uint_as_float(v.y);
    f[2] = __uint_as_float(v.z);
    f[3] = __uint_as_float(v.w);
  }
  __device__ __forceinline__ static uint4 from_float(const float (&f)[kElems]) {
    return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
  }
};

// bf16 -> f32 is a shift; f32 -> bf16 rounds to nearest even (cvt.rn.bf16x2.f32).
template <>
struct Vec16<__nv_bfloat16> {
  static constexpr int kElems = 8;
  __device__ __forceinline__ static void unpack(uint32_t u, float& lo, float& hi) {
    lo = __uint_as_float(u << 16);
    hi = __uint_as_float(u & 0xffff0000u);
  }
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  __device__ __forceinline__ static void to_float(const uint4& v, float (&f)[kElems]) {
    unpack(v.x, f[0], f[1]);
    unpack(v.y, f[2], f[3]);
    unpack(v.z, f[4], f[5]);
    unpack(v.w, f[6], f[7]);
  }
  __device__ __forceinline__ static uint4 from_float(const float (&f)[kElems]) {
    return make_uint4(pack(f[0], f[1]), pack(f[2], f[3]), pack(f[4], f[5]), pack(f[6], f[7]));
  }
};

template <>
struct Vec16<__half> {
  static constexpr int kElems = 8;
  __device__ __forceinline__ static void unpack(uint32_t u, float& lo, float& hi) {
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&u));
    lo = f.x;
    hi = f.y;
  }
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
  }
  __device__ __forceinline__ static void to_float(const uint4& v, float (&f)[kElems]) {
    unpack(v.x, f[0], f[1]);
    unpack(v.y, f[2], f[3]);
    unpack(v.z, f[4], f[5]);
    unpack(v.w, f[6], f[7]);
  }
  __device__ __forceinline__ static uint4 from_float(const float (&f)[kElems]) {
    return make_uint4(pack(f[0], f[1]), pack(f[2], f[3]), pack(f[4], f[5]), pack(f[6], f[7]));
  }
};

// Activations are read exactly once: bypass L1 and let L2 fetch whole 256-byte lines. The read-only
// path is safe even in place (out == x): each thread reads its elements before it writes them.
__device__ __forceinline__ uint4 load_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Weights are shared by every row: default caching, so blocks on one SM share them through L1.
__device__ __forceinline__ uint4 load_weight(const void* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }

// Plain loads (default caching), the lab's alternative to the two above.
__device__ __forceinline__ uint4 load_plain(const void* p) { return *reinterpret_cast<const uint4*>(p); }

// Whether e row `row` is masked (its position is 0).
__device__ __forceinline__ bool masked_row(const RmsNormRows& p, int64_t row) {
  return p.positions_int64 ? __ldg(static_cast<const int64_t*>(p.positions) + row) == 0
                           : __ldg(static_cast<const int32_t*>(p.positions) + row) == 0;
}

// Block-wide sums of kRows values: warp shuffles, one barrier, then every warp reduces the per-warp sums
// with shuffles again (no serial shared-memory loop, no second barrier). Every warp evaluates the same
// tree on the same data, so all threads get bit-identical totals. `partial` must alternate between two
// buffers on consecutive calls (a fast warp may write the next call's sums while others still read).
template <int kRows>
__device__ __forceinline__ void block_sum_rows(float (&s)[kRows], float (*partial)[32], int lane, int warp,
                                               int num_warps) {
#pragma unroll
  for (int r = 0; r < kRows; ++r) s[r] = warp_sum(s[r]);
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) partial[r][warp] = s[r];
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < kRows; ++r) s[r] = warp_sum(lane < num_warps ? partial[r][lane] : 0.f);
}

template <typename V>
__device__ __forceinline__ float sum_squares(const uint4& v) {
  float f[V::kElems];
  V::to_float(v, f);
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < V::kElems; ++i) s = fmaf(f[i], f[i], s);
  return s;
}

// y = x * rstd * w, rounded once to the storage dtype.
template <typename V>
__device__ __forceinline__ uint4 scale(const uint4& x, const uint4& w, float rstd) {
  float f[V::kElems], g[V::kElems];
  V::to_float(x, f);
  V::to_float(w, g);
#pragma unroll
  for (int i = 0; i < V::kElems; ++i) f[i] = f[i] * rstd * g[i];
  return V::from_float(f);
}

// Writes one output vector of a row (hc copies for an e row in the eh layout).
__device__ __forceinline__ void store_row_vec(const RmsNormRows& p, bool is_e, int64_t row, int v, uint4 y) {
  char* dst = (is_e ? p.e_out + row * p.e_out_stride : p.h_out + row * p.h_out_stride) + static_cast<int64_t>(v) * 16;
  const int copies = is_e ? p.e_copies : 1;
  for (int c = 0; c < copies; ++c) *reinterpret_cast<uint4*>(dst + c * p.e_copy_stride) = y;
}

// PDL prologue: wait for the previous grid (only when launched with PDL: without it the previous grid has
// completed, so the instruction is skipped) and, where the launch asks for it, let the next one launch
// before or right after that wait. The kAfterLoads trigger is the kernels' own, after their last loads.
__device__ __forceinline__ void pdl_prologue(int32_t pdl) {
  if (pdl == static_cast<int32_t>(RmsNormTrigger::kBeforeWait)) pdl_launch_dependents();
  if (pdl != 0) pdl_wait_only();
  if (pdl == static_cast<int32_t>(RmsNormTrigger::kAfterWait)) pdl_launch_dependents();
}
__device__ __forceinline__ bool triggers_after_loads(int32_t pdl) {
  return pdl == static_cast<int32_t>(RmsNormTrigger::kAfterLoads);
}

// Register budget: variants that hold more vectors per thread get fewer threads per block, so that the
// compiler may use more registers without spilling (launch bounds of 1024 threads cap it at 64).
constexpr int reg_kernel_max_threads(int vpt, int rows) {
  return vpt * rows <= 2 ? 1024 : (vpt * rows <= 4 ? 512 : 256);
}
// Variants with 4+ vectors per thread ask for 2 resident blocks, which caps them at 64 (4 vectors) or 128
// (8 vectors) registers: the allocations of the lab's measured-fastest bandwidth configurations (more
// registers per thread would mean fewer resident blocks, fewer bytes in flight).
constexpr int reg_kernel_min_blocks(int vpt, int rows) { return vpt * rows >= 4 ? 2 : 1; }
// Late-weight variants hold only the row across the reduction (weights are read afterwards, from L1), so
// they ask for more resident threads: at most 512 threads per block (256 with 8 vectors) and 3-4 resident
// blocks, i.e. a 42 (1-4 vectors) or 64 (8 vectors) register cap.
constexpr int late_kernel_max_threads(int vpt) { return vpt >= 8 ? 256 : 512; }
constexpr int late_kernel_min_blocks(int vpt) { return vpt >= 8 ? 4 : 3; }
template <int kVpt, int kRows, bool kLateWeights>
struct RegKernelBounds {
  static constexpr int kMaxThreads = kLateWeights ? late_kernel_max_threads(kVpt) : reg_kernel_max_threads(kVpt, kRows);
  static constexpr int kMinBlocks = kLateWeights ? late_kernel_min_blocks(kVpt) : reg_kernel_min_blocks(kVpt, kRows);
};

// ---- register kernel ----------------------------------------------------------------------------------
// A block normalises kRows rows of one kind per step (tiles never mix e and h rows, so a block holds one
// weight vector set); thread j holds vectors j, j + blockDim.x, ... (kVpt of them) of each row, so a
// warp's accesses are contiguous. A capped grid loops over tiles and reloads weights only when the kind
// changes. kPlainLoads swaps the read-only/no-L1/L2-prefetch loads for plain ones. kLateWeights reads
// the weights after the reduction, one vector at a time in the store loop, instead of with the row (an
// L1 hit once one block of the SM has read them): 40 instead of 56 registers at 2 vectors per thread (bf16),
// so more rows resident per SM. The heuristic uses it at 1-2 vectors only: at 4-8 it measured slower
// (0.5-1.2 us at T = 1, up to 25% at T = 4096), likely because each weight load waits behind the stores
// before it.
template <typename T, int kVpt, int kRows, bool kPlainLoads, bool kLateWeights>
__global__ void __launch_bounds__(RegKernelBounds<kVpt, kRows, kLateWeights>::kMaxThreads,
                                  RegKernelBounds<kVpt, kRows, kLateWeights>::kMinBlocks)
    rms_norm_reg_kernel(const RmsNormRows p) {
  using V = Vec16<T>;
  __shared__ float partial[2][kRows][32];

  pdl_prologue(p.pdl);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, num_warps = blockDim.x >> 5;

  uint4 w[kVpt];
  int weight_kind = -1;  // 1: w holds enorm_w, 0: hnorm_w (unused with kLateWeights)
  int parity = 0;
  for (int64_t tile = blockIdx.x; tile < p.num_tiles; tile += gridDim.x) {
    const bool is_e = tile < p.num_e_tiles;  // block-uniform
    const int64_t row0 = (is_e ? tile : tile - p.num_e_tiles) * kRows;
    const int64_t num_kind_rows = is_e ? p.num_e_rows : p.num_h_rows;
    const char* in = is_e ? p.e_in : p.h_in;
    // 1. Issue every load of this step before using any.
    uint4 x[kRows][kVpt];
    bool masked[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = row0 + r;
      const bool valid = row < num_kind_rows;
      masked[r] = valid && is_e && masked_row(p, row);
#pragma unroll
      for (int k = 0; k < kVpt; ++k) {
        const int v = k * blockDim.x + tid;
        const char* src = in + row * p.row_bytes + static_cast<int64_t>(v) * 16;
        x[r][k] =
            (valid && v < p.num_vecs) ? (kPlainLoads ? load_plain(src) : load_stream(src)) : make_uint4(0, 0, 0, 0);
      }
    }
    const auto weight_vec = [&](int k) {  // this thread's weight vector k (16 bytes)
      const int v = k * blockDim.x + tid;
      const char* src = (is_e ? p.e_weight : p.h_weight) + static_cast<int64_t>(v) * 16;
      return v < p.num_vecs ? (kPlainLoads ? load_plain(src) : load_weight(src)) : make_uint4(0, 0, 0, 0);
    };
    if (!kLateWeights && weight_kind != static_cast<int>(is_e)) {
#pragma unroll
      for (int k = 0; k < kVpt; ++k) w[k] = weight_vec(k);
      weight_kind = is_e;
    }
    if (triggers_after_loads(p.pdl) && tile + gridDim.x >= p.num_tiles) pdl_launch_dependents();

    // 2. Sums of squares ("where(positions == 0, 0, e)": a masked row is normalised as zeros).
    float s[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (masked[r]) {
#pragma unroll
        for (int k = 0; k < kVpt; ++k) x[r][k] = make_uint4(0, 0, 0, 0);
      }
      s[r] = 0.f;
#pragma unroll
      for (int k = 0; k < kVpt; ++k) s[r] += sum_squares<V>(x[r][k]);
    }
    block_sum_rows<kRows>(s, partial[parity], lane, warp, num_warps);
    parity ^= 1;

    // 3. Normalise and store.
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t row = row0 + r;
      if (row >= num_kind_rows) continue;
      const float rstd = rsqrtf(s[r] * p.inv_hidden + p.eps);
#pragma unroll
      for (int k = 0; k < kVpt; ++k) {
        const int v = k * blockDim.x + tid;
        if (v < p.num_vecs) {
          store_row_vec(p, is_e, row, v, scale<V>(x[r][k], kLateWeights ? weight_vec(k) : w[k], rstd));
        }
      }
    }
  }
}

// ---- bulk (TMA) kernel ---------------------------------------------------------------------------------
// A resident grid; block b normalises rows b, b + G, b + 2G, ... (G = gridDim.x; e rows first). Thread 0
// keeps up to p.stages of them in flight in a shared-memory ring, one bulk asynchronous copy per row
// completing on that stage's mbarrier; the block waits for a row, reads it into registers, and the
// barrier inside the block reduction (every thread has read the stage by then) frees the stage for the
// row p.stages further on, before this row's stores. Weights stay in registers while the kind holds.
constexpr int kMaxBulkStages = 32;
// The bulk kernel's static shared memory: one mbarrier per stage and the block reduction's partial sums.
constexpr size_t kBulkStaticSmem = kMaxBulkStages * sizeof(uint64_t) + 2 * 32 * sizeof(float);

// The row's bytes into its ring stage, completing the stage's barrier (one arrival: this thread's expect_tx).
__device__ __forceinline__ void bulk_load(uint32_t dst, const void* src, uint32_t bytes, uint32_t barrier) {
  tma::mbar_arrive_expect_tx(barrier, bytes);
  tma::bulk_copy_to_shared(dst, src, bytes, barrier);
}

__device__ __forceinline__ uint4 load_shared_vec(uint32_t addr) {
  uint4 x;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(x.x), "=r"(x.y), "=r"(x.z), "=r"(x.w) : "r"(addr));
  return x;
}

// One row of the late bulk kernel, read from its stage twice: sum of squares, block reduction, then each
// group of 4 vectors reads its weights (from L1 once a block of the SM has read them) and its row values
// again and stores (4 weight vectors in registers at a time: no spills at 8 vectors per thread).
template <typename V, int kVpt>
__device__ __forceinline__ void bulk_row_late(const RmsNormRows& p, uint32_t stage_addr, bool is_e, int64_t row,
                                              bool masked, float (*partial)[32], int lane, int warp, int num_warps) {
  const int tid = threadIdx.x;
  const auto row_vec = [&](int k) {  // zeros past the row or for a masked row
    const int v = k * blockDim.x + tid;
    return v < p.num_vecs && !masked ? load_shared_vec(stage_addr + static_cast<uint32_t>(v) * 16u)
                                     : make_uint4(0, 0, 0, 0);
  };
  float s[1] = {0.f};
#pragma unroll
  for (int k = 0; k < kVpt; ++k) s[0] += sum_squares<V>(row_vec(k));
  block_sum_rows<1>(s, partial, lane, warp, num_warps);
  const float rstd = rsqrtf(s[0] * p.inv_hidden + p.eps);
  const char* wsrc = is_e ? p.e_weight : p.h_weight;
  constexpr int kGroup = kVpt < 4 ? kVpt : 4;
#pragma unroll
  for (int k0 = 0; k0 < kVpt; k0 += kGroup) {
    uint4 w[kGroup];
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      const int v = (k0 + j) * blockDim.x + tid;
      w[j] = v < p.num_vecs ? load_weight(wsrc + static_cast<int64_t>(v) * 16) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      const int v = (k0 + j) * blockDim.x + tid;
      if (v < p.num_vecs) store_row_vec(p, is_e, row, v, scale<V>(row_vec(k0 + j), w[j], rstd));
    }
  }
}

// kLate: the row stays in shared memory — a first pass reads it for the sum of squares, a second after the
// reduction reads it again beside the weights (loaded then, not held) — so a block keeps almost nothing in
// registers and, with at most 128 threads, 10-12 blocks share an SM: the one-row-per-block grid of
// T = 256 (1,280 rows at hc = 4) is resident in one wave (the register and bulk instances of 64+ registers
// fit 8 such blocks per SM, i.e. two waves). The stage is freed after the second read (an extra barrier).
constexpr int bulk_kernel_max_threads(bool late) { return late ? 128 : 1024; }
// 0: no minimum (ptxas chooses; an explicit 1 made it use more registers, e.g. 56 instead of 32 at 2 vectors).
constexpr int bulk_kernel_min_blocks(int vpt, bool late) { return late ? (vpt >= 8 ? 10 : 12) : 0; }
template <typename T, int kVpt, bool kLate>
__global__ void __launch_bounds__(bulk_kernel_max_threads(kLate), bulk_kernel_min_blocks(kVpt, kLate))
    rms_norm_bulk_kernel(const RmsNormRows p) {
  using V = Vec16<T>;
  extern __shared__ __align__(128) unsigned char ring[];  // p.stages rows of p.row_bytes
  __shared__ __align__(8) uint64_t full[kMaxBulkStages];
  __shared__ float partial[2][1][32];
  static_assert(sizeof(full) + sizeof(partial) == kBulkStaticSmem, "kBulkStaticSmem: the static arrays");
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, num_warps = blockDim.x >> 5;
  const int64_t num_rows = p.num_e_rows + p.num_h_rows;
  // This block's rows: first_row + i * step, i < my_rows (contiguous groups share one weight load).
  const int64_t group = p.rows_per_group;
  const int64_t first_row = group > 0 ? blockIdx.x * group : blockIdx.x;
  const int64_t step = group > 0 ? 1 : gridDim.x;
  const int64_t my_rows =
      group > 0 ? std::min<int64_t>(group, num_rows - first_row) : (num_rows - blockIdx.x + gridDim.x - 1) / gridDim.x;
  const int stages = p.stages;
  const uint32_t row_bytes = static_cast<uint32_t>(p.row_bytes);
  const uint32_t ring_base = tma::smem_addr(ring), full_base = tma::smem_addr(full);
  if (tid == 0) {  // no global memory touched: may run before the PDL wait
    for (int s = 0; s < stages; ++s) tma::mbar_init(full_base + 8u * s, 1);
    tma::fence_mbarrier_init();
  }
  __syncthreads();
  pdl_prologue(p.pdl);

  const auto row_src = [&](int64_t r) {
    return r < p.num_e_rows ? p.e_in + r * p.row_bytes : p.h_in + (r - p.num_e_rows) * p.row_bytes;
  };
  if (tid == 0) {
    const int64_t first = std::min<int64_t>(stages, my_rows);
    for (int64_t i = 0; i < first; ++i) {
      bulk_load(ring_base + static_cast<uint32_t>(i) * row_bytes, row_src(first_row + i * step), row_bytes,
                full_base + 8u * static_cast<uint32_t>(i));
    }
  }
  // The last load of this block is issued before row (my_rows - stages)'s stores, or above.
  const int64_t last_issue = my_rows - 1 - stages;
  if (triggers_after_loads(p.pdl) && last_issue < 0) pdl_launch_dependents();

  uint4 w[kVpt];
  int weight_kind = -1;
  int parity = 0;
  for (int64_t i = 0; i < my_rows; ++i) {
    const int64_t r = first_row + i * step;
    const bool is_e = r < p.num_e_rows;  // block-uniform
    const int64_t row = is_e ? r : r - p.num_e_rows;
    const bool masked = is_e && masked_row(p, row);
    if (!kLate && weight_kind != static_cast<int>(is_e)) {
      const char* wsrc = is_e ? p.e_weight : p.h_weight;
#pragma unroll
      for (int k = 0; k < kVpt; ++k) {
        const int v = k * blockDim.x + tid;
        w[k] = v < p.num_vecs ? load_weight(wsrc + static_cast<int64_t>(v) * 16) : make_uint4(0, 0, 0, 0);
      }
      weight_kind = is_e;
    }
    const int stage = static_cast<int>(i % stages);
    const uint32_t stage_addr = ring_base + static_cast<uint32_t>(stage) * row_bytes;
    tma::mbar_wait(full_base + 8u * stage, static_cast<uint32_t>((i / stages) & 1));
    if constexpr (kLate) {
      bulk_row_late<V, kVpt>(p, stage_addr, is_e, row, masked, partial[parity], lane, warp, num_warps);
      parity ^= 1;
      if (i + stages < my_rows) {  // block-uniform: every thread has read the stage a second time
        __syncthreads();
        if (tid == 0) bulk_load(stage_addr, row_src(r + stages * step), row_bytes, full_base + 8u * stage);
      }
      if (triggers_after_loads(p.pdl) && i == last_issue) pdl_launch_dependents();
      continue;
    }
    uint4 x[kVpt];
    float s[1] = {0.f};
#pragma unroll
    for (int k = 0; k < kVpt; ++k) {
      const int v = k * blockDim.x + tid;
      x[k] = make_uint4(0, 0, 0, 0);
      if (v < p.num_vecs && !masked) {
        asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
                     : "=r"(x[k].x), "=r"(x[k].y), "=r"(x[k].z), "=r"(x[k].w)
                     : "r"(stage_addr + static_cast<uint32_t>(v) * 16u));
      }
      s[0] += sum_squares<V>(x[k]);
    }
    block_sum_rows<1>(s, partial[parity], lane, warp, num_warps);  // its barrier: every thread has read the stage
    parity ^= 1;
    if (tid == 0 && i + stages < my_rows) {
      bulk_load(stage_addr, row_src(r + stages * step), row_bytes, full_base + 8u * stage);
    }
    if (triggers_after_loads(p.pdl) && i == last_issue) pdl_launch_dependents();
    const float rstd = rsqrtf(s[0] * p.inv_hidden + p.eps);
#pragma unroll
    for (int k = 0; k < kVpt; ++k) {
      const int v = k * blockDim.x + tid;
      if (v < p.num_vecs) store_row_vec(p, is_e, row, v, scale<V>(x[k], w[k], rstd));
    }
  }
}

}  // namespace

// common.cuh converts f32 and bf16; the RMSNorm family also takes fp16.
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}

namespace {

// ---- scalar two-pass kernel: any H, any alignment --------------------------------------------------
// One block per row (grid-stride over all rows, e rows first): pass 1 sums squares, pass 2 re-reads the
// row (now in L1/L2) and writes it.
template <typename T>
__global__ void __launch_bounds__(256) rms_norm_scalar_kernel(const RmsNormRows p) {
  __shared__ float partial[2][1][32];
  pdl_prologue(p.pdl);
  // Two passes over every row: the loads never end early, so "after loads" means after the wait here.
  if (triggers_after_loads(p.pdl)) pdl_launch_dependents();
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, num_warps = blockDim.x >> 5;
  const int64_t num_rows = p.num_e_rows + p.num_h_rows;
  int parity = 0;
  for (int64_t r = blockIdx.x; r < num_rows; r += gridDim.x) {
    const bool is_e = r < p.num_e_rows;
    const int64_t row = is_e ? r : r - p.num_e_rows;
    const T* src = reinterpret_cast<const T*>((is_e ? p.e_in : p.h_in) + row * p.row_bytes);
    const T* weight = reinterpret_cast<const T*>(is_e ? p.e_weight : p.h_weight);
    const bool zeroed = is_e && masked_row(p, row);
    float s[1] = {0.f};
    if (!zeroed) {
      for (int64_t i = tid; i < p.hidden; i += blockDim.x) {
        const float f = to_float(src[i]);
        s[0] = fmaf(f, f, s[0]);
      }
    }
    block_sum_rows<1>(s, partial[parity], lane, warp, num_warps);
    parity ^= 1;
    const float rstd = rsqrtf(s[0] * p.inv_hidden + p.eps);
    char* dst = is_e ? p.e_out + row * p.e_out_stride : p.h_out + row * p.h_out_stride;
    const int copies = is_e ? p.e_copies : 1;
    for (int64_t i = tid; i < p.hidden; i += blockDim.x) {
      const float f = zeroed ? 0.f : to_float(src[i]);
      const T y = from_float<T>(f * rstd * to_float(weight[i]));
      for (int c = 0; c < copies; ++c) reinterpret_cast<T*>(dst + c * p.e_copy_stride)[i] = y;
    }
  }
}

// ---- host side ---------------------------------------------------------------------------------------
constexpr int kScalarThreads = 256;
constexpr int64_t kMaxRegisterVecs = 8 * 256;       // 8 vectors x 256 threads (the 8-vector launch bound)
constexpr size_t kDefaultSmemPerBlock = 48 * 1024;  // dynamic shared memory a kernel may use without opting in

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up32(int64_t a) { return (a + 31) / 32 * 32; }

// An attribute of the current device, cached per device (the launch path must stay cheap and must not
// call anything a stream capture forbids).
Status device_attribute(cudaDeviceAttr attr, int* out) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, int> cache;
  int dev = 0;
  DSV4_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(dev, static_cast<int>(attr));
  auto it = cache.find(key);
  if (it == cache.end()) {
    int n = 0;
    DSV4_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&n, attr, dev));
    it = cache.emplace(key, n).first;
  }
  *out = it->second;
  return Status::ok();
}

Status sm_count(int* out) { return device_attribute(cudaDevAttrMultiProcessorCount, out); }

// Whether the device's peak DRAM bandwidth (memory clock x bus width, double data rate) exceeds 4 TB/s: an H200
// (4.8) rather than an H100 (3.35). Both have 132 SMs; the faster memory moves where one launch shape overtakes
// another (bench/RESULTS.md, the H200 sweeps).
Status high_bandwidth_memory(bool* out) {
  int mem_khz = 0, bus_bits = 0;
  if (Status st = device_attribute(cudaDevAttrMemoryClockRate, &mem_khz); !st) return st;
  if (Status st = device_attribute(cudaDevAttrGlobalMemoryBusWidth, &bus_bits); !st) return st;
  *out = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0) > 4e12;
  return Status::ok();
}

using RowKernel = void (*)(RmsNormRows);

// Resident blocks per SM of (kernel, threads, dynamic shared memory), cached.
Status blocks_per_sm(RowKernel kernel, int threads, int* out, size_t dynamic_smem = 0) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, size_t, int>, int> cache;
  int dev = 0;
  DSV4_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_tuple(reinterpret_cast<const void*>(kernel), threads, dynamic_smem, dev);
  auto it = cache.find(key);
  if (it == cache.end()) {
    int n = 0;
    DSV4_CUDA_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, dynamic_smem));
    it = cache.emplace(key, n).first;
  }
  *out = it->second;
  return Status::ok();
}

// Lets `kernel` use up to the device's opt-in shared memory per block, static arrays included (once per
// kernel and device).
Status allow_large_smem(RowKernel kernel, int optin_bytes) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, bool> done;
  int dev = 0;
  DSV4_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), dev);
  if (done.count(key) == 0) {
    cudaFuncAttributes attr{};
    DSV4_CUDA_RETURN_IF_ERROR(cudaFuncGetAttributes(&attr, kernel));
    const int dynamic_max = optin_bytes - static_cast<int>(attr.sharedSizeBytes);  // the cap excludes static
    DSV4_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dynamic_max));
    done.emplace(key, true);
  }
  return Status::ok();
}

template <typename T, bool kPlain>
RowKernel pick_reg_kernel(int vpt, int rows) {
  switch (vpt * 10 + rows) {
    case 11:
      return rms_norm_reg_kernel<T, 1, 1, kPlain, false>;
    case 12:
      return rms_norm_reg_kernel<T, 1, 2, kPlain, false>;
    case 21:
      return rms_norm_reg_kernel<T, 2, 1, kPlain, false>;
    case 22:
      return rms_norm_reg_kernel<T, 2, 2, kPlain, false>;
    case 41:
      return rms_norm_reg_kernel<T, 4, 1, kPlain, false>;
    case 42:
      return rms_norm_reg_kernel<T, 4, 2, kPlain, false>;
    case 81:
      return rms_norm_reg_kernel<T, 8, 1, kPlain, false>;
    default:
      return nullptr;
  }
}

// The instance of a kernel template for a run-time vectors-per-thread count (1, 2, 4 or 8; else nullptr):
// `instance` maps a std::integral_constant<int, V> to that instance.
template <typename Instance>
RowKernel for_vecs_per_thread(int vpt, Instance instance) {
  switch (vpt) {
    case 1:
      return instance(std::integral_constant<int, 1>{});
    case 2:
      return instance(std::integral_constant<int, 2>{});
    case 4:
      return instance(std::integral_constant<int, 4>{});
    case 8:
      return instance(std::integral_constant<int, 8>{});
    default:
      return nullptr;
  }
}

// Late-weight instances: one row per block, read-only or plain loads (plain + late + 4 vectors per thread
// is the published Triton kernel's shape at H = 4096: the lab's H200 candidate where no other launch beat it).
template <typename T, bool kPlain>
RowKernel pick_late_kernel(int vpt, int rows) {
  if (rows != 1) return nullptr;
  return for_vecs_per_thread(vpt, [](auto v) -> RowKernel { return rms_norm_reg_kernel<T, v(), 1, kPlain, true>; });
}

template <typename T>
RowKernel pick_bulk_kernel(int vpt, bool late) {
  if (late) {  // late instances: 4 and 8 vectors per thread (rows of up to 512 / 1024 vectors in 128 threads)
    if (vpt == 4) return rms_norm_bulk_kernel<T, 4, true>;
    return vpt == 8 ? rms_norm_bulk_kernel<T, 8, true> : nullptr;
  }
  return for_vecs_per_thread(vpt, [](auto v) -> RowKernel { return rms_norm_bulk_kernel<T, v(), false>; });
}

template <typename T>
RowKernel pick_reg_kernel(int vpt, int rows, bool plain, bool late) {
  if (late) return plain ? pick_late_kernel<T, true>(vpt, rows) : pick_late_kernel<T, false>(vpt, rows);
  return plain ? pick_reg_kernel<T, true>(vpt, rows) : pick_reg_kernel<T, false>(vpt, rows);
}

RowKernel pick_kernel(DType dtype, const RmsNormLaunch& s) {
  if (s.kernel == RmsNormKernel::kRegister) {
    const int vpt = s.vecs_per_thread, rows = s.rows_per_block;
    if (dtype == DType::F32) return pick_reg_kernel<float>(vpt, rows, s.plain_loads, s.late_weights);
    if (dtype == DType::BF16) return pick_reg_kernel<__nv_bfloat16>(vpt, rows, s.plain_loads, s.late_weights);
    return pick_reg_kernel<__half>(vpt, rows, s.plain_loads, s.late_weights);
  }
  if (s.kernel == RmsNormKernel::kBulk) {
    if (dtype == DType::F32) return pick_bulk_kernel<float>(s.vecs_per_thread, s.late_weights);
    if (dtype == DType::BF16) return pick_bulk_kernel<__nv_bfloat16>(s.vecs_per_thread, s.late_weights);
    return pick_bulk_kernel<__half>(s.vecs_per_thread, s.late_weights);
  }
  if (s.kernel == RmsNormKernel::kScalar) {
    if (dtype == DType::F32) return rms_norm_scalar_kernel<float>;
    if (dtype == DType::BF16) return rms_norm_scalar_kernel<__nv_bfloat16>;
    return rms_norm_scalar_kernel<__half>;
  }
  return nullptr;
}

// The launch bound of the register-kernel instance `s` selects.
int max_threads(const RmsNormLaunch& s) {
  return s.late_weights ? late_kernel_max_threads(s.vecs_per_thread)
                        : reg_kernel_max_threads(s.vecs_per_thread, s.rows_per_block);
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Shared argument checks. `what` names the entry point in messages.
Status check_sizes(const char* what, int64_t num_tokens, int64_t hidden, int64_t hc_mult, float eps, DType dtype,
                   int64_t out_row_elems_per_token) {
  if (dtype != DType::F32 && dtype != DType::BF16 && dtype != DType::F16) {
    return {StatusCode::kInvalidArgument, str_cat(what, ": dtype must be F32, BF16 or F16, got ", dtype_name(dtype))};
  }
  if (num_tokens < 0) {
    return {StatusCode::kInvalidArgument, str_cat(what, ": num_tokens < 0 (", num_tokens, ")")};
  }
  if (hidden <= 0) return {StatusCode::kInvalidArgument, str_cat(what, ": hidden must be > 0, got ", hidden)};
  if (hc_mult <= 0) {
    return {StatusCode::kInvalidArgument, str_cat(what, ": hc_mult must be > 0, got ", hc_mult)};
  }
  if (!(eps >= 0.f) || std::isinf(eps)) {
    return {StatusCode::kInvalidArgument, str_cat(what, ": eps must be finite and >= 0, got ", eps)};
  }
  // Every byte offset the kernels form must fit in int64: bytes of the largest tensor touched.
  int64_t elems = 0, bytes = 0, row_elems = 0;
  if (hidden > (INT64_MAX / 4) / static_cast<int64_t>(dtype_size(dtype)) ||
      __builtin_mul_overflow(hc_mult + 1, 2 * hidden, &row_elems) ||
      __builtin_mul_overflow(num_tokens, std::max(out_row_elems_per_token, row_elems), &elems) ||
      __builtin_mul_overflow(elems, static_cast<int64_t>(dtype_size(dtype)), &bytes)) {
    return {StatusCode::kInvalidArgument, str_cat(what, ": sizes overflow int64 (num_tokens=", num_tokens,
                                                  ", hidden=", hidden, ", hc_mult=", hc_mult, ")")};
  }
  return Status::ok();
}

Status check_pointer(const char* what, const char* name, const void* p) {
  if (p == nullptr) return {StatusCode::kInvalidArgument, str_cat(what, ": ", name, " is null")};
  return Status::ok();
}

Status invalid_config(const char* what, const RmsNormLaunch& s, int64_t hidden, const char* why) {
  return {StatusCode::kInvalidArgument,
          str_cat(what, ": launch variant [", s.to_string(), "] does not fit hidden=", hidden, ": ", why)};
}

// Launch shape of the bulk kernel. Threads per row: 2 vectors per thread (more where a row needs more than
// 1024 threads), and 4 when a few rows share each SM (sms < rows <= 4 sms) and 2 would take more than 256
// threads (H = 7168, T = 64: 3.55 vs 4.05 us on H100). Grid: one block per row with a one-row ring,
// unless blocks_per_sm asks for a resident grid (blocks_per_sm blocks per SM, each streaming its rows
// through a ring as deep as its share of the SM's shared memory allows; measured slower at every shape,
// kept for the lab); a positive max_blocks caps the grid (the tests' long rings).
Status plan_bulk(const char* what, const RmsNormRows& p, DType dtype, const RmsNormConfig& cfg, int sms,
                 RmsNormLaunch* s, size_t* dynamic_smem) {
  const int64_t num_rows = p.num_e_rows + p.num_h_rows;
  const int64_t num_vecs = p.row_bytes / 16;
  const auto threads_for = [&](int vpt) { return round_up32(ceil_div(num_vecs, vpt)); };
  s->vecs_per_thread = cfg.vecs_per_thread;
  s->late_weights = cfg.late_weights;
  const int thread_cap = bulk_kernel_max_threads(s->late_weights);
  if (s->vecs_per_thread == 0 && s->late_weights) {
    s->vecs_per_thread = threads_for(4) <= thread_cap ? 4 : 8;
  } else if (s->vecs_per_thread == 0) {
    s->vecs_per_thread = 2;
    while (s->vecs_per_thread < 8 && threads_for(s->vecs_per_thread) > 1024) s->vecs_per_thread *= 2;
    if (num_rows > sms && num_rows <= int64_t{4} * sms && threads_for(s->vecs_per_thread) > 256 &&
        s->vecs_per_thread < 8) {
      s->vecs_per_thread *= 2;
    }
  }
  s->rows_per_block = cfg.rows_per_block == 0 ? 1 : cfg.rows_per_block;
  s->threads = static_cast<int>(std::min<int64_t>(round_up32(ceil_div(num_vecs, s->vecs_per_thread)), INT_MAX));
  if (s->threads > thread_cap) return invalid_config(what, *s, p.hidden, "too many threads per block");
  const bool resident_grid = cfg.blocks_per_sm != 0 && cfg.max_blocks != -1;
  if (s->rows_per_block < 1 || s->rows_per_block > kMaxBulkStages || (resident_grid && s->rows_per_block > 1)) {
    return invalid_config(what, *s, p.hidden, "rows_per_block must be 1..32, and 1 with a resident grid");
  }
  const int per_sm = resident_grid ? cfg.blocks_per_sm : 1;
  if (per_sm < 1 || per_sm > 4) return invalid_config(what, *s, p.hidden, "blocks_per_sm must be 0..4");
  int smem_per_sm = 0, optin = 0;
  if (Status st = device_attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor, &smem_per_sm); !st) return st;
  if (Status st = device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, &optin); !st) return st;
  // Per block: its share of the SM less the static arrays and the 1 KB the runtime reserves per block.
  const int64_t budget = std::min<int64_t>(optin, smem_per_sm / per_sm - 2048);
  s->blocks = resident_grid ? std::min<int64_t>(num_rows, static_cast<int64_t>(sms) * per_sm)
                            : ceil_div(num_rows, s->rows_per_block);
  if (cfg.max_blocks > 0) {  // the tests' long rings: only where blocks stride over the rows
    if (s->rows_per_block > 1) return invalid_config(what, *s, p.hidden, "max_blocks > 0 needs rows_per_block 1");
    s->blocks = std::min<int64_t>(s->blocks, cfg.max_blocks);
  }
  const int64_t rows_per_block = ceil_div(num_rows, s->blocks);
  s->stages =
      static_cast<int>(std::min<int64_t>({kMaxBulkStages, rows_per_block, budget / std::max<int64_t>(p.row_bytes, 1)}));
  if (s->stages < 1) return invalid_config(what, *s, p.hidden, "a row does not fit the shared-memory budget");
  *dynamic_smem = static_cast<size_t>(s->stages) * static_cast<size_t>(p.row_bytes);
  const RowKernel kernel = pick_kernel(dtype, *s);
  if (kernel == nullptr) return invalid_config(what, *s, p.hidden, "no such kernel instance");
  // The 48 KB a block may use without opting in holds its static arrays too (an F32 row of 4096 in a
  // 3-row ring is exactly 48 KB of ring: without the opt-in the launch fails).
  if (*dynamic_smem + kBulkStaticSmem > kDefaultSmemPerBlock) {  // deep rings and rows > ~47 KB only
    if (Status st = allow_large_smem(kernel, optin); !st) return st;
  }
  if (resident_grid) {  // one row per block always fits (<= 1024 threads, a row within the smem budget)
    int resident = 0;
    if (Status st = blocks_per_sm(kernel, s->threads, &resident, *dynamic_smem); !st) return st;
    if (resident < 1) return invalid_config(what, *s, p.hidden, "the block does not fit an SM");
    // Fewer resident blocks than asked for: a smaller grid (each block then loops over more rows).
    if (resident < per_sm) s->blocks = std::min<int64_t>(num_rows, static_cast<int64_t>(sms) * resident);
  }
  return Status::ok();
}

// Chooses the kernel and its launch shape (heuristic, or the caller's config), then launches.
// `p` arrives with everything but the tiling fields.
Status launch_rows(const char* what, RmsNormRows p, DType dtype, std::initializer_list<const void*> pointers,
                   cudaStream_t stream, const RmsNormConfig* config, RmsNormLaunch* launched) {
  if (launched != nullptr) *launched = RmsNormLaunch{};
  const int64_t num_rows = p.num_e_rows + p.num_h_rows;
  if (num_rows == 0) return Status::ok();
  RmsNormConfig cfg = config != nullptr ? *config : RmsNormConfig{};
  int sms = 0;
  if (Status st = sm_count(&sms); !st) return st;

  // Vector kernels need every row start 16-byte aligned (the eh layout's e half starts H elements into
  // each output row: aligned when row_bytes is).
  bool aligned = p.row_bytes % 16 == 0;
  for (const void* ptr : pointers) aligned = aligned && aligned16(ptr);
  const int64_t num_vecs = p.row_bytes / 16;

  RmsNormLaunch s;
  s.kernel = cfg.kernel;
  if (s.kernel == RmsNormKernel::kAuto) {
    // Up to 4 rows per SM (T <~ 100 at hc = 4) the bulk kernel, one block per row, was the fastest launch
    // at every shape the lab timed (H = 4096 / 7168, bf16, H100); beyond, the register kernel's bandwidth
    // shape (4 vectors per thread, plain loads, one block per row) is (bench/RESULTS.md).
    // Between 4 rows per SM and what one wave of the late bulk instance holds (10-12 blocks of <= 128
    // threads per SM: T <~ 256-300 at hc = 4, rows of <= 1,024 vectors), that instance: the whole grid is
    // resident at once, where the others' 64-register blocks fit 8 per SM and run in two waves.
    // On an H200 the late bulk instance stays ahead up to 20 rows per SM (T ~ 530 at hc = 4), where the H100's
    // 2-vector register shape took over: H200 sweep (sixteenth session, bf16, hc = 4) H = 4096, T = 512 9.89 us vs
    // 10.95 (Triton 9.98); H = 7168, T = 320 12.45 vs 13.64 (12.95), T = 512 22.04 vs 23.08 (22.36).
    const int late_vpt = num_vecs <= 512 ? 4 : 8;
    bool fast_memory = false;
    if (Status st = high_bandwidth_memory(&fast_memory); !st) return st;
    const int64_t late_wave = fast_memory ? int64_t{20} * sms : int64_t{bulk_kernel_min_blocks(late_vpt, true)} * sms;
    if (!aligned || num_vecs > kMaxRegisterVecs) {
      s.kernel = RmsNormKernel::kScalar;
    } else if (num_rows <= int64_t{4} * sms) {
      s.kernel = RmsNormKernel::kBulk;
    } else if (fast_memory && num_vecs <= 512 && num_rows <= late_wave) {
      // H200, rows of <= 512 vectors (H <= 4096 bf16) between 4 and 20 rows per SM: by bands of the
      // thirty-fourth session's sweep (H = 4096, hc = 4; us, best of the band against the published Triton
      // kernel): T = 128 late bulk 3.26 (Triton 3.78), T = 192 bulk 4.07 (4.69; late bulk 5.63), T = 256
      // register vpt 2 plain late-w 5.41 (5.46; late bulk 5.78), T = 320 register vpt 4 plain 6.33 (6.50;
      // late bulk 6.75), T = 512 late bulk 9.96 (10.18). Wider rows keep the late bulk instance (H = 7168:
      // T = 320 12.45 vs Triton 12.95, T = 512 22.04 vs 22.36, sixteenth session).
      if (2 * num_rows <= int64_t{11} * sms || num_rows > int64_t{16} * sms) {
        s.kernel = RmsNormKernel::kBulk;
        cfg.late_weights = true;
      } else if (2 * num_rows <= int64_t{17} * sms) {
        s.kernel = RmsNormKernel::kBulk;
        cfg.vecs_per_thread = 4;
      } else {
        s.kernel = RmsNormKernel::kRegister;
        cfg.plain_loads = true;
        cfg.vecs_per_thread = num_rows <= int64_t{11} * sms ? 2 : 4;
        cfg.late_weights = cfg.vecs_per_thread == 2;
      }
    } else if (num_vecs <= 1024 && num_rows <= late_wave) {
      s.kernel = RmsNormKernel::kBulk;
      cfg.late_weights = true;
    } else {
      s.kernel = RmsNormKernel::kRegister;
    }
  }
  if (!aligned && (s.kernel == RmsNormKernel::kRegister || s.kernel == RmsNormKernel::kBulk)) {
    return invalid_config(what, s, p.hidden, "rows or pointers are not 16-byte aligned");
  }

  int64_t cap = cfg.max_blocks;
  if (cap < -2) return invalid_config(what, s, p.hidden, "max_blocks must be >= -2");
  if (cfg.trigger < RmsNormTrigger::kAuto || cfg.trigger > RmsNormTrigger::kBeforeWait) {
    return invalid_config(what, s, p.hidden, "unknown PDL trigger");
  }
  size_t dynamic_smem = 0;
  if (s.kernel == RmsNormKernel::kRegister) {
    s.rows_per_block = cfg.rows_per_block == 0 ? 1 : cfg.rows_per_block;
    s.plain_loads = cfg.plain_loads;
    s.late_weights = cfg.late_weights;
    const int64_t total_bytes = num_rows * p.row_bytes;
    s.vecs_per_thread = cfg.vecs_per_thread;
    if (s.vecs_per_thread == 0) {
      // From the lab's sweeps (bf16, H = 2568 / 4096 / 7168, hc = 4, PDL on; bench/RESULTS.md). The
      // automatic choice takes this kernel only above 4 rows per SM (the bulk kernel does better below);
      // explicit register launches at small T get the latency shape.
      if (total_bytes <= (int64_t{3} << 19)) {
        // latency (<= 1.5 MB, T <~ 16-32): 2 vectors per thread: short per-thread chains, 8-16 warps per row.
        s.vecs_per_thread = 2;
      } else if (cfg.kernel == RmsNormKernel::kAuto && num_rows <= int64_t{20} * sms && num_vecs <= 1024 &&
                 s.rows_per_block == 1 && !s.plain_loads) {
        // Past the late bulk instance's one wave up to 20 rows per SM (T ~ 260-530 at hc = 4) of at most 1,024
        // vectors: 2 vectors per thread with the weights read after the reduction (40 registers: more rows
        // resident). H100 sweep (bench/RESULTS.md, eleventh session): H = 7168, T = 320 16.1 us vs 17.4 for the
        // shape below (Triton 17.05); T = 512 27.7 vs 27.9; H = 4096, T = 512 12.8-13.0 vs 13.5; T = 320 equal.
        s.vecs_per_thread = 2;
        s.late_weights = true;
      } else {
        // bandwidth (T >~ 100): 4 vectors per thread, one block per row, plain loads (3-5% faster here
        // than read-only / no-L1 / L2-prefetch loads in every sweep at T >= 1024; at T = 256 2-5% faster
        // than the resident wave of ~256-thread blocks this range used before: bench/RESULTS.md).
        s.vecs_per_thread = 4;
        s.plain_loads = true;
      }
      while (s.vecs_per_thread < 8 && round_up32(ceil_div(num_vecs, s.vecs_per_thread)) > max_threads(s)) {
        s.vecs_per_thread *= 2;
      }
    }
    s.threads = static_cast<int>(std::min<int64_t>(round_up32(ceil_div(num_vecs, s.vecs_per_thread)), INT_MAX));
    if (s.threads > max_threads(s)) {
      return invalid_config(what, s, p.hidden, "too many threads per block");
    }
    p.num_e_tiles = ceil_div(p.num_e_rows, s.rows_per_block);
    p.num_tiles = p.num_e_tiles + ceil_div(p.num_h_rows, s.rows_per_block);
    s.blocks = p.num_tiles;
  } else if (s.kernel == RmsNormKernel::kBulk) {
    if (Status st = plan_bulk(what, p, dtype, cfg, sms, &s, &dynamic_smem); !st) return st;
  } else {
    s.kernel = RmsNormKernel::kScalar;
    s.threads = p.hidden >= kScalarThreads ? kScalarThreads : static_cast<int>(round_up32(p.hidden));
    s.rows_per_block = 1;
    p.num_e_tiles = p.num_e_rows;
    p.num_tiles = num_rows;
    s.blocks = std::min<int64_t>(num_rows, static_cast<int64_t>(sms) * 16);
  }
  const RowKernel kernel = pick_kernel(dtype, s);
  if (kernel == nullptr) return invalid_config(what, s, p.hidden, "no such kernel instance");
  p.num_vecs = static_cast<int32_t>(std::min<int64_t>(num_vecs, INT32_MAX));
  p.stages = s.stages;
  p.rows_per_group = s.kernel == RmsNormKernel::kBulk && s.rows_per_block > 1 ? s.rows_per_block : 0;

  if (s.kernel == RmsNormKernel::kRegister) {
    if (cap == -2) {
      int per_sm = 0;
      if (Status st = blocks_per_sm(kernel, s.threads, &per_sm); !st) return st;
      cap = std::max<int64_t>(static_cast<int64_t>(per_sm) * sms, 1);
    }
    if (cap > 0) s.blocks = std::min(s.blocks, cap);
  }
  s.blocks = std::min<int64_t>(s.blocks, INT_MAX);
  if (launched != nullptr) *launched = s;

  // Launch attributes only when used: a kernel node that carries none is the plainest a graph can launch.
  cudaLaunchConfig_t lc{};
  lc.gridDim = dim3(static_cast<unsigned>(s.blocks));
  lc.blockDim = dim3(s.threads);
  lc.dynamicSmemBytes = dynamic_smem;
  lc.stream = stream;
  cudaLaunchAttribute attr[1];
  const RmsNormTrigger trigger = cfg.trigger == RmsNormTrigger::kAuto ? RmsNormTrigger::kAfterLoads : cfg.trigger;
  p.pdl = pdl_enabled() ? static_cast<int32_t>(trigger) : 0;
  if (launched != nullptr) launched->trigger = p.pdl != 0 ? trigger : RmsNormTrigger::kAuto;
  if (p.pdl) {
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    lc.attrs = attr;
    lc.numAttrs = 1;
  }
  if (dry_run()) return Status::ok();  // the measuring pass (launch.h): planned, not launched
  DSV4_CUDA_RETURN_IF_ERROR(cudaLaunchKernelEx(&lc, kernel, p));
  return Status::ok();
}

RmsNormRows base_rows(int64_t hidden, float eps, DType dtype) {
  RmsNormRows p{};
  p.hidden = hidden;
  p.row_bytes = hidden * static_cast<int64_t>(dtype_size(dtype));
  p.inv_hidden = static_cast<float>(1.0 / static_cast<double>(hidden));
  p.eps = eps;
  p.e_copies = 1;
  return p;
}

// The inputs both prologue layouts share: embeddings with their positions, previous residual, both weights.
RmsNormRows prologue_rows(const void* inputs_embeds, RowPositions positions, const void* prev_hidden,
                          const void* enorm_weight, const void* hnorm_weight, int64_t num_tokens, int64_t hidden,
                          int64_t hc_mult, float eps, DType dtype) {
  RmsNormRows p = base_rows(hidden, eps, dtype);
  p.e_in = static_cast<const char*>(inputs_embeds);
  p.positions = positions.data;
  p.positions_int64 = positions.int64 ? 1 : 0;
  p.h_in = static_cast<const char*>(prev_hidden);
  p.e_weight = static_cast<const char*>(enorm_weight);
  p.h_weight = static_cast<const char*>(hnorm_weight);
  p.num_e_rows = num_tokens;
  p.num_h_rows = num_tokens * hc_mult;
  return p;
}

const char* trigger_name(RmsNormTrigger t) {
  switch (t) {
    case RmsNormTrigger::kAfterLoads:
      return "";  // the default: not spelled out
    case RmsNormTrigger::kAfterWait:
      return " trigger=after-wait";
    case RmsNormTrigger::kBeforeWait:
      return " trigger=before-wait";
    default:
      return " no-pdl";
  }
}

}  // namespace

std::string RmsNormLaunch::to_string() const {
  switch (kernel) {
    case RmsNormKernel::kRegister:
      return str_cat("register vpt=", vecs_per_thread, " rows=", rows_per_block, plain_loads ? " plain" : "",
                     late_weights ? " late-w" : "", " threads=", threads, " blocks=", blocks, trigger_name(trigger));
    case RmsNormKernel::kScalar:
      return str_cat("scalar threads=", threads, " blocks=", blocks, trigger_name(trigger));
    case RmsNormKernel::kBulk:
      return str_cat("bulk vpt=", vecs_per_thread, " rows=", rows_per_block, " stages=", stages,
                     late_weights ? " late-w" : "", " threads=", threads, " blocks=", blocks, trigger_name(trigger));
    default:
      return "none";
  }
}

Status fused_mtp_input_rms_norm(const void* inputs_embeds, RowPositions positions, const void* prev_hidden,
                                const void* enorm_weight, const void* hnorm_weight, void* enorm_out, void* hnorm_out,
                                int64_t num_tokens, int64_t hidden, int64_t hc_mult, float eps, DType dtype,
                                cudaStream_t stream, const RmsNormConfig* config, RmsNormLaunch* launched) {
  constexpr const char* kWhat = "fused_mtp_input_rms_norm";
  if (Status s = check_sizes(kWhat, num_tokens, hidden, hc_mult, eps, dtype, (hc_mult + 1) * hidden); !s) {
    return s;
  }
  if (num_tokens == 0) return launch_rows(kWhat, RmsNormRows{}, dtype, {}, stream, config, launched);
  for (auto [name, ptr] : {std::pair<const char*, const void*>{"inputs_embeds", inputs_embeds},
                           {"positions", positions.data},
                           {"prev_hidden", prev_hidden},
                           {"enorm_weight", enorm_weight},
                           {"hnorm_weight", hnorm_weight},
                           {"enorm_out", enorm_out},
                           {"hnorm_out", hnorm_out}}) {
    if (Status s = check_pointer(kWhat, name, ptr); !s) return s;
  }
  RmsNormRows p = prologue_rows(inputs_embeds, positions, prev_hidden, enorm_weight, hnorm_weight, num_tokens, hidden,
                                hc_mult, eps, dtype);
  p.e_out = static_cast<char*>(enorm_out);
  p.h_out = static_cast<char*>(hnorm_out);
  p.e_out_stride = p.row_bytes;
  p.h_out_stride = p.row_bytes;
  p.e_copy_stride = 0;
  return launch_rows(kWhat, p, dtype, {inputs_embeds, prev_hidden, enorm_weight, hnorm_weight, enorm_out, hnorm_out},
                     stream, config, launched);
}

Status fused_mtp_input_rms_norm_eh(const void* inputs_embeds, RowPositions positions, const void* prev_hidden,
                                   const void* enorm_weight, const void* hnorm_weight, void* out, int64_t num_tokens,
                                   int64_t hidden, int64_t hc_mult, float eps, DType dtype, cudaStream_t stream,
                                   const RmsNormConfig* config, RmsNormLaunch* launched) {
  constexpr const char* kWhat = "fused_mtp_input_rms_norm_eh";
  if (Status s = check_sizes(kWhat, num_tokens, hidden, hc_mult, eps, dtype, 2 * hc_mult * hidden); !s) return s;
  if (num_tokens == 0) return launch_rows(kWhat, RmsNormRows{}, dtype, {}, stream, config, launched);
  for (auto [name, ptr] : {std::pair<const char*, const void*>{"inputs_embeds", inputs_embeds},
                           {"positions", positions.data},
                           {"prev_hidden", prev_hidden},
                           {"enorm_weight", enorm_weight},
                           {"hnorm_weight", hnorm_weight},
                           {"out", out}}) {
    if (Status s = check_pointer(kWhat, name, ptr); !s) return s;
  }
  RmsNormRows p = prologue_rows(inputs_embeds, positions, prev_hidden, enorm_weight, hnorm_weight, num_tokens, hidden,
                                hc_mult, eps, dtype);
  // out[t, s, :H] = hnorm(prev[t, s]); out[t, s, H:] = enorm(e[t]) for every s.
  p.h_out = static_cast<char*>(out);
  p.e_out = static_cast<char*>(out) + p.row_bytes;
  p.h_out_stride = 2 * p.row_bytes;
  p.e_out_stride = 2 * p.row_bytes * hc_mult;
  p.e_copy_stride = 2 * p.row_bytes;
  p.e_copies = static_cast<int32_t>(std::min<int64_t>(hc_mult, INT32_MAX));
  return launch_rows(kWhat, p, dtype, {inputs_embeds, prev_hidden, enorm_weight, hnorm_weight, out}, stream, config,
                     launched);
}

Status rms_norm_rows(const void* x, const void* weight, void* out, int64_t rows, int64_t hidden, float eps, DType dtype,
                     cudaStream_t stream, const RmsNormConfig* config, RmsNormLaunch* launched) {
  constexpr const char* kWhat = "rms_norm_rows";
  if (Status s = check_sizes(kWhat, rows, hidden, 1, eps, dtype, hidden); !s) return s;
  if (rows == 0) return launch_rows(kWhat, RmsNormRows{}, dtype, {}, stream, config, launched);
  for (auto [name, ptr] : {std::pair<const char*, const void*>{"x", x}, {"weight", weight}, {"out", out}}) {
    if (Status s = check_pointer(kWhat, name, ptr); !s) return s;
  }
  // A plain per-row norm is the h-row half of the MTP kernel with no e rows.
  RmsNormRows p = base_rows(hidden, eps, dtype);
  p.h_in = static_cast<const char*>(x);
  p.h_weight = static_cast<const char*>(weight);
  p.e_weight = p.h_weight;
  p.h_out = static_cast<char*>(out);
  p.num_e_rows = 0;
  p.num_h_rows = rows;
  p.h_out_stride = p.row_bytes;
  return launch_rows(kWhat, p, dtype, {x, weight, out}, stream, config, launched);
}

// ---- the small-row path --------------------------------------------------------------------------------
// Rows of less than kLongRowBytes, mixed dtypes, weightless norms and the norm fused with rope.
namespace {

constexpr int kMaxNormThreads = 1024;  // threads of a block (one row)
// From this row size on, same-dtype weighted norms take the row kernels above (the sizes the kernel lab
// tuned them at: H = 2568..7168 in bf16; bench/RESULTS.md).
constexpr int64_t kLongRowBytes = 4096;

// One block per row, sized so that each thread holds K of the row's values in registers (blockDim ≈ dim / K,
// at most 1024): all loads of a row are in flight at once and x is read once; the weights are loaded with
// them (before pdl_wait: no earlier kernel writes them), not after the reduction (K = 8 only). Rows longer
// than K·1024 loop over the rest (read again for the store). fp32 sum of squares, y = w * (x * rsqrt(mean +
// eps)), one rounding on store. out may be x: every element is read before the block reduction and written
// after it (a tail element by the same thread).
//
// ROPE (rms_norm_rope): rows are heads of x [T, heads, dim]; after the norm each value is rounded to TO as the
// unfused op stores it, and the last rope.rope_dim channels are rotated at the row's token position. A pair
// (2i, 2i+1) sits on lanes (2l, 2l+1) of one warp (blockDim and dim - rope_dim even), so it meets through one
// shuffle; the row is then stored once.
struct NormRope {
  const int32_t* pos = nullptr;
  const float* inv_freq = nullptr;
  int64_t heads = 1, rope_dim = 0;
  float attention_factor = 1.0f;
  // A second part of rms_norm_rope in the same launch (rms_norm_kernel only): the rows from `rows1` on are the rows2
  // rows of x2 (in place, heads2 a token, weight w2 of dtype w2_dtype, or none).
  int64_t rows1 = INT64_MAX, rows2 = 0, heads2 = 1;
  void* x2 = nullptr;
  const void* w2 = nullptr;
  DType w2_dtype = DType::F32;
};

// Channel i of a normed row at token position p (rope part from `first`; partner: the other value of i's pair):
// rotated if it is in the rope part, else as it is.
__device__ __forceinline__ float rope_pair(const NormRope& rope, float p, int64_t first, int64_t i, float y,
                                           float partner) {
  if (i < first) return y;
  float c, sn;
  rope_cos_sin(rope.inv_freq[(i - first) >> 1], p, rope.attention_factor, false, &c, &sn);
  return ((i - first) & 1) == 0 ? y * c - partner * sn : y * c + partner * sn;
}

template <int K, bool ROPE, typename TO, typename TI, typename TW>
__global__ void __launch_bounds__(kMaxNormThreads)
    rms_norm_kernel(TO* out, const TI* x, const TW* __restrict__ w, int64_t dim, float eps, NormRope rope) {
  constexpr bool kPrefetchWeights = K <= 8;  // at K = 16, 2K values per thread would spill at 1024 threads
  __shared__ float scratch[33];
  int64_t r = blockIdx.x, heads = rope.heads;
  const int64_t stride = blockDim.x;
  if (ROPE && r >= rope.rows1) {  // a row of the launch's second part
    r -= rope.rows1, heads = rope.heads2;
    out = static_cast<TO*>(rope.x2), x = static_cast<const TI*>(rope.x2), w = static_cast<const TW*>(rope.w2);
  }
  float wv[K];
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int64_t i = threadIdx.x + j * stride;
    wv[j] = kPrefetchWeights && w != nullptr && i < dim ? to_float(w[i]) : 1.0f;
  }
  pdl_wait();
  const TI* xr = x + r * dim;
  float v[K];
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int64_t i = threadIdx.x + j * stride;
    v[j] = i < dim ? to_float(xr[i]) : 0.0f;
  }
  float ss = 0;
#pragma unroll
  for (int j = 0; j < K; ++j) ss = fmaf(v[j], v[j], ss);
  for (int64_t i = threadIdx.x + K * stride; i < dim; i += stride) {
    const float a = to_float(xr[i]);
    ss = fmaf(a, a, ss);
  }
  ss = block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  TO* yr = out + r * dim;
  if constexpr (ROPE) {
    const float p = static_cast<float>(rope.pos[r / heads]);
    const int64_t first = dim - rope.rope_dim;
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const int64_t i = threadIdx.x + j * stride;
      const float wj = w == nullptr || i >= dim ? 1.0f : kPrefetchWeights ? wv[j] : to_float(w[i]);
      const float y = to_float(from_float<TO>(w != nullptr ? wj * (v[j] * inv) : v[j] * inv));
      const float partner = __shfl_xor_sync(0xffffffffu, y, 1);  // every lane: i >= dim lanes carry zeros
      if (i >= dim) continue;
      yr[i] = from_float<TO>(rope_pair(rope, p, first, i, y, partner));
    }
  } else {
#pragma unroll
    for (int j = 0; j < K; ++j) {
      const int64_t i = threadIdx.x + j * stride;
      if (i >= dim) continue;
      const float wj = w == nullptr ? 1.0f : kPrefetchWeights ? wv[j] : to_float(w[i]);
      yr[i] = from_float<TO>(w != nullptr ? wj * (v[j] * inv) : v[j] * inv);
    }
  }
  for (int64_t i = threadIdx.x + K * stride; i < dim; i += stride) {
    const float a = to_float(xr[i]) * inv;
    yr[i] = from_float<TO>(w != nullptr ? to_float(w[i]) * a : a);
  }
}

// Rows of at most kNarrowMaxDim values (the per-head norms of the default tiny model's q / kv, its q_lora of 128):
// L lanes a row (a power of two >= dim / 8, at least 4), 8 values a lane at i = lane + L j, 256 / L rows a block. One
// block per row left most of each 32-thread block idle and filled the multiprocessors' block slots (32 each): a
// 8,192-token tiny prefill's 32,768 head rows took 8 waves. The arithmetic is rms_norm_kernel's (fp32 sum of squares,
// one rounding on store; ROPE: the norm's output rounded to TO, pairs on lanes (2l, 2l + 1)), reduced over the row's
// lanes; a row's values do not depend on the others in the launch.
constexpr int kNarrowMaxDim = 256;
constexpr int kNarrowThreads = 256;

template <int L, bool ROPE, typename TO, typename TI, typename TW>
__global__ void __launch_bounds__(kNarrowThreads)
    rms_norm_narrow_kernel(TO* out, const TI* x, const TW* __restrict__ w, int64_t rows, int64_t dim, float eps,
                           NormRope rope) {
  constexpr int K = 8;  // dim <= 8 L (launch_rms_norm_narrow's L)
  const int lane = static_cast<int>(threadIdx.x) % L;
  const int64_t r = (static_cast<int64_t>(blockIdx.x) * kNarrowThreads + threadIdx.x) / L;
  // The row's lanes: an aligned group of L lanes of the warp, which exits or stays whole.
  const unsigned group = L == 32 ? 0xffffffffu : ((1u << L) - 1u) << (threadIdx.x & 31 & ~(L - 1));
  float wv[K];
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int64_t i = lane + j * L;
    wv[j] = w != nullptr && i < dim ? to_float(w[i]) : 1.0f;
  }
  pdl_wait();
  if (r >= rows) return;
  const TI* xr = x + r * dim;
  float v[K];
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int64_t i = lane + j * L;
    v[j] = i < dim ? to_float(xr[i]) : 0.0f;
  }
  float ss = 0;
#pragma unroll
  for (int j = 0; j < K; ++j) ss = fmaf(v[j], v[j], ss);
#pragma unroll
  for (int o = L / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(group, ss, o);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  TO* yr = out + r * dim;
  const float p = ROPE ? static_cast<float>(rope.pos[r / rope.heads]) : 0.0f;
  const int64_t first = dim - rope.rope_dim;
#pragma unroll
  for (int j = 0; j < K; ++j) {
    const int64_t i = lane + j * L;
    float y = w != nullptr ? wv[j] * (v[j] * inv) : v[j] * inv;
    if constexpr (ROPE) {
      y = to_float(from_float<TO>(y));
      const float partner = __shfl_xor_sync(group, y, 1);  // every lane of the row: i >= dim lanes carry zeros
      if (i < dim) y = rope_pair(rope, p, first, i, y, partner);
    }
    if (i < dim) yr[i] = from_float<TO>(y);
  }
}

// bf16 rows of 256 V values (the model's 512-wide query heads and kv rows: V = 2): a warp a row, 8 rows a block; lane
// l holds the 8-value vectors c·32 + l (16-byte loads and stores; one c of a warp is 512 contiguous bytes). One block
// of dim / 8 threads a row (rms_norm_kernel, 2-byte accesses) ran a 4,096-token Flash prefill's 266,240 query-head rows
// at 1.2 TB/s (440 us a layer, H100). The arithmetic is rms_norm_kernel's (fp32 sum of squares reduced over the row's
// lanes, one rounding on store; ROPE: the norm's output rounded to bf16, a pair (2i, 2i + 1) inside one vector, its
// cos / sin computed once).
constexpr int kWarpRowThreads = 256;

template <int V, bool ROPE, typename TW>
__global__ void __launch_bounds__(kWarpRowThreads)
    rms_norm_warp_kernel(bf16* out, const bf16* x, const TW* __restrict__ w, int64_t rows, int64_t dim, float eps,
                         NormRope rope) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  int64_t r = (static_cast<int64_t>(blockIdx.x) * kWarpRowThreads + threadIdx.x) >> 5;
  const bool in = r < rows;
  int64_t heads = rope.heads;
  if (ROPE && r >= rope.rows1) {  // a row of the launch's second part
    r -= rope.rows1, heads = rope.heads2;
    out = static_cast<bf16*>(rope.x2), x = static_cast<const bf16*>(rope.x2), w = static_cast<const TW*>(rope.w2);
  }
  float wv[V][8];
#pragma unroll
  for (int c = 0; c < V; ++c) {
#pragma unroll
    for (int e = 0; e < 8; ++e) wv[c][e] = w != nullptr && in ? to_float(w[(c * 32 + lane) * 8 + e]) : 1.0f;
  }
  pdl_wait();
  if (!in) return;  // whole warps: a row's lanes stay together
  const bf16* xr = x + r * dim;
  float v[V][8];
  float ss = 0;
#pragma unroll
  for (int c = 0; c < V; ++c) {
    const uint4 raw = *reinterpret_cast<const uint4*>(xr + (c * 32 + lane) * 8);
    const bf16* b = reinterpret_cast<const bf16*>(&raw);
#pragma unroll
    for (int e = 0; e < 8; ++e) v[c][e] = to_float(b[e]);
  }
#pragma unroll
  for (int c = 0; c < V; ++c) {
#pragma unroll
    for (int e = 0; e < 8; ++e) ss = fmaf(v[c][e], v[c][e], ss);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(dim) + eps);
  const float p = ROPE ? static_cast<float>(rope.pos[r / heads]) : 0.0f;
  const int64_t first = dim - rope.rope_dim;
  bf16* yr = out + r * dim;
#pragma unroll
  for (int c = 0; c < V; ++c) {
    const int64_t i0 = (c * 32 + lane) * 8;
    float y[8];
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      y[e] = w != nullptr ? wv[c][e] * (v[c][e] * inv) : v[c][e] * inv;
      if constexpr (ROPE) y[e] = to_float(from_float<bf16>(y[e]));
    }
    if (ROPE && i0 + 8 > first) {
#pragma unroll
      for (int m = 0; m < 4; ++m) {
        const int64_t i = i0 + 2 * m;
        if (i < first) continue;
        float cs, sn;
        rope_cos_sin(rope.inv_freq[(i - first) >> 1], p, rope.attention_factor, false, &cs, &sn);
        const float even = y[2 * m], odd = y[2 * m + 1];
        y[2 * m] = even * cs - odd * sn;
        y[2 * m + 1] = odd * cs + even * sn;
      }
    }
    uint4 packed;
    uint32_t* pw = reinterpret_cast<uint32_t*>(&packed);
#pragma unroll
    for (int m = 0; m < 4; ++m) {
      const __nv_bfloat162 two = __floats2bfloat162_rn(y[2 * m], y[2 * m + 1]);
      pw[m] = *reinterpret_cast<const uint32_t*>(&two);
    }
    *reinterpret_cast<uint4*>(yr + i0) = packed;
  }
}

template <bool ROPE, typename TW>
void launch_rms_norm_warp(const ExecContext& ctx, Tensor out, Tensor x, Tensor w, float eps, const NormRope& rope,
                          int64_t rows, int64_t dim) {
  const unsigned blocks = static_cast<unsigned>((rows * 32 + kWarpRowThreads - 1) / kWarpRowThreads);
  auto launch = [&](auto kernel) {
    check_launch(launch_kernel(kernel, dim3(blocks), dim3(kWarpRowThreads), 0, stream_of(ctx), out.ptr<bf16>(),
                               x.ptr<bf16>(), w.ptr<TW>(), rows, dim, eps, rope),
                 ROPE ? "rms_norm_rope" : "rms_norm");
  };
  switch (dim / 256) {
    case 2:
      return launch(rms_norm_warp_kernel<2, ROPE, TW>);
    case 3:
      return launch(rms_norm_warp_kernel<3, ROPE, TW>);
    default:
      return launch(rms_norm_warp_kernel<4, ROPE, TW>);
  }
}

template <bool ROPE, typename TO, typename TI, typename TW>
void launch_rms_norm_narrow(const ExecContext& ctx, Tensor out, Tensor x, Tensor w, float eps, const NormRope& rope,
                            int64_t rows, int64_t dim) {
  const int lanes = static_cast<int>(std::max<int64_t>(4, std::bit_ceil(static_cast<uint64_t>((dim + 7) / 8))));
  const unsigned blocks = static_cast<unsigned>((rows * lanes + kNarrowThreads - 1) / kNarrowThreads);
  auto launch = [&](auto kernel) {
    check_launch(launch_kernel(kernel, dim3(blocks), dim3(kNarrowThreads), 0, stream_of(ctx), out.ptr<TO>(),
                               x.ptr<TI>(), w.ptr<TW>(), rows, dim, eps, rope),
                 ROPE ? "rms_norm_rope" : "rms_norm");
  };
  switch (lanes) {
    case 4:
      return launch(rms_norm_narrow_kernel<4, ROPE, TO, TI, TW>);
    case 8:
      return launch(rms_norm_narrow_kernel<8, ROPE, TO, TI, TW>);
    case 16:
      return launch(rms_norm_narrow_kernel<16, ROPE, TO, TI, TW>);
    default:
      return launch(rms_norm_narrow_kernel<32, ROPE, TO, TI, TW>);
  }
}

// One block per row of x (rows of `dim`; rows of at most kNarrowMaxDim: several rows a block, the narrow kernel), out
// may be x. rope.rope_dim > 0: the ROPE variant (dim <= 8192).
void launch_rms_norm(const ExecContext& ctx, Tensor out, Tensor x, Tensor w, float eps, const NormRope& rope) {
  const int64_t dim = x.size(-1), rows = x.numel() / std::max<int64_t>(dim, 1) + rope.rows2;
  if (rows == 0) return;
  // K = 8 values per thread up to 8192-wide rows (512 threads for H = 4096, 64 for a 512-wide head), K = 16
  // beyond, so that a row of n·H = 16384 is held in registers too.
  const bool wide = dim > 8 * 1024, with_rope = rope.rope_dim > 0, narrow = dim <= kNarrowMaxDim;
  // bf16 rows of 512, 768 or 1,024 values, 16-byte aligned (rms_norm_warp_kernel); the rope part starts on a pair.
  const bool warp_rows = dim > kNarrowMaxDim && dim <= 1024 && dim % 256 == 0 && (dim - rope.rope_dim) % 2 == 0 &&
                         out.dtype() == DType::BF16 && x.dtype() == DType::BF16 && aligned16(out.data()) &&
                         aligned16(x.data()) && (rope.rows2 == 0 || aligned16(rope.x2));
  DSV4_INTERNAL_CHECK(!(wide && with_rope), "rms_norm_rope: rows of at most 8192");
  const int64_t per_thread = wide ? 16 : 8;
  const int64_t warps = ((dim + per_thread - 1) / per_thread + 31) / 32;
  const int threads = static_cast<int>(std::clamp<int64_t>(warps * 32, 32, kMaxNormThreads));
  dispatch_float(out.dtype(), "rms_norm out", [&](auto o) {
    dispatch_float(x.dtype(), "rms_norm x", [&](auto i) {
      dispatch_float(w.data() != nullptr ? w.dtype() : rope.w2_dtype, "rms_norm weight", [&](auto wt) {
        using TO = decltype(o);
        using TI = decltype(i);
        using TW = decltype(wt);
        if constexpr (std::is_same_v<TO, bf16> && std::is_same_v<TI, bf16>) {
          if (warp_rows) {
            return with_rope ? launch_rms_norm_warp<true, TW>(ctx, out, x, w, eps, rope, rows, dim)
                             : launch_rms_norm_warp<false, TW>(ctx, out, x, w, eps, rope, rows, dim);
          }
        }
        if (narrow) {
          DSV4_INTERNAL_CHECK(rope.rows2 == 0, "rms_norm_rope: one part a launch on the narrow kernel");
          return with_rope ? launch_rms_norm_narrow<true, TO, TI, TW>(ctx, out, x, w, eps, rope, rows, dim)
                           : launch_rms_norm_narrow<false, TO, TI, TW>(ctx, out, x, w, eps, rope, rows, dim);
        }
        auto kernel = with_rope ? rms_norm_kernel<8, true, TO, TI, TW>
                      : wide    ? rms_norm_kernel<16, false, TO, TI, TW>
                                : rms_norm_kernel<8, false, TO, TI, TW>;
        check_launch(launch_kernel(kernel, dim3(static_cast<unsigned>(rows)), dim3(threads), 0, stream_of(ctx),
                                   out.ptr<TO>(), x.ptr<TI>(), w.ptr<TW>(), dim, eps, rope),
                     with_rope ? "rms_norm_rope" : "rms_norm");
      });
    });
  });
}

}  // namespace

void rms_norm(ExecContext& ctx, Tensor out, Tensor x, Tensor w, float eps) {
  const int64_t dim = x.size(-1), rows = x.numel() / std::max<int64_t>(dim, 1);
  const int64_t row_bytes = dim * static_cast<int64_t>(dtype_size(x.dtype()));
  if (row_bytes >= kLongRowBytes && w.data() != nullptr && out.dtype() == x.dtype() && w.dtype() == x.dtype() &&
      x.is_contiguous() && out.is_contiguous()) {
    throw_if_error(rms_norm_rows(x.data(), w.data(), out.data(), rows, dim, eps, x.dtype(), stream_of(ctx)));
    return;
  }
  launch_rms_norm(ctx, out, x, w, eps, NormRope{});
}

void rms_norm_rope(ExecContext& ctx, std::span<const NormRopeHeads> parts, float eps, Tensor pos,
                   const RopeTable& table) {
  if (parts.empty() || parts[0].x.size(0) == 0) return;
  const int64_t dim = parts[0].x.size(2);
  // Nothing to rotate, rows beyond the one-pass kernel, or pairs not on even lanes: the two ops a part.
  if (table.rope_dim == 0 || dim > 8 * 1024 || dim % 2 != 0) {
    for (const NormRopeHeads& p : parts) {
      rms_norm(ctx, p.x, p.x, p.w, eps);
      rope(ctx, p.x, pos, table, false);
    }
    return;
  }
  NormRope r;
  r.pos = pos.ptr<int32_t>();
  r.inv_freq = table.inv_freq.ptr<float>();
  r.rope_dim = table.rope_dim;
  r.attention_factor = table.attention_factor;
  // Two parts in one launch of the row kernel: one dtype, contiguous, and weights of one dtype where both have one.
  const NormRopeHeads& a = parts[0];
  if (parts.size() == 2) {
    const NormRopeHeads& b = parts[1];
    const bool weights_agree = a.w.data() == nullptr || b.w.data() == nullptr || a.w.dtype() == b.w.dtype();
    if (dim > kNarrowMaxDim && a.x.dtype() == b.x.dtype() && a.x.is_contiguous() && b.x.is_contiguous() &&
        weights_agree && a.x.size(1) > 0 && b.x.size(1) > 0) {
      r.heads = a.x.size(1);
      r.rows1 = a.x.size(0) * a.x.size(1);
      r.rows2 = b.x.size(0) * b.x.size(1);
      r.heads2 = b.x.size(1);
      r.x2 = b.x.data();
      r.w2 = b.w.data();
      r.w2_dtype = b.w.data() != nullptr ? b.w.dtype() : DType::F32;
      launch_rms_norm(ctx, a.x, a.x, a.w, eps, r);
      return;
    }
  }
  for (const NormRopeHeads& p : parts) {
    if (p.x.size(1) == 0) continue;
    r.heads = p.x.size(1);
    launch_rms_norm(ctx, p.x, p.x, p.w, eps, r);
  }
}

void fused_mtp_input_rms_norm(ExecContext& ctx, Tensor enorm_out, Tensor hnorm_out, Tensor inputs_embeds,
                              Tensor positions, Tensor prev_hidden, Tensor enorm_w, Tensor hnorm_w, float eps) {
  throw_if_error(fused_mtp_input_rms_norm(inputs_embeds.data(), RowPositions{positions.data(), false},
                                          prev_hidden.data(), enorm_w.data(), hnorm_w.data(), enorm_out.data(),
                                          hnorm_out.data(), inputs_embeds.size(0), inputs_embeds.size(1),
                                          hnorm_out.size(1), eps, inputs_embeds.dtype(), stream_of(ctx)));
}

void fused_mtp_input_rms_norm_eh(ExecContext& ctx, Tensor out, Tensor inputs_embeds, Tensor positions,
                                 Tensor prev_hidden, Tensor enorm_w, Tensor hnorm_w, float eps) {
  throw_if_error(fused_mtp_input_rms_norm_eh(inputs_embeds.data(), RowPositions{positions.data(), false},
                                             prev_hidden.data(), enorm_w.data(), hnorm_w.data(), out.data(),
                                             inputs_embeds.size(0), inputs_embeds.size(1), out.size(1), eps,
                                             inputs_embeds.dtype(), stream_of(ctx)));
}

}  // namespace dsv4::cuda
