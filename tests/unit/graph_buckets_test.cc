#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "dsv4/core/status.h"
#include "dsv4/graph/buckets.h"

namespace dsv4::graph {
namespace {

CaptureSizes make(std::vector<int> sizes, int max_size = -1, int k = 0) {
  return CaptureSizes(CaptureSizeOptions{std::move(sizes), max_size, k});
}

TEST(CaptureSizes, DefaultIsOneTwoFourEightThenEveryEightTo256) {
  const CaptureSizes sizes = make({});
  std::vector<int> want = {1, 2, 4};
  for (int s = 8; s <= 256; s += 8) want.push_back(s);
  EXPECT_EQ(sizes.sizes(), want);
  EXPECT_EQ(sizes.sizes().size(), 35u);
  EXPECT_EQ(sizes.max_size(), 256);
  EXPECT_EQ(CaptureSizes::default_sizes(), want);
}

TEST(CaptureSizes, MaxSizeTruncatesTheDefaultList) {
  EXPECT_EQ(make({}, 64).sizes().back(), 64);
  EXPECT_EQ(make({}, 100).max_size(), 96);  // as vLLM: the largest listed size <= max
  EXPECT_EQ(make({}, 3).sizes(), (std::vector<int>{1, 2}));
  EXPECT_TRUE(make({}, 0).empty());  // 0: capture nothing
  EXPECT_EQ(make({}, 0).pad_to_bucket(1), std::nullopt);
}

TEST(CaptureSizes, ExplicitListIsSortedAndDeduplicated) {
  EXPECT_EQ(make({8, 1, 4, 4, 32}).sizes(), (std::vector<int>{1, 4, 8, 32}));
  EXPECT_EQ(make(parse_capture_sizes("16,2,2")).sizes(), (std::vector<int>{2, 16}));
}

TEST(CaptureSizes, SpeculationRoundsUpToMultiplesOfOnePlusK) {
  const CaptureSizes k2 = make({}, -1, 2);
  for (int s : k2.sizes()) EXPECT_EQ(s % 3, 0) << s;
  // 1, 2 -> 3; 4 -> 6; 8 -> 9; 16 -> 18; 24 -> 24; ...; 256 -> 258.
  EXPECT_EQ(std::vector<int>(k2.sizes().begin(), k2.sizes().begin() + 6),
            (std::vector<int>{3, 6, 9, 18, 24, 33}));
  EXPECT_EQ(k2.max_size(), 258);
  EXPECT_EQ(k2.sizes().size(), 34u);  // 1 and 2 merged into 3
  EXPECT_TRUE(std::is_sorted(k2.sizes().begin(), k2.sizes().end()));

  EXPECT_EQ(make({1, 2, 3, 4}, -1, 1).sizes(), (std::vector<int>{2, 4}));
  EXPECT_EQ(make({5}, -1, 3).sizes(), (std::vector<int>{8}));
}

TEST(CaptureSizes, PadToBucket) {
  const CaptureSizes sizes = make({});
  EXPECT_EQ(sizes.pad_to_bucket(1), 1);
  EXPECT_EQ(sizes.pad_to_bucket(3), 4);
  EXPECT_EQ(sizes.pad_to_bucket(5), 8);
  EXPECT_EQ(sizes.pad_to_bucket(9), 16);
  EXPECT_EQ(sizes.pad_to_bucket(255), 256);
  EXPECT_EQ(sizes.pad_to_bucket(256), 256);
  EXPECT_EQ(sizes.pad_to_bucket(257), std::nullopt);  // eager above the largest
  for (int n = 1; n <= 256; ++n) {
    const int s = *sizes.pad_to_bucket(n);
    EXPECT_GE(s, n);
    EXPECT_LT(s - n, n <= 8 ? 4 : 8) << n;  // smallest size >= n
  }
  const CaptureSizes k2 = make({}, -1, 2);
  EXPECT_EQ(k2.pad_to_bucket(1), 3);
  EXPECT_EQ(k2.pad_to_bucket(7), 9);
  EXPECT_EQ(k2.pad_to_bucket(258), 258);
  EXPECT_EQ(k2.pad_to_bucket(259), std::nullopt);
  EXPECT_THROW(sizes.pad_to_bucket(-1), Error);
}

TEST(CaptureSizes, InvalidOptionsAreErrors) {
  EXPECT_THROW(make({0}), Error);
  EXPECT_THROW(make({-4}), Error);
  EXPECT_THROW(make({CaptureSizes::kLimit + 1}), Error);
  EXPECT_THROW(make({}, CaptureSizes::kLimit + 1), Error);
  EXPECT_THROW(make({}, -1, -1), Error);
  EXPECT_THROW(make({1, 2}, 64), Error);  // list and max together are ambiguous
}

TEST(CaptureSizes, ParseFlagValue) {
  EXPECT_EQ(parse_capture_sizes("1,2,4"), (std::vector<int>{1, 2, 4}));
  EXPECT_EQ(parse_capture_sizes("512"), (std::vector<int>{512}));
  for (const char* bad : {"", "1,,2", "1,a", "1.5", " 1", "1,", "0x10"}) {
    EXPECT_THROW(parse_capture_sizes(bad), Error) << "'" << bad << "'";
  }
}

}  // namespace
}  // namespace dsv4::graph
