#include "backend/cpu/rms_norm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "dsv4/core/status.h"

namespace dsv4::cpu {
namespace {

void check_args(const char* what, int64_t num_tokens, int64_t hidden, int64_t hc_mult, DType dtype) {
  DSV4_CHECK_ARG(dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16, what,
                 ": dtype must be F32, BF16 or F16, got ", dtype_name(dtype));
  DSV4_CHECK_ARG(num_tokens >= 0 && hidden > 0 && hc_mult > 0, what, ": bad sizes (num_tokens=", num_tokens,
                 ", hidden=", hidden, ", hc_mult=", hc_mult, ")");
}

std::vector<float> to_f32(const void* src, int64_t n, DType dtype) {
  std::vector<float> out(static_cast<size_t>(n));
  convert_to_f32(dtype, src, out.data(), out.size());
  return out;
}

// y = x * rsqrt(mean(x^2) + eps) * w for one row; `zero` normalises a row of zeros instead of x.
void norm_row(const void* x, const float* w, void* y, int64_t hidden, float eps, bool zero, DType dtype,
              std::vector<float>& row) {
  row.resize(static_cast<size_t>(hidden));
  if (zero) {
    std::fill(row.begin(), row.end(), 0.f);
  } else {
    convert_to_f32(dtype, x, row.data(), row.size());
  }
  double sum_sq = 0.0;
  for (float v : row) sum_sq += static_cast<double>(v) * v;
  const float rstd = 1.0f / std::sqrt(static_cast<float>(sum_sq / static_cast<double>(hidden)) + eps);
  for (int64_t i = 0; i < hidden; ++i) row[i] = row[i] * rstd * w[i];
  convert_from_f32(row.data(), dtype, y, row.size());
}

// Shared body of both MTP layouts: the e row of token t goes to e_out(t, copy) for `e_copies` copies,
// h row i (= t * hc + s) to h_out + i * h_out_stride.
void mtp_rows(const void* inputs_embeds, RowPositions positions, const void* prev_hidden, const void* enorm_weight,
              const void* hnorm_weight, char* e_out, int64_t e_out_stride, int64_t e_copy_stride, int64_t e_copies,
              char* h_out, int64_t h_out_stride, int64_t num_tokens, int64_t hidden, int64_t hc_mult, float eps,
              DType dtype) {
  if (num_tokens == 0) return;
  const std::vector<float> we = to_f32(enorm_weight, hidden, dtype);
  const std::vector<float> wh = to_f32(hnorm_weight, hidden, dtype);
  const int64_t row_bytes = hidden * static_cast<int64_t>(dtype_size(dtype));
  const auto* e = static_cast<const char*>(inputs_embeds);
  const auto* prev = static_cast<const char*>(prev_hidden);
  // One thread for decode-sized steps (a fork/join and the spinning threads after it cost more than the rows).
#pragma omp parallel if (num_tokens * hidden * (hc_mult + 1) > kParallelWork)
  {
    std::vector<float> row;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < num_tokens; ++t) {
      char* first = e_out + t * e_out_stride;
      norm_row(e + t * row_bytes, we.data(), first, hidden, eps, positions.masked(t), dtype, row);
      for (int64_t c = 1; c < e_copies; ++c) std::memcpy(first + c * e_copy_stride, first, row_bytes);
      for (int64_t s = 0; s < hc_mult; ++s) {
        const int64_t i = t * hc_mult + s;
        norm_row(prev + i * row_bytes, wh.data(), h_out + i * h_out_stride, hidden, eps, false, dtype, row);
      }
    }
  }
}

}  // namespace

void fused_mtp_input_rms_norm(const void* inputs_embeds, RowPositions positions, const void* prev_hidden,
                              const void* enorm_weight, const void* hnorm_weight, void* enorm_out, void* hnorm_out,
                              int64_t num_tokens, int64_t hidden, int64_t hc_mult, float eps, DType dtype) {
  check_args("cpu::fused_mtp_input_rms_norm", num_tokens, hidden, hc_mult, dtype);
  const int64_t row_bytes = hidden * static_cast<int64_t>(dtype_size(dtype));
  mtp_rows(inputs_embeds, positions, prev_hidden, enorm_weight, hnorm_weight, static_cast<char*>(enorm_out), row_bytes,
           0, 1, static_cast<char*>(hnorm_out), row_bytes, num_tokens, hidden, hc_mult, eps, dtype);
}

void fused_mtp_input_rms_norm_eh(const void* inputs_embeds, RowPositions positions, const void* prev_hidden,
                                 const void* enorm_weight, const void* hnorm_weight, void* out, int64_t num_tokens,
                                 int64_t hidden, int64_t hc_mult, float eps, DType dtype) {
  check_args("cpu::fused_mtp_input_rms_norm_eh", num_tokens, hidden, hc_mult, dtype);
  const int64_t row_bytes = hidden * static_cast<int64_t>(dtype_size(dtype));
  char* base = static_cast<char*>(out);
  mtp_rows(inputs_embeds, positions, prev_hidden, enorm_weight, hnorm_weight, base + row_bytes, 2 * row_bytes * hc_mult,
           2 * row_bytes, hc_mult, base, 2 * row_bytes, num_tokens, hidden, hc_mult, eps, dtype);
}

void rms_norm_rows(const void* x, const void* weight, void* out, int64_t num_tokens, int64_t hidden, float eps,
                   DType dtype) {
  check_args("cpu::rms_norm_rows", num_tokens, hidden, 1, dtype);
  if (num_tokens == 0) return;
  const std::vector<float> w = to_f32(weight, hidden, dtype);
  const int64_t row_bytes = hidden * static_cast<int64_t>(dtype_size(dtype));
  const auto* in = static_cast<const char*>(x);
  auto* dst = static_cast<char*>(out);
#pragma omp parallel if (num_tokens * hidden > kParallelWork)
  {
    std::vector<float> row;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < num_tokens; ++t) {
      norm_row(in + t * row_bytes, w.data(), dst + t * row_bytes, hidden, eps, false, dtype, row);
    }
  }
}

void fused_mtp_input_rms_norm(Tensor enorm_out, Tensor hnorm_out, Tensor inputs_embeds, Tensor positions,
                              Tensor prev_hidden, Tensor enorm_w, Tensor hnorm_w, float eps) {
  fused_mtp_input_rms_norm(inputs_embeds.data(), RowPositions{positions.data(), false}, prev_hidden.data(),
                           enorm_w.data(), hnorm_w.data(), enorm_out.data(), hnorm_out.data(), inputs_embeds.size(0),
                           inputs_embeds.size(1), hnorm_out.size(1), eps, inputs_embeds.dtype());
}

void fused_mtp_input_rms_norm_eh(Tensor out, Tensor inputs_embeds, Tensor positions, Tensor prev_hidden, Tensor enorm_w,
                                 Tensor hnorm_w, float eps) {
  fused_mtp_input_rms_norm_eh(inputs_embeds.data(), RowPositions{positions.data(), false}, prev_hidden.data(),
                              enorm_w.data(), hnorm_w.data(), out.data(), inputs_embeds.size(0), inputs_embeds.size(1),
                              out.size(1), eps, inputs_embeds.dtype());
}

void rms_norm(Tensor out, Tensor x, Tensor w, float eps) {
  const int64_t dim = x.size(-1), rows = x.numel() / std::max<int64_t>(dim, 1);
  const float* X = x.ptr<float>();
  const float* W = w.data() ? w.ptr<float>() : nullptr;
  float* Y = out.ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = X + r * dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(dim)) + eps);
    float* yr = Y + r * dim;
    for (int64_t i = 0; i < dim; ++i) yr[i] = W ? W[i] * (xr[i] * inv) : xr[i] * inv;
  }
}

void rms_norm_rope(std::span<const NormRopeHeads> parts, float eps, Tensor pos, const RopeTable& table) {
  for (const NormRopeHeads& p : parts) {
    rms_norm(p.x, p.x, p.w, eps);
    rope(p.x, pos, table, false);
  }
}

}  // namespace dsv4::cpu
