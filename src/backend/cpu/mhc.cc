// Manifold-constrained hyper-connections (mHC) on the CPU, fp32 as transformers computes them.
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_clones.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/parallel.h"

namespace dsv4::cpu {
namespace {

// m [T, rows]: row t = (fn @ x_t) * rsqrt(mean(x_t^2) + eps) for token t's flattened streams x_t [width]. transformers
// normalises first, then projects (the same up to fp32 rounding): every token's normalised streams, then one product
// (sgemm from kBlasMinRows tokens, as a linear's).
// The normalised rows live in a buffer kept across calls: a fresh one per call (2 MB for a 512-token prefill) cost
// more in page faults and the kernel's page clearing than the product.
// The buffer is the calling thread's: the parallel body writes through `normalised`, never names `xn` (a lambda does
// not capture a thread_local: each worker would reach its own, empty, one).
std::vector<float> mix_logits(const float* x, int64_t T, int64_t width, const float* fn, int64_t rows, float eps) {
  thread_local std::vector<float> xn;
  xn.resize(static_cast<size_t>(T * width));
  float* const normalised = xn.data();
  std::vector<float> m(static_cast<size_t>(T * rows));
  parallel_for(T, T * width, [&](int64_t t) {
    const float* xt = x + t * width;
    double ss = 0;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < width; ++i) ss += static_cast<double>(xt[i]) * xt[i];
    const float r = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(width)) + eps);
    float* dst = normalised + t * width;
    for (int64_t i = 0; i < width; ++i) dst[i] = xt[i] * r;
  });
  product_nt(T, rows, width, normalised, width, fn, width, m.data(), rows);
  return m;
}

// out[h] = sum_i w[i] * x[i * H + h], the streams added in order i = 0..n-1 (h innermost: vectorises).
DSV4_CPU_CLONES void weighted_streams(float* __restrict out, const float* __restrict w, const float* __restrict x,
                                      int64_t n, int64_t H) {
  for (int64_t h = 0; h < H; ++h) out[h] = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float wi = w[i];
    const float* __restrict xi = x + i * H;
    for (int64_t h = 0; h < H; ++h) out[h] += wi * xi[h];
  }
}

// One token of hc_post: out[j] = P[j] y + sum_i C[i, j] x[i], the streams in order i = 0..n-1 (h innermost).
DSV4_CPU_CLONES void post_mix_token(float* out, const float* __restrict yt, const float* __restrict xt, const float* P,
                                    const float* C, int64_t n, int64_t H) {
  for (int64_t j = 0; j < n; ++j) {
    float* __restrict o = out + j * H;
    const float pj = P[j];
    for (int64_t h = 0; h < H; ++h) o[h] = pj * yt[h];
    for (int64_t i = 0; i < n; ++i) {
      const float cij = C[i * n + j];
      const float* __restrict xi = xt + i * H;
      for (int64_t h = 0; h < H; ++h) o[h] += cij * xi[h];
    }
  }
}

}  // namespace

void hc_pre(Tensor collapsed, Tensor post, Tensor comb, Tensor x, Tensor fn, Tensor base, Tensor scale,
            const ops::MhcParams& params, const ops::HcNorm& norm) {
  const int64_t T = x.size(0), n = x.size(1), H = x.size(2), width = n * H, rows = (2 + n) * n;
  const float eps = params.norm_eps, hc_eps = params.hc_eps;
  const float* B = base.ptr<float>();
  const float* S = scale.ptr<float>();
  const std::vector<float> logits = mix_logits(x.ptr<float>(), T, width, fn.ptr<float>(), rows, eps);
#pragma omp parallel for schedule(static) if (T * n * (H + n * params.sinkhorn_iters) > kParallelWork)
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x.ptr<float>() + t * width;
    const float* m = logits.data() + t * rows;
    std::vector<float> pre(n);
    for (int64_t i = 0; i < n; ++i) {
      pre[i] = sigmoid(m[i] * S[0] + B[i]) + hc_eps;
      post.ptr<float>()[t * n + i] = 2.0f * sigmoid(m[n + i] * S[1] + B[n + i]);
    }
    float* C = comb.ptr<float>() + t * n * n;
    for (int64_t i = 0; i < n; ++i) {  // row-wise softmax, then + eps
      float mx = -INFINITY;
      for (int64_t j = 0; j < n; ++j) {
        C[i * n + j] = m[2 * n + i * n + j] * S[2] + B[2 * n + i * n + j];
        mx = std::max(mx, C[i * n + j]);
      }
      float sum = 0;
      for (int64_t j = 0; j < n; ++j) sum += (C[i * n + j] = std::exp(C[i * n + j] - mx));
      for (int64_t j = 0; j < n; ++j) C[i * n + j] = C[i * n + j] / sum + hc_eps;
    }
    auto normalise_columns = [&] {
      for (int64_t j = 0; j < n; ++j) {
        float sum = 0;
        for (int64_t i = 0; i < n; ++i) sum += C[i * n + j];
        for (int64_t i = 0; i < n; ++i) C[i * n + j] /= (sum + hc_eps);
      }
    };
    normalise_columns();
    for (int64_t it = 0; it < params.sinkhorn_iters - 1; ++it) {  // Sinkhorn: rows, then columns
      for (int64_t i = 0; i < n; ++i) {
        float sum = 0;
        for (int64_t j = 0; j < n; ++j) sum += C[i * n + j];
        for (int64_t j = 0; j < n; ++j) C[i * n + j] /= (sum + hc_eps);
      }
      normalise_columns();
    }
    weighted_streams(collapsed.ptr<float>() + t * H, pre.data(), xt, n, H);
  }
  if (norm.weight.data() != nullptr) rms_norm(collapsed, collapsed, norm.weight, norm.eps);
}

void hc_post(Tensor out, Tensor y, Tensor x, Tensor post, Tensor comb) {
  const int64_t T = x.size(0), n = x.size(1), H = x.size(2);
#pragma omp parallel for schedule(static) if (T * n * n * H > kParallelWork)
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x.ptr<float>() + t * n * H;
    const float* yt = y.ptr<float>() + t * H;
    const float* P = post.ptr<float>() + t * n;
    const float* C = comb.ptr<float>() + t * n * n;
    post_mix_token(out.ptr<float>() + t * n * H, yt, xt, P, C, n, H);
  }
}

void hc_head(Tensor out, Tensor x, Tensor fn, Tensor base, Tensor scale, const ops::MhcParams& params,
             const ops::HcNorm& norm) {
  const int64_t T = x.size(0), n = x.size(1), H = x.size(2), width = n * H;
  const float eps = params.norm_eps, hc_eps = params.hc_eps;
  const std::vector<float> logits = mix_logits(x.ptr<float>(), T, width, fn.ptr<float>(), n, eps);
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x.ptr<float>() + t * width;
    const float* m = logits.data() + t * n;
    std::vector<float> pre(n);
    for (int64_t i = 0; i < n; ++i) pre[i] = sigmoid(m[i] * scale.ptr<float>()[0] + base.ptr<float>()[i]) + hc_eps;
    weighted_streams(out.ptr<float>() + t * H, pre.data(), xt, n, H);
  }
  if (norm.weight.data() != nullptr) rms_norm(out, out, norm.weight, norm.eps);
}

}  // namespace dsv4::cpu
