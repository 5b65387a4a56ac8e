// Kernel lab variant (bench_moe_gemm rs), tried and not taken: correct (the lab's 256 sampled outputs; v1 also the
// library's CudaQuant tests and memcheck, 0 errors) but slower than moe_gemm_wgmma.cuh's quantised form. H100,
// 2026-12-07, Flash shape, gated / w2 (library kernel 3.14-3.19 / 1.57-1.59 ms):
//   v1  per stage: expand, MMAs, wait_group 0; ~11 instructions a bf16 pair             3.90 / 2.25 ms
//   v2  a commit group a k step (wait_group 3), the pair by one byte_perm, scales ahead 4.07 / 2.15 ms
//   v3  (this file) six stages, scale bytes combined only where used                   3.80 / 2.16 ms
// ncu (v3's gated kernel): the consumers are ALU-issue-bound — stall samples `wait` 31% (fixed-latency chains),
// `selected` 17%, `math` 12% (pipe throttle), `dispatch` 9%, waiting for full stages ~6%. The codes of a block are
// expanded once for its 128 plan rows either way; here the consumer warps that issue the MMAs also do that work,
// where the library kernel gives it to producer warps beside them. v1's racecheck reported hazards between the
// producer's cp.async writes and the consumers' code reads (likely its model of cp.async.mbarrier.arrive.noinc).
// The quantised MoE prefill products with the operands swapped — D[weight row n][plan row r] = W[n][k] · X[r][k] — so
// that the FP4 / FP8 weights are wgmma's A operand *from registers* and the activations its B operand from shared
// memory, the layout of CUTLASS's mixed-input Hopper GEMMs (and vLLM's Machete). moe_gemm_wgmma.cuh's quantised form
// expands the codes into shared memory in producer warps (store, proxy fence, arrive: a latency chain two producer
// warps a scheduler cannot hide; its consumers waited ~70% of the time, H100 2026-12-07); here the consumers expand
// their own fragments in registers while the other consumer warpgroup's MMAs run.
//
// Block: 128 weight rows (w2) or 128 output columns (GATED: w1 and w3 rows n0 .. n0 + 127) x one plan tile (at most
// 128 rows, the wgmma's N), 384 threads: warpgroup 0 copies, per 64-k stage, the tile's activation rows (cp.async,
// 128B-swizzled K-major: moe_gemm_wgmma.cuh's A tile, here the B operand) and the block's weight codes (row-major, 32
// bytes a row-stage for E2M1, 64 for E4M3) into a ring of kRsStages stages, then arrives on the stage's `full`
// (cp.async.mbarrier.arrive.noinc, 128 arrivals); warpgroups 1 and 2 own weight rows 64 c .. 64 c + 63 of the block:
// warp q's lane (g, t4) reads the 32 / 64 code bytes of rows 16 q + g and 16 q + g + 8 of the stage (all four lanes of
// a row read the same bytes: shared-memory broadcasts), picks the bytes of its MMA fragment (k 2 t4, 2 t4 + 1, 2 t4 +
// 8, 2 t4 + 9 of each 16-wide step), expands them exactly (quant_bits.h: logic ops and one bf16 multiply by the scale),
// and issues m64n128k16 wgmmas (GATED: one chain for w1, one for w3 rows, so gate and up of an output meet in one
// thread). wgmma.wait_group 0 after each stage (its A registers are rewritten at the next); the two consumer
// warpgroups overlap each other's expansion and MMAs. setmaxnreg gives the producer 40 registers and the consumers 232
// (without it ptxas spilled GATED's two 64-float accumulators at the 168 of 384 threads). Each output's sum runs over k
// in ascending order.
#pragma once

#include "backend/cuda/moe_gemm_wgmma.cuh"

namespace dsv4::cuda::wg {

// Only this lab variant takes A from registers; the library kernels read it from shared memory.
// d (+)= A (64 x 16 from registers a: the warp's rows 16 q.., lane (g, t4): a0 (row g, k 2 t4, +1), a1 (row g + 8),
// a2 (row g, k 2 t4 + 8, +9), a3 (row g + 8)) * B (128 x 16 as [n][k], descriptor db, K-major); scale_d 0 overwrites.
__device__ __forceinline__ void wgmma_rs_m64n128k16(float (&d)[64], const uint32_t (&a)[4], uint64_t db,
                                                    uint32_t scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " DSV4_WGMMA_D64_TEXT
      ", {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
      : DSV4_WGMMA_D64_OPERANDS(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
}

}  // namespace dsv4::cuda::wg

namespace dsv4::cuda::lab {

constexpr int kRsRows = 128;  // weight rows (GATED: output columns) a block
constexpr int kRsBK = 64;     // k a stage
constexpr int kRsStages = 6;
constexpr int kRsThreads = 384;
constexpr int kRsActBytes = kWgBM * kRsBK * 2;     // 128 plan rows x 64 bf16: 16 KiB
constexpr int kRsCodeBytes = 2 * kRsRows * kRsBK;  // the largest code tile: GATED E4M3, 16 KiB
constexpr int kRsStageBytes = kRsActBytes + kRsCodeBytes;
constexpr int kRsSmemBytes = kRsStages * kRsStageBytes + 2 * kRsStages * 8 + 1024;
static_assert(kRsSmemBytes <= 227 * 1024, "shared memory");

// The two E2M1 codes of byte b (the low nibble first in k) as bf16x2 bits, each value times 2^-126 (the low half the
// low nibble): e2m1_pair_to_bf16x2_bits's form with the nibbles at bits 12 and 28.
__device__ __forceinline__ uint32_t e2m1_byte_bits(uint32_t b) {
  const uint32_t q = ((b & 0x0Fu) << 12) | ((b & 0xF0u) << 24);
  return (q & 0x80008000u) | ((q & 0x70007000u) >> 6);
}

// The E4M3 codes at bytes off, off + 1 of word w (off even) as bf16x2 bits (value times 2^-120; the first code low).
__device__ __forceinline__ uint32_t e4m3_two_bits(uint32_t w, uint32_t off) {
  const uint32_t spread = __byte_perm(w, 0u, off | (4u << 4) | ((off + 1u) << 8) | (4u << 12));  // bytes 0 and 2
  return e4m3_pair_to_bf16x2_bits(spread, false);
}

template <bool GATED, bool kHigh, typename TO>
__global__ void __launch_bounds__(kRsThreads, 1)
    moe_gemm_rs_kernel(TO* __restrict__ out, const bf16* __restrict__ a, QuantExperts qw, QuantExperts qw3,
                       MoePlan plan, int N, int K, float limit) {
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
  __trap();
#else
  extern __shared__ unsigned char rs_smem[];
  pdl_wait();
  int32_t e, row0, row_end;
  if (!plan_tile(plan, static_cast<int>(blockIdx.y), &e, &row0, &row_end)) return;
  const int n0 = static_cast<int>(blockIdx.x) * kRsRows;
  const int tid = static_cast<int>(threadIdx.x);
  const int warpgroup = __shfl_sync(0xffffffffu, tid / 128, 0);
  const uint32_t base = (wg::smem_addr(rs_smem) + 1023u) & ~1023u;
  const uint32_t bars = base + kRsStages * kRsStageBytes;
  const auto full = [&](int s) { return bars + 8u * static_cast<uint32_t>(s); };
  const auto empty = [&](int s) { return bars + 8u * static_cast<uint32_t>(kRsStages + s); };
  if (tid == 0) {
    for (int s = 0; s < kRsStages; ++s) {
      wg::mbar_init(full(s), 128);
      wg::mbar_init(empty(s), 8);
    }
    wg::fence_mbarrier_init();
    wg::fence_proxy_async();
  }
  __syncthreads();
  const int ktiles = (K + kRsBK - 1) / kRsBK;
  // Both slices computed and one selected per row (selecting a parameter struct copies it to the stack).
  const QuantSlice q1 = quant_slice(qw, e, N, K), q3 = quant_slice(qw3, e, N, K);
  const bool fp4 = q1.fp4;                              // w1 and w3 share a format (moe_decode_quant_supports)
  const int row_stage_bytes = fp4 ? kRsBK / 2 : kRsBK;  // code bytes of a row in one stage

  if (warpgroup == 0) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");  // ptxas fits the region below into 40
    // ---- producer: activation rows (moe_gemm_wgmma.cuh's copy_a with 128 threads) and the block's codes ----
    const int p = tid, chunk = p & 7, rsub = p >> 3;
    const uint32_t swz = static_cast<uint32_t>(((chunk ^ (rsub & 7)) << 4));
    const int code_rows = GATED ? 2 * kRsRows : kRsRows, pieces = row_stage_bytes / 16;
    for (int t = 0; t < ktiles; ++t) {
      const int s = t % kRsStages;
      if (t >= kRsStages) wg::mbar_wait(empty(s), static_cast<uint32_t>((t / kRsStages - 1) & 1));
      const uint32_t st = base + static_cast<uint32_t>(s) * kRsStageBytes;
      const bool in_k = t * kRsBK + chunk * 8 < K;
#pragma unroll
      for (int i = 0; i < kWgBM / 16; ++i) {
        const int32_t r = row0 + rsub + 16 * i;
        const bool valid = r < row_end && in_k;
        const int64_t arow = r < row_end ? (GATED ? plan_token(plan, r) : r) : 0;
        wg::cp_async16(st + static_cast<uint32_t>((rsub + 16 * i) * 128) + swz,
                       a + arow * K + (in_k ? t * kRsBK : 0) + chunk * 8, valid);
      }
      for (int ci = p; ci < code_rows * pieces; ci += 128) {
        const int row = ci / pieces, piece = ci % pieces;
        const bool w3row = GATED && row >= kRsRows;
        const int n = n0 + (w3row ? row - kRsRows : row);
        const int k = t * kRsBK + piece * (fp4 ? 32 : 16);  // the piece's first value
        const bool valid = n < N && k < K;
        const QuantSlice& q = w3row ? q3 : q1;
        const uint8_t* src = q.codes + static_cast<int64_t>(valid ? n : 0) * q.row_bytes +
                             (valid ? t * row_stage_bytes + piece * 16 : 0);
        wg::cp_async16(st + kRsActBytes + static_cast<uint32_t>(row * row_stage_bytes + piece * 16), src, valid);
      }
      wg::cp_async_arrive_noinc(full(s));
    }
    wg::cp_async_wait_all();
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");  // 128 x 40 + 256 x 232 <= 64 Ki registers
  // ---- consumers: warpgroup 1 rows 0..63, warpgroup 2 rows 64..127 of the block ----
  const int cw = warpgroup - 1, lane = tid & 31, q = (tid >> 5) & 3, g = lane >> 2, t4 = lane & 3;
  const bool lane0 = lane == 0;
  const int brow = cw * 64 + q * 16 + g;  // the block row of this lane's row g (and brow + 8)
  float acc1[64], acc3[GATED ? 64 : 1];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc1[i] = 0.0f;
  if constexpr (GATED) {
#pragma unroll
    for (int i = 0; i < 64; ++i) acc3[i] = 0.0f;
  }
  // The lane's scale rows (FP4: its two weight rows; FP8: the block's 128-row block) of each matrix.
  const auto scale_row = [&](const QuantSlice& qs, int h) -> const uint8_t* {
    const int n = min(n0 + brow + 8 * h, N - 1);
    return qs.scale + static_cast<int64_t>(qs.fp4 ? n : n / kFp8Block) * qs.scale_cols;
  };
  const uint8_t* sc1[2] = {scale_row(q1, 0), scale_row(q1, 1)};
  const uint8_t* sc3[2] = {scale_row(q3, 0), scale_row(q3, 1)};
  // A stage's scale bytes of one matrix, loaded a stage ahead and combined only where used (combining them at the
  // load made every stage wait for it): FP4 one 16-bit load a row (the stage's two 32-value groups, adjacent and
  // 2-byte aligned where a row has an even number of scale bytes, as at the Flash shapes this lab runs), FP8 one byte;
  // 127 (= 1) past K.
  struct StageScales {
    uint32_t row[2];
  };
  const auto stage_scales = [&](const uint8_t* const(&sc)[2], int t) -> StageScales {
    const int k0 = t * kRsBK;
    StageScales v;
    if (fp4) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        v.row[h] = k0 + 32 < K ? static_cast<uint32_t>(__ldg(reinterpret_cast<const uint16_t*>(sc[h] + k0 / kFp4Group)))
                   : k0 < K    ? (static_cast<uint32_t>(__ldg(sc[h] + k0 / kFp4Group)) | 0x7F00u)
                               : 0x7F7Fu;
      }
    } else {
      v.row[0] = k0 < K ? static_cast<uint32_t>(__ldg(sc[0] + k0 / kFp8Block)) : 127u;
      v.row[1] = v.row[0];
    }
    return v;
  };
  // byte_perm selector: byte 1 <- byte t4 of (word << 4) (its low code in bits 12..15), byte 3 <- byte t4 of the word
  // (its high code in bits 28..31): e2m1_pair_to_bf16x2_bits's positions for the pair (2 t4, 2 t4 + 1) of a k step.
  const uint32_t fp4_sel = (static_cast<uint32_t>(t4 + 4) << 4) | (static_cast<uint32_t>(t4) << 12);
  const uint32_t fp8_word = 4u * static_cast<uint32_t>(t4 >> 1), fp8_off = 2u * static_cast<uint32_t>(t4 & 1);
  // Fragment ks of one matrix (codes: its code tile in the stage; sv: its stage_scales).
  const auto fragment = [&](uint32_t codes, const StageScales& sv, int ks, uint32_t(&fa)[4]) {
    if (fp4) {
      const PairScale<WeightFormat::kFp4> s0(static_cast<uint8_t>(sv.row[0] >> (8 * (ks / 2)))),
          s1(static_cast<uint8_t>(sv.row[1] >> (8 * (ks / 2))));
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        uint32_t w0, w1;
        asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n"
                     : "=r"(w0), "=r"(w1)
                     : "r"(codes + static_cast<uint32_t>((brow + 8 * h) * 32 + 8 * ks)));
        const uint32_t x0 = __byte_perm(w0, w0 << 4, fp4_sel), x1 = __byte_perm(w1, w1 << 4, fp4_sel);
        const auto& ps = h == 0 ? s0 : s1;
        fa[h] = ps.template apply<kHigh>((x0 & 0x80008000u) | ((x0 & 0x70007000u) >> 6));
        fa[2 + h] = ps.template apply<kHigh>((x1 & 0x80008000u) | ((x1 & 0x70007000u) >> 6));
      }
    } else {
      const PairScale<WeightFormat::kFp8Block> ps(static_cast<uint8_t>(sv.row[0]));
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t row = codes + static_cast<uint32_t>((brow + 8 * h) * 64 + 16 * ks) + fp8_word;
        uint32_t w0, w1;
        asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(w0) : "r"(row));
        asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(w1) : "r"(row + 8u));
        fa[h] = ps.template apply<kHigh>(e4m3_two_bits(w0, fp8_off));
        fa[2 + h] = ps.template apply<kHigh>(e4m3_two_bits(w1, fp8_off));
      }
    }
  };
  // One commit group per k step: before step ks of stage t rewrites its fragment registers, wait<3> leaves only the
  // three later groups in flight, so step ks of stage t - 1 (the last reader of those registers) is complete; at
  // ks = 3 that completes stage t - 1, whose slot is then released. Expansion of a step overlaps the MMAs of the
  // three before it (and the other warpgroup's).
  uint32_t f1[4][4], f3[4][4];
  StageScales sv1 = stage_scales(sc1, 0), sv3 = GATED ? stage_scales(sc3, 0) : sv1;
  const uint32_t code_bytes = static_cast<uint32_t>(kRsRows * row_stage_bytes);
  for (int t = 0; t < ktiles; ++t) {
    const int s = t % kRsStages;
    wg::mbar_wait(full(s), static_cast<uint32_t>((t / kRsStages) & 1));
    wg::fence_proxy_async();  // the activation rows to the async proxy (moe_gemm_wgmma.cuh's reasoning)
    const uint32_t st = base + static_cast<uint32_t>(s) * kRsStageBytes;
    const uint64_t db = wg::sw128_desc(st);
    const StageScales cur1 = sv1, cur3 = sv3;
    sv1 = stage_scales(sc1, t + 1);
    if constexpr (GATED) sv3 = stage_scales(sc3, t + 1);
#pragma unroll
    for (int ks = 0; ks < kRsBK / 16; ++ks) {
      if (t > 0) {
        wg::wgmma_wait<3>();
        if (ks == 3 && lane0) wg::mbar_arrive(empty((t - 1) % kRsStages));
      }
      fragment(st + kRsActBytes, cur1, ks, f1[ks]);
      if constexpr (GATED) fragment(st + kRsActBytes + code_bytes, cur3, ks, f3[ks]);
      wg::wgmma_fence();
      const uint32_t scale_d = (t > 0 || ks > 0) ? 1u : 0u;
      wg::wgmma_rs_m64n128k16(acc1, f1[ks], db + 2 * ks, scale_d);
      if constexpr (GATED) wg::wgmma_rs_m64n128k16(acc3, f3[ks], db + 2 * ks, scale_d);
      wg::wgmma_commit();
    }
  }
  wg::wgmma_wait<0>();
#pragma unroll
  for (int i = 0; i < 64; ++i) wg::fence_operand(acc1[i]);
  if constexpr (GATED) {
#pragma unroll
    for (int i = 0; i < 64; ++i) wg::fence_operand(acc3[i]);
  }

  // Epilogue: acc[4 j + 2 h + c] is (weight row brow + 8 h, plan row 8 j + 2 t4 + c) of the tile: the output element
  // out[row0 + 8 j + 2 t4 + c][n0 + brow + 8 h].
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int n = n0 + brow + 8 * h;
    if (n >= N) continue;
#pragma unroll
    for (int j = 0; j < 16; ++j) {
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int32_t r = row0 + 8 * j + 2 * t4 + c;
        if (r >= row_end) continue;
        float v = acc1[4 * j + 2 * h + c];
        if constexpr (GATED) {
          const float gv = fminf(v, limit);
          const float u = fminf(fmaxf(acc3[4 * j + 2 * h + c], -limit), limit);
          v = gv / (1.0f + expf(-gv)) * u;
        }
        out[static_cast<int64_t>(r) * N + n] = from_float<TO>(v);
      }
    }
  }
#endif
}

// One product over quantised stacks (as launch_moe_gemm_wgmma_quant; N % 128 == 0 not required). scales_high: some
// scale byte exceeds 128 (FP4) / 134 (FP8), which needs PairScale's second multiply; no real checkpoint has one.
template <bool GATED, typename TO>
void launch_moe_gemm_rs(cudaStream_t stream, TO* out, const bf16* a, const QuantExperts& w, const QuantExperts& w3,
                        const MoePlan& plan, int64_t max_tiles, int N, int K, float limit, bool scales_high) {
  const dim3 grid((N + kRsRows - 1) / kRsRows, static_cast<unsigned>(max_tiles));
  const auto run = [&](auto high) {
    constexpr auto kernel = moe_gemm_rs_kernel<GATED, decltype(high)::value, TO>;
    allow_dynamic_shared<kernel>(kRsSmemBytes, "cudaFuncSetAttribute(moe_gemm_rs)");
    check_launch(launch_kernel(kernel, grid, dim3(kRsThreads), kRsSmemBytes, stream, out, a, w, w3, plan, N, K, limit),
                 "moe_gemm_rs");
  };
  if (scales_high) {
    run(std::true_type{});
  } else {
    run(std::false_type{});
  }
}

}  // namespace dsv4::cuda::lab
