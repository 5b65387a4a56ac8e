// Checking CUDA runtime calls: every call's status is checked, and launches check cudaGetLastError.
#pragma once

#include <cuda_runtime_api.h>

#include "dsv4/core/status.h"

namespace dsv4::cuda {

inline Status cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::ok();
  return {err == cudaErrorMemoryAllocation ? StatusCode::kOutOfMemory : StatusCode::kCudaError,
          str_cat(what, ": ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ")")};
}

}  // namespace dsv4::cuda

// Returns a Status from the enclosing function when a CUDA call fails (for launchers).
#define DSV4_CUDA_RETURN_IF_ERROR(expr)                                       \
  do {                                                                        \
    const cudaError_t dsv4_err_ = (expr);                                     \
    if (dsv4_err_ != cudaSuccess) return ::dsv4::cuda::cuda_status(dsv4_err_, #expr); \
  } while (0)

// Throws dsv4::Error when a CUDA call fails (for engine code).
#define DSV4_CUDA_CHECK(expr)                                                            \
  do {                                                                                   \
    const cudaError_t dsv4_err_ = (expr);                                                \
    if (dsv4_err_ != cudaSuccess) ::dsv4::throw_if_error(::dsv4::cuda::cuda_status(dsv4_err_, #expr)); \
  } while (0)
