#include "dsv4/graph/cuda_capture_backend.h"

#include "backend/cuda/cuda_check.h"
#include "dsv4/core/status.h"

namespace dsv4::graph {
namespace {

cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

class CudaExecutableGraph final : public ExecutableGraph {
 public:
  CudaExecutableGraph(cudaGraphExec_t exec, size_t num_nodes) : exec_(exec), num_nodes_(num_nodes) {}
  ~CudaExecutableGraph() override { cudaGraphExecDestroy(exec_); }
  CudaExecutableGraph(const CudaExecutableGraph&) = delete;
  CudaExecutableGraph& operator=(const CudaExecutableGraph&) = delete;

  void launch(void* stream) override { DSV4_CUDA_CHECK(cudaGraphLaunch(exec_, as_stream(stream))); }
  size_t num_nodes() const override { return num_nodes_; }

 private:
  cudaGraphExec_t exec_;
  size_t num_nodes_;
};

// Converts a failed call into dsv4::Error after clearing the error state it leaves behind, so that one
// failed capture does not make the next, unrelated CUDA call report it again.
[[noreturn]] void throw_cuda(cudaError_t err, const char* what) {
  cudaGetLastError();
  throw_if_error(cuda::cuda_status(err, what));
  fail(StatusCode::kInternal, "unreachable");
}

}  // namespace

void CudaCaptureBackend::begin_capture(void* stream) {
  // A legacy-default-stream capture is invalid and would serialise with every other stream.
  DSV4_CHECK_ARG(stream != nullptr, "CUDA graph capture needs a non-default stream");
  // Thread-local mode: only this thread is barred from capture-unsafe calls (cudaMalloc, synchronous
  // copies) while the capture is open; other threads of the process keep working.
  DSV4_CUDA_CHECK(cudaStreamBeginCapture(as_stream(stream), cudaStreamCaptureModeThreadLocal));
}

std::unique_ptr<ExecutableGraph> CudaCaptureBackend::end_capture(void* stream) {
  cudaGraph_t graph = nullptr;
  const cudaError_t end_err = cudaStreamEndCapture(as_stream(stream), &graph);
  if (end_err != cudaSuccess) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    throw_cuda(end_err, "cudaStreamEndCapture");
  }
  size_t num_nodes = 0;
  const cudaError_t count_err = cudaGraphGetNodes(graph, nullptr, &num_nodes);
  if (count_err != cudaSuccess || num_nodes == 0) {
    cudaGraphDestroy(graph);
    if (count_err != cudaSuccess) throw_cuda(count_err, "cudaGraphGetNodes");
    return nullptr;  // an empty segment (two breaks in a row, or a break first/last)
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t inst_err = instantiate(&exec, graph, as_stream(stream));
  cudaGraphDestroy(graph);  // the executable graph does not need its template
  if (inst_err != cudaSuccess) {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    throw_cuda(inst_err, "cudaGraphInstantiate");
  }
  return std::make_unique<CudaExecutableGraph>(exec, num_nodes);
}

cudaError_t CudaCaptureBackend::instantiate(cudaGraphExec_t* exec, cudaGraph_t graph, cudaStream_t stream) {
  cudaError_t err = cudaGraphInstantiate(exec, graph, 0);
  if (err == cudaSuccess) err = cudaGraphUpload(*exec, stream);
  return err;
}

void CudaCaptureBackend::abort_capture(void* stream) noexcept {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(as_stream(stream), &status) == cudaSuccess &&
      status != cudaStreamCaptureStatusNone) {
    cudaGraph_t graph = nullptr;
    cudaStreamEndCapture(as_stream(stream), &graph);  // fails for an invalidated capture; graph stays null
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
  cudaGetLastError();
}

void CudaCaptureBackend::synchronize(void* stream) {
  DSV4_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream)));
}

size_t CudaCaptureBackend::device_memory_used() {
  size_t free_bytes = 0, total_bytes = 0;
  DSV4_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return total_bytes - free_bytes;
}

CaptureBackend& cuda_capture_backend() {
  static CudaCaptureBackend backend;
  return backend;
}

}  // namespace dsv4::graph
