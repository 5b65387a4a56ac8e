// Runs of marked rows for the page table's host-to-device sync (ModelState::sync_table): one copy per run instead of
// one per row. Header-only so the CPU tests check the merging the CUDA path uses.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace dsv4 {

// [first, last] row ranges covering `sorted_rows` (ascending, no duplicates), merging two neighbours when at most
// `max_gap` unmarked rows lie between them.
inline std::vector<std::pair<int64_t, int64_t>> row_runs(std::span<const int64_t> sorted_rows, int64_t max_gap) {
  std::vector<std::pair<int64_t, int64_t>> runs;
  for (int64_t r : sorted_rows) {
    if (!runs.empty() && r - runs.back().second - 1 <= max_gap) {
      runs.back().second = r;
    } else {
      runs.emplace_back(r, r);
    }
  }
  return runs;
}

}  // namespace dsv4
