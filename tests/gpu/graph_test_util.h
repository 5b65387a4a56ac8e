// Host helpers shared by the graph library's GPU tests (breakable_graph_test.cu, graph_runner_test.cu).
#pragma once

#include <cuda_runtime.h>

#include <vector>

#include "backend/cuda/cuda_check.h"

namespace dsv4::graph::gpu_test {

template <typename T>
T read_scalar(cudaStream_t s, const T* device) {
  T value{};
  DSV4_CUDA_CHECK(cudaMemcpyAsync(&value, device, sizeof(T), cudaMemcpyDeviceToHost, s));
  DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
  return value;
}
template <typename T>
void write_scalar(cudaStream_t s, T* device, T value) {
  DSV4_CUDA_CHECK(cudaMemcpyAsync(device, &value, sizeof(T), cudaMemcpyHostToDevice, s));
  DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
}
template <typename T>
std::vector<T> read_vector(cudaStream_t s, const T* device, size_t n) {
  std::vector<T> out(n);
  DSV4_CUDA_CHECK(cudaMemcpyAsync(out.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost, s));
  DSV4_CUDA_CHECK(cudaStreamSynchronize(s));
  return out;
}

inline size_t device_memory_used() {
  size_t free_bytes = 0, total_bytes = 0;
  DSV4_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return total_bytes - free_bytes;
}

// A non-blocking stream: graphs cannot be captured on the legacy default stream.
class TestStream {
 public:
  TestStream() { DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~TestStream() { cudaStreamDestroy(stream_); }
  TestStream(const TestStream&) = delete;
  TestStream& operator=(const TestStream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

}  // namespace dsv4::graph::gpu_test
