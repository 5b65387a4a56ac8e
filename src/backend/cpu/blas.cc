#include "backend/cpu/blas.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>

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

bool blas_split_keeps_bits() {
  const char* core = blas_core();
  return core != nullptr && (std::strcmp(core, "SkylakeX") == 0 || std::strcmp(core, "Cooperlake") == 0);
}

void gemm_nt(int64_t M, int64_t N, int64_t K, const float* X, int64_t ldx, const float* W, int64_t ldw, float* Y,
             int64_t ldy) {
  if (M == 0 || N == 0) return;
  // OpenBLAS's own split of a product over the OpenMP threads measured 9x slower wall (3.75 vs 0.40 s for a
  // 512-token score on 2 loaded cores, bench/RESULTS.md): every call runs single-threaded, and large products are
  // split here instead, by weight rows, one sgemm per thread. openblas_set_num_threads also sets OpenMP's thread
  // count (OpenBLAS's OpenMP build): the process's is put back, or every later OpenMP loop ran on one thread.
  // Set on first use, not at load time (OpenBLAS initialises in its own constructor, which may run after ours).
  static const bool single = [] {
    const int omp_threads = omp_get_max_threads();
    openblas_set_num_threads(1);
    omp_set_num_threads(omp_threads);
    if (g_named_openblas_core) unsetenv("OPENBLAS_CORETYPE");
    return true;
  }();
  (void)single;
  // OpenBLAS takes 32-bit sizes (blasint): larger products are the caller's to split.
  for (int64_t v : {M, N, K, ldx, ldw, ldy}) {
    DSV4_CHECK_ARG(v >= 0 && v <= INT_MAX, "gemm_nt: size ", v, " exceeds OpenBLAS's 32-bit sizes");
  }
  auto sgemm = [&](int64_t n0, int64_t n) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(M), static_cast<blasint>(n),
                static_cast<blasint>(K), 1.0f, X, static_cast<blasint>(ldx), W + n0 * ldw, static_cast<blasint>(ldw),
                0.0f, Y + n0, static_cast<blasint>(ldy));
  };
  // Inside a parallel region OpenBLAS runs on the calling thread by itself; outside one it would take
  // omp_get_max_threads(), so a product that does not split here runs with a count of one.
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads == 1 || M * N * K <= kGemmSplitWork || N < 2 * kGemmSplitAlign) {
    const OmpThreadsScope one(1);
    sgemm(0, N);
    return;
  }
  const int64_t share = (N + threads - 1) / threads;
  const int64_t step = (share + kGemmSplitAlign - 1) / kGemmSplitAlign * kGemmSplitAlign;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t n0 = 0; n0 < N; n0 += step) sgemm(n0, std::min(step, N - n0));
}

OmpThreadsScope::OmpThreadsScope(int threads) : previous_(omp_get_max_threads()) {
  if (threads != previous_) omp_set_num_threads(threads);
}
OmpThreadsScope::~OmpThreadsScope() {
  if (omp_get_max_threads() != previous_) omp_set_num_threads(previous_);
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
