// BatchBuilder's per-token layout (the scheduler's chunks are added from views of the sequences' tokens) and the
// page table's copy runs (model/row_runs.h, ModelState::sync_table's merging on CUDA).
#include "dsv4/runtime/batch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "model/row_runs.h"

namespace dsv4 {
namespace {

using IVec = std::vector<int32_t>;

IVec values(const Tensor& t) { return IVec(t.ptr<int32_t>(), t.ptr<int32_t>() + t.numel()); }

TEST(BatchBuilder, ChunksLayOutEveryPerTokenField) {
  const IVec prompt = {7, 8, 9, 10, 11};
  BatchBuilder b;
  b.reserve(3);                                                         // less than the batch: only capacity
  b.add(4, 12, std::span<const int32_t>(prompt).subspan(1, 3), false);  // a chunk of a longer sequence
  b.add({2, 30, {5}, false});                                           // a decode token
  b.add(1, 0, std::span<const int32_t>(prompt).first(2), true);
  b.pad_to(9);
  EXPECT_EQ(b.num_tokens(), 9);
  EXPECT_EQ(b.ids(), (IVec{8, 9, 10, 5, 7, 8, 0, 0, 0}));
  EXPECT_EQ(b.positions(), (IVec{12, 13, 14, 30, 0, 1, 0, 0, 0}));
  BatchMeta m = b.meta();
  EXPECT_EQ(values(m.slot), (IVec{4, 4, 4, 2, 1, 1, -1, -1, -1}));
  EXPECT_EQ(values(m.start), (IVec{12, 12, 12, 30, 0, 0, 0, 0, 0}));
  EXPECT_EQ(values(m.end), (IVec{15, 15, 15, 31, 2, 2, 0, 0, 0}));
  EXPECT_EQ(values(b.logit_rows()), (IVec{2, 3, 4, 5}));  // each chunk's last row; every row of the all_logits one
  EXPECT_EQ(b.chunk_first_logit_row(), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(b.chunk_token_count(0), 3);
  EXPECT_EQ(b.chunk_token_count(2), 2);
  // The packed step plan carries the same arrays.
  const IVec packed = b.pack();
  BatchBuilder u = BatchBuilder::unpack(packed.data(), packed.size());
  EXPECT_EQ(u.ids(), b.ids());
  EXPECT_EQ(u.positions(), b.positions());
  EXPECT_EQ(values(u.meta().end), values(m.end));
  EXPECT_EQ(values(u.logit_rows()), values(b.logit_rows()));
}

TEST(BatchBuilder, RefusesEmptyChunksAndNegativeSlots) {
  BatchBuilder b;
  const IVec one = {3};
  EXPECT_THROW(b.add(0, 0, std::span<const int32_t>(), false), Error);
  EXPECT_THROW(b.add(-1, 0, one, false), Error);
  EXPECT_THROW(b.add(0, -2, one, false), Error);
  EXPECT_EQ(b.num_tokens(), 0);
  EXPECT_EQ(b.num_logit_rows(), 0);
}

TEST(PageTableSync, RowRunsMergeAcrossSmallGaps) {
  using Runs = std::vector<std::pair<int64_t, int64_t>>;
  const std::vector<int64_t> rows = {0, 1, 2, 5, 9, 10, 30};
  EXPECT_EQ(row_runs(rows, 0), (Runs{{0, 2}, {5, 5}, {9, 10}, {30, 30}}));  // adjacent rows only
  EXPECT_EQ(row_runs(rows, 2), (Runs{{0, 5}, {9, 10}, {30, 30}}));          // 3 rows between 5 and 9: apart
  EXPECT_EQ(row_runs(rows, 3), (Runs{{0, 10}, {30, 30}}));
  EXPECT_EQ(row_runs(rows, 100), (Runs{{0, 30}}));
  EXPECT_TRUE(row_runs({}, 4).empty());
  // Every marked row is inside exactly one run, and runs are ordered and disjoint.
  std::vector<int64_t> many(40);
  std::iota(many.begin(), many.end(), 0);
  for (int64_t& r : many) r = r * r % 97;
  std::sort(many.begin(), many.end());
  many.erase(std::unique(many.begin(), many.end()), many.end());
  for (int64_t gap : {0, 1, 4, 1000}) {
    const Runs runs = row_runs(many, gap);
    for (size_t i = 1; i < runs.size(); ++i) EXPECT_GT(runs[i].first - runs[i - 1].second - 1, gap);
    for (int64_t r : many) {
      EXPECT_EQ(std::count_if(runs.begin(), runs.end(), [&](const auto& x) { return x.first <= r && r <= x.second; }),
                1);
    }
  }
}

}  // namespace
}  // namespace dsv4
