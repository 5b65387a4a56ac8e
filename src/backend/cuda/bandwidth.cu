// Copy bandwidth of the device as a kernel sees it: the divisor of the HBM floor (runtime/decode_traffic.h).
#include <algorithm>
#include <vector>

#include "backend/cuda/common.cuh"
#include "dsv4/backend/cuda_device.h"
#include "dsv4/core/buffer.h"

namespace dsv4::cuda {
namespace {

__global__ void copy_kernel(const int4* __restrict__ src, int4* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i] = src[i];
  }
}

}  // namespace

double measure_copy_bandwidth(size_t bytes, int reps) {
  bytes = bytes / sizeof(int4) * sizeof(int4);
  Buffer src(bytes, Device::kCUDA), dst(bytes, Device::kCUDA);
  DSV4_CUDA_CHECK(cudaMemset(src.data(), 1, bytes));  // never time on untouched memory
  const int sms = multiprocessor_count();
  const int64_t n = static_cast<int64_t>(bytes / sizeof(int4));
  const dim3 grid(static_cast<unsigned>(sms * 8)), block(512);
  cudaEvent_t start, stop;
  DSV4_CUDA_CHECK(cudaEventCreate(&start));
  DSV4_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int r = -1; r < reps; ++r) {
    DSV4_CUDA_CHECK(cudaEventRecord(start));
    copy_kernel<<<grid, block>>>(static_cast<const int4*>(src.data()), static_cast<int4*>(dst.data()), n);
    DSV4_CUDA_CHECK(cudaGetLastError());
    DSV4_CUDA_CHECK(cudaEventRecord(stop));
    DSV4_CUDA_CHECK(cudaEventSynchronize(stop));
    float t = 0;
    DSV4_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
    if (r >= 0) ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return 2.0 * static_cast<double>(bytes) / (ms[ms.size() / 2] * 1e-3);
}

}  // namespace dsv4::cuda
