// Dense CPU reference ops: embedding, projections, norms, elementwise.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "backend/cpu/blas.h"
#include "backend/cpu/cpu_ops.h"

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

void swiglu(Tensor out, Tensor gate, Tensor up, float limit) {
  const int64_t n = out.numel();
  for (int64_t i = 0; i < n; ++i) {
    const float g = std::min(gate.ptr<float>()[i], limit);
    const float u = std::min(std::max(up.ptr<float>()[i], -limit), limit);
    out.ptr<float>()[i] = silu(g) * u;
  }
}

void argmax(Tensor out, Tensor logits) {
  const int64_t R = logits.size(0), V = logits.size(1);
  for (int64_t r = 0; r < R; ++r) {
    const float* l = logits.ptr<float>() + r * V;
    int64_t best = 0;
    for (int64_t v = 1; v < V; ++v) {
      if (l[v] > l[best]) best = v;
    }
    out.ptr<int32_t>()[r] = static_cast<int32_t>(best);
  }
}

void rope_vector(float* v, int64_t dim, const RopeTable& table, float position, bool inverse) {
  const int64_t R = table.rope_dim;
  const float* inv_freq = table.inv_freq.ptr<float>();
  float* r = v + (dim - R);
  for (int64_t i = 0; i < R / 2; ++i) {
    // Same rounding as transformers: an fp32 angle, cos/sin scaled by the attention factor.
    const float angle = inv_freq[i] * position;
    const float c = static_cast<float>(std::cos(static_cast<double>(angle))) * table.attention_factor;
    float s = static_cast<float>(std::sin(static_cast<double>(angle))) * table.attention_factor;
    if (inverse) s = -s;
    const float x0 = r[2 * i], x1 = r[2 * i + 1];
    r[2 * i] = x0 * c - x1 * s;
    r[2 * i + 1] = x1 * c + x0 * s;
  }
}

void rope(Tensor x, Tensor pos, const RopeTable& table, bool inverse) {
  const int64_t T = x.size(0), heads = x.size(1), dim = x.size(2);
  for (int64_t t = 0; t < T; ++t) {
    const float p = static_cast<float>(pos.ptr<int32_t>()[t]);
    for (int64_t h = 0; h < heads; ++h) rope_vector(x.ptr<float>() + (t * heads + h) * dim, dim, table, p, inverse);
  }
}

void rms_norm_rope(Tensor x, Tensor w, float eps, Tensor pos, const RopeTable& table) {
  rms_norm(x, x, w, eps);
  rope(x, pos, table, false);
}

}  // namespace dsv4::cpu
