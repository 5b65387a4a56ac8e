// backend/cpu/cpu_ops.h's parallel_for: every index once, on the OpenMP threads above the work threshold, and an
// exception of a body rethrown on the calling thread (one leaving an OpenMP region would end the process).
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/parallel.h"

namespace dsv4::cpu {
namespace {

TEST(CpuParallelFor, RunsEveryIndexOnceSerialOrParallel) {
  for (int64_t work : {int64_t{0}, kParallelWork + 1}) {
    std::vector<std::atomic<int>> seen(1000);
    std::atomic<int> in_parallel{0};
    parallel_for(1000, work, [&](int64_t i) {
      ++seen[static_cast<size_t>(i)];
      if (omp_in_parallel()) ++in_parallel;
    });
    for (const auto& s : seen) ASSERT_EQ(s.load(), 1);
    if (work <= kParallelWork) {
      EXPECT_EQ(in_parallel.load(), 0) << "below the threshold the loop runs serially";
    } else if (omp_get_max_threads() > 1) {
      EXPECT_EQ(in_parallel.load(), 1000);
    }
  }
}

TEST(CpuParallelFor, RethrowsABodysExceptionOnTheCallingThread) {
  std::atomic<int> ran{0};
  EXPECT_THROW(parallel_for(64, kParallelWork + 1,
                            [&](int64_t i) {
                              ++ran;
                              if (i == 17) throw std::runtime_error("row 17 is in an unallocated page");
                            }),
               std::runtime_error);
  EXPECT_EQ(ran.load(), 64) << "the other iterations still run";
  try {
    parallel_for(8, 0, [](int64_t i) {
      if (i == 3) throw std::invalid_argument("three");
    });
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "three");
  }
}

}  // namespace
}  // namespace dsv4::cpu
