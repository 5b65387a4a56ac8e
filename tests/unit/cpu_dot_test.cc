// The CPU backend's dot products (backend/cpu/dot.h): every path this CPU runs gives the portable path's bits, a
// product's bits do not depend on the block it is computed in, and the sum is the exact one to fp32 rounding.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/blas.h"
#include "backend/cpu/dot.h"

namespace dsv4::cpu {
namespace {

std::vector<float> random_values(size_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof(float)) == 0; }

// NAME's value in the environment the process started with (/proc/self/environ; "" if absent or unreadable).
std::string initial_environment(const std::string& name) {
  std::ifstream f("/proc/self/environ", std::ios::binary);
  std::string entry;
  while (std::getline(f, entry, '\0')) {
    if (entry.compare(0, name.size() + 1, name + "=") == 0) return entry.substr(name.size() + 1);
  }
  return "";
}

TEST(CpuDot, EveryPathGivesThePortableBitsInEveryBlockShape) {
  std::mt19937 rng(7);
  std::printf("dot path on this CPU: %s\n", dot_path());
  int paths_run = 0;
  for (const int64_t n : {0, 1, 7, 31, 32, 33, 64, 100, 192, 256, 1000}) {
    for (const int64_t T : {1, 2, 3, 4, 7}) {
      for (const int64_t R : {1, 3, 4, 5, 9}) {
        // Leading dimensions wider than n, so a block that read past its row would pick up the padding.
        const int64_t ldx = n + 5, ldw = n + 3, ldy = R + 2;
        const std::vector<float> X = random_values(static_cast<size_t>(T * ldx), rng);
        const std::vector<float> W = random_values(static_cast<size_t>(R * ldw), rng);
        std::vector<float> want(static_cast<size_t>(T * ldy), -7.0f);
        ASSERT_TRUE(dot_rows_on("portable", T, R, n, X.data(), ldx, W.data(), ldw, want.data(), ldy));
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t r = 0; r < R; ++r) {
            double exact = 0;
            for (int64_t i = 0; i < n; ++i) exact += static_cast<double>(X[t * ldx + i]) * W[r * ldw + i];
            const float got = want[t * ldy + r];
            EXPECT_NEAR(got, exact, 1e-5 * (1 + std::sqrt(static_cast<double>(n)))) << "n " << n;
            // dot() alone: the same bits as inside any block.
            EXPECT_TRUE(same_bits(dot(X.data() + t * ldx, W.data() + r * ldw, n), got)) << "n " << n;
          }
          for (int64_t r = R; r < ldy; ++r) EXPECT_EQ(want[t * ldy + r], -7.0f) << "wrote past R";
        }
        for (const char* path : {"avx512", "avx2"}) {
          std::vector<float> got(want.size(), -7.0f);
          if (!dot_rows_on(path, T, R, n, X.data(), ldx, W.data(), ldw, got.data(), ldy)) continue;
          ++paths_run;
          for (size_t i = 0; i < got.size(); ++i) {
            ASSERT_TRUE(same_bits(got[i], want[i])) << path << " n " << n << " T " << T << " R " << R << " element "
                                                    << i << ": " << got[i] << " vs " << want[i];
          }
        }
        std::vector<float> best(want.size(), -7.0f);
        dot_rows(T, R, n, X.data(), ldx, W.data(), ldw, best.data(), ldy);
        for (size_t i = 0; i < best.size(); ++i) ASSERT_TRUE(same_bits(best[i], want[i]));
      }
    }
  }
  if (paths_run == 0) std::printf("no vector path on this CPU: the portable path alone was checked\n");
  EXPECT_FALSE(dot_rows_on("sse9", 1, 1, 1, nullptr, 1, nullptr, 1, nullptr, 1));
}

// OpenBLAS 0.3.21 falls back to its SSE3 (Prescott) kernels on CPUs it does not know; blas.cc names the family
// the CPU's features allow before OpenBLAS initialises, and takes the variable back out of the environment.
TEST(CpuBlas, RunsTheKernelsTheCpuAllows) {
  std::printf("OpenBLAS kernels: %s\n", blas_core());
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    EXPECT_STRNE(blas_core(), "Prescott");
    EXPECT_STRNE(blas_core(), "Core2");
  }
#endif
  float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, w[8] = {1, 1, 1, 1, 1, 1, 1, 1}, y = 0;
  gemm_nt(1, 1, 8, x, 8, w, 8, &y, 1);
  EXPECT_EQ(y, 36.0f);
  // The variable dsv4 sets for OpenBLAS is removed again; one the process started with (the user's) stays as it was.
  const std::string initial = initial_environment("OPENBLAS_CORETYPE");
  const char* now = std::getenv("OPENBLAS_CORETYPE");
  if (initial.empty()) {
    EXPECT_EQ(now, nullptr) << "left in the environment";
  } else {
    EXPECT_STREQ(now, initial.c_str()) << "the user's OPENBLAS_CORETYPE changed";
  }
}

// OpenBLAS's OpenMP build sets OpenMP's thread count with its own: the first product once left every later
// OpenMP loop of the process on one thread (and --threads without effect). A product split over the threads (by
// weight rows) gives the bits of the same product on one thread.
TEST(CpuBlas, KeepsTheThreadCountAndSplitsProductsWithTheSameBits) {
  const int before = omp_get_max_threads();
  set_threads(3);
  std::mt19937 rng(7);
  const int64_t M = 64, N = 1000, K = 300;  // N not a multiple of the split's alignment
  ASSERT_GT(M * N * K, kGemmSplitWork);
  const std::vector<float> x = random_values(M * K, rng), w = random_values(N * K, rng);
  std::vector<float> split(M * N), one(M * N);
  gemm_nt(M, N, K, x.data(), K, w.data(), K, split.data(), N);
  EXPECT_EQ(omp_get_max_threads(), 3);
  {
    const OmpThreadsScope single(1);
    EXPECT_EQ(omp_get_max_threads(), 1);
    gemm_nt(M, N, K, x.data(), K, w.data(), K, one.data(), N);
  }
  EXPECT_EQ(omp_get_max_threads(), 3);
  if (blas_split_keeps_bits()) {
    for (int64_t i = 0; i < M * N; ++i) ASSERT_TRUE(same_bits(split[i], one[i])) << "element " << i;
  } else {  // OpenBLAS's Haswell kernels round by partition (blas.h): the same product up to rounding
    std::printf("OpenBLAS kernels %s: split products are compared to rounding, not bits\n", blas_core());
    for (int64_t i = 0; i < M * N; ++i) {
      ASSERT_NEAR(split[i], one[i], 1e-5f * std::max(1.0f, std::fabs(one[i]))) << "element " << i;
    }
  }
  int threads_seen = 0;
#pragma omp parallel
  {
#pragma omp atomic
    ++threads_seen;
  }
  EXPECT_EQ(threads_seen, 3);
  set_threads(before);
}

}  // namespace
}  // namespace dsv4::cpu
