// ExecContext: where an op runs — the device, its stream, scratch memory and backend handles.
//
// Every op in dsv4::ops takes an ExecContext first and dispatches on ctx.device. The context is
// created once per engine (per stream) and reused across steps; nothing in it is allocated during a
// forward, so forwards can be captured into CUDA graphs.
#pragma once

#include <functional>

#include "dsv4/core/arena.h"

namespace dsv4 {

namespace cuda {
struct BlasHandle;  // cuBLASLt handle + fixed workspace (backend/cuda/blas.h)
}
class Communicator;  // parallel/communicator.h

struct ExecContext {
  Device device = Device::kCPU;
  void* stream = nullptr;            // cudaStream_t on CUDA (nullptr = legacy default stream)
  Arena* scratch = nullptr;          // per-forward scratch on `device`, reset by the caller each step
  cuda::BlasHandle* blas = nullptr;  // set for CUDA contexts
  // Installed by the graph runtime while a breakable capture is open (graph/): runs `fn` as an eager
  // region between captured segments, and again at every replay. Unset: regions run inline.
  std::function<void(const char* name, std::function<void()> fn)> eager_region_hook;
  // The measuring pass (core/arena.h): ops validate their arguments and take their scratch from a counting
  // arena, but launch and compute nothing (on CUDA the backend runs with kernel launches suppressed, so its own
  // scratch allocations are counted too).
  bool measuring = false;
  // This rank's communicator in a multi-rank run (parallel/partition.h: the model sums sharded sublayers'
  // outputs through it); nullptr for a single rank.
  Communicator* comm = nullptr;
  // Set by the model (quantized_linears) around the products whose input rows it has just put through
  // DeepSeek's act_quant round trip (--activation-quant fp8: E4M3 per 128 values at a power-of-two scale): every
  // value of x is then an FP8 code times its block's scale, so the CUDA backend may multiply FP8 codes by the FP8
  // weights (block-scaled FP8 GEMMs) without changing a value.
  bool fp8_input_rows = false;

  bool is_cuda() const { return device == Device::kCUDA; }
};

// Marks work that depends on per-step metadata (DESIGN §2): in a breakable graph it runs eagerly between
// captured segments; elsewhere (eager, full graphs, CPU) inline. The callable runs again at every replay:
// it captures tensors by value, long-lived objects by reference, allocates nothing and only enqueues work
// on ctx.stream.
inline void eager_region(ExecContext& ctx, const char* name, std::function<void()> fn) {
  if (ctx.eager_region_hook) {
    ctx.eager_region_hook(name, std::move(fn));
  } else {
    fn();
  }
}

}  // namespace dsv4
