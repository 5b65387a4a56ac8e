// The prefill products of moe_experts (past the decode path) on Hopper's warpgroup MMA (wgmma.mma_async, sm_90a),
// for bf16 stacks (launch_moe_gemm_wgmma; moe.cu falls back to its mma.sync wide kernel where the driver encodes no
// tensor maps) and quantised ones (launch_moe_gemm_wgmma_quant: FP4 / FP8 codes expanded to bf16 in shared memory).
// Kernel lab: bench/kernels/moe_gemm (bench_moe_gemm: bf16 checks against a CPU reference, Flash-shape timing of
// both forms, the quantised one with sampled checks against the host dequantisation); the quantised form is also
// checked by CudaQuant.MoeDecode* (moe_gemm_experts_quant). H100, a Flash layer at T = 4,096: bf16 3.17 ms gated +
// 1.71 ms w2 (303 / 281 TFLOP/s; 2026-12-06) against the mma.sync wide kernel's 5.26 + 2.79 ms; quantised (FP4
// routed, FP8 shared) 3.22 + 1.67 ms (2026-12-07; 4.42 + 2.04 before the producer rework described below).
//
// Products, over the plan's tiles (expert e, expert-sorted rows [row0, row_end), at most 128):
//   GATED: A row r = x[token_of[r]] (bf16 [T, K]), B = w1[e], w3[e] (bf16 [N, K]); out[r] = silu(min(g, L)) *
//          clamp(u, -L, L) as bf16 [P, N].
//   w2:    A row r = act[r] (bf16 [P, K]), B = w2[e] (bf16 [N, K]); out[r] f32 [P, N].
//
// Block: 128 plan rows x 128 MMA columns (GATED: 64 weight rows of w1 then 64 of w3, giving 64 outputs; w2: 128
// weight rows), BK = 64 (one 128-byte row of bf16 per operand row), a shared-memory ring of wgmma_stages stages,
// producer warpgroups then two consumer warpgroups:
//   producers (one; QUANT two): every thread gathers its A chunks (rows by token for GATED) with 16-byte cp.async into
//     the 128B-swizzled layout, signalled to the stage's `full` mbarrier by cp.async.mbarrier.arrive.noinc. bf16:
//     thread 0 loads the B tile by TMA (cp.async.bulk.tensor.2d, 128B swizzle, completion as transaction bytes);
//     `full` expects 128 + 1 arrivals. QUANT: each thread owns half of one B row (a lane pair one row): it copies the
//     half's codes kWgCodeAhead stages ahead (cp.async into its own bytes of a code ring) and its scale two stages
//     ahead, expands the codes (quant_mma.cuh: exact) into the swizzled B row with 16-byte shared stores, fences them
//     to the async proxy; each warp then arrives once: `full` expects 256 + 8 arrivals.
//   consumers: rows 64 c.. of the tile, one m64n128k16 wgmma per 16 k (4 per stage), both operands from shared
//     memory through descriptors, f32 accumulators in registers (64 a thread). A stage is released (each consumer
//     warp's lane 0 arrives on the stage's `empty` mbarrier, 8 arrivals) once the warpgroup's wgmma.wait_group 1
//     after the next stage's MMAs shows its MMAs complete: one wgmma group stays in flight.
//
// Shared-memory layout of an operand tile (rows of 64 bf16 = 128 bytes, tile base 1024-byte aligned): element (r, k)
// at byte  r * 128 + (((k / 8) ^ (r % 8)) * 16) + (k % 8) * 2,  i.e. the 16-byte chunk index XORed with the row's
// index inside its 8-row, 1024-byte group. That is the address-level Swizzle<3,4,3> (byte-address bits [4,7) ^=
// bits [7,10)), which is both what TMA writes for CU_TENSOR_MAP_SWIZZLE_128B with a 128-byte box row and what
// wgmma reads for swizzle mode 1 (128B) with K-major operands; the hardware applies the XOR on absolute shared
// addresses, hence the 1024-byte alignment of every tile (and of the 64-row halves the descriptors start at).
//
// wgmma matrix descriptor (PTX ISA "Matrix Descriptor Format" for wgmma): bits 0-13 start address >> 4, bits 16-29
// leading-dimension byte offset >> 4, bits 32-45 stride-dimension byte offset >> 4, bits 49-51 base offset, bits
// 62-63 swizzle mode (0 none, 1 128B, 2 64B, 3 32B). Here: K-major, 128B swizzle: LBO unused for swizzled K-major
// layouts (set to 1, as is customary), SBO = 1024 bytes (the distance between 8-row core-matrix groups along M/N),
// base offset 0 (every start address is at most 96 bytes past a 1024-byte boundary, so address bits [7,10) are
// those of the row). The k-th 16-wide slice of a 64-wide stage starts 32 k bytes further (descriptor + 2 k): the
// swizzle is computed from the final address, so advancing the start inside the 128-byte row selects the k slice.
//
// Each output's sum runs over k in ascending order (one MMA chain a block): deterministic, no atomics.
#pragma once

#include <cuda.h>  // CUtensorMap (the host encodes it through cudaGetDriverEntryPointByVersion: no libcuda link)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "backend/cuda/common.cuh"
#include "backend/cuda/launch.h"
#include "backend/cuda/mbarrier.cuh"
#include "backend/cuda/moe_plan.h"
#include "backend/cuda/quant_matrix.h"
#include "backend/cuda/quant_mma.cuh"

namespace dsv4::cuda {

constexpr int kWgBM = 128;  // plan rows a block
constexpr int kWgBN = 128;  // MMA columns a block (GATED: 64 of w1 + 64 of w3)
constexpr int kWgBK = 64;   // k a stage: one 128-byte swizzle row
// Producer warpgroups: one (bf16: TMA does B), two (QUANT: the expansion's ALU work is the producer's bottleneck
// with one); then two consumer warpgroups.
template <bool QUANT>
constexpr int wgmma_producers() {
  return QUANT ? 2 : 1;
}
template <bool QUANT>
constexpr int wgmma_threads() {
  return 128 * (wgmma_producers<QUANT>() + 2);
}
constexpr int kWgTileBytes = kWgBM * kWgBK * 2;  // one operand tile (A or B): 16 KiB
constexpr int kWgStageBytes = 2 * kWgTileBytes;
// QUANT: each producer thread's codes of one B row, kWgCodeAhead stages ahead of its expansion, in a ring of
// kWgCodeAhead + 1 slots of 64 bytes a row (a stage of E4M3; E2M1 uses half).
constexpr int kWgCodeAhead = 3;
constexpr int kWgCodeSlotBytes = kWgBN * kWgBK;  // 8 KiB
template <bool QUANT>
constexpr int wgmma_stages() {
  return QUANT ? 5 : 6;
}
template <bool QUANT>
constexpr int wgmma_smem_bytes() {  // stages, QUANT's code ring, barriers, alignment slack
  return wgmma_stages<QUANT>() * kWgStageBytes + (QUANT ? (kWgCodeAhead + 1) * kWgCodeSlotBytes : 0) +
         2 * wgmma_stages<QUANT>() * 8 + 1024;
}
static_assert(kWgBM == kWgBN, "A and B tiles share one size");
static_assert(kWgBK * 2 == 128, "a tile row is one 128-byte swizzle row");
static_assert(wgmma_smem_bytes<true>() <= 227 * 1024 && wgmma_smem_bytes<false>() <= 227 * 1024, "shared memory");

template <bool GATED>
constexpr int wgmma_cols() {
  return GATED ? kWgBN / 2 : kWgBN;
}

namespace wg {

using namespace tma;  // smem_addr, the mbarrier operations, fence_proxy_async (mbarrier.cuh)

// An arrive-on `bar` once all of this thread's earlier cp.async copies have landed; counts as one of the expected
// arrivals (.noinc).
__device__ __forceinline__ void cp_async_arrive_noinc(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ld_shared_v4(uint32_t addr, uint32_t& x, uint32_t& y, uint32_t& z, uint32_t& w) {
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(x), "=r"(y), "=r"(z), "=r"(w)
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void st_shared_v4(uint32_t addr, const uint4& v) {
  asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}
// Box (c0 = k, c1 = weight row) of a 2-D tensor map into shared memory; completes `bar`'s transaction bytes.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int32_t c0,
                                            int32_t c1) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], "
      "[%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1)
      : "memory");
}
__device__ __forceinline__ void prefetch_tensormap(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}
// K-major operand, 128B swizzle, 8-row groups 1024 bytes apart (see the header).
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>(1) << 16) |
         (static_cast<uint64_t>(1024 >> 4) << 32) | (static_cast<uint64_t>(1) << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator uses across the asynchronous MMAs' wait.
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }

// The 64 f32 accumulator registers of an m64n128 wgmma: the asm operand list and its text (operands %0 .. %63).
#define DSV4_WGMMA_D64_TEXT                                                          \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "          \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define DSV4_WGMMA_D64_OPERANDS(d)                                                                            \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
      "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),  \
      "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), \
      "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), \
      "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), \
      "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), \
      "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), \
      "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

// d (+)= A (64 x 16, descriptor da) * B (128 x 16 as [n][k], descriptor db); scale_d 0 overwrites d. Both operands
// K-major (transpose immediates 0).
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t da, uint64_t db, uint32_t scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " DSV4_WGMMA_D64_TEXT ", %64, %65, p, 1, 1, 0, 0;\n}\n"
      : DSV4_WGMMA_D64_OPERANDS(d)
      : "l"(da), "l"(db), "r"(scale_d));
}

}  // namespace wg

// grid (ceil(N / wgmma_cols<GATED>()), tile bound), wgmma_threads<QUANT>() threads, wgmma_smem_bytes<QUANT>() dynamic
// shared memory. bf16 stacks (QUANT false): wmap / w3map are 2-D maps of the stacked weights as [experts * N rows, K]
// bf16, box {64 k, 64 rows} (GATED: w1 and w3) or {64, 128} (w2: both the same map), 128B swizzle; qw / qw3 unused.
// Quantised stacks (QUANT): qw / qw3 (moe_decode_quant_supports' layouts), the maps unused. Requires K % 8 == 0
// and 16-byte aligned rows of `a`.
template <bool GATED, bool QUANT, typename TO>
__global__ void __launch_bounds__(wgmma_threads<QUANT>(), 1)
    moe_gemm_wgmma_kernel(TO* __restrict__ out, const bf16* __restrict__ a, const __grid_constant__ CUtensorMap wmap,
                          const __grid_constant__ CUtensorMap w3map, QuantExperts qw, QuantExperts qw3, MoePlan plan,
                          int N, int K, float limit) {
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
  __trap();  // wgmma exists on sm_90a only: dsv4 builds for it (DSV4_CUDA_ARCHS)
#else
  constexpr int kStages = wgmma_stages<QUANT>();
  constexpr int kProducers = wgmma_producers<QUANT>(), kProducerThreads = 128 * kProducers;
  extern __shared__ unsigned char wg_smem[];
  pdl_wait();
  int32_t e, row0, row_end;
  if (!plan_tile(plan, static_cast<int>(blockIdx.y), &e, &row0, &row_end)) return;
  const int n0 = static_cast<int>(blockIdx.x) * wgmma_cols<GATED>();
  const int tid = static_cast<int>(threadIdx.x);
  // Read through a shuffle so that the compiler knows it warp-uniform (wgmma in a path it deems divergent is
  // serialised).
  const int warpgroup = __shfl_sync(0xffffffffu, tid / 128, 0);
  // Stage s: A tile at base + s * kWgStageBytes, B tile kWgTileBytes after it; then full[kStages], empty[kStages];
  // QUANT: then the code ring.
  const uint32_t base = (wg::smem_addr(wg_smem) + 1023u) & ~1023u;
  const uint32_t bars = base + kStages * kWgStageBytes;
  const auto full = [&](int s) { return bars + 8u * static_cast<uint32_t>(s); };
  const auto empty = [&](int s) { return bars + 8u * static_cast<uint32_t>(kStages + s); };
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      // The producers' cp.async arrivals (A rows), and the TMA thread's expect_tx (bf16 B) or every producer warp's
      // arrive after its expanded B rows (QUANT).
      wg::mbar_init(full(s), QUANT ? kProducerThreads + kProducerThreads / 32 : kProducerThreads + 1);
      wg::mbar_init(empty(s), 8);  // one per consumer warp
    }
    wg::fence_mbarrier_init();
    wg::fence_proxy_async();
  }
  __syncthreads();
  const int ktiles = (K + kWgBK - 1) / kWgBK;

  if (warpgroup < kProducers) {
    // ---- producers ----
    // Thread p copies 16-byte chunk p % 8 of rows p / 8 + kRowStep i of each A tile. Those rows are all ≡ p / 8
    // (mod 8), so the swizzled chunk (chunk ^ row % 8) is the same for all.
    constexpr int kRowStep = kProducerThreads / 8, kRowsEach = kWgBM / kRowStep;
    const int p = tid, chunk = p & 7, rsub = p >> 3;
    const uint32_t swz = static_cast<uint32_t>(((chunk ^ (rsub & 7)) << 4));
    if constexpr (!QUANT) {
      if (p == 0) {
        wg::prefetch_tensormap(&wmap);
        if constexpr (GATED) wg::prefetch_tensormap(&w3map);
      }
    }
    const bf16* src[kRowsEach];
    bool valid[kRowsEach];
#pragma unroll
    for (int i = 0; i < kRowsEach; ++i) {
      const int32_t r = row0 + rsub + kRowStep * i;
      valid[i] = r < row_end;
      const int64_t arow = valid[i] ? (GATED ? plan_token(plan, r) : r) : 0;
      src[i] = a + arow * K + chunk * 8;
    }
    const auto copy_a = [&](int t, uint32_t st) {
      const bool in_k = t * kWgBK + chunk * 8 < K;  // K % 8 == 0: a chunk is wholly in or out
      // Past K the copy reads nothing (size 0) from a valid address: the row's start.
      const int koff = in_k ? t * kWgBK : 0;
#pragma unroll
      for (int i = 0; i < kRowsEach; ++i) {
        wg::cp_async16(st + static_cast<uint32_t>((rsub + kRowStep * i) * 128) + swz, src[i] + koff, valid[i] && in_k);
      }
      wg::cp_async_arrive_noinc(full(t % kStages));
    };
    if constexpr (!QUANT) {
      const int32_t wrow = e * N + n0;  // first weight row of the block's B tile (w1 / w3 / w2)
      for (int t = 0; t < ktiles; ++t) {
        const int s = t % kStages;
        if (t >= kStages) wg::mbar_wait(empty(s), static_cast<uint32_t>((t / kStages - 1) & 1));
        const uint32_t st = base + static_cast<uint32_t>(s) * kWgStageBytes;
        if (p == 0) {
          wg::mbar_arrive_expect_tx(full(s), kWgTileBytes);
          if constexpr (GATED) {
            wg::tma_load_2d(st + kWgTileBytes, &wmap, full(s), t * kWgBK, wrow);
            wg::tma_load_2d(st + kWgTileBytes + kWgTileBytes / 2, &w3map, full(s), t * kWgBK, wrow);
          } else {
            wg::tma_load_2d(st + kWgTileBytes, &wmap, full(s), t * kWgBK, wrow);
          }
        }
        copy_a(t, st);
      }
    } else {
      // Half h = p % 2 of B row b = p / 2 of every stage is this thread's (values 32 h .. 32 h + 31 of the stage's
      // 64): weight row n0 + b % 64 of w1 (b < 64) or w3 (GATED), or n0 + b (w2). A warp's code copies are thus 16
      // rows x both halves: whole 32-byte sectors (with the halves in two warps, each sector was fetched twice). It
      // copies those codes kWgCodeAhead stages ahead into its own bytes of a code slot (cp.async, one commit group a
      // stage) and its scale byte two stages ahead into a register, and once the stage's slot is free expands them
      // (exact: quant_mma.cuh) into its 4 chunks of the swizzled B row, makes the writes visible to the async proxy,
      // and each warp arrives once on `full`. Codes past K or past N are zero-filled by their copies and expand to
      // zeros: the expansion has no branches, so that ptxas interleaves the four chunks (the producers are
      // latency-bound: two warps a scheduler).
      static_assert(kProducers == 2, "a B row's two halves");
      const int b = p >> 1, h = p & 1;
      const int n = n0 + (GATED ? b % 64 : b);
      const bool row_in = n < N;
      // Both slices computed and one selected: selecting between the two parameter structs copies them to the stack.
      const QuantSlice q1 = quant_slice(qw, e, N, K), q3 = quant_slice(qw3, e, N, K);
      const QuantSlice q = GATED && b >= 64 ? q3 : q1;
      const uint8_t* const codes = q.codes + static_cast<int64_t>(row_in ? n : 0) * q.row_bytes;
      const uint32_t ring = bars + 2 * kStages * 8;  // 16-byte aligned
      const bool lane0 = (p & 31) == 0;
      // The format is the block's (its expert's): one loop for each.
      const auto produce = [&](auto fp4_tag) {
        constexpr bool kFp4 = decltype(fp4_tag)::value;
        constexpr WeightFormat kFormat = kFp4 ? WeightFormat::kFp4 : WeightFormat::kFp8Block;
        const uint8_t* const scales =
            q.scale + static_cast<int64_t>(row_in ? (kFp4 ? n : n / kFp8Block) : 0) * q.scale_cols;
        // This thread's bytes of a slot: FP4 16 at 16 p (a quarter-warp's accesses hit 8 distinct bank groups); FP8
        // 32 at 32 p, its two 16-byte pieces in swapped order in every other group of 4 threads (the same for FP8).
        const uint32_t swap = static_cast<uint32_t>((p >> 2) & 1);
        const auto code_slot = [&](int t, int piece) {
          return ring + static_cast<uint32_t>((t % (kWgCodeAhead + 1)) * kWgCodeSlotBytes) +
                 (kFp4 ? static_cast<uint32_t>(p * 16)
                       : static_cast<uint32_t>(p * 32) + ((static_cast<uint32_t>(piece) ^ swap) << 4));
        };
        const auto copy_codes = [&](int t) {
          if (t >= ktiles) return;
          const int k = t * kWgBK + 32 * h;  // K % 32 == 0 (FP4) or % 16 (FP8): a copy is wholly in or out
          if constexpr (kFp4) {
            const bool in = row_in && k < K;
            wg::cp_async16(code_slot(t, 0), in ? codes + k / 2 : codes, in);
          } else {
#pragma unroll
            for (int j = 0; j < 2; ++j) {
              const bool in = row_in && k + 16 * j < K;
              wg::cp_async16(code_slot(t, j), in ? codes + k + 16 * j : codes, in);
            }
          }
        };
        // The half's scale (L1 after the first stages: a row's scale bytes are contiguous); 127 (= 1) past K.
        const auto load_scale = [&](int t) -> uint8_t {
          const int k0 = t * kWgBK + 32 * h;
          return row_in && k0 < K ? __ldg(scales + (kFp4 ? k0 / kFp4Group : k0 / kFp8Block)) : 127;
        };
        for (int t = 0; t < kWgCodeAhead; ++t) {
          copy_codes(t);
          wg::cp_async_commit();
        }
        uint8_t sc_next = load_scale(0), sc_after = load_scale(1);
        for (int t = 0; t < ktiles; ++t) {
          const int s = t % kStages;
          const uint8_t sc = sc_next;
          sc_next = sc_after;
          if (t >= kStages) wg::mbar_wait(empty(s), static_cast<uint32_t>((t / kStages - 1) & 1));
          const uint32_t st = base + static_cast<uint32_t>(s) * kWgStageBytes;
          copy_a(t, st);
          copy_codes(t + kWgCodeAhead);
          wg::cp_async_commit();
          wg::cp_async_wait_group<kWgCodeAhead>();  // this thread's codes of stage t
          uint32_t w[8];
          wg::ld_shared_v4(code_slot(t, 0), w[0], w[1], w[2], w[3]);
          if constexpr (!kFp4) wg::ld_shared_v4(code_slot(t, 1), w[4], w[5], w[6], w[7]);
          const uint32_t brow = st + kWgTileBytes + static_cast<uint32_t>(b * 128);
          const auto expand = [&](auto may_be_high) {
            constexpr bool kHigh = decltype(may_be_high)::value;
            const PairScale<kFormat> ps(sc);
            uint4 v[4];
#pragma unroll
            for (int j = 0; j < 4; ++j) {  // 16-byte chunk c = 4 h + j: values k0 + 8 j ..
              if constexpr (kFp4) {
                v[j] = e2m1_chunk<kHigh>(w[j], ps);
              } else {
                v[j] = e4m3_chunk<kHigh>(w[2 * j], w[2 * j + 1], ps);
              }
            }
#pragma unroll
            for (int j = 0; j < 4; ++j)
              wg::st_shared_v4(brow + static_cast<uint32_t>(((4 * h + j) ^ (b & 7)) << 4), v[j]);
          };
          // Scales past bf16's largest power of two need a second multiply (quant_mma.cuh); no real checkpoint has
          // them.
          if (sc > (kFp4 ? 128 : 134)) {
            expand(std::true_type{});
          } else {
            expand(std::false_type{});
          }
          wg::fence_proxy_async();  // the generic-proxy writes, to wgmma's reads
          __syncwarp();             // the warp's writes, before its lane 0's release
          if (lane0) wg::mbar_arrive(full(s));
          // After the fence (a MEMBAR on sm_90, which waits for this thread's loads in flight): issued before it, the
          // load cost every stage an L2 round trip.
          sc_after = load_scale(t + 2);
        }
      };
      if (q.fp4) {
        produce(std::true_type{});
      } else {
        produce(std::false_type{});
      }
    }
    wg::cp_async_wait_all();  // exit with no copy in flight
    return;
  }

  // ---- consumers: warpgroup 1 rows 0..63, warpgroup 2 rows 64..127 of the tile ----
  // A warpgroup whose 64 rows are all past row_end (tiles of at most 64 rows) issues no MMAs, but still follows the
  // stages (waits for each, releases the one before) so that every phase of `empty` gets its 8 arrivals. Two
  // separate loops: the MMA loop has no branch around its wgmma (ptxas would otherwise wait for the accumulators).
  const int cw = warpgroup - kProducers;
  const bool lane0 = (tid & 31) == 0;
  if (row0 + cw * 64 >= row_end) {
    for (int t = 0; t < ktiles; ++t) {
      wg::mbar_wait(full(t % kStages), static_cast<uint32_t>((t / kStages) & 1));
      if (t > 0 && lane0) wg::mbar_arrive(empty((t - 1) % kStages));
    }
    return;
  }
  float acc[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
  for (int t = 0; t < ktiles; ++t) {
    const int s = t % kStages;
    wg::mbar_wait(full(s), static_cast<uint32_t>((t / kStages) & 1));
    // The producers' cp.async rows, now complete, to the async proxy. Review (2026-12-06): a reader-side fence after
    // the acquiring wait is enough under the PTX memory model (the proxy fence may sit anywhere on the causality
    // path write -> cp.async.mbarrier.arrive -> try_wait -> wgmma); the writers cannot fence their own cp.async
    // without waiting for it. CUTLASS's cp.async + GMMA warp-specialized mainloop (sm90_mma_multistage_gmma_ss_
    // warpspecialized.hpp) uses the same noinc-arrive handoff with no proxy fence at all. Checked on H100s since
    // 2026-12-06 (the CPU-reference checks of bench_moe_gemm and CudaQuant.MoeDecode*'s tiled GEMM, memcheck clean).
    wg::fence_proxy_async();
    const uint32_t st = base + static_cast<uint32_t>(s) * kWgStageBytes;
    const uint64_t da = wg::sw128_desc(st + static_cast<uint32_t>(cw * 64 * 128));
    const uint64_t db = wg::sw128_desc(st + kWgTileBytes);
    wg::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kWgBK / 16; ++kk) {
      // +32 bytes a 16-wide k slice: +2 in the address field (no carry: addresses stay below 2^18).
      wg::wgmma_m64n128k16(acc, da + 2 * kk, db + 2 * kk, (t > 0 || kk > 0) ? 1u : 0u);
    }
    wg::wgmma_commit();
    wg::wgmma_wait<1>();  // stage t - 1's MMAs (this warpgroup) are complete: release its slot
    if (t > 0 && lane0) wg::mbar_arrive(empty((t - 1) % kStages));
  }
  wg::wgmma_wait<0>();
#pragma unroll
  for (int i = 0; i < 64; ++i) wg::fence_operand(acc[i]);

  // Epilogue from the accumulator fragments: warp q of the warpgroup holds rows 16 q.. of its 64; lane (g, t4) holds
  // rows g and g + 8 and, of each 8-column chunk j, columns 8 j + 2 t4 + {0, 1} in acc[4 j + 2 h + {0, 1}] (h: the
  // row half). GATED: chunks 0-7 are w1 (gate), chunks 8-15 w3 (up) of the same 64 outputs.
  const int lane = tid & 31, q = (tid >> 5) & 3, g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int32_t r = row0 + cw * 64 + q * 16 + g + 8 * h;
    if (r >= row_end) continue;
    TO* orow = out + static_cast<int64_t>(r) * N;
#pragma unroll
    for (int j = 0; j < (GATED ? 8 : 16); ++j) {
      float v[2] = {acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]};
      if constexpr (GATED) {
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float gv = fminf(v[c], limit);
          const float u = fminf(fmaxf(acc[4 * (j + 8) + 2 * h + c], -limit), limit);
          v[c] = gv / (1.0f + expf(-gv)) * u;
        }
      }
      store_pair(orow, n0 + 8 * j + 2 * t4, N, v[0], v[1]);
    }
  }
#endif
}

// ---- host ----

using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                   const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// cuTensorMapEncodeTiled from the driver the runtime loaded (no libcuda link); null if unavailable.
inline EncodeTiledFn encode_tiled_fn() {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult q{};
  if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q) != cudaSuccess ||
      q != cudaDriverEntryPointSuccess)
    return nullptr;
  return reinterpret_cast<EncodeTiledFn>(fn);
}

// A stacked weight [rows = experts * N, K] bf16 as a 2-D tensor map with boxes of 64 k x box_rows rows, 128B swizzle;
// reads past the tensor's edges (the last expert's rows past N, k past K) fill zeros.
inline bool make_weight_map(CUtensorMap* map, const bf16* w, int64_t rows, int64_t K, int box_rows) {
  static const EncodeTiledFn encode = encode_tiled_fn();
  if (encode == nullptr) return false;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(K), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(K) * sizeof(bf16)};  // bytes, of dimension 1
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(kWgBK), static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t elem_strides[2] = {1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<bf16*>(w), dims, strides, box, elem_strides,
                CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// The maps of one product: GATED w1, w3 with 64-row boxes; w2 one map (passed twice) with 128-row boxes.
template <bool GATED>
bool make_product_maps(CUtensorMap* wmap, CUtensorMap* w3map, const bf16* w, const bf16* w3, int64_t experts, int N,
                       int K) {
  const int box = GATED ? kWgBN / 2 : kWgBN;
  if (!make_weight_map(wmap, w, experts * N, K, box)) return false;
  if (GATED) return make_weight_map(w3map, w3, experts * N, K, box);
  *w3map = *wmap;
  return true;
}

template <bool GATED, bool QUANT, typename TO>
void launch_wgmma_kernel(cudaStream_t stream, TO* out, const bf16* a, const CUtensorMap& wmap, const CUtensorMap& w3map,
                         const QuantExperts& qw, const QuantExperts& qw3, const MoePlan& plan, int64_t max_tiles, int N,
                         int K, float limit, const char* what) {
  static_assert(GATED == std::is_same_v<TO, bf16>, "GATED stores bf16, w2 f32");
  constexpr auto kernel = moe_gemm_wgmma_kernel<GATED, QUANT, TO>;
  constexpr int bytes = wgmma_smem_bytes<QUANT>(), threads = wgmma_threads<QUANT>();
  allow_dynamic_shared<kernel>(bytes, "cudaFuncSetAttribute(moe_gemm_wgmma)");
  const dim3 grid((N + wgmma_cols<GATED>() - 1) / wgmma_cols<GATED>(), static_cast<unsigned>(max_tiles));
  check_launch(
      launch_kernel(kernel, grid, dim3(threads), bytes, stream, out, a, wmap, w3map, qw, qw3, plan, N, K, limit), what);
}

// One product of bf16 stacks over a plan of kPlanWideTileRows-row tiles (grid: the column blocks x the plan's tile
// bound); the maps of make_product_maps.
template <bool GATED, typename TO>
void launch_moe_gemm_wgmma(cudaStream_t stream, TO* out, const bf16* a, const CUtensorMap& wmap,
                           const CUtensorMap& w3map, const MoePlan& plan, int64_t max_tiles, int N, int K, float limit,
                           const char* what) {
  launch_wgmma_kernel<GATED, false>(stream, out, a, wmap, w3map, QuantExperts{}, QuantExperts{}, plan, max_tiles, N, K,
                                    limit, what);
}

// The same over quantised stacks (moe_decode_quant_supports' layouts: w1, w3 share a format).
template <bool GATED, typename TO>
void launch_moe_gemm_wgmma_quant(cudaStream_t stream, TO* out, const bf16* a, const QuantExperts& w,
                                 const QuantExperts& w3, const MoePlan& plan, int64_t max_tiles, int N, int K,
                                 float limit, const char* what) {
  launch_wgmma_kernel<GATED, true>(stream, out, a, CUtensorMap{}, CUtensorMap{}, w, w3, plan, max_tiles, N, K, limit,
                                   what);
}

}  // namespace dsv4::cuda
