// PagePool: hands out the state pool's pages (model/state.h) to sequences and keeps their page tables.
//
// A sequence (a page-table row, "slot") holds its ring pages from its first allocation until release, and one
// context page per page_tokens positions it has reached. Allocation is all-or-nothing: ensure() either gives the
// slot every page it needs or changes nothing (the scheduler then preempts). Freed pages are reused at once; no
// page is ever cleared — every state row is written before it is read (position-indexed state).
#pragma once

#include <cstdint>
#include <vector>

#include "dsv4/model/state.h"

namespace dsv4 {

class PagePool {
 public:
  explicit PagePool(ModelState& state);

  int64_t total_pages() const { return static_cast<int64_t>(owner_.size()); }
  int64_t free_pages() const { return static_cast<int64_t>(free_.size()); }
  int64_t used_pages() const { return total_pages() - free_pages(); }
  const StateLayout& layout() const { return state_.layout(); }

  // Pages `slot` still needs to hold positions [0, tokens) (tokens <= the layout's capacity).
  int64_t missing_pages(int32_t slot, int64_t tokens) const;
  // Gives `slot` the pages for positions [0, tokens); false (and nothing allocated) when the pool is short.
  bool ensure(int32_t slot, int64_t tokens);
  // Returns every page of `slot` to the pool.
  void release(int32_t slot);
  // Tokens `slot` can hold with its current pages.
  int64_t capacity(int32_t slot) const;

 private:
  ModelState& state_;
  std::vector<int32_t> free_;          // free page ids (a stack: the most recently freed first)
  std::vector<int32_t> owner_;         // slot owning each page, -1 = free
  std::vector<int64_t> context_held_;  // context pages held per slot
  std::vector<char> has_rings_;        // per slot
};

}  // namespace dsv4
