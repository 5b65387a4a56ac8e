// The quantised MoE prefill products on E4M3 tensor-core MMAs, for --activation-quant fp8 (issue 17; moe.cu's
// moe_gemm_experts_fp8; kernel lab: bench_moe_gemm fp8, beside moe_gemm_wgmma.cuh's quantised form, which expands
// FP4 / FP8 codes to bf16 and runs bf16 MMAs on bf16 activations). Here the activations come as DeepSeek's act_quant
// leaves them — E4M3 codes with one power-of-two f32 scale per (row, 128 values) (act_quant.h: activation_fp8_codes,
// moe_act_fp8_codes) — and the weights stay 8-bit:
//   - FP4 (E2M1) routed experts are expanded to E4M3 with each 32-value group's scale folded in relative to the row's
//     reference exponent ref (the largest scale byte of the row): code c of a group with scale byte s becomes
//     e4m3(e2m1(c) * 2^(6 - (ref - s))); exact while ref - s <= 14 for every group of the row (e2m1's 0.5 then lands
//     on E4M3's smallest subnormal at worst, 6 * 2^6 = 384 <= 448 at best). The row's 2^(ref - 127 - 6) multiplies
//     its outputs in the epilogue. The producers find ref from the row's scale bytes at the block's start (K / 32
//     bytes a row, ~6% of its code bytes). A stack whose rows span more than 14 binades is not for this kernel
//     (checked once at load: fp4_row_scale_span, QuantExperts::routed_row_span).
//   - FP8 (E4M3, 128 x 128 block scales) shared-expert codes are copied as they are; the block's scale joins the
//     activation scale in the promotion below.
// One 128-byte swizzle row of a tile is 128 E4M3 values: a stage is k 128 = one activation scale block, so the
// consumers run a stage's four m64n128k32 E4M3 wgmmas into a fresh accumulator and then promote it into the f32 sum
// with the row's activation scale (x the FP8 block scale): acc += tmp * scale (DeepSeek's DeepGEMM does the same:
// Hopper's FP8 MMAs accumulate with reduced precision, so the partial sums stay 128 deep).
//
// Block and ring as moe_gemm_wgmma.cuh (128 plan rows x 128 MMA columns, GATED: 64 w1 rows then 64 w3 rows; two
// producer warpgroups, two consumer warpgroups), tiles of 128 rows x 128 bytes (16 KiB, 128B swizzle: element (r, k) at
// byte r * 128 + (((k / 16) ^ (r % 8)) * 16) + k % 16). Producers: A rows by cp.async; thread p owns half h = p % 2 of
// B row b = p / 2 — FP4: copies its 32 code bytes kF8CodeAhead stages ahead into its bytes of a code ring, reads its
// two scale bytes, builds the two groups' 8-entry magnitude tables (two words each) and expands each code word (8
// values) with two byte_perm lookups plus the sign bits (11 instructions), stores 4 x 16 bytes, fences, and each warp
// arrives once; FP8: copies its 64 code bytes straight into the swizzled B row (cp.async, counted by the same
// noinc arrive as its A rows). Consumers: wait the stage, 4 wgmmas, wait_group 0, release the stage, promote.
// setmaxnreg: producers 64 registers, consumers 192 (two 64-float accumulators).
#pragma once

#include <cuda_fp8.h>

#include "backend/cuda/moe_gemm_wgmma.cuh"
#include "dsv4/core/weight.h"  // kE4m3MoeMaxFp4RowSpan

namespace dsv4::cuda {

constexpr int kF8BK = 128;    // k a stage: one 128-byte swizzle row of E4M3
constexpr int kF8Stages = 4;  // H100 lab, session 33: the gated product 3% faster than at 5 or 6 stages
constexpr int kF8Threads = 512;
constexpr int kF8TileBytes = kWgBM * kF8BK;  // 16 KiB
constexpr int kF8StageBytes = 2 * kF8TileBytes;
constexpr int kF8CodeAhead = 3;
constexpr int kF8CodeSlotBytes = kWgBN * kF8BK / 2;  // FP4 codes of a stage: 64 bytes a B row
// Dynamic shared memory of a ring of `stages` stages: the stages, the FP4 code ring, the barriers, the row references
// and the 1 KiB alignment slack.
constexpr int f8_smem_bytes(int stages) {
  return stages * kF8StageBytes + (kF8CodeAhead + 1) * kF8CodeSlotBytes + 2 * stages * 8 + kWgBN + 1024;
}
static_assert(f8_smem_bytes(kF8Stages + 1) <= 227 * 1024, "shared memory (the lab's one-stage-deeper variant)");
// Binades a row's FP4 group scales may span below its reference: the loader's limit (core/weight.h).
constexpr int kF8MaxSpan = kE4m3MoeMaxFp4RowSpan;

__device__ __forceinline__ void st_shared_u8(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.u8 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ uint32_t ld_shared_u8(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.u8 %0, [%1];\n" : "=r"(v) : "r"(addr) : "memory");
  return v;
}

// E4M3 activations: codes [rows, K] and f32 power-of-two scales, scale of row r, block b at scales[b * scale_ld + r]
// (activation_fp8_codes' layout, scale_ld its rows_padded).
struct Fp8Activations {
  const uint8_t* codes = nullptr;
  const float* scales = nullptr;
  int64_t scale_ld = 0;
};

// The E4M3 bytes of the E2M1 magnitudes {0, .5, 1, 1.5, 2, 3, 4, 6} times 2^(6 - r), codes 0-3 in t0 and 4-7 in t1
// (byte i of the pair = code i). r <= 11: all normal, the exponent fields of r = 0 minus r; beyond, the small ones
// are E4M3 subnormals (exact up to r = 14).
__device__ __forceinline__ void e2m1_e4m3_table(uint32_t r, uint32_t& t0, uint32_t& t1) {
  if (r <= 11u) {
    t0 = 0x6C686000u - r * 0x08080800u;
    t1 = 0x7C787470u - r * 0x08080808u;
    return;
  }
  const float mags[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  const float f = exp2f(6.0f - static_cast<float>(r));
  uint32_t t[2] = {0u, 0u};
#pragma unroll
  for (int c = 1; c < 8; ++c) {
    const uint32_t b = static_cast<uint32_t>(__nv_cvt_float_to_fp8(mags[c] * f, __NV_SATFINITE, __NV_E4M3));
    t[c / 4] |= b << (8 * (c % 4));
  }
  t0 = t[0];
  t1 = t[1];
}

// Eight E2M1 codes (word w, code i in nibble i) as E4M3 bytes through the group's table: lo = codes 0-3, hi = 4-7.
__device__ __forceinline__ void e2m1_word_to_e4m3(uint32_t w, uint32_t t0, uint32_t t1, uint32_t& lo, uint32_t& hi) {
  const uint32_t mag = w & 0x77777777u;
  const uint32_t even = (w << 4) & 0x80808080u;  // byte i bit 7: the sign of code 2 i
  const uint32_t odd = w & 0x80808080u;          // byte i bit 7: the sign of code 2 i + 1
  lo = __byte_perm(t0, t1, mag) | __byte_perm(even, odd, 0x5140);
  hi = __byte_perm(t0, t1, mag >> 16) | __byte_perm(even, odd, 0x7362);
}

// d = A (64 x 32 E4M3, descriptor da) * B (128 x 32 as [n][k], descriptor db) (+ d if scale_d); K-major operands.
__device__ __forceinline__ void wgmma_m64n128k32_e4m3(float (&d)[64], uint64_t da, uint64_t db, uint32_t scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 " DSV4_WGMMA_D64_TEXT ", %64, %65, p, 1, 1;\n}\n"
      : DSV4_WGMMA_D64_OPERANDS(d)
      : "l"(da), "l"(db), "r"(scale_d));
}

// grid (ceil(N / wgmma_cols<GATED>()), tile bound), kF8Threads threads, f8_smem_bytes(STAGES) dynamic shared memory.
// GATED: A row r = x[token_of[r]], out bf16 [P, N] = SwiGLU; w2: A row r = act[r], out f32 [P, N]. qw / qw3: the stacks
// (FP4 or FP8 routed, optionally the shared expert as index count), whose FP4 rows span at most kF8MaxSpan binades
// (fp4_row_scale_span). K % 128 == 0; 16-byte aligned code rows.
template <bool GATED, typename TO, int STAGES = kF8Stages>
__global__ void __launch_bounds__(kF8Threads, 1)
    moe_gemm_fp8_kernel(TO* __restrict__ out, Fp8Activations a, QuantExperts qw, QuantExperts qw3, MoePlan plan, int N,
                        int K, float limit) {
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
  __trap();
#else
  constexpr int kStages = STAGES, kProducerThreads = 256;
  extern __shared__ unsigned char f8_smem[];
  pdl_wait();
  int32_t e, row0, row_end;
  if (!plan_tile(plan, static_cast<int>(blockIdx.y), &e, &row0, &row_end)) return;
  const int n0 = static_cast<int>(blockIdx.x) * wgmma_cols<GATED>();
  const int tid = static_cast<int>(threadIdx.x);
  const int warpgroup = __shfl_sync(0xffffffffu, tid / 128, 0);
  const uint32_t base = (wg::smem_addr(f8_smem) + 1023u) & ~1023u;
  const uint32_t bars = base + kStages * kF8StageBytes;
  const auto full = [&](int s) { return bars + 8u * static_cast<uint32_t>(s); };
  const auto empty = [&](int s) { return bars + 8u * static_cast<uint32_t>(kStages + s); };
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      wg::mbar_init(full(s), kProducerThreads + kProducerThreads / 32);  // cp.async arrivals + a warp arrive each
      wg::mbar_init(empty(s), 8);
    }
    wg::fence_mbarrier_init();
    wg::fence_proxy_async();
  }
  __syncthreads();
  const int ktiles = K / kF8BK;
  // The block's expert: routed (FP4) or the shared one (FP8 block scales), one format for w1 and w3.
  const QuantSlice q1 = quant_slice(qw, e, N, K), q3 = quant_slice(qw3, e, N, K);
  const bool fp4 = q1.fp4;

  if (warpgroup < 2) {
    asm volatile("setmaxnreg.dec.sync.aligned.u32 64;\n");
    // ---- producers ----
    constexpr int kRowStep = kProducerThreads / 8, kRowsEach = kWgBM / kRowStep;
    const int p = tid, chunk = p & 7, rsub = p >> 3;
    const uint32_t swz = static_cast<uint32_t>(((chunk ^ (rsub & 7)) << 4));
    const uint8_t* src[kRowsEach];
    bool valid[kRowsEach];
#pragma unroll
    for (int i = 0; i < kRowsEach; ++i) {
      const int32_t r = row0 + rsub + kRowStep * i;
      valid[i] = r < row_end;
      const int64_t arow = valid[i] ? (GATED ? plan_token(plan, r) : r) : 0;
      src[i] = a.codes + arow * K + chunk * 16;
    }
    const auto copy_a = [&](int t, uint32_t st) {
#pragma unroll
      for (int i = 0; i < kRowsEach; ++i)
        wg::cp_async16(st + static_cast<uint32_t>((rsub + kRowStep * i) * 128) + swz, src[i] + t * kF8BK, valid[i]);
      wg::cp_async_arrive_noinc(full(t % kStages));
    };
    const int b = p >> 1, h = p & 1;
    const int n = n0 + (GATED ? b % 64 : b);
    const bool row_in = n < N;
    const QuantSlice q = GATED && b >= 64 ? q3 : q1;
    const bool lane0 = (p & 31) == 0;
    const uint32_t brow_off = kF8TileBytes + static_cast<uint32_t>(b * 128);
    if (!fp4) {
      // FP8 codes as they are: 64 bytes (4 chunks) of the row straight into its swizzled place.
      const uint8_t* const codes = q.codes + static_cast<int64_t>(row_in ? n : 0) * q.row_bytes + 64 * h;
      for (int t = 0; t < ktiles; ++t) {
        const int s = t % kStages;
        if (t >= kStages) wg::mbar_wait(empty(s), static_cast<uint32_t>((t / kStages - 1) & 1));
        const uint32_t st = base + static_cast<uint32_t>(s) * kF8StageBytes;
#pragma unroll
        for (int j = 0; j < 4; ++j)
          wg::cp_async16(st + brow_off + static_cast<uint32_t>(((4 * h + j) ^ (b & 7)) << 4),
                         codes + t * kF8BK + 16 * j, row_in);
        copy_a(t, st);
        __syncwarp();
        if (lane0) wg::mbar_arrive(full(s));
      }
    } else {
      const uint8_t* const codes = q.codes + static_cast<int64_t>(row_in ? n : 0) * q.row_bytes + 32 * h;
      const uint8_t* const scales = q.scale + static_cast<int64_t>(row_in ? n : 0) * q.scale_cols + 2 * h;
      const uint32_t ring = bars + 2 * kStages * 8;  // 16-byte aligned
      // The row's reference exponent: its largest scale byte (the lane pair reads alternate words of the row's
      // K / 32 bytes), kept in shared memory for the consumers' epilogue (visible to them through the stage-0 `full`).
      uint32_t rmax = 0;
      if (row_in) {
        const auto* words = reinterpret_cast<const uint32_t*>(scales - 2 * h);
        for (int i = h; i < K / 128; i += 2) rmax = __vmaxu4(rmax, __ldg(words + i));
      }
      rmax = __vmaxu4(rmax, __shfl_xor_sync(0xffffffffu, rmax, 1));
      rmax = max(max(rmax & 0xFFu, (rmax >> 8) & 0xFFu), max((rmax >> 16) & 0xFFu, rmax >> 24));
      const uint32_t rref = row_in ? rmax : 127u;
      if (h == 0) st_shared_u8(ring + (kF8CodeAhead + 1) * kF8CodeSlotBytes + b, rref);
      const uint32_t swap = static_cast<uint32_t>((p >> 2) & 1);
      const auto code_slot = [&](int t, int piece) {
        return ring + static_cast<uint32_t>((t % (kF8CodeAhead + 1)) * kF8CodeSlotBytes) +
               static_cast<uint32_t>(p * 32) + ((static_cast<uint32_t>(piece) ^ swap) << 4);
      };
      const auto copy_codes = [&](int t) {
        if (t >= ktiles) return;
#pragma unroll
        for (int j = 0; j < 2; ++j) wg::cp_async16(code_slot(t, j), codes + t * (kF8BK / 2) + 16 * j, row_in);
      };
      // The half's two scale bytes (groups 4 t + 2 h, + 1): 127 past N.
      const auto load_scales = [&](int t) -> uint32_t {
        return row_in ? __ldg(reinterpret_cast<const uint16_t*>(scales + 4 * t)) : 0x7F7Fu;
      };
      for (int t = 0; t < kF8CodeAhead; ++t) {
        copy_codes(t);
        wg::cp_async_commit();
      }
      uint32_t sc_next = load_scales(0), sc_after = ktiles > 1 ? load_scales(1) : 0x7F7Fu;
      for (int t = 0; t < ktiles; ++t) {
        const int s = t % kStages;
        const uint32_t sc = sc_next;
        sc_next = sc_after;
        if (t >= kStages) wg::mbar_wait(empty(s), static_cast<uint32_t>((t / kStages - 1) & 1));
        const uint32_t st = base + static_cast<uint32_t>(s) * kF8StageBytes;
        copy_a(t, st);
        copy_codes(t + kF8CodeAhead);
        wg::cp_async_commit();
        wg::cp_async_wait_group<kF8CodeAhead>();
        uint32_t w[8];
        wg::ld_shared_v4(code_slot(t, 0), w[0], w[1], w[2], w[3]);
        wg::ld_shared_v4(code_slot(t, 1), w[4], w[5], w[6], w[7]);
        uint32_t tab[2][2];
#pragma unroll
        for (int gi = 0; gi < 2; ++gi) {
          const uint32_t sb = (sc >> (8 * gi)) & 0xFFu;
          e2m1_e4m3_table(rref >= sb ? rref - sb : 0u, tab[gi][0], tab[gi][1]);
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {  // chunk 4 h + j: codes words 2 j, 2 j + 1 (group j / 2)
          uint4 v;
          e2m1_word_to_e4m3(w[2 * j], tab[j / 2][0], tab[j / 2][1], v.x, v.y);
          e2m1_word_to_e4m3(w[2 * j + 1], tab[j / 2][0], tab[j / 2][1], v.z, v.w);
          wg::st_shared_v4(st + brow_off + static_cast<uint32_t>(((4 * h + j) ^ (b & 7)) << 4), v);
        }
        wg::fence_proxy_async();
        __syncwarp();
        if (lane0) wg::mbar_arrive(full(s));
        if (t + 2 < ktiles) sc_after = load_scales(t + 2);
      }
    }
    wg::cp_async_wait_all();
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 192;\n");  // 256 x 64 + 256 x 192 = 64 Ki registers
  // ---- consumers: warpgroup 2 rows 0..63, warpgroup 3 rows 64..127 of the tile ----
  const int cw = warpgroup - 2;
  const bool lane0 = (tid & 31) == 0;
  if (row0 + cw * 64 >= row_end) {
    for (int t = 0; t < ktiles; ++t) {
      wg::mbar_wait(full(t % kStages), static_cast<uint32_t>((t / kStages) & 1));
      if (lane0) wg::mbar_arrive(empty(t % kStages));
    }
    return;
  }
  const int lane = tid & 31, qw4 = (tid >> 5) & 3, g = lane >> 2, t4 = lane & 3;
  // This lane's two rows (g, g + 8 of its warp's 16) and their activation rows' scale columns.
  int64_t srow[2];
  bool rin[2];
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int32_t r = row0 + cw * 64 + qw4 * 16 + g + 8 * hh;
    rin[hh] = r < row_end;
    srow[hh] = rin[hh] ? (GATED ? plan_token(plan, r) : r) : 0;
  }
  // FP8 blocks: the stage's weight block scale (GATED: w1's and w3's block rows), else 1.
  const uint8_t* const wsc1 = fp4 ? nullptr : q1.scale + static_cast<int64_t>(n0 / kFp8Block) * q1.scale_cols;
  const uint8_t* const wsc3 = fp4 ? nullptr : q3.scale + static_cast<int64_t>(n0 / kFp8Block) * q3.scale_cols;
  const auto e8 = [](uint32_t s) { return __uint_as_float(s << 23); };  // 2^(s - 127), s in 1..254
  float acc[64], tmp[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc[i] = 0.0f;
  // The stage's scales are loaded a stage ahead: loaded in the stage itself, their L2 latency outlasted its MMAs
  // (ncu, H100: 13% of the kernel's stall samples on the first multiply by them).
  const auto load_scales = [&](int t, float(&sa)[2], uint32_t(&sw)[2]) {
    if (t >= ktiles) return;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) sa[hh] = __ldg(a.scales + t * a.scale_ld + srow[hh]);
    if (!fp4) {
      sw[0] = __ldg(wsc1 + t);
      sw[1] = GATED ? __ldg(wsc3 + t) : sw[0];
    }
  };
  float sa_next[2] = {1.0f, 1.0f};
  uint32_t sw_next[2] = {127u, 127u};
  load_scales(0, sa_next, sw_next);
  for (int t = 0; t < ktiles; ++t) {
    const int s = t % kStages;
    const float sa0 = sa_next[0], sa1 = sa_next[1];
    const float sw1 = e8(sw_next[0]), sw3 = e8(sw_next[1]);
    load_scales(t + 1, sa_next, sw_next);
    wg::mbar_wait(full(s), static_cast<uint32_t>((t / kStages) & 1));
    wg::fence_proxy_async();
    const uint32_t st = base + static_cast<uint32_t>(s) * kF8StageBytes;
    const uint64_t da = wg::sw128_desc(st + static_cast<uint32_t>(cw * 64 * 128));
    const uint64_t db = wg::sw128_desc(st + kF8TileBytes);
    wg::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kF8BK / 32; ++kk) wgmma_m64n128k32_e4m3(tmp, da + 2 * kk, db + 2 * kk, kk > 0 ? 1u : 0u);
    wg::wgmma_commit();
    wg::wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < 64; ++i) wg::fence_operand(tmp[i]);
    if (lane0) wg::mbar_arrive(empty(s));
    // acc[4 j + 2 hh + c]: row hh, column chunk j (GATED: j >= 8 the w3 half).
    const float m[2][2] = {{sa0 * sw1, sa0 * sw3}, {sa1 * sw1, sa1 * sw3}};
#pragma unroll
    for (int j = 0; j < 16; ++j)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh)
#pragma unroll
        for (int c = 0; c < 2; ++c)
          acc[4 * j + 2 * hh + c] = fmaf(tmp[4 * j + 2 * hh + c], m[hh][j >= 8], acc[4 * j + 2 * hh + c]);
  }

  // Epilogue: FP4 blocks scale each column by its weight row's 2^(ref - 133) (the producers' row references, B row b).
  const uint32_t refs = bars + 2 * kStages * 8 + (kF8CodeAhead + 1) * kF8CodeSlotBytes;
  const auto col_scale = [&](int bcol) { return fp4 ? e8(ld_shared_u8(refs + bcol)) * 0x1p-6f : 1.0f; };
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const int32_t r = row0 + cw * 64 + qw4 * 16 + g + 8 * hh;
    if (!rin[hh]) continue;
    TO* orow = out + static_cast<int64_t>(r) * N;
#pragma unroll
    for (int j = 0; j < (GATED ? 8 : 16); ++j) {
      const int nn = n0 + 8 * j + 2 * t4;
      float v[2];
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        v[c] = acc[4 * j + 2 * hh + c] * col_scale(8 * j + 2 * t4 + c);
        if constexpr (GATED) {
          const float gv = fminf(v[c], limit);
          const float u =
              fminf(fmaxf(acc[4 * (j + 8) + 2 * hh + c] * col_scale(64 + 8 * j + 2 * t4 + c), -limit), limit);
          v[c] = gv / (1.0f + expf(-gv)) * u;
        }
      }
      store_pair(orow, nn, N, v[0], v[1]);
    }
  }
#endif
}

template <bool GATED, typename TO, int STAGES = kF8Stages>
void launch_moe_gemm_fp8(cudaStream_t stream, TO* out, const Fp8Activations& a, const QuantExperts& qw,
                         const QuantExperts& qw3, const MoePlan& plan, int64_t max_tiles, int N, int K, float limit) {
  static_assert(GATED == std::is_same_v<TO, bf16>, "GATED stores bf16, w2 f32");
  constexpr auto kernel = moe_gemm_fp8_kernel<GATED, TO, STAGES>;
  constexpr int smem = f8_smem_bytes(STAGES);
  allow_dynamic_shared<kernel>(smem, "cudaFuncSetAttribute(moe_gemm_fp8)");
  const dim3 grid((N + wgmma_cols<GATED>() - 1) / wgmma_cols<GATED>(), static_cast<unsigned>(max_tiles));
  check_launch(launch_kernel(kernel, grid, dim3(kF8Threads), smem, stream, out, a, qw, qw3, plan, N, K, limit),
               "moe_gemm_fp8");
}

}  // namespace dsv4::cuda
