// The key list of one query token, shared by both attention kernels: the sliding-window positions
// pos-n_win+1 .. pos (from the batch rows at positions >= start, else the slot's kv ring), then the
// compressed entries — every visible one (HCA) or the indexer's selection (CSA; -1 = unused slot).
#pragma once

#include <cstdint>

#include "backend/cuda/attention_split.h"

namespace dsv4::cuda {

template <typename T>
struct TokenKeys {
  const T* kv;              // the batch's key rows [T, D]
  const T* ring;            // the slots' kv rings [slots, ring_size, D]
  const T* entries;         // this slot's compressed entries [max_entries, D], or null
  const int32_t* selected;  // this token's selection [topk], or null
  int64_t t, D, ring_size, n_win, n_comp;
  int32_t pos, start, slot;

  __device__ __forceinline__ int64_t size() const { return n_win + n_comp; }
  // Row of key i, or null for an unused selection slot.
  __device__ __forceinline__ const T* row(int64_t i) const {
    if (i < n_win) {
      const int64_t p = pos - n_win + 1 + i;
      if (p >= start) return kv + (t - (pos - p)) * D;
      return ring + (static_cast<int64_t>(slot) * ring_size + p % ring_size) * D;
    }
    const int64_t c = i - n_win;
    if (selected == nullptr) return entries + c * D;
    const int32_t e = selected[c];
    return e >= 0 ? entries + static_cast<int64_t>(e) * D : nullptr;
  }
};

template <typename T>
__device__ __forceinline__ TokenKeys<T> token_keys(const SplitAttnArgs& a, const T* kv, const T* ring, const T* entries,
                                                   int64_t t, int32_t pos, int32_t slot, int32_t start) {
  TokenKeys<T> k;
  k.kv = kv;
  k.ring = ring;
  k.entries = entries != nullptr ? entries + static_cast<int64_t>(slot) * a.max_entries * a.D : nullptr;
  k.selected = a.selected != nullptr ? a.selected + t * a.topk : nullptr;
  k.t = t;
  k.D = a.D;
  k.ring_size = a.ring_size;
  k.pos = pos;
  k.start = start;
  k.slot = slot;
  k.n_win = min(static_cast<int64_t>(pos) + 1, a.window);
  k.n_comp = 0;
  if (a.rate > 0)
    k.n_comp = a.selected != nullptr ? a.topk : min(static_cast<int64_t>((pos + 1) / a.rate), a.max_entries);
  return k;
}

}  // namespace dsv4::cuda
