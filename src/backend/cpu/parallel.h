// The CPU backend's parallel loop over rows (OpenMP). Its own header: the CPU sources are compiled with OpenMP,
// the CUDA tests that include cpu_ops.h for their references are not.
#pragma once

#include <cstdint>
#include <exception>

#include "backend/cpu/blas.h"
#include "backend/cpu/cpu_ops.h"

namespace dsv4::cpu {

// body(i) for i < n, on the OpenMP threads when `work` (multiply-adds, or the like) exceeds kParallelWork. An
// exception may not leave an OpenMP region (the process would terminate): the first one a body throws is rethrown
// here, on the calling thread, once the loop is done.
template <class Body>
void parallel_for(int64_t n, int64_t work, Body&& body) {
  std::exception_ptr error;
  const bool blas_off = !blas_enabled();  // the caller's (a thread_local): its workers keep it
#pragma omp parallel for schedule(dynamic) if (work > kParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    try {
      const BlasOffScope caller_blas(blas_off);
      body(i);
    } catch (...) {
#pragma omp critical(dsv4_cpu_parallel_for)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace dsv4::cpu
