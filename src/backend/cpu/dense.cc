// Dense CPU reference ops: embedding, projections, elementwise, row gathers and scatters, dtype conversion.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/blas.h"
#include "backend/cpu/cpu_clones.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/vector_exp.h"

namespace dsv4::cpu {

void embedding(Tensor out, Tensor table, Tensor ids) {
  const int64_t T = out.size(0), H = out.size(1);
  const int32_t* id = ids.ptr<int32_t>();
  for (int64_t t = 0; t < T; ++t) {
    std::memcpy(out.ptr<float>() + t * H, table.ptr<float>() + static_cast<int64_t>(id[t]) * H, H * sizeof(float));
  }
}

void broadcast_streams(Tensor out, Tensor x) {
  const int64_t T = out.size(0), n = out.size(1), H = out.size(2);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t s = 0; s < n; ++s) {
      std::memcpy(out.ptr<float>() + (t * n + s) * H, x.ptr<float>() + t * H, H * sizeof(float));
    }
  }
}

void product_nt(int64_t M, int64_t N, int64_t K, const float* X, int64_t ldx, const float* W, int64_t ldw, float* Y,
                int64_t ldy) {
  if (M >= kBlasMinRows && blas_enabled()) return gemm_nt(M, N, K, X, ldx, W, ldw, Y, ldy);
  // Weight rows outer, the few token rows inner (dot_rows): each weight row is read once for all M rows, so a
  // speculative verification of K + 1 tokens costs about one decode step's weight traffic, with the same bits.
  constexpr int64_t kRowsPerTask = 64;
#pragma omp parallel for schedule(static) if (M * N * K > kParallelWork)
  for (int64_t n = 0; n < N; n += kRowsPerTask) {
    dot_rows(M, std::min(kRowsPerTask, N - n), K, X, ldx, W + n * ldw, ldw, Y + n, ldy);
  }
}

void linear(Tensor out, Tensor x, Tensor w) {
  const int64_t T = x.size(0), K = x.size(1), N = w.size(0);
  product_nt(T, N, K, x.ptr<float>(), K, w.ptr<float>(), K, out.ptr<float>(), N);
}

void linears(Tensor x, const std::vector<ops::Projection>& projections) {
  for (const ops::Projection& p : projections) linear(p.out, x, p.w);
}

void grouped_linear(Tensor out, Tensor x, Tensor w, int64_t groups) {
  const int64_t T = x.size(0), K = x.size(1) / groups, N = w.size(0) / groups;
  const float* X = x.ptr<float>();
  const float* W = w.ptr<float>();
  float* Y = out.ptr<float>();
  // Group g: Y[:, g*N:(g+1)*N] = X[:, g*K:(g+1)*K] · W[g*N:(g+1)*N]^T.
  for (int64_t g = 0; g < groups; ++g) {
    product_nt(T, N, K, X + g * K, groups * K, W + g * N * K, K, Y + g * N, groups * N);
  }
}

void add(Tensor out, Tensor a, Tensor b) {
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i) out.ptr<float>()[i] = a.ptr<float>()[i] + b.ptr<float>()[i];
}

void copy(Tensor out, Tensor x) { std::memcpy(out.data(), x.data(), x.nbytes()); }

void gather_rows(Tensor out, Tensor x, Tensor rows) {
  const int64_t R = out.size(0), W = out.numel() / std::max<int64_t>(R, 1);
  for (int64_t r = 0; r < R; ++r) {
    std::memcpy(out.ptr<float>() + r * W, x.ptr<float>() + static_cast<int64_t>(rows.ptr<int32_t>()[r]) * W,
                W * sizeof(float));
  }
}

DSV4_CPU_CLONES void swiglu_values(float* out, const float* gate, const float* up, int64_t n, float limit) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    // std::min / std::max spelled as selects (the same results, NaN included) so the loop if-converts.
    const float gi = gate[i], ui = up[i];
    const float g = limit < gi ? limit : gi;
    const float lo = ui < -limit ? -limit : ui;
    const float u = limit < lo ? limit : lo;
    out[i] = g / (1.0f + expf(-g)) * u;
  }
}

void swiglu(Tensor out, Tensor gate, Tensor up, float limit) {
  swiglu_values(out.ptr<float>(), gate.ptr<float>(), up.ptr<float>(), out.numel(), limit);
}

void scatter_rows(Tensor out, Tensor x, Tensor rows) {
  const int64_t R = rows.numel();
  if (R == 0) return;
  const size_t row_bytes = x.nbytes() / static_cast<size_t>(R);
  const int64_t capacity = out.size(0);
  for (int64_t r = 0; r < R; ++r) {
    const int32_t to = rows.ptr<int32_t>()[r];
    if (to < 0) continue;
    DSV4_CHECK_ARG(to < capacity, "scatter_rows: row ", to, " outside [0, ", capacity, ")");
    std::memcpy(static_cast<char*>(out.data()) + to * row_bytes, static_cast<const char*>(x.data()) + r * row_bytes,
                row_bytes);
  }
}

void convert(Tensor out, Tensor x) {
  const size_t n = static_cast<size_t>(x.numel());
  if (out.dtype() == DType::I64) {
    for (size_t i = 0; i < n; ++i) out.ptr<int64_t>()[i] = x.ptr<int32_t>()[i];
    return;
  }
  if (x.dtype() == DType::F32) {
    convert_from_f32(x.ptr<float>(), out.dtype(), out.data(), n);
  } else if (out.dtype() == DType::F32) {
    convert_to_f32(x.dtype(), x.data(), out.ptr<float>(), n);
  } else {
    std::vector<float> tmp(n);
    convert_to_f32(x.dtype(), x.data(), tmp.data(), n);
    convert_from_f32(tmp.data(), out.dtype(), out.data(), n);
  }
}

}  // namespace dsv4::cpu
