#include "dsv4/ops/mtp_norm.h"

#include <cmath>

#include "backend/cpu/mtp_norm.h"
#ifndef DSV4_NO_CUDA
#include "backend/cuda/mtp_norm.h"
#endif

namespace dsv4::ops {
namespace {

void check_float_dtype(const Tensor& t, const char* what) {
  DSV4_CHECK_ARG(t.dtype() == DType::F32 || t.dtype() == DType::BF16 || t.dtype() == DType::F16, what,
                 ": dtype must be F32, BF16 or F16, got ", dtype_name(t.dtype()));
}

// Same dtype as the activations, on ctx.device, contiguous (the kernels assume packed rows).
void check_tensor(const ExecContext& ctx, const Tensor& t, DType dtype, const char* what) {
  DSV4_CHECK_ARG(t.defined(), what, ": tensor has no data");
  check_dtype(t, dtype, what);
  DSV4_CHECK_ARG(t.device() == ctx.device, what, ": is on ", device_name(t.device()), ", the context on ",
                 device_name(ctx.device));
  DSV4_CHECK_ARG(t.is_contiguous(), what, ": must be contiguous, got ", t.describe());
}

void check_eps(float eps) { DSV4_CHECK_ARG(eps >= 0.f && std::isfinite(eps), "eps must be finite and >= 0"); }

// Checks the inputs shared by both MTP layouts against hc; returns (T, H).
struct MtpInputs {
  int64_t num_tokens, hidden;
};

MtpInputs check_mtp_inputs(const ExecContext& ctx, const Tensor& inputs_embeds, const Tensor& positions,
                           const Tensor& prev_hidden, const Tensor& enorm_w, const Tensor& hnorm_w, int64_t hc_mult) {
  DSV4_CHECK_ARG(inputs_embeds.ndim() == 2, "inputs_embeds: expected [T, H], got ", inputs_embeds.shape_string());
  const DType dtype = inputs_embeds.dtype();
  check_float_dtype(inputs_embeds, "inputs_embeds");
  check_tensor(ctx, inputs_embeds, dtype, "inputs_embeds");
  const int64_t num_tokens = inputs_embeds.size(0), hidden = inputs_embeds.size(1);
  DSV4_CHECK_ARG(hidden > 0, "inputs_embeds: hidden size must be > 0");
  check_shape(positions, {num_tokens}, "positions");
  check_tensor(ctx, positions, DType::I64, "positions");
  if (prev_hidden.ndim() == 2) {
    check_shape(prev_hidden, {num_tokens, hc_mult * hidden}, "prev_hidden");
  } else {
    check_shape(prev_hidden, {num_tokens, hc_mult, hidden}, "prev_hidden");
  }
  check_tensor(ctx, prev_hidden, dtype, "prev_hidden");
  check_shape(enorm_w, {hidden}, "enorm_w");
  check_tensor(ctx, enorm_w, dtype, "enorm_w");
  check_shape(hnorm_w, {hidden}, "hnorm_w");
  check_tensor(ctx, hnorm_w, dtype, "hnorm_w");
  return {num_tokens, hidden};
}

#ifndef DSV4_NO_CUDA
cudaStream_t stream_of(const ExecContext& ctx) { return static_cast<cudaStream_t>(ctx.stream); }
#else
// CPU-only build (DSV4_CUDA=OFF): a CUDA context cannot reach these ops.
void require_cpu(const ExecContext& ctx, const char* op) {
  DSV4_CHECK(!ctx.is_cuda(), kCudaError, op, ": dsv4 was built without CUDA (DSV4_CUDA=OFF)");
}
#endif

}  // namespace

void fused_mtp_input_rms_norm(ExecContext& ctx, const Tensor& enorm_out, const Tensor& hnorm_out,
                              const Tensor& inputs_embeds, const Tensor& positions, const Tensor& prev_hidden,
                              const Tensor& enorm_w, const Tensor& hnorm_w, float eps) {
  DSV4_CHECK_ARG(hnorm_out.ndim() == 3, "hnorm_out: expected [T, hc, H], got ", hnorm_out.shape_string());
  const int64_t hc_mult = hnorm_out.size(1);
  DSV4_CHECK_ARG(hc_mult > 0, "hnorm_out: hc must be > 0");
  const auto [num_tokens, hidden] =
      check_mtp_inputs(ctx, inputs_embeds, positions, prev_hidden, enorm_w, hnorm_w, hc_mult);
  const DType dtype = inputs_embeds.dtype();
  check_shape(enorm_out, {num_tokens, hidden}, "enorm_out");
  check_tensor(ctx, enorm_out, dtype, "enorm_out");
  check_shape(hnorm_out, {num_tokens, hc_mult, hidden}, "hnorm_out");
  check_tensor(ctx, hnorm_out, dtype, "hnorm_out");
  check_eps(eps);
  if (ctx.measuring) return;  // no scratch: nothing to count
#ifdef DSV4_NO_CUDA
  require_cpu(ctx, __func__);
#else
  if (ctx.is_cuda()) {
    throw_if_error(cuda::fused_mtp_input_rms_norm(inputs_embeds.data(), positions.ptr<int64_t>(), prev_hidden.data(),
                                                  enorm_w.data(), hnorm_w.data(), enorm_out.data(), hnorm_out.data(),
                                                  num_tokens, hidden, hc_mult, eps, dtype, stream_of(ctx)));
  } else
#endif
  {
    cpu::fused_mtp_input_rms_norm(inputs_embeds.data(), positions.ptr<int64_t>(), prev_hidden.data(), enorm_w.data(),
                                  hnorm_w.data(), enorm_out.data(), hnorm_out.data(), num_tokens, hidden, hc_mult, eps,
                                  dtype);
  }
}

void fused_mtp_input_rms_norm_eh(ExecContext& ctx, const Tensor& out, const Tensor& inputs_embeds,
                                 const Tensor& positions, const Tensor& prev_hidden, const Tensor& enorm_w,
                                 const Tensor& hnorm_w, float eps) {
  DSV4_CHECK_ARG(out.ndim() == 3, "out: expected [T, hc, 2H], got ", out.shape_string());
  const int64_t hc_mult = out.size(1);
  DSV4_CHECK_ARG(hc_mult > 0, "out: hc must be > 0");
  const auto [num_tokens, hidden] =
      check_mtp_inputs(ctx, inputs_embeds, positions, prev_hidden, enorm_w, hnorm_w, hc_mult);
  const DType dtype = inputs_embeds.dtype();
  check_shape(out, {num_tokens, hc_mult, 2 * hidden}, "out");
  check_tensor(ctx, out, dtype, "out");
  check_eps(eps);
  if (ctx.measuring) return;  // no scratch: nothing to count
#ifdef DSV4_NO_CUDA
  require_cpu(ctx, __func__);
#else
  if (ctx.is_cuda()) {
    throw_if_error(cuda::fused_mtp_input_rms_norm_eh(inputs_embeds.data(), positions.ptr<int64_t>(), prev_hidden.data(),
                                                     enorm_w.data(), hnorm_w.data(), out.data(), num_tokens, hidden,
                                                     hc_mult, eps, dtype, stream_of(ctx)));
  } else
#endif
  {
    cpu::fused_mtp_input_rms_norm_eh(inputs_embeds.data(), positions.ptr<int64_t>(), prev_hidden.data(), enorm_w.data(),
                                     hnorm_w.data(), out.data(), num_tokens, hidden, hc_mult, eps, dtype);
  }
}

void mtp_shared_head_rms_norm(ExecContext& ctx, const Tensor& out, const Tensor& x, const Tensor& w, float eps) {
  DSV4_CHECK_ARG(x.ndim() == 2, "x: expected [T, H], got ", x.shape_string());
  check_float_dtype(x, "x");
  const DType dtype = x.dtype();
  check_tensor(ctx, x, dtype, "x");
  const int64_t num_tokens = x.size(0), hidden = x.size(1);
  DSV4_CHECK_ARG(hidden > 0, "x: hidden size must be > 0");
  check_shape(w, {hidden}, "w");
  check_tensor(ctx, w, dtype, "w");
  check_shape(out, {num_tokens, hidden}, "out");
  check_tensor(ctx, out, dtype, "out");
  check_eps(eps);
  if (ctx.measuring) return;  // no scratch: nothing to count
#ifdef DSV4_NO_CUDA
  require_cpu(ctx, __func__);
#else
  if (ctx.is_cuda()) {
    throw_if_error(
        cuda::mtp_shared_head_rms_norm(x.data(), w.data(), out.data(), num_tokens, hidden, eps, dtype, stream_of(ctx)));
  } else
#endif
  { cpu::mtp_shared_head_rms_norm(x.data(), w.data(), out.data(), num_tokens, hidden, eps, dtype); }
}

}  // namespace dsv4::ops
