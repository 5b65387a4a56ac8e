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

// Compressed key j of batch row t: HCA's entry j, or its j-th CSA selection (null: an unused selection slot). *kind:
// 0 a bf16 row, 2 a packed fp8 entry row.
__device__ __forceinline__ const void* entry_key(const SplitAttnArgs& a, int64_t t, int32_t slot, int64_t j,
                                                 uint8_t* kind) {
  *kind = a.entries.packed() ? 2 : 0;
  if (a.selected == nullptr) return a.entries.row<const char>(slot, j);
  const int32_t e = a.selected[t * a.topk + j];
  return e >= 0 ? a.entries.row<const char>(slot, e) : nullptr;
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
