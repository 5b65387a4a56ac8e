// The CUDA stream-capture backend: cudaStreamBeginCapture (thread-local mode) / cudaStreamEndCapture /
// cudaGraphInstantiate + cudaGraphUpload, graph memory measured with cudaMemGetInfo.
#pragma once

#include <cuda_runtime_api.h>

#include "dsv4/graph/capture_backend.h"

namespace dsv4::graph {

class CudaCaptureBackend : public CaptureBackend {
 public:
  void begin_capture(void* stream) override;
  std::unique_ptr<ExecutableGraph> end_capture(void* stream) override;
  void abort_capture(void* stream) noexcept override;
  void synchronize(void* stream) override;
  size_t device_memory_used() override;

 protected:
  // Instantiates a captured, non-empty segment and uploads it to the device, so its device memory is
  // allocated (and measured) at capture rather than at the first replay. Virtual as a test seam: a test
  // overrides it to return cudaErrorMemoryAllocation and checks that the runner falls back to eager.
  virtual cudaError_t instantiate(cudaGraphExec_t* exec, cudaGraph_t graph, cudaStream_t stream);
};

}  // namespace dsv4::graph
