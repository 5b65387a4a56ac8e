// Engine: a loaded model on one device with its per-sequence state, running scoring and generation.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dsv4/model/deepseek_v4.h"
#include "dsv4/runtime/batch.h"
#include "dsv4/runtime/sampler.h"

namespace dsv4 {

struct EngineOptions {
  Device device = Device::kCPU;
  int64_t max_seqs = 8;            // sequences resident at once (state slots)
  int64_t max_seq_len = 0;         // positions per sequence; 0 = min(max_position_embeddings, 4096)
  int64_t max_batch_tokens = 512;  // tokens per forward (longer prompts are prefilled in chunks)
  int64_t max_spec_tokens = 7;     // largest --spec-tokens the state is sized for
  bool load_mtp = true;
  // CUDA: BF16 weights and activations (the default) or F32 throughout (full precision, for parity checks).
  DType cuda_precision = DType::BF16;
  // CUDA graphs (docs/graphs.md): --cudagraph-mode none|breakable|full|auto ("" = not given, i.e. auto),
  // --enforce-eager, explicit capture sizes ("" = default 1, 2, 4, 8, 16, ... 256), and the draft length
  // the target's sizes are rounded for (multiples of 1 + K).
  std::string cudagraph_mode;
  bool enforce_eager = false;
  std::string capture_sizes;
  int64_t graph_spec_tokens = 0;
};

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  SamplingParams sampling;
  int64_t spec_tokens = 0;  // MTP draft tokens per step (0 = off)
  bool stop_at_eos = true;
  // Called for every emitted token, in order per sequence.
  std::function<void(size_t seq, int32_t token)> on_token;
  // Called with the host logits [R, V] of every target forward (tests: bit-identity across graph modes).
  std::function<void(const std::vector<float>& logits)> on_target_logits;
};

struct GenerateStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  int64_t forward_calls = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;
  // Speculative decoding (spec_tokens > 0).
  int64_t draft_steps = 0;      // verification steps
  int64_t drafted_tokens = 0;   // draft tokens proposed
  int64_t accepted_tokens = 0;  // draft tokens accepted
  double acceptance_rate() const { return drafted_tokens ? double(accepted_tokens) / drafted_tokens : 0.0; }
  // Tokens emitted per verification step (accepted drafts + the recovered/bonus token).
  double mean_accepted_length() const {
    return draft_steps ? double(accepted_tokens + draft_steps) / draft_steps : 0.0;
  }
  double decode_tokens_per_second() const;
};

struct GenerateResult {
  std::vector<std::vector<int32_t>> tokens;  // generated tokens per prompt (prompt excluded)
  GenerateStats stats;
};

// One captured CUDA-graph entry (CUDA engines; see docs/graphs.md).
struct GraphEntryInfo {
  std::string runner;  // "target" or "drafter"
  int tokens = 0;      // padded token count (capture size)
  bool uniform_decode = false;
  std::string mode;  // "breakable" or "full"
  bool captured = false;
  int graphs = 0, eager_regions = 0;
};

class DeviceForward;  // CUDA stream, cuBLASLt and persistent device I/O buffers (src/runtime/device_forward.h)

class Engine {
 public:
  Engine(const std::string& model_dir, const EngineOptions& options);
  // A model without a checkpoint (synthetic benchmarks): `weights` were built for `cfg` on options.device,
  // e.g. by random_weights() with the engine's precision.
  Engine(ModelConfig cfg, ModelWeights weights, const EngineOptions& options);
  ~Engine();

  const ModelConfig& config() const { return cfg_; }
  const ModelWeights& weights() const { return weights_; }
  const EngineOptions& options() const { return opt_; }
  bool has_mtp() const { return weights_.mtp.has_value(); }
  double load_seconds() const { return load_seconds_; }
  size_t state_bytes() const { return state_->bytes(); }
  size_t scratch_bytes() const { return scratch_.capacity(); }
  size_t weights_bytes() const { return weights_.storage.capacity(); }
  // Device-only: persistent input/output buffers and the cuBLASLt workspace (0 on the CPU).
  size_t device_io_bytes() const;
  // CUDA graph capture summary (capture time, graph memory, entries); empty on the CPU.
  std::string graph_summary() const;
  double capture_seconds() const;
  int64_t graph_bytes() const;
  std::vector<GraphEntryInfo> graph_entries() const;
  // CUDA only: device ms of one decode forward of `batch` tokens (graph replay or eager launches, as the
  // policy runs it) repeated back to back on the last decode step's inputs — the step without host work.
  // Call right after a generate() whose last step decoded `batch` sequences. 0 on the CPU.
  double device_decode_step_ms(int64_t batch, int reps);
  int64_t max_seq_len() const { return model_opt_.max_seq_len; }

  // Teacher-forced logits of every position: [T, V] row-major.
  std::vector<float> score(const std::vector<int32_t>& ids);
  GenerateResult generate(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& options);

  // One forward of the target: logits for the batch's logit rows ([R, V] host, row-major). When
  // `residual` is non-null, the pre-hc_head residual of every row ([T, n*H]) is copied there too.
  // `uniform_decode`: every sequence contributes the same number of tokens (decode or verification), which
  // selects the full-graph entries on CUDA.
  void forward(BatchBuilder& batch, std::vector<float>* logits, std::vector<float>* residual = nullptr,
               bool uniform_decode = false);

  // One forward of the MTP drafter: `batch` holds the drafter's input tokens (the token after each
  // position), `hidden` the residual rows it continues from ([T, n*H] host). Writes the draft logits of
  // the batch's logit rows and the new residual of every row.
  void mtp_forward(BatchBuilder& batch, const std::vector<float>& hidden, std::vector<float>* logits,
                   std::vector<float>* hidden_out);

  // Throws kInvalidArgument naming the offending id when a token is outside the vocabulary.
  void check_ids(const std::vector<int32_t>& ids) const;

 private:
  ModelConfig cfg_;
  EngineOptions opt_;
  ModelOptions model_opt_;
  Checkpoint ckpt_;
  ModelWeights weights_;
  std::unique_ptr<ModelState> state_;
  Arena scratch_;
  ExecContext ctx_;
  std::unique_ptr<DeviceForward> device_;  // set when the device is CUDA
  double load_seconds_ = 0;

  void init(std::chrono::steady_clock::time_point t0);
  struct Sequence;
  void prefill(std::vector<Sequence>& seqs, const GenerateOptions& go, GenerateStats& stats, bool keep_residual);
  void decode_plain(std::vector<Sequence>& seqs, const GenerateOptions& go, GenerateStats& stats);
  void decode_on_device_pipelined(std::vector<Sequence>& seqs, const GenerateOptions& go, GenerateStats& stats);
  void decode_speculative(std::vector<Sequence>& seqs, const GenerateOptions& go, GenerateStats& stats);
  void draft_step0(std::vector<Sequence*>& active);
  void check_batch(BatchBuilder& batch) const;
};

}  // namespace dsv4
