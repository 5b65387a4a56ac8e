// Sink attention on the CPU over the sliding window and the selected / visible compressed entries.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/parallel.h"
#include "backend/cpu/state_rows.h"
#include "backend/cpu/vector_exp.h"

namespace dsv4::cpu {
namespace {

// v[k] = exp(v[k] - mx) for k < n, on libmvec's vector lanes (vector_exp.h).
DSV4_VECTOR_EXP_CLONES void exp_shifted(float* v, int64_t n, float mx) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) v[k] = expf(v[k] - mx);
}

}  // namespace

void attention(Tensor out, Tensor q, Tensor kv, const PagedRows& kv_ring, const CompressorState* compressed,
               Tensor selected, Tensor sinks, const BatchMeta& meta, int64_t window, float scale) {
  const int64_t T = meta.num_tokens, heads = q.size(1), D = q.size(2);
  parallel_for(T, T * heads * D * (window + 64), [&](int64_t t) {
    const TokenMeta m = token_meta(meta, t);
    float* o = out.ptr<float>() + t * heads * D;
    std::fill(o, o + heads * D, 0.0f);
    if (m.slot < 0) return;
    std::vector<const float*> keys;
    for (int64_t p = std::max<int64_t>(0, m.pos - window + 1); p <= m.pos; ++p) {
      keys.push_back(position_row(kv.ptr<float>(), t, m, p, kv_ring, D));
    }
    if (compressed != nullptr) {
      const PagedRows& E = compressed->entries;
      if (selected.data() != nullptr) {
        const int64_t topk = selected.size(1);
        for (int64_t k = 0; k < topk; ++k) {
          const int32_t e = selected.ptr<int32_t>()[t * topk + k];
          if (e >= 0) keys.push_back(state_row(E, m.slot, e, "compressed entries"));
        }
      } else {
        const int64_t visible = std::min<int64_t>((m.pos + 1) / compressed->rate, E.rows);
        for (int64_t e = 0; e < visible; ++e) keys.push_back(state_row(E, m.slot, e, "compressed entries"));
      }
    }
    // Every head's logits at once: the keys gathered into rows, then blocks of heads x keys (dot_rows).
    const int64_t nk = static_cast<int64_t>(keys.size());
    std::vector<float> key_rows(static_cast<size_t>(nk * D)), logits(static_cast<size_t>(heads * nk));
    for (int64_t k = 0; k < nk; ++k) std::copy(keys[k], keys[k] + D, key_rows.data() + k * D);
    dot_rows(heads, nk, D, q.ptr<float>() + t * heads * D, D, key_rows.data(), D, logits.data(), nk);
    for (int64_t h = 0; h < heads; ++h) {
      float* logit = logits.data() + h * nk;
      const float sink = sinks.ptr<float>()[h];
      float mx = sink;
      for (int64_t k = 0; k < nk; ++k) mx = std::max(mx, logit[k] *= scale);
      exp_shifted(logit, nk, mx);
      float denom = std::exp(sink - mx);
      for (int64_t k = 0; k < nk; ++k) denom += logit[k];
      float* __restrict oh = o + h * D;
      for (int64_t k = 0; k < nk; ++k) {
        const float p = logit[k] / denom;
        const float* __restrict key = key_rows.data() + k * D;
        for (int64_t d = 0; d < D; ++d) oh[d] += p * key[d];
      }
    }
  });
}

}  // namespace dsv4::cpu
