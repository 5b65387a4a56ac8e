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
#include "dsv4/model/forward_memory.h"
#include "dsv4/parallel/partition.h"
#include "dsv4/runtime/batch.h"
#include "dsv4/runtime/engine.h"
#include "runtime/spec_step.h"

namespace dsv4 {

class Executor {
 public:
  virtual ~Executor() = default;

  // One target forward. `logits` (if non-null) receives the logit rows' logits [R, V] and `residual` (if
  // non-null) every row's pre-hc_head residual [T, n*H], both f32 on the host. uniform_decode: every sequence
  // contributes the same number of tokens (decode, verification) — the full-graph entries on CUDA.
  virtual void forward(BatchBuilder& batch, bool uniform_decode, std::vector<float>* logits,
                       std::vector<float>* residual) = 0;
  // forward() (not uniform_decode, no residual) with the logit rows' logits written to `logits` [R, V] (host f32)
  // instead of a vector: the CPU's LM head writes them there; other executors copy. For outputs that are slices
  // of a larger buffer (a long score's chunks).
  virtual void forward_into(BatchBuilder& batch, float* logits);
  // Whether forward_tokens() can draw tokens on the device (else callers sample host logits).
  virtual bool samples_on_device() const { return false; }
  // One target forward whose logit rows' next tokens are drawn on the device with per-row `params`; only the
  // R tokens come back.
  virtual void forward_tokens(BatchBuilder& batch, bool uniform_decode,
                              const std::vector<ops::TokenSamplingParams>& params, std::vector<int32_t>* tokens);
  // forward_tokens in two halves, so the host can queue the next decode step before this one's tokens are back (at
  // most two in flight, finished in order). ids_from_previous: the batch's ids are the tokens the previous started
  // forward sampled (row i -> token i), taken on the device.
  virtual int start_tokens(BatchBuilder& batch, bool uniform_decode,
                           const std::vector<ops::TokenSamplingParams>& params, bool ids_from_previous);
  virtual void finish_tokens(int ticket, std::vector<int32_t>* tokens);
  // One MTP drafter forward: `hidden` [T, n*H] host residual rows in; draft logits [R, V] and the new residual
  // [T, n*H] out (host, f32).
  virtual void drafter(BatchBuilder& batch, const std::vector<float>& hidden, std::vector<float>* logits,
                       std::vector<float>* hidden_out) = 0;

  // ---- speculative decoding (runtime/spec_step.h, docs/speculative.md) ----
  // The prefill step of speculative mode: one target forward over `batch` (prompt chunks), its logit rows' tokens
  // drawn with `params` (device sampling's semantics on both executors), then the drafter over the same rows —
  // drafter_ids[t] is the token after row t's position, a placeholder where it is not known yet (that position's
  // drafter state is rewritten by the next step 0) — and the target residual of every row t with carry_slot[t] >= 0
  // kept as that slot's carry row 0. tokens: the R drawn tokens; logits (if non-null): the target's [R, V].
  virtual void spec_prefill(BatchBuilder& batch, const std::vector<int32_t>& drafter_ids,
                            const std::vector<int32_t>& carry_slot, const std::vector<ops::TokenSamplingParams>& params,
                            std::vector<int32_t>* tokens, std::vector<float>* logits) = 0;
  // One speculative step of K drafts over `seqs` (at most spec_max_seqs(K)): the drafter's K steps, the verification
  // and the acceptance. tokens [b (K + 1)]: per sequence the accepted drafts, the next token, then -1; counts [b]:
  // tokens emitted (accepted + 1); verify_logits (if non-null): the target's [b (K + 1), V] rows.
  virtual void spec_step(const std::vector<SpecSeq>& seqs, int64_t K, std::vector<int32_t>* tokens,
                         std::vector<int32_t>* counts, std::vector<float>* verify_logits) = 0;
  // The most sequences one spec_step of K drafts takes.
  virtual int64_t spec_max_seqs(int64_t K) const = 0;
  // The largest forward size <= num_tokens whose forward replays a captured graph; num_tokens where its own does or
  // where nothing is captured (the CPU). The scheduler trims prompt steps to it under DSV4_PROMPT_STEP_GRAPHS.
  virtual int64_t replayed_tokens_at_most(int64_t num_tokens) const { return num_tokens; }

  // Multi-rank executors: the engine filled its state pool with fill_random(seed); the other ranks fill theirs the
  // same way (benchmarks at a long context without a prefill). Nothing to do for one rank.
  virtual void fill_follower_states(uint64_t /*seed*/) {}

  // CUDA reporting (empty / 0 on the CPU).
  virtual size_t device_bytes() const { return 0; }
  virtual std::string graph_summary() const { return ""; }
  virtual double capture_seconds() const { return 0; }
  virtual int64_t graph_bytes() const { return 0; }
  virtual std::vector<GraphEntryInfo> graph_entries() const { return {}; }
  virtual double time_decode_replays(int64_t num_tokens, int reps) { return 0; }
  // Device ms of one drafter forward of `num_tokens` tokens replayed back to back on the last drafter inputs (0 on
  // the CPU), and of one whole speculative step (both graphs) of `batch` sequences and K drafts replayed on the
  // last step's inputs.
  virtual double time_drafter_replays(int64_t num_tokens, int reps) { return 0; }
  virtual double time_spec_replays(int64_t batch, int64_t K, int reps) { return 0; }
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
  int64_t max_spec_tokens = 0;             // Kmax: carry rows per slot = Kmax + 1
  int64_t max_seqs = 0;                    // slots
  std::vector<int64_t> spec_graph_tokens;  // draft lengths K whose speculative steps are captured as graphs
};

std::unique_ptr<Executor> make_cpu_executor(const ExecutorSetup& setup);
// Defined in parallel_executor.cc: `parallel.tensor_parallel_size` ranks in this process (threads), rank 0 on the
// caller's thread with `leader`'s state (the scheduler's), the others with their own state of `model_opt` and
// activation arenas sized for `shape`; the weights in `leader` (full, CPU) are sharded per rank and must outlive it.
std::unique_ptr<Executor> make_parallel_cpu_executor(const ExecutorSetup& leader, const ParallelConfig& parallel,
                                                     const ModelOptions& model_opt, const ForwardShape& shape);
// Defined in device_forward.cc: creates the stream and device buffers and captures the graphs.
std::unique_ptr<Executor> make_cuda_executor(const ExecutorSetup& setup);

}  // namespace dsv4
