// CaptureBackend: the stream-capture primitives BreakableGraph and GraphRunner are built on.
//
// The CUDA implementation (cuda_capture_backend.h) is what the engine uses. The interface exists so the
// segment, dispatch and capture-window rules can be tested on a CPU-only CI machine with a host emulation
// of stream capture, and so tests can inject capture failures (e.g. out of memory while instantiating).
// Streams are opaque pointers (cudaStream_t for CUDA), as in ExecContext.
#pragma once

#include <cstddef>
#include <memory>

namespace dsv4::graph {

// One instantiated graph segment.
class ExecutableGraph {
 public:
  virtual ~ExecutableGraph() = default;
  virtual void launch(void* stream) = 0;  // enqueue one replay on `stream`
  virtual size_t num_nodes() const = 0;
};

class CaptureBackend {
 public:
  virtual ~CaptureBackend() = default;

  // Starts recording the work this thread enqueues on `stream` (thread-local capture mode).
  virtual void begin_capture(void* stream) = 0;
  // Stops recording and instantiates what was recorded. Returns nullptr when nothing was recorded (an empty
  // segment is not instantiated). Throws dsv4::Error (kOutOfMemory, kCudaError) when ending or
  // instantiating fails; the capture is closed and its graph released either way.
  virtual std::unique_ptr<ExecutableGraph> end_capture(void* stream) = 0;
  // Closes an open capture on `stream` and discards it (error paths); clears any error it leaves behind.
  virtual void abort_capture(void* stream) noexcept = 0;
  virtual void synchronize(void* stream) = 0;
  // Device memory in use (total - free), for graph-memory accounting by difference. Measured outside
  // captures only.
  virtual size_t device_memory_used() = 0;
};

// The process-wide CUDA backend (the default of GraphPool).
CaptureBackend& cuda_capture_backend();

}  // namespace dsv4::graph
