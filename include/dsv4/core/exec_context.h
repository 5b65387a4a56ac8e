// ExecContext: where an op runs — the device, its stream, scratch memory and backend handles.
//
// Every op in dsv4::ops takes an ExecContext first and dispatches on ctx.device. The context is
// created once per engine (per stream) and reused across steps; nothing in it is allocated during a
// forward, so forwards can be captured into CUDA graphs.
#pragma once

#include "dsv4/core/arena.h"

namespace dsv4 {

namespace cuda {
struct BlasHandle;  // cuBLASLt handle + fixed workspace (backend/cuda/blas.h)
}

struct ExecContext {
  Device device = Device::kCPU;
  void* stream = nullptr;         // cudaStream_t on CUDA (nullptr = legacy default stream)
  Arena* scratch = nullptr;       // per-forward scratch on `device`, reset by the caller each step
  cuda::BlasHandle* blas = nullptr;  // set for CUDA contexts

  bool is_cuda() const { return device == Device::kCUDA; }
};

}  // namespace dsv4
