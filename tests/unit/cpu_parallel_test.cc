// backend/cpu/cpu_ops.h's parallel_for: every index once, on the OpenMP threads above the work threshold, and an
// exception of a body rethrown on the calling thread (one leaving an OpenMP region would end the process).
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "backend/cpu/blas.h"
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

// The in-process ranks turn sgemm off on their threads (BlasOffScope, a thread_local) so that replicated work gives
// every rank the same bits; the loop's workers must keep the caller's setting. They once did not: with 4 OpenMP
// threads per rank the experts' products on the workers went to sgemm and the ranks' logits differed
// (ShardedModel.*; CI's 2 cores give each rank one thread, so the loop here asks for 4).
TEST(CpuParallelFor, WorkersKeepTheCallersBlasSetting) {
  const OmpThreadsScope four(4);
  for (bool off : {true, false}) {
    const BlasOffScope scope(off);
    std::atomic<int> blas_on{0}, in_parallel{0};
    parallel_for(256, kParallelWork + 1, [&](int64_t) {
      blas_on += blas_enabled();
      in_parallel += omp_in_parallel();
    });
    EXPECT_EQ(blas_on.load(), off ? 0 : 256) << (off ? "sgemm off" : "sgemm on");
    EXPECT_EQ(in_parallel.load(), 256);
    EXPECT_EQ(blas_enabled(), !off) << "the caller's setting survives the loop";
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
