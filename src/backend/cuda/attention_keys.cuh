// A batch row's attention keys, shared by the tensor-core attention kernels (attention_split.cu,
// attention_prefill.cu): its window positions pos - n_win + 1 .. pos (the batch's own kv rows for positions in its
// chunk, the slot's ring rows before it), then its compressed entries (HCA: every visible entry; CSA: the indexer's
// selection, -1 an unused slot). Rows are read through the state's page tables (PagedRows).
#pragma once

#include "backend/cuda/attention_split.h"

namespace dsv4::cuda {

// Window key at position p of batch row t (at position pos, its chunk from `start`): the step's own kv row when p is in
// the chunk, else the slot's ring row. *kind: 0 a bf16 row, 1 a packed fp8 ring row (kv_fp8.cuh).
__device__ __forceinline__ const void* window_key(const SplitAttnArgs& a, const bf16* kv, int64_t t, int64_t pos,
                                                  int64_t p, int32_t start, int32_t slot, uint8_t* kind) {
  *kind = 0;
  if (p >= start) return kv + (t - (pos - p)) * a.D;
  *kind = a.ring.packed() ? 1 : 0;
  return a.ring.row<const char>(slot, p % a.ring.rows);
}

// The entry behind compressed key j of batch row t: HCA's entry j, or its j-th CSA selection (-1: an unused slot).
__device__ __forceinline__ int32_t entry_index(const SplitAttnArgs& a, int64_t t, int64_t j) {
  return a.selected == nullptr ? static_cast<int32_t>(j) : a.selected[t * a.topk + j];
}

// Entry e's row of the slot (null: e < 0, or a missing page).
__device__ __forceinline__ const void* entry_row(const SplitAttnArgs& a, int32_t slot, int32_t e) {
  return e >= 0 ? a.entries.row<const char>(slot, e) : nullptr;
}

// Compressed key j of batch row t (entry_index, entry_row). *kind: 0 a bf16 row, 2 a packed fp8 entry row.
__device__ __forceinline__ const void* entry_key(const SplitAttnArgs& a, int64_t t, int32_t slot, int64_t j,
                                                 uint8_t* kind) {
  *kind = a.entries.packed() ? 2 : 0;
  return entry_row(a, slot, entry_index(a, t, j));
}

// The number of window keys of a row at position pos, and of its compressed keys (selection slots or visible entries).
__device__ __forceinline__ int64_t window_keys(const SplitAttnArgs& a, int32_t pos) {
  return min(static_cast<int64_t>(pos) + 1, a.window);
}
__device__ __forceinline__ int64_t compressed_keys(const SplitAttnArgs& a, int32_t pos) {
  if (a.rate <= 0) return 0;
  return a.selected != nullptr ? a.topk : min(static_cast<int64_t>((pos + 1) / a.rate), a.entries.rows);
}

}  // namespace dsv4::cuda
