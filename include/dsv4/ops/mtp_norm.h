// Ops of the MTP draft layer's prologue and shared head (semantics: reference/dsv4-architecture.md §2).
//
// Each op validates shapes, dtypes and devices (throwing dsv4::Error kInvalidArgument with a message that
// names the tensor) and runs on ctx.device: the CPU reference or the CUDA kernel on ctx.stream. Outputs
// are written, never allocated. Activations, weights and outputs share one dtype (F32, BF16 or F16);
// positions are I64; every tensor is contiguous.
#pragma once

#include "dsv4/core/exec_context.h"
#include "dsv4/core/tensor.h"

namespace dsv4::ops {

// enorm_out [T, H] = RMSNorm(positions[t] == 0 ? 0 : inputs_embeds[t]; enorm_w)
// hnorm_out [T, hc, H] = RMSNorm(prev_hidden[t, s]; hnorm_w), prev_hidden given as [T, hc, H] or [T, hc*H].
void fused_mtp_input_rms_norm(ExecContext& ctx, const Tensor& enorm_out, const Tensor& hnorm_out,
                              const Tensor& inputs_embeds, const Tensor& positions, const Tensor& prev_hidden,
                              const Tensor& enorm_w, const Tensor& hnorm_w, float eps);

// The same values in the layout of the MTP's input projection: out [T, hc, 2H] with
// out[t, s, :H] = hnorm(prev[t, s]) and out[t, s, H:] = enorm(e[t]), so that
// out.view(T*hc, 2H) @ [W_h | W_e]^T is one GEMM.
void fused_mtp_input_rms_norm_eh(ExecContext& ctx, const Tensor& out, const Tensor& inputs_embeds,
                                 const Tensor& positions, const Tensor& prev_hidden, const Tensor& enorm_w,
                                 const Tensor& hnorm_w, float eps);

// out [T, H] = RMSNorm(x [T, H]; w [H]) (shared_head.norm).
void mtp_shared_head_rms_norm(ExecContext& ctx, const Tensor& out, const Tensor& x, const Tensor& w,
                              float eps);

}  // namespace dsv4::ops
