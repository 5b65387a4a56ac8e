// Shared by the kernel labs (bench_rms_norm, bench_gemv): device buffers, random bf16 operands, list
// arguments and graph-replayed timing.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "dsv4/core/dtype.h"

namespace dsv4::bench {

// "1,4,16" -> {1, 4, 16}
inline std::vector<int64_t> parse_list(const char* s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoll(item));
  return out;
}

struct DeviceAlloc {
  void* ptr = nullptr;
  explicit DeviceAlloc(size_t bytes) { DSV4_CUDA_CHECK(cudaMalloc(&ptr, std::max<size_t>(bytes, 256))); }
  ~DeviceAlloc() { cudaFree(ptr); }
  DeviceAlloc(const DeviceAlloc&) = delete;
  DeviceAlloc& operator=(const DeviceAlloc&) = delete;
};

// Random bf16 in [-range, range) written on the host once (a 4M-element pattern, repeated) and copied:
// never time on zeros.
inline void fill_random_bf16(void* dst, size_t elems, uint32_t seed, float range) {
  std::vector<uint16_t> host(std::min<size_t>(elems, size_t{1} << 22));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-range, range);
  for (auto& h : host) h = float_to_bf16(u(rng));
  for (size_t off = 0; off < elems; off += host.size()) {
    const size_t n = std::min(host.size(), elems - off);
    DSV4_CUDA_CHECK(cudaMemcpy(static_cast<uint16_t*>(dst) + off, host.data(), n * 2, cudaMemcpyHostToDevice));
  }
}

// Median seconds per launch: `launch(i)` is captured `per_graph` times (i = 0..per_graph-1) into one graph,
// the graph is replayed `replays` times, and each replay's time is divided by per_graph. Two launches outside
// the graph warm up first (module load, cuBLASLt plans, caches).
inline double time_graph(const std::function<void(int, cudaStream_t)>& launch, cudaStream_t stream, int per_graph,
                         int replays = 15) {
  for (int i = 0; i < 2; ++i) launch(i, stream);
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  DSV4_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < per_graph; ++i) launch(i, stream);
  DSV4_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  DSV4_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  DSV4_CUDA_CHECK(cudaGraphLaunch(exec, stream));  // warm replay
  cudaEvent_t start, stop;
  DSV4_CUDA_CHECK(cudaEventCreate(&start));
  DSV4_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> times;
  for (int r = 0; r < replays; ++r) {
    DSV4_CUDA_CHECK(cudaEventRecord(start, stream));
    DSV4_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    DSV4_CUDA_CHECK(cudaEventRecord(stop, stream));
    DSV4_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.f;
    DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms * 1e-3 / per_graph);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace dsv4::bench
