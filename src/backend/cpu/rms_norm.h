// CPU references of the RMSNorm family's row kernels (contract in backend/cuda/rms_norm.h), for the C API's
// tests and the CPU backend's MTP ops.
//
// fp32 math as on the GPU (y = x * rstd * w, rounded once to the activation dtype); the sum of squares is
// accumulated in double so the reference does not depend on summation order. Pointers are host pointers
// to packed rows; dtype is F32, BF16 or F16 (weights share it). Throws dsv4::Error on a bad dtype or size.
#pragma once

#include <cstdint>

#include "backend/row_positions.h"
#include "dsv4/core/dtype.h"

namespace dsv4::cpu {

// out [rows, hidden] = RMSNorm(x [rows, hidden]; weight).
void rms_norm_rows(const void* x, const void* weight, void* out, int64_t rows, int64_t hidden, float eps, DType dtype);

// enorm_out [T, H], hnorm_out [T, hc, H].
void fused_mtp_input_rms_norm(const void* inputs_embeds, RowPositions positions, const void* prev_hidden,
                              const void* enorm_weight, const void* hnorm_weight, void* enorm_out, void* hnorm_out,
                              int64_t num_tokens, int64_t hidden, int64_t hc_mult, float eps, DType dtype);

// out [T, hc, 2H]: out[t, s, :H] = hnorm(prev[t, s]), out[t, s, H:] = enorm(e[t]).
void fused_mtp_input_rms_norm_eh(const void* inputs_embeds, RowPositions positions, const void* prev_hidden,
                                 const void* enorm_weight, const void* hnorm_weight, void* out, int64_t num_tokens,
                                 int64_t hidden, int64_t hc_mult, float eps, DType dtype);

}  // namespace dsv4::cpu
