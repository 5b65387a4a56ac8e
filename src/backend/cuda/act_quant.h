// --activation-quant fp8 on CUDA (act_quant.cu): DeepSeek's act_quant — E4M3 per 128 values at a power-of-two
// scale, given back dequantised — on activation rows, and on the MoE's SwiGLU intermediate between its products.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/cuda/moe_plan.h"
#include "dsv4/core/dtype.h"

namespace dsv4::cuda {

// dst [rows, width] = the round trip of src [rows, width] (F32 or BF16; dst may be src).
void activation_round_trip_rows(cudaStream_t stream, DType dtype, void* dst, const void* src, int64_t rows,
                                int64_t width);

// The round trip's FP8 form, for block-scaled FP8 GEMMs: codes [rows_padded, width] (E4M3) and scales
// [width / 128, rows_padded] (f32 powers of two, K-block-major: scale of row r, block b at b * rows_padded + r, the
// layout cuBLASLt's VEC128_32F mode reads) of src's rows (F32 or BF16, `ld` apart), so that code * scale is the
// round trip's value; rows from `rows` to rows_padded get zero codes at scale 1. width % 128 == 0.
void activation_fp8_codes(cudaStream_t stream, DType dtype, const void* src, int64_t ld, int64_t rows, int64_t width,
                          int64_t rows_padded, uint8_t* codes, float* scales);

// Between the MoE's two products: every pair's row of the expert-sorted intermediate act [P, I] times its routing
// weight (routed pairs p < routed_pairs: weights[p]; the shared expert's pairs: 1), then the round trip; the
// combine then adds the rows with weight 1 (DeepSeek applies the routing weight before w2).
struct MoeActQuant {
  const float* weights = nullptr;  // [T * k], the routed pairs' routing weights
  int64_t routed_pairs = 0;        // T * k
  int64_t pairs = 0;               // P (T * k, plus T with the shared expert)
};
template <typename T>
void moe_act_round_trip(cudaStream_t stream, T* act, int64_t width, const MoePlan& plan, const MoeActQuant& aq);
// moe_act_round_trip's FP8 form, for moe_gemm_experts_fp8's w2 product: pair p's row of act [aq.pairs, width] (bf16)
// times its routing weight as E4M3 codes at the same row of codes [aq.pairs, width] and its scales at
// scales[b * aq.pairs + row] (activation_fp8_codes' layout), so that code * scale is moe_act_round_trip's value.
// width % 128 == 0.
void moe_act_fp8_codes(cudaStream_t stream, const bf16* act, int64_t width, const MoePlan& plan, const MoeActQuant& aq,
                       uint8_t* codes, float* scales);

}  // namespace dsv4::cuda
