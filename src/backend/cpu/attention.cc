// Sparse attention pieces on the CPU: compressor (CSA/HCA), lightning indexer, sink attention, rings.
//
// Every per-sequence state is indexed by absolute position (ring row = position % ring rows, entry j at row j)
// and read through the sequence's page table (PagedRows); each op reads positions >= meta.start from the batch
// rows and older ones from the state. A prefill, a chunked prefill and single-token decode steps therefore
// compute exactly the same values, wherever the pages lie.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "backend/cpu/cpu_ops.h"

namespace dsv4::cpu {
namespace {

struct TokenMeta {
  int32_t pos, slot, start, end;
};

TokenMeta token_meta(const BatchMeta& meta, int64_t t) {
  return {meta.pos.ptr<int32_t>()[t], meta.slot.ptr<int32_t>()[t], meta.start.ptr<int32_t>()[t],
          meta.end.ptr<int32_t>()[t]};
}

// Row r of a sequence's paged state; an unallocated page is a scheduling bug, reported rather than read.
float* state_row(const PagedRows& p, int32_t slot, int64_t r, const char* what) {
  float* row = p.row<float>(slot, r);
  DSV4_CHECK(row != nullptr, kInternal, what, ": row ", r, " of sequence slot ", slot, " is in an unallocated page");
  return row;
}

// Row of a per-position quantity: the batch row for positions in this forward, else the state ring.
const float* position_row(const float* batch, int64_t t, const TokenMeta& m, int64_t q, const PagedRows& ring,
                          int64_t width) {
  if (q >= m.start) return batch + (t - (m.pos - q)) * width;
  return state_row(ring, m.slot, q % ring.rows, "state ring");
}

}  // namespace

void compressor_emit(CompressorState& st, Tensor kv, Tensor gate, Tensor ape, Tensor norm_w, const RopeTable& rope,
                     const BatchMeta& meta, float eps) {
  const int64_t T = meta.num_tokens, r = st.rate, D = st.dim, width = kv.size(1);
  const int64_t max_entries = st.entries.rows;
  const float* A = ape.ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    const TokenMeta m = token_meta(meta, t);
    if (m.slot < 0 || (m.pos + 1) % r != 0) continue;
    const int64_t j = (m.pos + 1) / r - 1;
    DSV4_CHECK_ARG(j < max_entries, "compressor: entry ", j, " exceeds the state capacity of ", max_entries,
                   " entries (sequence longer than the engine's max_seq_len)");
    std::vector<const float*> kv_rows, gate_rows;  // sources: previous window (overlap) then current window
    std::vector<int64_t> ape_row, channel_offset;
    if (st.overlap && j >= 1) {
      for (int64_t i = 0; i < r; ++i) {
        const int64_t q = (j - 1) * r + i;
        kv_rows.push_back(position_row(kv.ptr<float>(), t, m, q, st.raw_kv, width));
        gate_rows.push_back(position_row(gate.ptr<float>(), t, m, q, st.raw_gate, width));
        ape_row.push_back(i);
        channel_offset.push_back(0);
      }
    }
    for (int64_t i = 0; i < r; ++i) {
      const int64_t q = j * r + i;
      kv_rows.push_back(position_row(kv.ptr<float>(), t, m, q, st.raw_kv, width));
      gate_rows.push_back(position_row(gate.ptr<float>(), t, m, q, st.raw_gate, width));
      ape_row.push_back(i);
      channel_offset.push_back(st.overlap ? D : 0);
    }
    float* entry = state_row(st.entries, m.slot, j, "compressor entries");
    const size_t S = kv_rows.size();
    std::vector<float> logit(S);
    for (int64_t d = 0; d < D; ++d) {
      float mx = -INFINITY;
      for (size_t k = 0; k < S; ++k) {
        const int64_t c = channel_offset[k] + d;
        logit[k] = gate_rows[k][c] + A[ape_row[k] * width + c];
        mx = std::max(mx, logit[k]);
      }
      float denom = 0, acc = 0;
      for (size_t k = 0; k < S; ++k) {
        const float e = std::exp(logit[k] - mx);
        denom += e;
        acc += e * kv_rows[k][channel_offset[k] + d];
      }
      entry[d] = acc / denom;
    }
    double ss = 0;
    for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(entry[d]) * entry[d];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / static_cast<double>(D)) + eps);
    for (int64_t d = 0; d < D; ++d) entry[d] = norm_w.ptr<float>()[d] * (entry[d] * inv);
    rope_vector(entry, D, rope, static_cast<float>(j * r), false);
    kv_round_trip_row(entry, D, rope.rope_dim, st.entry_format);
  }
}

namespace {

// Stores the batch's rows into a position-indexed ring: only each sequence's last `ring` positions.
void ring_store(const PagedRows& ring, const float* rows, int64_t width, const BatchMeta& meta) {
  for (int64_t t = 0; t < meta.num_tokens; ++t) {
    const TokenMeta m = token_meta(meta, t);
    if (m.slot < 0 || m.pos < m.end - ring.rows) continue;
    std::copy(rows + t * width, rows + (t + 1) * width, state_row(ring, m.slot, m.pos % ring.rows, "ring store"));
  }
}

}  // namespace

void compressor_store(CompressorState& st, Tensor kv, Tensor gate, const BatchMeta& meta) {
  const int64_t width = kv.size(1);
  ring_store(st.raw_kv, kv.ptr<float>(), width, meta);
  ring_store(st.raw_gate, gate.ptr<float>(), width, meta);
}

void kv_ring_store(const PagedRows& kv_ring, Tensor kv, const BatchMeta& meta) {
  ring_store(kv_ring, kv.ptr<float>(), kv.size(1), meta);
}

void indexer_topk(Tensor out, Tensor q, Tensor w, const CompressorState& keys, const BatchMeta& meta,
                  float softmax_scale) {
  const int64_t T = meta.num_tokens, Hi = q.size(1), Di = q.size(2), topk = out.size(1);
  const int64_t max_entries = keys.entries.rows;
  for (int64_t t = 0; t < T; ++t) {
    const TokenMeta m = token_meta(meta, t);
    int32_t* sel = out.ptr<int32_t>() + t * topk;
    std::fill(sel, sel + topk, -1);
    if (m.slot < 0) continue;
    const int64_t visible = std::min<int64_t>((m.pos + 1) / keys.rate, max_entries);
    if (visible <= topk) {
      for (int64_t s = 0; s < visible; ++s) sel[s] = static_cast<int32_t>(s);
      continue;
    }
    std::vector<float> score(visible);
    for (int64_t s = 0; s < visible; ++s) {
      const float* K = state_row(keys.entries, m.slot, s, "indexer keys");
      float acc = 0;
      for (int64_t h = 0; h < Hi; ++h) {
        const float d = dot(q.ptr<float>() + (t * Hi + h) * Di, K, Di);
        acc += std::max(d, 0.0f) * softmax_scale * w.ptr<float>()[t * Hi + h];
      }
      score[s] = acc;
    }
    std::vector<int32_t> order(visible);
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + topk, order.end(),
                      [&](int32_t a, int32_t b) { return score[a] > score[b] || (score[a] == score[b] && a < b); });
    std::copy(order.begin(), order.begin() + topk, sel);
  }
}

void attention(Tensor out, Tensor q, Tensor kv, const PagedRows& kv_ring, const CompressorState* compressed,
               Tensor selected, Tensor sinks, const BatchMeta& meta, int64_t window, float scale) {
  const int64_t T = meta.num_tokens, heads = q.size(1), D = q.size(2);
#pragma omp parallel for schedule(dynamic) if (T * heads * D * (window + 64) > kParallelWork)
  for (int64_t t = 0; t < T; ++t) {
    const TokenMeta m = token_meta(meta, t);
    float* o = out.ptr<float>() + t * heads * D;
    std::fill(o, o + heads * D, 0.0f);
    if (m.slot < 0) continue;
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
      float denom = std::exp(sink - mx);
      for (int64_t k = 0; k < nk; ++k) denom += (logit[k] = std::exp(logit[k] - mx));
      float* __restrict oh = o + h * D;
      for (int64_t k = 0; k < nk; ++k) {
        const float p = logit[k] / denom;
        const float* __restrict key = key_rows.data() + k * D;
        for (int64_t d = 0; d < D; ++d) oh[d] += p * key[d];
      }
    }
  }
}

}  // namespace dsv4::cpu
