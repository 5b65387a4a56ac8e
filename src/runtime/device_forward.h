// DeviceForward: what the engine needs to run forwards on a CUDA device — its stream, the cuBLASLt
// handle and workspace, persistent device buffers at fixed addresses for the per-step inputs (BatchMeta,
// logit rows, the drafter's input residual) and outputs (logits, residual), and the CUDA-graph runners
// of the target and the drafter that replay captured forwards over those buffers.
//
// A step copies the host batch in (async, pinned staging), runs the target (or drafter) runner — a graph
// replay padded to a capture size, or an eager forward — and copies the outputs back (the logits, or only
// the tokens sampled on the device). Nothing is allocated per step.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dsv4/model/deepseek_v4.h"
#include "dsv4/runtime/batch.h"
#include "dsv4/runtime/engine.h"
#include "runtime/executor.h"

namespace dsv4 {

struct GraphSetup {
  std::string cudagraph_mode;  // --cudagraph-mode ("" = not given)
  bool enforce_eager = false;
  std::string capture_sizes;  // explicit list ("" = default)
  int64_t spec_tokens = 0;    // target sizes are rounded to multiples of 1 + K
  std::string architecture;
  // Speculative decoding: carry rows per slot (Kmax + 1) for max_seqs slots, and the draft lengths whose steps are
  // captured (one drafter entry and one verification entry per batch bucket and K).
  int64_t max_spec_tokens = 0, max_seqs = 0;
  std::vector<int64_t> spec_graph_tokens;
};

class DeviceForward {
 public:
  // Sets ctx.stream and ctx.blas (owned here; ctx must not outlive this object).
  DeviceForward(const ModelConfig& cfg, const ModelState& state, int64_t max_tokens, int64_t max_rows,
                ExecContext& ctx);
  ~DeviceForward();
  DeviceForward(const DeviceForward&) = delete;
  DeviceForward& operator=(const DeviceForward&) = delete;

  // Resolves the graph policy (flag > DSV4_USE_BREAKABLE_CUDAGRAPH > architecture), builds the target and
  // drafter runners on one shared pool (the engine's activation arena) and captures every entry inside the
  // start-up capture window. The model, weights and state must outlive this object.
  void setup_graphs(const GraphSetup& setup, ExecContext& ctx, const ModelConfig& cfg, const ModelWeights& w,
                    ModelState& state);

  // One target forward: logits [R, V] (and, if residual != nullptr, the residual [T, n*H] as f32) on the host.
  void forward(ExecContext& ctx, BatchBuilder& batch, std::vector<float>* logits, std::vector<float>* residual,
               bool uniform_decode);

  // One target forward that samples on the device (ops::sample_tokens after the forward, on the same
  // stream): tokens[r] for logit row r drawn with params[r]; only the R int32 tokens are copied back.
  // For callers that need no logits (plain decode, a prefill's last rows); speculative verification needs
  // the full distributions and uses forward().
  void forward_tokens(ExecContext& ctx, BatchBuilder& batch, const std::vector<ops::TokenSamplingParams>& params,
                      std::vector<int32_t>* tokens, bool uniform_decode);

  // forward_tokens in two halves, so that the host can queue the next decode step before this one's tokens
  // are back (at most two in flight; finish them in order): start_tokens enqueues the upload, the forward, the
  // sampling and the copy back, and returns a ticket; finish_tokens waits for it and returns the tokens.
  // ids_from_previous: the batch's token ids are replaced on the device by the tokens the previous started
  // forward sampled (row i → token i), so the batch must have exactly that forward's logit-row count; its
  // host ids are placeholders. forward() and mtp_forward() must not run while a ticket is unfinished.
  int start_tokens(ExecContext& ctx, BatchBuilder& batch, const std::vector<ops::TokenSamplingParams>& params,
                   bool uniform_decode, bool ids_from_previous);
  void finish_tokens(int ticket, std::vector<int32_t>* tokens);

  // One MTP drafter forward (model/mtp.h): `hidden` [T, n*H] host residual rows in, draft logits [R, V] and
  // the new residual [T, n*H] out (host, f32).
  void mtp_forward(ExecContext& ctx, BatchBuilder& batch, const std::vector<float>& hidden, std::vector<float>* logits,
                   std::vector<float>* hidden_out);

  // Speculative decoding on the device (Executor::spec_prefill / spec_step; runtime/spec_step.h).
  void spec_prefill(ExecContext& ctx, BatchBuilder& batch, const std::vector<int32_t>& drafter_ids,
                    const std::vector<int32_t>& carry_slot, const std::vector<ops::TokenSamplingParams>& params,
                    std::vector<int32_t>* tokens, std::vector<float>* logits);
  void spec_step(ExecContext& ctx, const std::vector<SpecSeq>& seqs, int64_t K, std::vector<int32_t>* tokens,
                 std::vector<int32_t>* counts, std::vector<float>* verify_logits);
  int64_t spec_max_seqs(int64_t K) const;
  // Executor::replayed_tokens_at_most: from the target runner's captured entries.
  int64_t replayed_tokens_at_most(int64_t num_tokens) const;
  // Device ms of one drafter forward of num_tokens tokens (the drafter's last inputs), and of one speculative step
  // of `batch` sequences and K drafts (both graphs, the last step's inputs), replayed back to back.
  double time_drafter_replays(int64_t num_tokens, int reps);
  double time_spec_replays(int64_t batch, int64_t K, int reps);

  size_t device_bytes() const;  // persistent input/output buffers + cuBLASLt workspace
  std::string graph_summary() const;
  double capture_seconds() const;
  int64_t graph_bytes() const;
  std::vector<GraphEntryInfo> graph_entries() const;
  // Device time of one target forward of `num_tokens` uniform-decode tokens, replayed back to back with
  // the metadata of the last uploaded batch (no host work in between): ms, median of 5 runs of `reps`.
  double time_decode_replays(int64_t num_tokens, int reps);

 private:
  bool run_target(BatchBuilder& batch, bool uniform_decode, bool ids_on_device);
  double time_replays(int reps, const std::function<void()>& step);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv4
