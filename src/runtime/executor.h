// Executor: runs one step's forwards on the engine's device. The engine's single step loop (scheduler.cc)
// builds a batch (BatchBuilder: per-token metadata + logit rows) and hands it here; padding to graph buckets,
// graph replay and device buffers are the executor's business. Outputs stay on the device: only what the
// caller asks for comes back to the host (sampled tokens, or logits / residuals for callers that need them).
//
// CpuExecutor runs the model inline on host memory; CudaExecutor (DeviceForward) replays captured CUDA graphs
// over persistent device buffers and samples on the device.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "dsv4/model/deepseek_v4.h"
#include "dsv4/runtime/batch.h"
#include "dsv4/runtime/engine.h"

namespace dsv4 {

class Executor {
 public:
  virtual ~Executor() = default;

  // One target forward. `logits` (if non-null) receives the logit rows' logits [R, V] and `residual` (if
  // non-null) every row's pre-hc_head residual [T, n*H], both f32 on the host. uniform_decode: every sequence
  // contributes the same number of tokens (decode, verification) — the full-graph entries on CUDA.
  virtual void forward(BatchBuilder& batch, bool uniform_decode, std::vector<float>* logits,
                       std::vector<float>* residual) = 0;
  // Whether forward_tokens() can draw tokens on the device (else callers sample host logits).
  virtual bool samples_on_device() const { return false; }
  // One target forward whose logit rows' next tokens are drawn on the device with per-row `params`; only the
  // R tokens come back.
  virtual void forward_tokens(BatchBuilder& batch, bool uniform_decode,
                              const std::vector<ops::TokenSamplingParams>& params, std::vector<int32_t>* tokens);
  // forward_tokens in two halves, so the host can queue the next decode step before this one's tokens are back (at
  // most two in flight, finished in order). ids_from_previous: the batch's ids are the tokens the previous started
  // forward sampled (row i -> token i), taken on the device.
  virtual int start_tokens(BatchBuilder& batch, bool uniform_decode, const std::vector<ops::TokenSamplingParams>& params,
                           bool ids_from_previous);
  virtual void finish_tokens(int ticket, std::vector<int32_t>* tokens);
  // One MTP drafter forward: `hidden` [T, n*H] host residual rows in; draft logits [R, V] and the new residual
  // [T, n*H] out (host, f32).
  virtual void drafter(BatchBuilder& batch, const std::vector<float>& hidden, std::vector<float>* logits,
                       std::vector<float>* hidden_out) = 0;

  // CUDA reporting (empty / 0 on the CPU).
  virtual size_t device_bytes() const { return 0; }
  virtual std::string graph_summary() const { return ""; }
  virtual double capture_seconds() const { return 0; }
  virtual int64_t graph_bytes() const { return 0; }
  virtual std::vector<GraphEntryInfo> graph_entries() const { return {}; }
  virtual double time_decode_replays(int64_t num_tokens, int reps) { return 0; }
};

struct ExecutorSetup {
  const ModelConfig* cfg = nullptr;
  const ModelWeights* weights = nullptr;
  ModelState* state = nullptr;
  ExecContext* ctx = nullptr;  // device, scratch arena; the CUDA executor sets its stream and cuBLASLt handle
  int64_t max_tokens = 0, max_rows = 0;
  // CUDA graphs.
  std::string cudagraph_mode, capture_sizes, architecture;
  bool enforce_eager = false;
  int64_t spec_tokens = 0;
};

std::unique_ptr<Executor> make_cpu_executor(const ExecutorSetup& setup);
// Defined in device_forward.cc: creates the stream and device buffers and captures the graphs.
std::unique_ptr<Executor> make_cuda_executor(const ExecutorSetup& setup);

}  // namespace dsv4
