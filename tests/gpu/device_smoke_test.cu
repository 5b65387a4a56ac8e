#include <cuda_runtime.h>

#include <vector>

#include "backend/cuda/cuda_check.h"
#include "gpu_test_util.h"

namespace {

__global__ void add_one(float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += 1.0f;
}

TEST(CudaDevice, KernelRunsOnTheDevice) {
  DSV4_REQUIRE_GPU();
  const int n = 1000;
  std::vector<float> h(n, 41.0f);
  float* d = nullptr;
  DSV4_CUDA_CHECK(cudaMalloc(&d, n * sizeof(float)));
  DSV4_CUDA_CHECK(cudaMemcpy(d, h.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  add_one<<<(n + 255) / 256, 256>>>(d, n);
  DSV4_CUDA_CHECK(cudaGetLastError());
  DSV4_CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost));
  DSV4_CUDA_CHECK(cudaFree(d));
  for (float v : h) ASSERT_EQ(v, 42.0f);
  std::printf("device: %s\n", dsv4::cuda::device_summary().c_str());
}

}  // namespace
