#include "backend/cpu/blas.h"

#include <cblas.h>
#include <omp.h>

#include <climits>

#include "dsv4/core/status.h"

namespace dsv4::cpu {
void gemm_nt(int64_t M, int64_t N, int64_t K, const float* X, int64_t ldx, const float* W, int64_t ldw, float* Y,
             int64_t ldy) {
  if (M == 0 || N == 0) return;
  // Every product runs on the calling thread: OpenBLAS splitting one over the OpenMP threads measured 9x slower
  // wall here (3.75 vs 0.40 s for a 512-token score on 2 loaded cores, bench/RESULTS.md). Set on first use, not
  // at load time (OpenBLAS initialises in its own constructor, which may run after ours).
  static const bool single = (openblas_set_num_threads(1), true);
  (void)single;
  // OpenBLAS takes 32-bit sizes (blasint): larger products are the caller's to split.
  for (int64_t v : {M, N, K, ldx, ldw, ldy}) {
    DSV4_CHECK_ARG(v >= 0 && v <= INT_MAX, "gemm_nt: size ", v, " exceeds OpenBLAS's 32-bit sizes");
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(M), static_cast<blasint>(N),
              static_cast<blasint>(K), 1.0f, X, static_cast<blasint>(ldx), W, static_cast<blasint>(ldw), 0.0f, Y,
              static_cast<blasint>(ldy));
}

namespace {
thread_local bool g_blas_off = false;
}  // namespace

bool blas_enabled() { return !g_blas_off; }
BlasOffScope::BlasOffScope(bool off) : previous_(g_blas_off) { g_blas_off = g_blas_off || off; }
BlasOffScope::~BlasOffScope() { g_blas_off = previous_; }

void set_threads(int n) {
  DSV4_CHECK_ARG(n >= 1, "threads must be >= 1, got ", n);
  omp_set_num_threads(n);
}

}  // namespace dsv4::cpu
