// Sink attention on the CPU over the sliding window and the selected / visible compressed entries.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "backend/cpu/cpu_clones.h"
#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/parallel.h"
#include "backend/cpu/state_rows.h"
#include "backend/cpu/vector_exp.h"

namespace dsv4::cpu {
namespace {

// v[k] = exp(v[k] - mx) for k < n, on libmvec's vector lanes (vector_exp.h).
DSV4_CPU_CLONES void exp_shifted(float* v, int64_t n, float mx) {
#pragma omp simd
  for (int64_t k = 0; k < n; ++k) v[k] = expf(v[k] - mx);
}

// o[h] = sum_k softmax_k(scale * logits[h, k] | sink h) * keys[k] for every head: the softmax and the key sum in
// key order; the row updates elementwise over D on the CPU's widest lanes (target_clones; the file is compiled with
// -ffp-contract=off, so each product and sum is rounded on its own, as the scalar loop rounds them).
DSV4_CPU_CLONES void attend_heads(float* o, float* logits, const float* const* keys, int64_t nk, int64_t heads,
                                  int64_t D, const float* sinks, float scale) {
  for (int64_t h = 0; h < heads; ++h) {
    float* logit = logits + h * nk;
    const float sink = sinks[h];
    float mx = sink;
    for (int64_t k = 0; k < nk; ++k) mx = std::max(mx, logit[k] *= scale);
    exp_shifted(logit, nk, mx);
    float denom = std::exp(sink - mx);
    for (int64_t k = 0; k < nk; ++k) denom += logit[k];
    float* __restrict oh = o + h * D;
    for (int64_t k = 0; k < nk; ++k) {
      const float p = logit[k] / denom;
      const float* __restrict key = keys[k];
      for (int64_t d = 0; d < D; ++d) oh[d] += p * key[d];
    }
  }
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
    // Buffers kept per thread: a prefill calls this once per token.
    thread_local std::vector<const float*> keys;
    thread_local std::vector<float> logits;
    keys.clear();
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
    // Every head's logits at once, blocks of heads x keys (dot_rows: the bits of dot() whatever the blocking) over
    // each run of keys that lie at one stride (the batch's rows, a ring page, a page of entries), read in place.
    const int64_t nk = static_cast<int64_t>(keys.size());
    logits.resize(static_cast<size_t>(heads * nk));
    // Addresses compared as integers: the rows may lie in different arrays (the batch, the state pool).
    auto gap = [&](int64_t k) {  // floats from key k to key k + 1 (0 when not a whole number of floats)
      const uintptr_t a = reinterpret_cast<uintptr_t>(keys[k]), b = reinterpret_cast<uintptr_t>(keys[k + 1]);
      return b > a && (b - a) % sizeof(float) == 0 ? static_cast<int64_t>((b - a) / sizeof(float)) : int64_t{0};
    };
    for (int64_t k = 0; k < nk;) {
      const int64_t stride = k + 1 < nk ? gap(k) : 0;
      int64_t run = 1;
      if (stride >= D) {
        while (k + run < nk && gap(k + run - 1) == stride) ++run;
      }
      dot_rows(heads, run, D, q.ptr<float>() + t * heads * D, D, keys[k], run > 1 ? stride : D, logits.data() + k, nk);
      k += run;
    }
    attend_heads(o, logits.data(), keys.data(), nk, heads, D, sinks.ptr<float>(), scale);
  });
}

}  // namespace dsv4::cpu
