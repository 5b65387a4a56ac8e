#include "dsv4/runtime/page_pool.h"

#include <algorithm>
#include <limits>

namespace dsv4 {

PagePool::PagePool(ModelState& state) : state_(state) {
  const int64_t pages = state.num_pages(), slots = state.options().max_seqs;
  owner_.assign(static_cast<size_t>(pages), -1);
  free_.resize(static_cast<size_t>(pages));
  for (int64_t i = 0; i < pages; ++i) free_[static_cast<size_t>(i)] = static_cast<int32_t>(pages - 1 - i);
  context_held_.assign(static_cast<size_t>(slots), 0);
  has_rings_.assign(static_cast<size_t>(slots), 0);
  for (int64_t s = 0; s < slots; ++s) {  // start from an empty table (ModelState may have a static one)
    std::fill(state_.table_row(s), state_.table_row(s) + layout().table_columns(), -1);
    state_.mark_dirty(s);
  }
}

int64_t PagePool::missing_pages(int32_t slot, int64_t tokens) const {
  const StateLayout& L = layout();
  const size_t s = static_cast<size_t>(slot);
  const int64_t context = std::min(L.context_pages_for(tokens), L.context_columns);
  return (has_rings_.at(s) ? 0 : L.ring_pages) + std::max<int64_t>(0, context - context_held_.at(s));
}

bool PagePool::ensure(int32_t slot, int64_t tokens) {
  const StateLayout& L = layout();
  DSV4_CHECK_ARG(L.context_pages_for(tokens) <= L.context_columns, "page pool: ", tokens,
                 " positions exceed the state's capacity of ", L.context_columns * L.page_tokens);
  const int64_t need = missing_pages(slot, tokens);
  if (need == 0) return true;
  if (need > free_pages()) return false;
  const size_t s = static_cast<size_t>(slot);
  int32_t* row = state_.table_row(slot);
  auto take = [&](int64_t column) {
    const int32_t page = free_.back();
    free_.pop_back();
    owner_[static_cast<size_t>(page)] = slot;
    row[column] = page;
  };
  if (!has_rings_[s]) {
    for (int64_t c = 0; c < L.ring_pages; ++c) take(c);
    has_rings_[s] = 1;
  }
  for (int64_t c = context_held_[s]; c < L.context_pages_for(tokens); ++c) take(L.ring_pages + c);
  context_held_[s] = std::max(context_held_[s], L.context_pages_for(tokens));
  state_.mark_dirty(slot);
  return true;
}

void PagePool::release(int32_t slot) {
  const StateLayout& L = layout();
  const size_t s = static_cast<size_t>(slot);
  int32_t* row = state_.table_row(slot);
  const int64_t used = has_rings_.at(s) ? L.ring_pages + context_held_[s] : 0;
  for (int64_t c = 0; c < L.table_columns() && used > 0; ++c) {
    if (row[c] < 0) continue;
    owner_[static_cast<size_t>(row[c])] = -1;
    free_.push_back(row[c]);
    row[c] = -1;
  }
  has_rings_[s] = 0;
  context_held_[s] = 0;
  state_.mark_dirty(slot);
}

int64_t PagePool::capacity(int32_t slot) const {
  const size_t s = static_cast<size_t>(slot);
  if (!has_rings_.at(s)) return 0;
  const StateLayout& L = layout();
  return L.context_columns == 0 ? std::numeric_limits<int64_t>::max() : context_held_[s] * L.page_tokens;
}

}  // namespace dsv4
