// Graph-replayed kernel timing shared by the kernel labs (bench_mtp_norm, bench_gemv).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <functional>
#include <vector>

#include "backend/cuda/cuda_check.h"

namespace dsv4::bench {

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
