// Engine: a loaded model on one device with its paged per-sequence state, an executor that runs forwards, and a
// scheduler with continuous batching (submit / step / cancel) that serves scoring, generation and servers.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dsv4/model/deepseek_v4.h"
#include "dsv4/parallel/partition.h"
#include "dsv4/runtime/batch.h"
#include "dsv4/runtime/request.h"
#include "dsv4/runtime/sampler.h"

namespace dsv4 {

// The most MTP draft tokens a step may take (--spec-tokens; the state is sized for max_spec_tokens of them).
constexpr int64_t kMaxSpecTokens = 16;

struct EngineOptions {
  Device device = Device::kCPU;
  int64_t max_seqs = 0;          // --max-num-seqs: sequences running at once; 0 = 256 on CUDA, 64 on the CPU
  int64_t max_model_len = 0;     // positions per sequence; 0 = max_position_embeddings
  int64_t max_batch_tokens = 0;  // tokens per forward (prompts are prefilled in chunks); 0 = 8192 CUDA, 512 CPU
  int64_t max_spec_tokens = 7;   // largest --spec-tokens the state is sized for
  // The state pool: --kv-cache-memory bytes, or (CUDA, when 0) --gpu-memory-utilization of the card's memory
  // minus what weights, activations and buffers hold; the CPU default is 2 GiB. page_tokens 0 = derived.
  int64_t kv_cache_memory = 0;
  double gpu_memory_utilization = 0.90;
  int64_t page_tokens = 0;
  bool load_mtp = true;
  // CUDA: BF16 weights and activations (the default) or F32 throughout (full precision, for parity checks).
  DType cuda_precision = DType::BF16;
  // --cuda-weights quantized: keep a quantised checkpoint's FP8 / FP4 matrices quantised in GPU memory
  // (LoadOptions::keep_quantized); false = dequantise them to cuda_precision at load (--cuda-weights bf16).
  bool cuda_quantized_weights = false;
  KvCacheDtype kv_cache_dtype = KvCacheDtype::kAuto;          // --kv-cache-dtype (model/state.h)
  ActivationQuant activation_quant = ActivationQuant::kNone;  // --activation-quant (model/state.h)
  // CUDA graphs (docs/graphs.md): --cudagraph-mode none|breakable|full|auto ("" = not given, i.e. auto),
  // --enforce-eager, explicit capture sizes ("" = default 1, 2, 4, 8, 16, ... 256), and the draft length
  // the target's sizes are rounded for (multiples of 1 + K).
  std::string cudagraph_mode;
  bool enforce_eager = false;
  std::string capture_sizes;
  int64_t graph_spec_tokens = 0;
  // Draft lengths K whose speculative steps are captured as graphs at start-up (one drafter entry and one
  // verification + acceptance entry per batch bucket and K); empty = {graph_spec_tokens} when that is > 0. Other
  // draft lengths run the same device path without graphs.
  std::vector<int64_t> spec_graph_tokens;
  // A step that carries prompt chunks is trimmed to the largest of these token counts that keeps all its decode
  // tokens (the rest of the chunks run in later steps). Empty: on CUDA with DSV4_PROMPT_STEP_GRAPHS=1 the sizes whose
  // forwards replay a captured graph (a prompt step of another size launches every kernel from the host), else none.
  std::vector<int64_t> prompt_step_sizes;
  // --tensor-parallel-size N [--expert-parallel]: N ranks (parallel/partition.h). On the CPU they are threads of this
  // process (the in-process communicator); rank 0 runs the scheduler, the others follow its step plans.
  ParallelConfig parallel;
};

// --cuda-weights: "bf16" (false: dequantise at load) or "quantized" (true: keep FP8 / FP4 matrices quantised).
bool parse_cuda_weights(const std::string& s);
// --cuda-weights quantized's checks, before any weight is read: --device cuda, --cuda-precision bf16, one rank
// (kUnsupported / kInvalidArgument naming the option); with a config, also a quantised checkpoint.
void check_cuda_weights(const EngineOptions& o);
void check_cuda_weights(const EngineOptions& o, const ModelConfig& cfg);
// --device cuda on a machine without a usable CUDA device: kUnsupported saying why and pointing at --device cpu (the
// engine checks it before anything touches the device; so does `bench` before it measures copy bandwidth).
void check_device_available(Device device);
// The positions a sequence may hold (prompt + generated) under these options: --max-model-len, else the model's
// max_position_embeddings (at most 2^30). The engine's own value; callers check prompts against it before loading.
int64_t max_model_len_for(const EngineOptions& o, const ModelConfig& cfg);

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  SamplingParams sampling;
  int64_t spec_tokens = 0;  // MTP draft tokens per step (0 = off)
  bool stop_at_eos = true;
  // Submit prompt i at scheduler step arrival_steps[i] (empty = all at once): tests of continuous batching.
  std::vector<int64_t> arrival_steps;
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
  double prefill_wait_seconds = 0;  // of prefill_seconds: the host waiting for the device
  int64_t prefill_steps = 0;        // scheduler steps that carried prompt chunks
  int64_t prompt_steps_fitted = 0;  // of them, trimmed to a prompt step size (EngineOptions::prompt_step_sizes)
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
  double total_seconds = 0;  // from the first submission to the last token
  int64_t preemptions = 0;   // sequences preempted (pages freed, recomputed later)
  int64_t steps = 0;         // scheduler steps
};

struct GenerateResult {
  std::vector<std::vector<int32_t>> tokens;  // generated tokens per prompt (prompt excluded)
  std::vector<double> latency_seconds;       // per prompt: submission to its last token
  std::vector<double> first_token_seconds;   // per prompt: submission to its first token
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

class Executor;  // runs forwards on the device (src/runtime/executor.h)
class PagePool;

// Throws kInvalidArgument naming the offending id (and its index) when a token is outside [0, vocab_size): the one
// check behind Engine::check_ids, which the CLI also runs on its prompts before a model loads.
void check_token_ids(const std::vector<int32_t>& ids, int64_t vocab_size);

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
  const StateLayout& state_layout() const { return state_->layout(); }
  int64_t pool_pages() const { return state_->num_pages(); }
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
  // CUDA only (0 on the CPU): device ms of one drafter forward of `tokens` tokens replayed on the drafter's last
  // inputs (call right after mtp_forward() of such a batch), and of one speculative step of `batch` sequences and K
  // drafts replayed on the last step's inputs (kInvalidArgument unless the engine's last speculative step had that
  // shape).
  double device_drafter_step_ms(int64_t tokens, int reps);
  double device_spec_step_ms(int64_t batch, int64_t K, int reps);
  int64_t max_model_len() const { return model_opt_.max_model_len; }
  int64_t max_num_seqs() const { return opt_.max_seqs; }
  int64_t max_batch_tokens() const { return opt_.max_batch_tokens; }

  // ---- the scheduler (continuous batching; runtime/request.h) ----
  // Queues a request; it joins the batch at the next step that has room. Throws kInvalidArgument (nothing
  // queued) for a request that can never run: empty prompt, ids outside the vocabulary, prompt + max_new_tokens
  // beyond max_model_len or beyond the whole state pool.
  RequestId submit(std::vector<int32_t> prompt, const RequestOptions& options, TokenCallback on_event);
  // Ends a request at the next step (its pages are freed; its callback gets a final kCancelled event).
  void cancel(RequestId id);
  // One scheduler step: one forward (or one speculative draft-verify round) over the running sequences' next
  // tokens and the waiting ones' prompt chunks. Returns false when there was nothing to do.
  bool step();
  bool idle() const;
  SchedulerStats scheduler_stats() const;
  // MTP draft tokens per step for the scheduler's decode steps (0 = off); only while idle.
  void set_spec_tokens(int64_t k);
  int64_t spec_tokens() const { return spec_tokens_; }

  // Teacher-forced logits of every position: [T, V] row-major.
  std::vector<float> score(const std::vector<int32_t>& ids);
  // The same into the caller's T x V floats (`logits`), which need no initialising: a 512-token score of the default
  // model writes 12.6 MB, which a std::vector would clear first (bench/RESULTS.md, issue 20).
  void score_into(const std::vector<int32_t>& ids, float* logits);
  // Runs the prompts through the scheduler (all submitted at once, or at options.arrival_steps) until done.
  GenerateResult generate(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& options);

  // Low-level forwards (tests, tools): the batch's slots get the pages their positions need on demand and keep
  // them (release_slot frees them); do not mix with a running scheduler.
  // One forward of the target: logits for the batch's logit rows ([R, V] host, row-major). When
  // `residual` is non-null, the pre-hc_head residual of every row ([T, n*H]) is copied there too.
  // `uniform_decode`: every sequence contributes the same number of tokens (decode or verification), which
  // selects the full-graph entries on CUDA.
  void forward(BatchBuilder& batch, std::vector<float>* logits, std::vector<float>* residual = nullptr,
               bool uniform_decode = false);
  // One forward of the target that gives the greedy token of each logit row instead of its logits: drawn on the
  // device where the executor samples there (the path generate's decode steps take: no logits copied to the host),
  // else argmax_token of the host logits. A row whose logits hold a NaN or an infinity gives -1 (the device's flag;
  // on the host, the same check). Benchmarks time a long-context decode step with it.
  std::vector<int32_t> forward_greedy(BatchBuilder& batch, bool uniform_decode = false);
  // `steps` greedy decode steps of `slot` from position `pos`, the first fed `first`, each next one the token the
  // step before drew — generate's decode as it runs: where the executor samples on the device, each step is queued
  // before the previous one's token is read back (its id taken on the device), else forward_greedy step by step.
  // Returns the `steps` tokens (-1 where a row's logits were not finite). Benchmarks time a long-context step with it.
  std::vector<int32_t> decode_greedy(int32_t slot, int64_t pos, int32_t first, int64_t steps);

  // One forward of the MTP drafter: `batch` holds the drafter's input tokens (the token after each
  // position), `hidden` the residual rows it continues from ([T, n*H] host). Writes the draft logits of
  // the batch's logit rows and the new residual of every row.
  void mtp_forward(BatchBuilder& batch, const std::vector<float>& hidden, std::vector<float>* logits,
                   std::vector<float>* hidden_out);

  void release_slot(int32_t slot);
  // Benchmarks: fills the whole state pool with random values (finite, unit scale), so that a decode at a long
  // context can be timed without prefilling it. The logits of such steps mean nothing.
  void fill_state_random(uint64_t seed);

  // Throws kInvalidArgument naming the offending id when a token is outside the vocabulary.
  void check_ids(const std::vector<int32_t>& ids) const;
  // score()'s checks: ids given, in the vocabulary, within max_model_len, a free slot and enough free pages.
  void check_score(const std::vector<int32_t>& ids) const;

 private:
  // score_into's forwards, the checks done (check_score).
  void score_rows(const std::vector<int32_t>& ids, float* logits);

  ModelConfig cfg_;
  EngineOptions opt_;
  ModelOptions model_opt_;
  Checkpoint ckpt_;
  ModelWeights weights_;
  std::unique_ptr<ModelState> state_;
  std::unique_ptr<PagePool> pages_;
  Arena scratch_;
  ExecContext ctx_;
  std::unique_ptr<Executor> exec_;
  double load_seconds_ = 0;

  // Scheduler state (runtime/scheduler.cc).
  struct Seq;
  std::vector<std::unique_ptr<Seq>> running_;  // in admission order
  std::vector<std::unique_ptr<Seq>> waiting_;  // FIFO; preempted sequences go to the front
  std::vector<int32_t> free_slots_;
  std::vector<RequestId> cancelled_;
  RequestId next_id_ = 1;
  int64_t admissions_ = 0;
  int64_t spec_tokens_ = 0;
  SchedulerStats sched_;
  const GenerateOptions* generating_ = nullptr;  // generate()'s options while it runs (logits hook)
  // Pipelined decode (device sampling): the decode step queued behind the last one, not yet read back.
  int inflight_ticket_ = -1;
  std::vector<Seq*> inflight_seqs_;
  int64_t last_spec_batch_ = 0, last_spec_k_ = 0;  // the last speculative step's shape (device_spec_step_ms)

  void init(std::chrono::steady_clock::time_point t0);
  void size_pool_and_state();
  void check_batch(BatchBuilder& batch) const;
  void ensure_pages(BatchBuilder& batch);
  // Scheduler internals.
  void admit();
  bool reserve(Seq& s, int64_t tokens);
  void preempt(Seq& s);
  void finish(Seq& s, FinishReason reason, const std::string& error = "");
  void emit(Seq& s, int32_t token, const float* logits_row);
  void drop_finished();
  void handle_cancellations();
  std::vector<std::pair<Seq*, int64_t>> plan_chunks(const std::vector<Seq*>& order, BatchBuilder& b);
  void fit_prompt_step(const std::vector<Seq*>& order);
  bool step_plain();
  int start_decode(const std::vector<Seq*>& seqs, bool ids_from_previous);
  void finish_decode(int ticket, const std::vector<Seq*>& seqs);
  bool can_pipeline(const std::vector<Seq*>& seqs);
  bool pipeline_decode() const;
  void continue_pipeline();
  bool step_prefill_for_drafts();
  void step_speculative();
};

}  // namespace dsv4
