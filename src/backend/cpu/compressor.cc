// KV compressor (CSA/HCA) on the CPU: entry emission from the batch rows and the position-indexed
// state rings, and the ring stores (compressor raw kv/gate, sliding-window kv).
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/state_rows.h"

namespace dsv4::cpu {

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

void ring_stores(const std::vector<ops::RingStore>& stores, const BatchMeta& meta) {
  for (const ops::RingStore& s : stores) ring_store(s.ring, s.rows.ptr<float>(), s.rows.size(1), meta);
}

}  // namespace dsv4::cpu
