#include "dsv4/backend/cuda_device.h"

#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_check.h"
#include "dsv4/core/status.h"

namespace dsv4::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string unavailable_reason() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return str_cat("no CUDA device available (", cudaGetErrorString(err), ")");
  }
  if (n == 0) return "no CUDA device available";
  return "";
}

std::string device_summary() {
  const std::string why = unavailable_reason();
  if (!why.empty()) return why;
  int dev = 0;
  cudaGetDevice(&dev);
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, dev) != cudaSuccess) return "CUDA device (properties unavailable)";
  // Maximum clocks as the driver reports them (the current clocks need NVML; benchmarks warm up instead).
  int sm_khz = 0, mem_khz = 0;
  cudaDeviceGetAttribute(&sm_khz, cudaDevAttrClockRate, dev);
  cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, dev);
  return str_cat(prop.name, " (sm_", prop.major, prop.minor, ", ", prop.multiProcessorCount, " SMs, ",
                 static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024 * 1024), " GiB, max SM clock ",
                 sm_khz / 1000, " MHz, memory clock ", mem_khz / 1000, " MHz)");
}

// cudaMemcpy from pageable memory may return before its DMA lands, and it orders only with the legacy
// default stream: the engine's forward runs on a non-blocking stream. Synchronising the device makes both
// copies complete with respect to every stream, which is what their callers (weight upload, state setup,
// tests) assume.
void copy_to_device(void* dst, const void* src, size_t bytes) {
  DSV4_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
}

void memory_info(size_t* free_bytes, size_t* total_bytes) {
  DSV4_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

void copy_to_device_async(void* dst, const void* src, size_t bytes, void* stream) {
  DSV4_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)));
}

void copy_to_host(void* dst, const void* src, size_t bytes) {
  DSV4_CUDA_CHECK(cudaDeviceSynchronize());
  DSV4_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}

void synchronize_device() { DSV4_CUDA_CHECK(cudaDeviceSynchronize()); }

}  // namespace dsv4::cuda
