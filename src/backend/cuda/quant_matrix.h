// Weights kept quantised in GPU memory (issue 17, plan steps 1-2 of docs/checkpoints.md "CUDA: the remaining
// work"): a matrix is its checkpoint codes plus its E8M0 scale bytes, uploaded as stored, and the decode kernels
// (quant_gemv.cu, moe_decode_quant.cu) expand the codes on the fly, in registers or as tensor-core operands.
//
// The parity tests (tests/gpu/cuda_quant_test.cu) and timings (bench/kernels/quant_gemv) run with
// `scripts/gpu/run.sh quant`; first passed on an H200 on 2026-12-05 (bench/RESULTS.md), which is when the engine's
// --cuda-weights quantized path came into use.
//
// Formats (include/dsv4/io/quantization.h, the host codecs that are the oracle):
//  - kFp8Block: codes [N, K] E4M3, scale [ceil(N/128), ceil(K/128)] E8M0; w = e4m3(q) * 2^(S - 127).
//  - kFp4: codes [N, K/2], element 2j in the low nibble of byte j, scale [N, ceil(K/32)] E8M0;
//    w = e2m1(q) * 2^(S - 127).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/cuda/moe_plan.h"
#include "dsv4/io/quantization.h"

namespace dsv4::cuda {

// One quantised [N, K] matrix on the device, rows contiguous (codes row n at codes + n * code_row_bytes).
struct QuantMatrix {
  WeightFormat format = WeightFormat::kFp8Block;  // kFp8Block or kFp4
  const uint8_t* codes = nullptr;
  const uint8_t* scale = nullptr;
  int64_t N = 0, K = 0;
};

// Bytes of a quantised [N, K] matrix's codes and of its scale (the checkpoint's shapes).
int64_t quant_code_bytes(WeightFormat f, int64_t N, int64_t K);
int64_t quant_scale_bytes(WeightFormat f, int64_t N, int64_t K);
// Elements of the scale row: ceil(K / 128) (FP8) or ceil(K / 32) (FP4).
int64_t quant_scale_cols(WeightFormat f, int64_t K);

// ---- decode GEMV ----------------------------------------------------------------------------------------
// The most rows of x the quantised GEMV serves: two column tiles of its tensor-core MMA (a decode batch of 16).
constexpr int64_t kQuantGemvMaxTokens = 16;

// Whether quant_gemv computes these operands: format kFp8Block with K % 16 == 0 or kFp4 with K % 32 == 0 (each
// lane's 16-byte load is whole and, for FP4, exactly one scale group), codes 16-byte aligned, x bf16 16-byte
// aligned with ldx % 8 == 0, 1 <= T <= kQuantGemvMaxTokens, N >= 1; with groups > 1, FP8 groups of whole 128-row
// scale blocks (N % 128 == 0) and 16-byte aligned group codes. Any output alignment and ldo. Other shapes go
// through dequantize_to_bf16 and the bf16 path.
bool quant_gemv_supports(const QuantMatrix& w, const void* x, int64_t ldx, int64_t T, int64_t groups = 1);

// out[t, g*N + n] = sum_k x[t, g*K + k] * w_g[n, k] for t < T and g < groups (x bf16 [T, groups*K] with leading
// dimension ldx; out f32 or bf16 [T, groups*N] with leading dimension ldo), fp32 accumulation, on `stream`. w_g is
// the g-th [N, K] matrix of a stack (codes + g * quant_code_bytes, scale + g * quant_scale_bytes): with groups > 1,
// grouped_linear's block-diagonal projection (wo_a: one [groups*N, K] checkpoint matrix, N a multiple of 128).
// Deterministic (a fixed summation order that depends on N, K and groups only, the same for every T) and
// graph-capturable.
void quant_gemv(cudaStream_t stream, const QuantMatrix& w, const void* x, int64_t ldx, void* out, bool out_f32,
                int64_t ldo, int64_t T, int64_t groups = 1);

// ---- dequantisation (the fallback of every other shape: prefill, verification, T > 16) -------------------
// out [N, K] bf16 (contiguous) = the matrix's values. Exact wherever the value is a bf16 normal (any code times
// a scale of 2^-117 or more; below that bf16's subnormals round, as the bf16 load path does). Costs a write and
// a read of 2 bytes per weight on top of the product: a prefill-only price until the FP8 GEMM (plan step 3).
void dequantize_to_bf16(cudaStream_t stream, const QuantMatrix& w, void* out);

// out[i] = 2^(scale[i] - 127) as f32, for n scale bytes (the block-scaled FP8 GEMM's f32 scale grid).
void e8m0_scales_to_f32(cudaStream_t stream, const uint8_t* scale, int64_t n, float* out);

// ---- MoE decode ---------------------------------------------------------------------------------------------
// One weight of a stacked expert set (w1, w2 or w3): `count` experts [N, K] in `format` one after another
// (expert e's codes at codes + e * quant_code_bytes, scale at scale + e * quant_scale_bytes), and optionally
// the shared expert in its own format (DeepSeek's: FP8 next to FP4 routed experts) as expert index `count`:
// the plan's expert indices 0..count-1 are the stack's, `count` the shared one (moe_decode.cu's layout, with
// the two formats in two allocations).
struct QuantExperts {
  QuantMatrix routed;  // codes / scale of expert 0; N, K of one expert
  int32_t count = 0;
  QuantMatrix shared;  // codes == nullptr: no shared expert in this stack
  // FP4 parts: the widest span (largest - smallest scale byte) of one row's group scales, over the stack (measured at
  // load: fp4_row_scale_span); -1 when not measured. moe_gemm_experts_fp8 needs it at most 14.
  int32_t fp4_row_span = -1;
};

// Whether moe_decode_experts_quant computes these stacks: w1 and w3 [I, H], w2 [H, I] (routed and shared alike),
// each format's K condition of quant_gemv_supports, codes 16-byte aligned (every expert's slice too), x and act
// 16-byte aligned.
bool moe_decode_quant_supports(const QuantExperts& w1, const QuantExperts& w3, const QuantExperts& w2, const void* x,
                               int64_t H, int64_t I);

// moe_decode_experts (moe_plan.h) on quantised stacks: act[r] = SwiGLU(x[token_of[r]] · w1[e]ᵀ, · w3[e]ᵀ) bf16
// [P, I], then y[r] = act[r] · w2[e]ᵀ f32 [P, H]. Deterministic; graph-capturable. `aq` as moe_decode_experts'.
void moe_decode_experts_quant(cudaStream_t stream, bf16* act, float* y, const bf16* x, const QuantExperts& w1,
                              const QuantExperts& w3, const QuantExperts& w2, const MoePlan& plan, int64_t max_tiles,
                              int64_t tokens, int64_t H, int64_t I, float limit, const MoeActQuant* aq = nullptr);

// moe_decode_experts_quant's contract for plans with many rows per expert (prefill), on a plan of kPlanWideTileRows-row
// tiles: the wgmma GEMM of moe_gemm_wgmma.cuh (128 plan rows x 128 MMA columns a block, bf16 operands, f32
// accumulation) with each B tile dequantised into shared memory by its producer warps (bf16, exact), so an expert's
// weights are read once per 128 of its rows. Not bit-identical to the decode kernel (another summation order).
void moe_gemm_experts_quant(cudaStream_t stream, bf16* act, float* y, const bf16* x, const QuantExperts& w1,
                            const QuantExperts& w3, const QuantExperts& w2, const MoePlan& plan, int64_t max_tiles,
                            int64_t H, int64_t I, float limit, const MoeActQuant* aq = nullptr);

// ---- MoE prefill on E4M3 MMAs (--activation-quant fp8) ----------------------------------------------------
// Whether moe_gemm_experts_fp8 computes these stacks: moe_decode_quant_supports' conditions, H % 128 == 0 and
// I % 128 == 0 (a k stage is one activation scale block), and FP4 parts whose rows' group scales span at most 14
// binades (fp4_row_span measured; the exactness bound of the FP4 -> E4M3 expansion, moe_gemm_fp8.cuh).
bool moe_gemm_fp8_supports(const QuantExperts& w1, const QuantExperts& w3, const QuantExperts& w2, const void* x,
                           int64_t H, int64_t I);

// moe_gemm_experts_quant with the activations quantised as --activation-quant fp8 does (DeepSeek's act_quant: E4M3 per
// 128 values at a power-of-two scale), on E4M3 tensor-core MMAs (moe_gemm_fp8.cuh): x_codes [T, H] E4M3 with x_scales
// [H / 128, T] (activation_fp8_codes of x), act [P, I] bf16 = SwiGLU, then act times each pair's routing weight
// quantised into act_codes [P, I] / act_scales [I / 128, P] (moe_act_fp8_codes), y [P, H] f32 = that times w2ᵀ (the
// combine adds y's rows with weight 1). The same values as moe_gemm_experts_quant on the round-tripped activations
// with `aq`, up to f32 summation order. Deterministic; graph-capturable.
void moe_gemm_experts_fp8(cudaStream_t stream, bf16* act, uint8_t* act_codes, float* act_scales, float* y,
                          const uint8_t* x_codes, const float* x_scales, int64_t tokens, const QuantExperts& w1,
                          const QuantExperts& w3, const QuantExperts& w2, const MoePlan& plan, int64_t max_tiles,
                          int64_t H, int64_t I, float limit, const MoeActQuant& aq);

}  // namespace dsv4::cuda
