#include "backend/cpu/blas.h"

#include <cblas.h>
#include <omp.h>

#include <climits>
#include <cstdlib>

#include "dsv4/core/status.h"

namespace dsv4::cpu {
namespace {

bool g_named_openblas_core = false;

// OpenBLAS 0.3.21 (Debian 12) does not know Sapphire / Emerald Rapids and falls back to its Prescott (SSE3)
// kernels there: a 155-token prefill of the default model took 70 ms instead of 44 (bench/RESULTS.md). It reads
// OPENBLAS_CORETYPE in its own constructor; this one runs first (priority 101, sorted ahead by the linker) and names
// the kernels the CPU's features allow, unless the user named some. The variable is removed again at the first
// product, so nothing else in the process inherits it.
__attribute__((constructor(101))) void name_openblas_core() {
#if defined(__x86_64__)
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  const char* core = nullptr;
  if (avx512 && __builtin_cpu_supports("avx512bf16")) {
    core = "Cooperlake";
  } else if (avx512) {
    core = "SkylakeX";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    core = "Haswell";
  }
  if (core != nullptr) g_named_openblas_core = setenv("OPENBLAS_CORETYPE", core, 0) == 0;
#endif
}

}  // namespace

const char* blas_core() { return openblas_get_corename(); }

void gemm_nt(int64_t M, int64_t N, int64_t K, const float* X, int64_t ldx, const float* W, int64_t ldw, float* Y,
             int64_t ldy) {
  if (M == 0 || N == 0) return;
  // Every product runs on the calling thread: OpenBLAS splitting one over the OpenMP threads measured 9x slower
  // wall here (3.75 vs 0.40 s for a 512-token score on 2 loaded cores, bench/RESULTS.md). Set on first use, not
  // at load time (OpenBLAS initialises in its own constructor, which may run after ours).
  static const bool single = [] {
    openblas_set_num_threads(1);
    if (g_named_openblas_core) unsetenv("OPENBLAS_CORETYPE");
    return true;
  }();
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
