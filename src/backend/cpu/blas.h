// Matrix products of the CPU backend through OpenBLAS (Debian's libopenblas, linked statically into libdsv4 and
// kept private to it, so that a host process with its own BLAS, torch for one, is not affected).
//
// Products of at least kBlasMinRows rows (prefill, large batches) go to sgemm: several times faster there than the
// backend's dot-product loops (bench/RESULTS.md, issue 20). Fewer rows (decode steps, batches of up to 15
// sequences, speculative verification) stay on the loops (dot_rows), which read each weight row once for all of
// them. One thread, the default model's shapes (this machine, 2026-12-05): 0.42-0.79x sgemm's time at 8 rows (1.6x
// only at N = 64, K = 1024), 0.71-0.99x at 16, 1.0-1.4x from 24; a b = 8 CPU decode 7% faster than with the old
// threshold of 8. The two differ in summation order only (fp32 rounding, ~1e-7 relative, far inside the parity
// bounds against transformers); OpenBLAS picks its kernels by the row count, so a row's last bits may depend on how
// many rows share its product, while dot_rows gives a row the same bits whatever the row count.
#pragma once

#include <cstdint>

#include "dsv4/backend/cpu.h"  // set_threads

namespace dsv4::cpu {

constexpr int64_t kBlasMinRows = 16;
// Products of more multiply-adds are split by weight rows (multiples of kGemmSplitAlign) over the OpenMP threads,
// one single-threaded sgemm each: ~40 us of work and up (a fork/join with sleeping threads costs ~100 us).
constexpr int64_t kGemmSplitWork = int64_t{1} << 22;
constexpr int64_t kGemmSplitAlign = 64;

// Whether products on this thread may go to sgemm (else the loops). The in-process ranks of parallel/ turn it off
// (BlasOffScope): the work they replicate must give every rank the same bits, and OpenBLAS's may differ between
// ranks whose partitioned shapes differ.
bool blas_enabled();
class BlasOffScope {
 public:
  explicit BlasOffScope(bool off);
  ~BlasOffScope();
  BlasOffScope(const BlasOffScope&) = delete;
  BlasOffScope& operator=(const BlasOffScope&) = delete;

 private:
  bool previous_;
};

// The calling thread's OpenMP thread count for the scope (an OpenMP "ICV": other threads keep theirs).
class OmpThreadsScope {
 public:
  explicit OmpThreadsScope(int threads);
  ~OmpThreadsScope();
  OmpThreadsScope(const OmpThreadsScope&) = delete;
  OmpThreadsScope& operator=(const OmpThreadsScope&) = delete;

 private:
  int previous_;
};

// The kernel family OpenBLAS runs here ("Cooperlake", "SkylakeX", "Haswell", ...), for logs and benchmarks.
const char* blas_core();
// Whether gemm_nt's split (by weight rows, multiples of kGemmSplitAlign) gives the bits of one sgemm over the whole
// product: true for the SkylakeX / Cooperlake kernels, which dsv4 names on AVX-512 CPUs. OpenBLAS's Haswell kernels
// (an AVX2-only CPU, or a user's OPENBLAS_CORETYPE=Haswell, which dsv4 leaves as set) give bits that depend on how
// the product is partitioned, so there a split product differs from one sgemm in the last bits (measured with
// OpenBLAS 0.3.21: no alignment of the split avoids it) and results move by rounding with --threads.
bool blas_split_keeps_bits();

// Y[m, :N] = X[m, :K] · W[n, :K]^T for m < M, n < N: rows of X, W and Y lie ldx, ldw and ldy floats apart.
void gemm_nt(int64_t M, int64_t N, int64_t K, const float* X, int64_t ldx, const float* W, int64_t ldw, float* Y,
             int64_t ldy);

}  // namespace dsv4::cpu
