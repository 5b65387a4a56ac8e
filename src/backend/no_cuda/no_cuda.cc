// The CUDA entry points of a CPU-only build (DSV4_CUDA=OFF; compiled only then, instead of src/backend/cuda/,
// the stream-capture backend and the CUDA executor). No device exists: device_count() is 0 and
// unavailable_reason() says why, which is what the CLI and the engine check before using one
// ("--device cuda: dsv4 was built without CUDA ..."); anything that still reaches a device operation fails
// with kCudaError naming it.
#include <memory>
#include <string>

#include "dsv4/backend/cuda_device.h"
#include "dsv4/core/status.h"
#include "dsv4/graph/capture_backend.h"
#include "runtime/executor.h"

namespace dsv4 {
namespace {

constexpr const char* kNoCuda = "dsv4 was built without CUDA (configured with DSV4_CUDA=OFF or without nvcc)";

[[noreturn]] void no_cuda(const char* what) { fail(StatusCode::kCudaError, what, ": ", kNoCuda); }

}  // namespace

namespace cuda {

int device_count() { return 0; }
std::string device_summary() { return kNoCuda; }
std::string unavailable_reason() { return kNoCuda; }
void copy_to_device(void*, const void*, size_t) { no_cuda("copy to device"); }
void copy_to_host(void*, const void*, size_t) { no_cuda("copy to host"); }
void copy_to_device_async(void*, const void*, size_t, void*) { no_cuda("copy to device"); }
double measure_copy_bandwidth(size_t, int) { no_cuda("copy bandwidth"); }
void synchronize_device() { no_cuda("device synchronisation"); }
void and_bytes(void*, size_t, unsigned char) { no_cuda("device memory"); }
void memory_info(size_t*, size_t*) { no_cuda("device memory information"); }

}  // namespace cuda

namespace graph {

CaptureBackend& cuda_capture_backend() { no_cuda("CUDA graph capture"); }

}  // namespace graph

std::unique_ptr<Executor> make_cuda_executor(const ExecutorSetup&) { no_cuda("--device cuda"); }

}  // namespace dsv4
