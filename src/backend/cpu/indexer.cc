// Lightning indexer on the CPU: every visible compressed key scored, the exact top-k (ties to the lower index).
#include <algorithm>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/parallel.h"
#include "backend/cpu/state_rows.h"

namespace dsv4::cpu {

void indexer_topk(Tensor out, Tensor q, Tensor w, const CompressorState& keys, const BatchMeta& meta,
                  float softmax_scale) {
  const int64_t T = meta.num_tokens, Hi = q.size(1), Di = q.size(2), topk = out.size(1);
  const int64_t max_entries = keys.entries.rows;
  // Tokens in parallel once a forward's scores are some work (a prefill's: every token scores every visible key).
  int64_t last = 0;
  for (int64_t t = 0; t < T; ++t) last = std::max<int64_t>(last, meta.pos.ptr<int32_t>()[t]);
  const int64_t work = T * Hi * Di * std::min<int64_t>(max_entries, (last + 1) / keys.rate);
  parallel_for(T, work, [&](int64_t t) {
    const TokenMeta m = token_meta(meta, t);
    int32_t* sel = out.ptr<int32_t>() + t * topk;
    std::fill(sel, sel + topk, -1);
    if (m.slot < 0) return;
    const int64_t visible = std::min<int64_t>((m.pos + 1) / keys.rate, max_entries);
    if (visible <= topk) {
      for (int64_t s = 0; s < visible; ++s) sel[s] = static_cast<int32_t>(s);
      return;
    }
    // Every head's dot with every visible key, a page's run of consecutive entries at a time (dot_rows: the bits
    // of dot() whatever the blocking), then the heads' weighted ReLUs in head order. Buffers kept per thread: a
    // prefill calls this once per token.
    const PagedRows& E = keys.entries;
    const float* q_t = q.ptr<float>() + t * Hi * Di;
    thread_local std::vector<float> dots, score;
    dots.resize(static_cast<size_t>(Hi * visible));
    score.resize(static_cast<size_t>(visible));
    for (int64_t s = 0; s < visible;) {
      const int64_t run = std::min(visible - s, E.rows_per_page - s % E.rows_per_page);
      dot_rows(Hi, run, Di, q_t, Di, state_row(E, m.slot, s, "indexer keys"),
               E.row_bytes / static_cast<int64_t>(sizeof(float)), dots.data() + s, visible);
      s += run;
    }
    const float* w_t = w.ptr<float>() + t * Hi;
    for (int64_t s = 0; s < visible; ++s) {
      float acc = 0;
      for (int64_t h = 0; h < Hi; ++h) acc += std::max(dots[h * visible + s], 0.0f) * softmax_scale * w_t[h];
      score[s] = acc;
    }
    thread_local std::vector<int32_t> order;
    order.resize(static_cast<size_t>(visible));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + topk, order.end(),
                      [&](int32_t a, int32_t b) { return score[a] > score[b] || (score[a] == score[b] && a < b); });
    std::copy(order.begin(), order.begin() + topk, sel);
  });
}

}  // namespace dsv4::cpu
