// Rows of the paged per-sequence state as the CPU ops read them (compressor, indexer, attention): per-token batch
// metadata, a state row through the sequence's page table, and the row of a position — the batch row for
// positions of this forward, else the state ring. Every per-sequence state is indexed by absolute position (ring
// row = position % ring rows, entry j at row j), so a prefill, a chunked prefill and decode steps compute the same
// values wherever the pages lie.
#pragma once

#include "backend/cpu/cpu_ops.h"

namespace dsv4::cpu {

struct TokenMeta {
  int32_t pos, slot, start, end;
};

inline TokenMeta token_meta(const BatchMeta& meta, int64_t t) {
  return {meta.pos.ptr<int32_t>()[t], meta.slot.ptr<int32_t>()[t], meta.start.ptr<int32_t>()[t],
          meta.end.ptr<int32_t>()[t]};
}

// Row r of a sequence's paged state; an unallocated page is a scheduling bug, reported rather than read.
inline float* state_row(const PagedRows& p, int32_t slot, int64_t r, const char* what) {
  float* row = p.row<float>(slot, r);
  DSV4_CHECK(row != nullptr, kInternal, what, ": row ", r, " of sequence slot ", slot, " is in an unallocated page");
  return row;
}

// Row of a per-position quantity: the batch row for positions in this forward, else the state ring.
inline const float* position_row(const float* batch, int64_t t, const TokenMeta& m, int64_t q, const PagedRows& ring,
                                 int64_t width) {
  if (q >= m.start) return batch + (t - (m.pos - q)) * width;
  return state_row(ring, m.slot, q % ring.rows, "state ring");
}

}  // namespace dsv4::cpu
