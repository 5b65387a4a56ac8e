// Engine construction, memory sizing and the low-level forwards; the scheduler's step loop is scheduler.cc.
#include "dsv4/runtime/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>

#include "dsv4/backend/cuda_device.h"
#include "dsv4/core/log.h"
#include "dsv4/model/forward_memory.h"
#include "dsv4/runtime/page_pool.h"
#include "runtime/executor.h"
#include "runtime/sequence.h"

namespace dsv4 {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

constexpr int64_t kMaxPositions = int64_t{1} << 30;  // int32 positions with room for speculation

void resolve_defaults(EngineOptions& o, const ModelConfig& cfg) {
  const bool cuda = o.device == Device::kCUDA;
  if (o.max_seqs == 0) o.max_seqs = cuda ? 256 : 64;
  if (o.max_batch_tokens == 0) o.max_batch_tokens = cuda ? 8192 : 512;
  o.max_model_len = max_model_len_for(o, cfg);
}

void check_engine_options(const EngineOptions& o) {
  check_cuda_weights(o);
  check_device_available(o.device);
  DSV4_CHECK_ARG(o.max_seqs >= 0 && o.max_seqs <= 65536, "--max-num-seqs must be in [1, 65536], got ", o.max_seqs);
  DSV4_CHECK_ARG(o.max_batch_tokens >= 0 && o.max_batch_tokens <= (int64_t{1} << 20),
                 "--max-batch-tokens must be in [1, 1048576], got ", o.max_batch_tokens);
  DSV4_CHECK_ARG(o.max_model_len >= 0 && o.max_model_len <= kMaxPositions, "--max-model-len must be in [1, ",
                 kMaxPositions, "], got ", o.max_model_len);
  DSV4_CHECK_ARG(o.max_spec_tokens >= 0 && o.max_spec_tokens <= kMaxSpecTokens, "max_spec_tokens must be in [0, ",
                 kMaxSpecTokens, "], got ", o.max_spec_tokens);
  DSV4_CHECK_ARG(o.kv_cache_memory >= 0, "--kv-cache-memory must be >= 0, got ", o.kv_cache_memory);
  DSV4_CHECK_ARG(o.gpu_memory_utilization > 0 && o.gpu_memory_utilization <= 1,
                 "--gpu-memory-utilization must be in (0, 1], got ", o.gpu_memory_utilization);
  DSV4_CHECK_ARG(o.page_tokens >= 0 && o.page_tokens <= 65536, "page_tokens must be in [0, 65536], got ",
                 o.page_tokens);
  DSV4_CHECK_ARG(o.cuda_precision == DType::BF16 || o.cuda_precision == DType::F32,
                 "engine options: the CUDA precision must be BF16 or F32");
  kv_formats(o.kv_cache_dtype, o.device, o.cuda_precision);  // a cache format the device cannot run
  // A rank holds a share of some products' input rows (the output projection's groups, the experts' intermediate
  // columns): its blocks of 128 would be cut where the partition cuts, and the result would depend on the rank count.
  DSV4_CHECK(o.activation_quant == ActivationQuant::kNone || !o.parallel.active(), kUnsupported,
             "--activation-quant fp8 with --tensor-parallel-size ", o.parallel.tensor_parallel_size,
             ": each rank would quantise its share of a row in blocks of its own, unlike one rank; not supported yet");
  DSV4_CHECK_ARG(o.parallel.tensor_parallel_size >= 1, "--tensor-parallel-size must be >= 1, got ",
                 o.parallel.tensor_parallel_size);
  DSV4_CHECK(!o.parallel.active() || o.device == Device::kCPU, kUnsupported, "--tensor-parallel-size ",
             o.parallel.tensor_parallel_size,
             " on --device cuda: the CUDA executor does not run several ranks yet (the NCCL communicator is built but "
             "not wired in); use --device cpu");
  DSV4_CHECK_ARG(!o.parallel.expert_parallel || o.parallel.active(),
                 "--expert-parallel needs --tensor-parallel-size > 1 (the experts are split over those ranks)");
}

// The options with the state's draft room raised to the draft length the engine captures graphs for (--spec-tokens
// of generate / serve): the default room (7) must not turn a valid flag into an error after the load.
EngineOptions with_draft_room(EngineOptions o) {
  DSV4_CHECK_ARG(o.graph_spec_tokens >= 0 && o.graph_spec_tokens <= kMaxSpecTokens, "--spec-tokens must be in [0, ",
                 kMaxSpecTokens, "], got ", o.graph_spec_tokens);
  o.max_spec_tokens = std::max(o.max_spec_tokens, o.graph_spec_tokens);
  return o;
}

}  // namespace

int64_t max_model_len_for(const EngineOptions& o, const ModelConfig& cfg) {
  return o.max_model_len != 0 ? o.max_model_len : std::min(cfg.max_position_embeddings, kMaxPositions);
}

void check_device_available(Device device) {
  if (device != Device::kCUDA) return;
  const std::string why = cuda::unavailable_reason();
  DSV4_CHECK(why.empty(), kUnsupported, "--device cuda: ", why, "; use --device cpu");
}

bool parse_cuda_weights(const std::string& s) {
  if (s == "bf16") return false;
  if (s == "quantized") return true;
  fail(StatusCode::kInvalidArgument, "--cuda-weights must be bf16 or quantized, got '", s, "'");
}

void check_cuda_weights(const EngineOptions& o) {
  if (!o.cuda_quantized_weights) return;
  DSV4_CHECK(o.device == Device::kCUDA, kUnsupported,
             "--cuda-weights quantized keeps FP8 / FP4 weights quantised in GPU memory; --device cpu dequantises "
             "every weight to f32 at load (drop the option, or use --device cuda)");
  DSV4_CHECK_ARG(o.cuda_precision == DType::BF16,
                 "--cuda-weights quantized computes with bf16 activations; --cuda-precision f32 needs --cuda-weights "
                 "bf16");
  DSV4_CHECK(!o.parallel.active(), kUnsupported, "--cuda-weights quantized with --tensor-parallel-size ",
             o.parallel.tensor_parallel_size,
             ": splitting FP8 matrices over ranks (on 128-row / 128-column scale blocks) is not built yet");
}

void check_cuda_weights(const EngineOptions& o, const ModelConfig& cfg) {
  check_cuda_weights(o);
  DSV4_CHECK_ARG(!o.cuda_quantized_weights || cfg.quantization.quantized,
                 "--cuda-weights quantized: the checkpoint is not quantised (its config.json has no "
                 "quantization_config); use --cuda-weights bf16");
}

double GenerateStats::decode_tokens_per_second() const {
  return decode_seconds > 0 ? static_cast<double>(generated_tokens) / decode_seconds : 0.0;
}

Engine::Engine(const std::string& model_dir, const EngineOptions& options) : opt_(with_draft_room(options)) {
  const auto t0 = std::chrono::steady_clock::now();
  check_engine_options(opt_);
  cfg_ = ModelConfig::from_file((std::filesystem::path(model_dir) / "config.json").string());
  check_parallel_config(cfg_, opt_.parallel);  // before the weights are read
  check_cuda_weights(opt_, cfg_);
  ckpt_ = Checkpoint::open(model_dir);
  weights_ = load_weights(ckpt_, cfg_, {opt_.device, opt_.load_mtp, opt_.cuda_precision, opt_.cuda_quantized_weights});
  init(t0);
}

Engine::Engine(ModelConfig cfg, ModelWeights weights, const EngineOptions& options)
    : cfg_(std::move(cfg)), opt_(with_draft_room(options)), weights_(std::move(weights)) {
  const auto t0 = std::chrono::steady_clock::now();
  check_engine_options(opt_);
  DSV4_CHECK_ARG(weights_.storage.device() == opt_.device, "engine: the weights are on ",
                 device_name(weights_.storage.device()), ", the engine runs on ", device_name(opt_.device));
  DSV4_CHECK_ARG(weights_.layers.size() == static_cast<size_t>(cfg_.num_hidden_layers), "engine: the weights have ",
                 weights_.layers.size(), " layers, the config ", cfg_.num_hidden_layers);
  check_parallel_config(cfg_, opt_.parallel);
  init(t0);
}

// Logit rows a forward may ask for: a prefill or decode step one per sequence, a verification K + 1 per
// sequence; score() asks for every row in chunks of this size. The CPU executor writes logits straight into the
// caller's rows (no device buffer to size), so there every token of a forward may be one: a 512-token score is one
// forward, not two.
static int64_t max_logit_rows(const EngineOptions& o) {
  if (o.device == Device::kCPU) return o.max_batch_tokens;
  return std::min(o.max_batch_tokens, std::max<int64_t>(o.max_seqs * (1 + o.max_spec_tokens), 256));
}

// The state pool: --kv-cache-memory, or on CUDA a share of the card (utilization × total minus what is held now
// and a reserve for the executor's buffers and graphs), on the CPU 2 GiB; never more than every sequence at
// max_model_len needs.
void Engine::size_pool_and_state() {
  const DType keys = opt_.device == Device::kCUDA ? opt_.cuda_precision : DType::F32;
  const StateLayout layout =
      StateLayout::make(cfg_, model_opt_, keys, has_mtp(), packs_fp8_cache(model_opt_.kv_cache_dtype, opt_.device));
  const int64_t full = opt_.max_seqs * layout.pages_for(opt_.max_model_len + model_opt_.max_tokens_ahead);
  int64_t bytes = opt_.kv_cache_memory;
  if (bytes == 0 && opt_.device == Device::kCPU) bytes = int64_t{2} << 30;
  if (bytes == 0) {
    size_t free_b = 0, total_b = 0;
    cuda::memory_info(&free_b, &total_b);
    const int64_t rows = max_logit_rows(opt_);
    int64_t io = rows * cfg_.vocab_size * 4 + 2 * opt_.max_batch_tokens * cfg_.hc_dim() * 4;
    if (has_mtp() && opt_.max_spec_tokens > 0) {  // speculative decoding: draft logits, carry rows, the step's block
      io += rows * cfg_.vocab_size * 4 + opt_.max_seqs * (opt_.max_spec_tokens + 1) * cfg_.hc_dim() * 4 + rows * 256;
    }
    const int64_t reserve = io + (int64_t{1} << 30);  // executor buffers, cuBLASLt workspace, graphs
    const int64_t used = static_cast<int64_t>(total_b - free_b);
    bytes = static_cast<int64_t>(opt_.gpu_memory_utilization * static_cast<double>(total_b)) - used - reserve;
    DSV4_CHECK(bytes >= layout.bytes_for(1), kOutOfMemory, "no device memory left for the KV state: ", used >> 20,
               " MiB in use of ", total_b >> 20, " MiB (--gpu-memory-utilization ", opt_.gpu_memory_utilization, ", ",
               reserve >> 20, " MiB reserved for buffers and graphs)");
  }
  int64_t pages = std::min(bytes / layout.page_bytes, full);
  DSV4_CHECK(pages >= layout.pages_for(1), kInvalidArgument, "--kv-cache-memory ", bytes,
             " holds less than one sequence's state (", layout.bytes_for(1), " bytes)");
  model_opt_.num_pages = pages;
  state_ = std::make_unique<ModelState>(cfg_, model_opt_, opt_.device, has_mtp());
  pages_ = std::make_unique<PagePool>(*state_);
  log_info("KV state: ", pages, " pages of ", layout.page_tokens, " tokens (", layout.page_bytes, " bytes; ",
           layout.ring_pages, " ring pages per sequence), ", (pages * layout.page_bytes) >> 20, " MiB, max_model_len ",
           opt_.max_model_len, ", max_num_seqs ", opt_.max_seqs);
}

// State, activation arena, device buffers and CUDA graphs for the loaded weights.
void Engine::init(std::chrono::steady_clock::time_point t0) {
  resolve_defaults(opt_, cfg_);
  check_engine_options(opt_);
  if (opt_.device == Device::kCUDA && opt_.activation_quant == ActivationQuant::kFp8) {
    if (const std::string note = bf16_moe_layers_note(weights_); !note.empty()) log_info(note);
  }
  DSV4_CHECK_ARG(opt_.max_spec_tokens + 1 <= opt_.max_batch_tokens,
                 "--max-batch-tokens must exceed the largest draft length (", opt_.max_spec_tokens, ")");
  const int64_t rows = max_logit_rows(opt_);
  model_opt_.max_seqs = opt_.max_seqs;
  model_opt_.max_model_len = opt_.max_model_len;
  model_opt_.max_tokens_ahead = opt_.max_spec_tokens + 1;
  model_opt_.page_tokens = opt_.page_tokens;
  model_opt_.cuda_activation_dtype = opt_.cuda_precision;
  model_opt_.kv_cache_dtype = opt_.kv_cache_dtype;
  model_opt_.activation_quant = opt_.activation_quant;
  ForwardShape shape;
  shape.max_tokens = opt_.max_batch_tokens;
  shape.max_rows = rows;
  shape.drafter = has_mtp();
  scratch_ = Arena("activations", measure_forward_scratch(cfg_, weights_, model_opt_, opt_.device, shape), opt_.device);
  size_pool_and_state();
  free_slots_.clear();
  for (int64_t s = opt_.max_seqs - 1; s >= 0; --s) free_slots_.push_back(static_cast<int32_t>(s));
  ctx_.device = opt_.device;
  ctx_.scratch = &scratch_;
  ExecutorSetup e;
  e.cfg = &cfg_;
  e.weights = &weights_;
  e.state = state_.get();
  e.ctx = &ctx_;
  e.max_tokens = opt_.max_batch_tokens;
  e.max_rows = rows;
  e.cudagraph_mode = opt_.cudagraph_mode;
  e.enforce_eager = opt_.enforce_eager;
  e.capture_sizes = opt_.capture_sizes;
  e.spec_tokens = opt_.graph_spec_tokens;
  e.architecture = cfg_.architecture;
  e.max_spec_tokens = opt_.max_spec_tokens;
  e.max_seqs = opt_.max_seqs;
  e.spec_graph_tokens = opt_.spec_graph_tokens;
  if (e.spec_graph_tokens.empty() && opt_.graph_spec_tokens > 0) e.spec_graph_tokens = {opt_.graph_spec_tokens};
  if (opt_.parallel.active()) {
    exec_ = make_parallel_cpu_executor(e, opt_.parallel, model_opt_, shape);
  } else {
    exec_ = opt_.device == Device::kCUDA ? make_cuda_executor(e) : make_cpu_executor(e);
  }
  load_seconds_ = seconds_since(t0);
}

Engine::~Engine() = default;

void check_token_ids(const std::vector<int32_t>& ids, int64_t vocab_size) {
  for (size_t i = 0; i < ids.size(); ++i) {
    DSV4_CHECK_ARG(ids[i] >= 0 && ids[i] < vocab_size, "token id ", ids[i], " at index ", i,
                   " is outside the vocabulary [0, ", vocab_size, ")");
  }
}

void Engine::check_ids(const std::vector<int32_t>& ids) const { check_token_ids(ids, cfg_.vocab_size); }

void Engine::check_batch(BatchBuilder& batch) const {
  const int64_t T = batch.num_tokens();
  DSV4_CHECK_ARG(T > 0 && T <= opt_.max_batch_tokens, "forward of ", T, " tokens exceeds max_batch_tokens (",
                 opt_.max_batch_tokens, ")");
  DSV4_CHECK_ARG(batch.num_logit_rows() <= max_logit_rows(opt_), "forward of ", batch.num_logit_rows(),
                 " logit rows exceeds the engine's ", max_logit_rows(opt_));
  check_ids(batch.ids());
  const int64_t limit = model_opt_.max_model_len + model_opt_.max_tokens_ahead;
  for (int32_t p : batch.positions()) {
    DSV4_CHECK_ARG(p < limit, "position ", p, " exceeds the engine's max_model_len (", model_opt_.max_model_len, ")");
  }
}

// Low-level forwards: every slot of the batch gets the pages for the positions it reaches.
void Engine::ensure_pages(BatchBuilder& batch) {
  const BatchMeta m = batch.meta();
  for (int64_t t = 0; t < batch.num_tokens(); ++t) {
    const int32_t slot = m.slot.ptr<int32_t>()[t];
    if (slot < 0) continue;
    DSV4_CHECK_ARG(slot < opt_.max_seqs, "slot ", slot, " outside [0, ", opt_.max_seqs, ")");
    DSV4_CHECK(pages_->ensure(slot, m.end.ptr<int32_t>()[t]), kOutOfMemory, "the KV state pool (",
               pages_->total_pages(), " pages) cannot hold slot ", slot, " at ", m.end.ptr<int32_t>()[t], " positions");
  }
}

void Engine::release_slot(int32_t slot) {
  DSV4_CHECK_ARG(slot >= 0 && slot < opt_.max_seqs, "slot ", slot, " outside [0, ", opt_.max_seqs, ")");
  pages_->release(slot);
}

void Engine::forward(BatchBuilder& batch, std::vector<float>* logits, std::vector<float>* residual,
                     bool uniform_decode) {
  check_batch(batch);
  ensure_pages(batch);
  exec_->forward(batch, uniform_decode, logits, residual);
}

std::vector<int32_t> Engine::forward_greedy(BatchBuilder& batch, bool uniform_decode) {
  check_batch(batch);
  ensure_pages(batch);
  const int64_t R = batch.num_logit_rows(), V = cfg_.vocab_size;
  std::vector<int32_t> tokens;
  if (exec_->samples_on_device()) {
    const std::vector<ops::TokenSamplingParams> greedy(static_cast<size_t>(R));  // temperature 0
    exec_->forward_tokens(batch, uniform_decode, greedy, &tokens);
    return tokens;
  }
  std::vector<float> logits;
  exec_->forward(batch, uniform_decode, &logits, nullptr);
  tokens.resize(static_cast<size_t>(R));
  for (int64_t r = 0; r < R; ++r) {
    const float* row = logits.data() + r * V;
    const bool finite = std::all_of(row, row + V, [](float x) { return std::isfinite(x); });
    tokens[static_cast<size_t>(r)] = finite ? argmax_token(row, V) : -1;
  }
  return tokens;
}

std::vector<int32_t> Engine::decode_greedy(int32_t slot, int64_t pos, int32_t first, int64_t steps) {
  DSV4_CHECK_ARG(steps >= 0 && pos >= 0, "decode_greedy: ", steps, " steps from position ", pos);
  DSV4_CHECK_ARG(slot >= 0 && slot < opt_.max_seqs, "slot ", slot, " outside [0, ", opt_.max_seqs, ")");
  auto batch_at = [&](int64_t i, int32_t id) {
    BatchBuilder b;
    b.add({slot, static_cast<int32_t>(pos + i), {id}, false});
    return b;
  };
  std::vector<int32_t> out;
  if (steps == 0) return out;
  // The first and the last step checked and every page taken before anything is queued: nothing throws while a step
  // is in flight (a step fed from the previous one carries the placeholder id 0; the device reads the drawn token).
  BatchBuilder first_step = batch_at(0, first), last_step = batch_at(steps - 1, 0);
  check_batch(first_step);
  check_batch(last_step);
  ensure_pages(last_step);
  if (!exec_->samples_on_device()) {
    out.push_back(forward_greedy(first_step, /*uniform_decode=*/true).at(0));
    for (int64_t i = 1; i < steps; ++i) {
      BatchBuilder b = batch_at(i, out.back() >= 0 ? out.back() : 0);
      out.push_back(forward_greedy(b, /*uniform_decode=*/true).at(0));
    }
    return out;
  }
  const std::vector<ops::TokenSamplingParams> greedy(1);  // temperature 0
  std::vector<int32_t> tokens;
  int in_flight = -1;
  for (int64_t i = 0; i < steps; ++i) {
    BatchBuilder b = i == 0 ? std::move(first_step) : batch_at(i, 0);
    const int ticket = exec_->start_tokens(b, /*uniform_decode=*/true, greedy, /*ids_from_previous=*/i > 0);
    if (in_flight >= 0) {
      exec_->finish_tokens(in_flight, &tokens);
      out.push_back(tokens.at(0));
    }
    in_flight = ticket;
  }
  exec_->finish_tokens(in_flight, &tokens);
  out.push_back(tokens.at(0));
  return out;
}

void Engine::mtp_forward(BatchBuilder& batch, const std::vector<float>& hidden, std::vector<float>* logits,
                         std::vector<float>* hidden_out) {
  DSV4_CHECK(has_mtp(), kUnsupported, "this checkpoint has no MTP layer (mtp.0.*)");
  check_batch(batch);
  const int64_t T = batch.num_tokens();
  DSV4_CHECK_ARG(static_cast<int64_t>(hidden.size()) == T * cfg_.hc_dim(), "mtp_forward: hidden has ", hidden.size(),
                 " values, expected ", T * cfg_.hc_dim());
  ensure_pages(batch);
  exec_->drafter(batch, hidden, logits, hidden_out);
}

std::vector<float> Engine::score(const std::vector<int32_t>& ids) {
  check_score(ids);  // before the T x V allocation
  std::vector<float> all(ids.size() * static_cast<size_t>(cfg_.vocab_size));
  score_rows(ids, all.data());
  return all;
}

void Engine::check_score(const std::vector<int32_t>& ids) const {
  DSV4_CHECK_ARG(!ids.empty(), "score: no token ids given");
  check_ids(ids);
  DSV4_CHECK_ARG(static_cast<int64_t>(ids.size()) <= model_opt_.max_model_len, "score: ", ids.size(),
                 " tokens exceed max_model_len (", model_opt_.max_model_len, ")");
  DSV4_CHECK(!free_slots_.empty(), kUnsupported, "score: every sequence slot is busy");
  DSV4_CHECK_ARG(state_->layout().pages_for(static_cast<int64_t>(ids.size())) <= pages_->free_pages(),
                 "score: ", ids.size(), " tokens need more state pages than are free (", pages_->free_pages(), " of ",
                 pages_->total_pages(), ")");
}

void Engine::score_into(const std::vector<int32_t>& ids, float* logits) {
  check_score(ids);
  score_rows(ids, logits);
}

void Engine::score_rows(const std::vector<int32_t>& ids, float* logits) {
  const int32_t slot = free_slots_.back();
  // Each chunk's logits land in their rows (written in place on the CPU, copied from the device on CUDA): a separate
  // chunk buffer appended to the result cost a second set of fresh pages and two more passes over the logits.
  const size_t chunk = static_cast<size_t>(max_logit_rows(opt_));
  try {
    for (size_t done = 0; done < ids.size();) {
      const size_t n = std::min(ids.size() - done, chunk);
      BatchBuilder b;
      b.add({slot, static_cast<int32_t>(done), std::vector<int32_t>(ids.begin() + done, ids.begin() + done + n), true});
      check_batch(b);
      ensure_pages(b);
      exec_->forward_into(b, logits + done * static_cast<size_t>(cfg_.vocab_size));
      done += n;
    }
  } catch (...) {
    pages_->release(slot);
    throw;
  }
  pages_->release(slot);
}

void Engine::fill_state_random(uint64_t seed) {
  // Every array in the pool is f32 or the activation dtype; bf16 patterns read as f32 stay finite and O(1).
  const DType dt = opt_.device == Device::kCUDA ? DType::BF16 : DType::F32;
  const int64_t n = static_cast<int64_t>(state_->pool_bytes() / dtype_size(dt));
  ops::fill_random(ctx_, Tensor(state_->pool_data(), dt, {n}, opt_.device), seed, 0.0f, 1.0f);
  // Packed fp8 rows read those patterns as codes and scale bytes: some NaN, some scales past f32. Keep them finite.
  if (packs_fp8_cache(opt_.kv_cache_dtype, opt_.device))
    cuda::and_bytes(state_->pool_data(), state_->pool_bytes(), 0x37);
  if (opt_.device == Device::kCUDA) cuda::synchronize_device();
  exec_->fill_follower_states(seed);
}

double Engine::device_decode_step_ms(int64_t batch, int reps) { return exec_->time_decode_replays(batch, reps); }
double Engine::device_drafter_step_ms(int64_t tokens, int reps) { return exec_->time_drafter_replays(tokens, reps); }
double Engine::device_spec_step_ms(int64_t batch, int64_t K, int reps) {
  // The replays read the last step's uploaded block: only a step of the same shape may replay it.
  DSV4_CHECK_ARG(batch == last_spec_batch_ && K == last_spec_k_, "device_spec_step_ms: the last speculative step had ",
                 last_spec_batch_, " sequences and K = ", last_spec_k_, ", not ", batch, " and K = ", K);
  return exec_->time_spec_replays(batch, K, reps);
}
size_t Engine::device_io_bytes() const { return exec_->device_bytes(); }
std::string Engine::graph_summary() const { return exec_->graph_summary(); }
double Engine::capture_seconds() const { return exec_->capture_seconds(); }
int64_t Engine::graph_bytes() const { return exec_->graph_bytes(); }
std::vector<GraphEntryInfo> Engine::graph_entries() const { return exec_->graph_entries(); }

}  // namespace dsv4
