#include "runtime/device_forward.h"

#include <cuda_profiler_api.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>

#include "backend/cuda/blas.h"
#include "backend/cuda/copy_segments.h"
#include "backend/cuda/cuda_check.h"
#include "dsv4/core/buffer.h"
#include "dsv4/core/log.h"
#include "dsv4/graph/graph_runner.h"
#include "dsv4/model/mtp.h"
#include "dsv4/runtime/engine.h"
#include "runtime/spec_step.h"

namespace dsv4 {

struct DeviceForward::Impl {
  int64_t max_tokens = 0, max_rows = 0, vocab = 0, hc_mult = 0, hidden = 0;
  DType act = DType::BF16;  // of the residuals
  cudaStream_t stream = nullptr;
  std::unique_ptr<cuda::BlasHandle> blas;
  // Device layout (int32 unless stated): ids, pos, slot, start, end [max_tokens] each, logit rows
  // [max_rows]; the sampling parameters [max_rows] (the staged block: one host-to-device copy per step);
  // then logits [max_rows, V] f32, the residual out and the drafter's residual in (each [max_tokens, n*H],
  // activation dtype).
  Buffer io;
  int32_t* d_ints = nullptr;
  float* d_logits = nullptr;
  void* d_residual = nullptr;
  void* d_hidden = nullptr;
  std::vector<char> h_hidden;
  // Pinned staging with the device layout of the staged block, two of them (kStages): a token forward may
  // be started while the previous one runs (start_tokens), so its staging must not be the one still being
  // copied. h_ints / h_sampling point into the current stage.
  static constexpr int kStages = 2;
  // Mapped (zero-copy): copy_segments reads the stage and writes the tokens back through the device views.
  char* h_stages = nullptr;
  char* dv_stages = nullptr;  // device view of h_stages
  int32_t* h_ints = nullptr;
  ops::TokenSamplingParams* h_sampling = nullptr;
  std::vector<char> h_residual;
  // Device sampling: per-row parameters in (inside the staged block) and tokens out, each step's R tokens followed by
  // its R non-finite flags ([2 max_rows]), copied back in one piece into the stage's pinned row of h_tokens; an
  // event per stage marks the copy done. A flagged row comes back as token -1 (the device keeps its valid argmax
  // id, which a pipelined next step may read).
  Buffer sampling_io;
  ops::TokenSamplingParams* d_sampling = nullptr;
  int32_t* d_tokens = nullptr;
  int32_t* h_tokens = nullptr;   // [kStages][2 max_rows]
  int32_t* dv_tokens = nullptr;  // device view of h_tokens
  cudaEvent_t tokens_ready[kStages] = {};
  bool stage_busy[kStages] = {};      // started, not finished
  bool stage_profiled[kStages] = {};  // cudaProfilerStop due at finish
  int64_t stage_rows[kStages] = {};
  int next_stage = 0;
  int64_t last_sampled_rows = -1;  // rows of the tokens in d_tokens (-1: none yet)

  // The R logit rows' tokens into d_tokens[0, R), their non-finite flags into d_tokens[R, 2R).
  void sample(ExecContext& ctx, int64_t R) {
    ops::sample_tokens(
        ctx, Tensor(d_tokens, DType::I32, {R}, Device::kCUDA), Tensor(d_logits, DType::F32, {R, vocab}, Device::kCUDA),
        Tensor(d_sampling, DType::U8, {R, static_cast<int64_t>(sizeof(ops::TokenSamplingParams))}, Device::kCUDA),
        Tensor(), Tensor(d_tokens + R, DType::I32, {R}, Device::kCUDA));
  }
  // A read-back of sample(): the tokens, -1 where the row's logits were not finite.
  static void read_tokens(const int32_t* h, int64_t R, std::vector<int32_t>* tokens) {
    tokens->assign(h, h + R);
    for (int64_t r = 0; r < R; ++r) {
      if (h[R + r] != 0) (*tokens)[static_cast<size_t>(r)] = -1;
    }
  }
  // Stage s's sampled tokens + flags to the host (h_tokens row s), and the tokens as the ids (field 0) a pipelined
  // next step reads (upload with ids_on_device): one launch for both.
  void publish_tokens(int s, int64_t R) {
    const int64_t bytes = R * static_cast<int64_t>(sizeof(int32_t));
    const cuda::CopySegment segments[2] = {{d_tokens, dv_tokens + s * 2 * max_rows, 2 * bytes},
                                           {d_tokens, d_ints, bytes}};
    cuda::copy_segments(stream, segments, 2);
  }
  int32_t* h_table = nullptr;  // pinned staging of the page-table rows copied to the device

  // Graphs: one pool (the engine's activation arena) shared by the target's and the drafter's runner.
  const ModelConfig* cfg = nullptr;
  const ModelWeights* weights = nullptr;
  ModelState* state = nullptr;
  std::unique_ptr<graph::GraphPool> pool;
  std::unique_ptr<graph::GraphRunner> target, drafter;
  double capture_seconds = 0;
  graph::GraphPolicy policy;
  ExecContext runner_exec;      // the runners' context (no eager-region hook)
  std::vector<int> base_sizes;  // capture sizes before fitting (default list or --capture-sizes)
  int max_capture_tokens = 0;   // the target's largest capture size

  // Speculative decoding (runtime/spec_step.h): the step's block of inputs at d_spec (one upload), the outputs
  // (draft / target tokens, accepted tokens + counts at d_spec_ints; nuclei at d_spec_info; the drafter's logits),
  // and the carry: Kmax + 1 target residual rows per slot. Per draft length K one runner for the drafter's K steps
  // and one for the verification + acceptance, keyed by the padded sequence count.
  int64_t max_spec = 0, spec_slots = 0;
  Buffer spec_io;
  char* d_spec = nullptr;
  size_t spec_block_bytes = 0;
  int32_t* d_spec_ints = nullptr;   // [5 * max_rows]
  uint8_t* d_spec_info = nullptr;   // [2 * max_rows] NucleusInfo
  float* d_draft_logits = nullptr;  // [max_rows, V]
  void* d_carry = nullptr;          // [spec_slots * (max_spec + 1), n, H]
  char* h_spec = nullptr;           // pinned: the staged block (spec_block_bytes), then 2 * max_tokens int32
  int32_t* h_spec_out = nullptr;    // pinned: [3 * max_rows] accepted tokens + counts + the target rows' flags
  struct SpecRunners {
    std::unique_ptr<graph::GraphRunner> draft, verify;
  };
  std::map<int64_t, SpecRunners> spec;

  size_t int_count() const { return static_cast<size_t>(5 * max_tokens + max_rows); }
  // Bytes of the staged block: the int32 fields, then the sampling parameters (16-byte aligned).
  size_t params_offset() const { return (int_count() * sizeof(int32_t) + 15) / 16 * 16; }
  size_t staged_bytes() const {
    return params_offset() + static_cast<size_t>(max_rows) * sizeof(ops::TokenSamplingParams);
  }
  void use_stage(int s) {
    h_ints = reinterpret_cast<int32_t*>(h_stages + s * staged_bytes());
    h_sampling = reinterpret_cast<ops::TokenSamplingParams*>(reinterpret_cast<char*>(h_ints) + params_offset());
  }
  bool any_stage_busy() const { return std::find(stage_busy, stage_busy + kStages, true) != stage_busy + kStages; }
  int64_t rows_for(int64_t tokens) const { return std::min(tokens, max_rows); }
  Tensor meta_field(int f, int64_t T) const { return Tensor(d_ints + f * max_tokens, DType::I32, {T}, Device::kCUDA); }
  BatchMeta meta(int64_t T) const {
    return {meta_field(0, T), meta_field(1, T), meta_field(2, T), meta_field(3, T), meta_field(4, T), T};
  }
  Tensor logit_rows(int64_t R) const { return Tensor(d_ints + 5 * max_tokens, DType::I32, {R}, Device::kCUDA); }
  Tensor residual(void* p, int64_t T) const { return Tensor(p, act, {T, hc_mult, hidden}, Device::kCUDA); }

  ~Impl() {
    // Destructors must not throw: errors here can only come from a device that already failed.
    if (stream != nullptr) cudaStreamSynchronize(stream);
    spec.clear();
    target.reset();
    drafter.reset();
    pool.reset();
    blas.reset();
    if (h_spec != nullptr) cudaFreeHost(h_spec);
    if (h_spec_out != nullptr) cudaFreeHost(h_spec_out);
    if (h_stages != nullptr) cudaFreeHost(h_stages);
    if (h_tokens != nullptr) cudaFreeHost(h_tokens);
    if (h_table != nullptr) cudaFreeHost(h_table);
    for (cudaEvent_t e : tokens_ready) {
      if (e != nullptr) cudaEventDestroy(e);
    }
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  // Copies the batch's metadata and logit rows into the device buffers (rows beyond R read row 0), with the
  // sampling parameters staged in h_sampling (if any), in one copy_segments launch. ids_on_device: the token ids are
  // already in field 0 (the previous step's sampled tokens, publish_tokens); the other fields are copied.
  void upload(BatchBuilder& batch, bool ids_on_device = false) {
    const int64_t T = batch.num_tokens(), R = batch.num_logit_rows();
    DSV4_CHECK_ARG(T <= max_tokens && R <= max_rows, "device forward: ", T, " tokens / ", R,
                   " logit rows exceed the device buffers (", max_tokens, " / ", max_rows, ")");
    const BatchMeta host = batch.meta();
    const Tensor* fields[5] = {&host.ids, &host.pos, &host.slot, &host.start, &host.end};
    // The previous step synchronised the stream, so the staging buffer is free to rewrite.
    for (int f = 0; f < 5; ++f) std::memcpy(h_ints + f * max_tokens, fields[f]->data(), T * sizeof(int32_t));
    std::memset(h_ints + 5 * max_tokens, 0, max_rows * sizeof(int32_t));
    std::memcpy(h_ints + 5 * max_tokens, batch.logit_rows().data(), R * sizeof(int32_t));
    // Only what the step uses: [0, T) of the per-token fields (one strided segment), then the logit rows and the
    // sampling parameters (one segment); the block spans 5 * max_tokens ints, mostly unused at decode.
    const int64_t pitch = max_tokens * static_cast<int64_t>(sizeof(int32_t));
    const int64_t first_field = ids_on_device ? 1 : 0, tail = 5 * pitch;
    const char* src = dv_stages + (reinterpret_cast<char*>(h_ints) - h_stages);
    char* dst = reinterpret_cast<char*>(d_ints);
    const cuda::CopySegment segments[2] = {
        {src + first_field * pitch, dst + first_field * pitch, T * static_cast<int64_t>(sizeof(int32_t)),
         5 - first_field, pitch, pitch},
        {src + tail, dst + tail,
         static_cast<int64_t>(params_offset()) + R * static_cast<int64_t>(sizeof(ops::TokenSamplingParams)) - tail}};
    cuda::copy_segments(stream, segments, 2);
    if (!ids_on_device) last_sampled_rows = -1;  // field 0 now holds the host's ids, not the last sampled tokens
    // Page-table rows changed since the last step, ordered before this forward on the stream. A row's staging is
    // rewritten only after the forwards that read its previous copy have been waited for (one step at a time,
    // or the pipelined decode, which changes no table row between its two forwards).
    if (state != nullptr && state->table_dirty()) state->sync_table(stream, h_table);
  }

  // Safe values for rows [n, padded): token 0, position 0, slot -1, empty range, a zero drafter input.
  void pad(int64_t n, int64_t padded) {
    if (padded <= n) return;
    const size_t bytes = static_cast<size_t>(padded - n) * sizeof(int32_t);
    for (int f = 0; f < 5; ++f) {
      DSV4_CUDA_CHECK(cudaMemsetAsync(d_ints + f * max_tokens + n, f == 2 ? 0xff : 0, bytes, stream));
    }
    const size_t row = static_cast<size_t>(hc_mult * hidden) * dtype_size(act);
    DSV4_CUDA_CHECK(cudaMemsetAsync(static_cast<char*>(d_hidden) + n * row, 0, (padded - n) * row, stream));
  }

  // Device → host copies of logits [R, V] and residual rows [T, n*H], then one synchronisation.
  void download(int64_t R, int64_t T, std::vector<float>* logits, std::vector<float>* residual_out) {
    logits->resize(static_cast<size_t>(R * vocab));
    DSV4_CUDA_CHECK(
        cudaMemcpyAsync(logits->data(), d_logits, logits->size() * sizeof(float), cudaMemcpyDeviceToHost, stream));
    if (residual_out != nullptr) {
      h_residual.resize(residual(d_residual, T).nbytes());
      DSV4_CUDA_CHECK(
          cudaMemcpyAsync(h_residual.data(), d_residual, h_residual.size(), cudaMemcpyDeviceToHost, stream));
    }
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
    if (residual_out != nullptr) {
      residual_out->resize(static_cast<size_t>(T * hc_mult * hidden));
      convert_to_f32(act, h_residual.data(), residual_out->data(), residual_out->size());
    }
  }

  // The forwards the runners capture: every shape is a function of the padded token count only.
  static void install_region_hook(graph::ForwardContext& f) {
    f.exec.eager_region_hook = [&f](const char* name, std::function<void()> fn) {
      graph::eager_region(f, name, std::move(fn));
    };
  }
  void target_forward_padded(graph::ForwardContext& f, const graph::BatchDescriptor& b) {
    const int64_t T = b.num_tokens_padded, R = rows_for(T);
    install_region_hook(f);
    ::dsv4::target_forward(f.exec, *cfg, *weights, *state, meta(T), logit_rows(R),
                           Tensor(d_logits, DType::F32, {R, vocab}, Device::kCUDA), residual(d_residual, T));
  }
  void drafter_forward_padded(graph::ForwardContext& f, const graph::BatchDescriptor& b) {
    const int64_t T = b.num_tokens_padded, R = rows_for(T);
    install_region_hook(f);
    ::dsv4::drafter_forward(f.exec, *cfg, *weights, *state, meta(T), residual(d_hidden, T), residual(d_residual, T),
                            logit_rows(R), Tensor(d_logits, DType::F32, {R, vocab}, Device::kCUDA));
  }

  // ---- speculative decoding ----
  int64_t carry_stride() const { return max_spec + 1; }
  int64_t spec_max_seqs(int64_t K) const { return std::max<int64_t>(1, std::min(spec_slots, max_rows / (K + 1))); }
  static SpecLayout spec_layout(int64_t b, int64_t K) { return SpecLayout::make({b, K, b * (K + 1)}); }
  SpecBuffers spec_buffers() const {
    SpecBuffers sb;
    sb.carry = Tensor(d_carry, act, {spec_slots * carry_stride(), hc_mult, hidden}, Device::kCUDA);
    sb.hidden = residual(d_hidden, max_tokens);
    sb.residual = residual(d_residual, max_tokens);
    sb.draft_logits = Tensor(d_draft_logits, DType::F32, {max_rows, vocab}, Device::kCUDA);
    sb.target_logits = Tensor(d_logits, DType::F32, {max_rows, vocab}, Device::kCUDA);
    sb.ints = Tensor(d_spec_ints, DType::I32, {5 * max_rows}, Device::kCUDA);
    sb.info =
        Tensor(d_spec_info, DType::U8, {2 * max_rows * static_cast<int64_t>(sizeof(ops::NucleusInfo))}, Device::kCUDA);
    return sb;
  }
  // The runners' forwards: every tensor's address is a function of the padded sequence count and K.
  void spec_draft_padded(graph::ForwardContext& f, const graph::BatchDescriptor& b, int64_t K) {
    install_region_hook(f);
    const SpecTensors t = spec_tensors(spec_layout(b.num_tokens_padded, K), d_spec, Device::kCUDA, spec_buffers());
    spec_draft_forward(f.exec, *cfg, *weights, *state, t);
  }
  void spec_verify_padded(graph::ForwardContext& f, const graph::BatchDescriptor& b, int64_t K) {
    install_region_hook(f);
    const SpecTensors t = spec_tensors(spec_layout(b.num_tokens_padded, K), d_spec, Device::kCUDA, spec_buffers());
    spec_verify_forward(f.exec, *cfg, *weights, *state, t);
  }
  // Warm-up and capture (num_tokens = 0): a block of padding sequences. A real step's block (fill_spec_block) holds
  // its padding sequences already.
  void spec_padding(const graph::BatchDescriptor& b, int n, int64_t K) {
    if (n > 0) return;
    const SpecLayout layout = spec_layout(b.num_tokens_padded, K);
    fill_spec_padding(layout, h_spec);
    DSV4_CUDA_CHECK(cudaMemcpyAsync(d_spec, h_spec, layout.bytes, cudaMemcpyHostToDevice, stream));
    DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));  // start-up only: h_spec is free again
  }
  graph::CaptureSizes spec_sizes(int64_t K) const {
    std::vector<int> kept;
    for (int s : base_sizes) {
      if (s <= spec_max_seqs(K) && s * (K + 1) <= max_capture_tokens) kept.push_back(s);
    }
    graph::CaptureSizeOptions o;
    o.sizes = kept;
    if (kept.empty()) o.max_size = 0;
    return graph::CaptureSizes(o);
  }
  SpecRunners& spec_runners(int64_t K) {
    DSV4_CHECK_ARG(K >= 1 && K <= max_spec, "speculative step: K = ", K, " outside [1, ", max_spec, "]");
    auto it = spec.find(K);
    if (it != spec.end()) return it->second;
    const graph::CaptureSizes sizes = spec_sizes(K);
    // The draft and the verification forwards: one runner each over the same capture sizes and padding blocks.
    auto runner = [&](const char* what, graph::GraphMode mode, auto forward) {
      graph::GraphRunnerOptions o;
      o.name = str_cat(what, " K=", K);
      o.uniform_decode_mode = mode;
      o.sizes = sizes;
      auto r = std::make_unique<graph::GraphRunner>(
          *pool, o, runner_exec,
          [this, K, forward](graph::ForwardContext& f, const graph::BatchDescriptor& b) { (this->*forward)(f, b, K); });
      r->set_padding_hook(
          [this, K](graph::ForwardContext&, const graph::BatchDescriptor& b, int n) { spec_padding(b, n, K); });
      return r;
    };
    SpecRunners r;
    r.draft = runner("spec-draft", policy.drafter, &Impl::spec_draft_padded);
    r.verify = runner("spec-verify", policy.uniform_decode, &Impl::spec_verify_padded);
    return spec.emplace(K, std::move(r)).first->second;
  }
  // Device buffers of speculative decoding, sized for Kmax and the executor's rows.
  void allocate_spec(int64_t kmax, int64_t slots) {
    max_spec = kmax;
    spec_slots = slots;
    spec_block_bytes = static_cast<size_t>(max_tokens) * sizeof(int32_t);  // the prefill's carry rows
    for (int64_t K = 1; K <= kmax; ++K) {
      spec_block_bytes = std::max(spec_block_bytes, spec_layout(spec_max_seqs(K), K).bytes);
    }
    spec_block_bytes = align256(spec_block_bytes);
    const size_t ints = align256(static_cast<size_t>(5 * max_rows) * sizeof(int32_t));
    const size_t info = align256(static_cast<size_t>(2 * max_rows) * sizeof(ops::NucleusInfo));
    const size_t logits = align256(static_cast<size_t>(max_rows * vocab) * sizeof(float));
    const size_t carry = align256(static_cast<size_t>(slots * (kmax + 1) * hc_mult * hidden) * dtype_size(act));
    spec_io = Buffer(spec_block_bytes + ints + info + logits + carry, Device::kCUDA);
    DSV4_CUDA_CHECK(cudaMemset(spec_io.data(), 0, spec_io.size()));
    char* base = static_cast<char*>(spec_io.data());
    d_spec = base;
    d_spec_ints = reinterpret_cast<int32_t*>(base + spec_block_bytes);
    d_spec_info = reinterpret_cast<uint8_t*>(base + spec_block_bytes + ints);
    d_draft_logits = reinterpret_cast<float*>(base + spec_block_bytes + ints + info);
    d_carry = base + spec_block_bytes + ints + info + logits;
    DSV4_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&h_spec),
                                   spec_block_bytes + 2 * static_cast<size_t>(max_tokens) * sizeof(int32_t)));
    DSV4_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&h_spec_out), 3 * max_rows * sizeof(int32_t)));
  }
  static size_t align256(size_t n) { return (n + 255) / 256 * 256; }
};

namespace {
size_t align256(size_t n) { return (n + 255) / 256 * 256; }
}  // namespace

DeviceForward::DeviceForward(const ModelConfig& cfg, const ModelState& state, int64_t max_tokens, int64_t max_rows,
                             ExecContext& ctx)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.max_tokens = max_tokens;
  m.max_rows = max_rows;
  m.vocab = cfg.vocab_size;
  m.hc_mult = cfg.hc_mult;
  m.hidden = cfg.hidden_size;
  m.act = state.activation_dtype();
  DSV4_CUDA_CHECK(cudaStreamCreateWithFlags(&m.stream, cudaStreamNonBlocking));
  m.blas = std::make_unique<cuda::BlasHandle>();
  const size_t ints = align256(m.staged_bytes());
  const size_t logits = align256(static_cast<size_t>(max_rows * m.vocab) * sizeof(float));
  const size_t residual = align256(static_cast<size_t>(max_tokens * cfg.hc_dim()) * dtype_size(m.act));
  m.io = Buffer(ints + logits + 2 * residual, Device::kCUDA);
  DSV4_CUDA_CHECK(cudaMemset(m.io.data(), 0, m.io.size()));
  char* base = static_cast<char*>(m.io.data());
  m.d_ints = reinterpret_cast<int32_t*>(base);
  m.d_logits = reinterpret_cast<float*>(base + ints);
  m.d_residual = base + ints + logits;
  m.d_hidden = base + ints + logits + residual;
  DSV4_CUDA_CHECK(
      cudaHostAlloc(reinterpret_cast<void**>(&m.h_stages), Impl::kStages * m.staged_bytes(), cudaHostAllocMapped));
  DSV4_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&m.dv_stages), m.h_stages, 0));
  std::memset(m.h_stages, 0, Impl::kStages * m.staged_bytes());
  m.use_stage(0);
  m.d_sampling = reinterpret_cast<ops::TokenSamplingParams*>(base + m.params_offset());
  m.sampling_io = Buffer(align256(static_cast<size_t>(2 * max_rows) * sizeof(int32_t)), Device::kCUDA);
  m.d_tokens = static_cast<int32_t*>(m.sampling_io.data());
  DSV4_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&m.h_tokens), Impl::kStages * 2 * max_rows * sizeof(int32_t),
                                cudaHostAllocMapped));
  DSV4_CUDA_CHECK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&m.dv_tokens), m.h_tokens, 0));
  for (cudaEvent_t& e : m.tokens_ready) DSV4_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  ctx.stream = m.stream;
  ctx.blas = m.blas.get();
}

DeviceForward::~DeviceForward() = default;

void DeviceForward::setup_graphs(const GraphSetup& setup, ExecContext& ctx, const ModelConfig& cfg,
                                 const ModelWeights& w, ModelState& state) {
  Impl& m = *impl_;
  m.cfg = &cfg;
  m.weights = &w;
  m.state = &state;
  DSV4_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&m.h_table), state.table_bytes()));
  graph::GraphModeInputs inputs;
  if (!setup.cudagraph_mode.empty()) inputs.cudagraph_mode_flag = setup.cudagraph_mode;
  inputs.enforce_eager = setup.enforce_eager;
  inputs.architectures = {setup.architecture};
  const graph::GraphPolicy policy = graph::resolve_graph_policy_from_env(inputs);
  graph::log_graph_policy(policy);
  m.policy = policy;
  m.base_sizes = setup.capture_sizes.empty() ? graph::CaptureSizes::default_sizes()
                                             : graph::parse_capture_sizes(setup.capture_sizes);
  // Capture sizes no larger than the device buffers; the target's rounded to multiples of 1 + K.
  auto sizes_for = [&](int spec_tokens) {
    graph::CaptureSizeOptions o;
    if (!setup.capture_sizes.empty()) o.sizes = graph::parse_capture_sizes(setup.capture_sizes);
    o.num_speculative_tokens = spec_tokens;
    std::vector<int> fitting;
    const graph::CaptureSizes all(o);
    for (int s : all.sizes()) {
      if (s <= m.max_tokens) fitting.push_back(s);
    }
    graph::CaptureSizeOptions kept;
    kept.sizes = fitting;
    if (fitting.empty()) kept.max_size = 0;
    return graph::CaptureSizes(kept);
  };
  m.pool = std::make_unique<graph::GraphPool>(ctx.scratch);
  ExecContext exec = ctx;
  exec.eager_region_hook = nullptr;
  graph::GraphRunnerOptions target_options =
      graph::GraphRunnerOptions::for_target(policy, sizes_for(static_cast<int>(setup.spec_tokens)));
  // Prefill buckets for the mixed (breakable) entries: powers of two above the decode sizes up to the largest
  // forward, and the largest forward itself (what a scheduler with a backlog of prompts runs).
  graph::CaptureSizeOptions prefill;
  const int64_t largest = std::min<int64_t>(m.max_tokens, graph::CaptureSizes::kLimit);
  for (int64_t s = 2 * std::max(target_options.sizes.max_size(), 256); s < largest; s *= 2) {
    prefill.sizes.push_back(static_cast<int>(s));
  }
  if (largest > target_options.sizes.max_size()) prefill.sizes.push_back(static_cast<int>(largest));
  if (prefill.sizes.empty()) prefill.max_size = 0;
  target_options.prefill_sizes = graph::CaptureSizes(prefill);
  m.target = std::make_unique<graph::GraphRunner>(
      *m.pool, target_options, exec,
      [&m](graph::ForwardContext& f, const graph::BatchDescriptor& b) { m.target_forward_padded(f, b); });
  auto padding = [&m](graph::ForwardContext&, const graph::BatchDescriptor& b, int n) {
    m.pad(n, b.num_tokens_padded);
  };
  m.target->set_padding_hook(padding);
  m.runner_exec = exec;
  m.max_capture_tokens = m.target->options().sizes.max_size();
  if (w.mtp.has_value() && setup.max_spec_tokens > 0) m.allocate_spec(setup.max_spec_tokens, setup.max_seqs);
  if (w.mtp.has_value()) {
    graph::GraphRunnerOptions o = graph::GraphRunnerOptions::for_drafter(policy, sizes_for(0));
    o.name = "drafter";
    m.drafter = std::make_unique<graph::GraphRunner>(
        *m.pool, o, exec,
        [&m](graph::ForwardContext& f, const graph::BatchDescriptor& b) { m.drafter_forward_padded(f, b); });
    m.drafter->set_padding_hook(padding);
  }
  // Start-up capture window: warm-up + capture of every entry, largest first; none later.
  const auto t0 = std::chrono::steady_clock::now();
  m.pool->begin_capture_window();
  m.target->capture_all();
  if (m.drafter) m.drafter->capture_all();
  if (m.d_carry != nullptr) {
    for (int64_t K : setup.spec_graph_tokens) {
      if (K < 1 || K > m.max_spec) continue;
      Impl::SpecRunners& r = m.spec_runners(K);
      r.draft->capture_all();
      r.verify->capture_all();
    }
  }
  m.pool->end_capture_window();
  DSV4_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  m.capture_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (policy.any_graphs()) log_info(graph_summary());
}

namespace {

// DSV4_PROFILE_DECODE=N brackets the N-th uniform-decode target forward of the process (from 0) with
// cudaProfilerStart/Stop, so `ncu --profile-from-start off` (or any CUPTI tool) sees exactly one decode
// step's kernels: the per-kernel profile and kernel-time sum of issue 6.
bool profile_this_decode(bool uniform_decode) {
  static const long target = [] {
    const char* v = std::getenv("DSV4_PROFILE_DECODE");
    return v != nullptr ? std::strtol(v, nullptr, 10) : -1L;
  }();
  static long seen = 0;
  return uniform_decode && target >= 0 && seen++ == target;
}

}  // namespace

int64_t DeviceForward::replayed_tokens_at_most(int64_t num_tokens) const {
  const Impl& m = *impl_;
  if (m.target == nullptr || num_tokens < 1 || num_tokens > graph::CaptureSizes::kLimit) return num_tokens;
  const auto replays = [&](int64_t n) {
    return m.target->dispatch(static_cast<int>(n), /*uniform_decode=*/false).mode != graph::GraphMode::kNone;
  };
  if (replays(num_tokens)) return num_tokens;
  // The prefill buckets below num_tokens, largest first, then the largest capture size.
  const std::vector<int>& buckets = m.target->options().prefill_sizes.sizes();
  for (auto it = buckets.rbegin(); it != buckets.rend(); ++it) {
    if (*it <= num_tokens && replays(*it)) return *it;
  }
  const int64_t top = m.target->options().sizes.max_size();
  return top >= 1 && top <= num_tokens && replays(top) ? top : num_tokens;
}

// Uploads the batch (with ids_on_device, all but its token ids: those [T] the previous step published to field 0)
// and runs the target; returns whether this forward is being profiled.
bool DeviceForward::run_target(BatchBuilder& batch, bool uniform_decode, bool ids_on_device) {
  Impl& m = *impl_;
  DSV4_INTERNAL_CHECK(m.target != nullptr, "setup_graphs() must run before a forward");
  // Host time of forwards above the decode sizes, by phase (DSV4_LOG_LEVEL=debug): a prefill step's host work
  // is what the GPU waits for between the scheduler's steps (issue 18).
  const int64_t T = batch.num_tokens();
  const bool trace = T > m.max_capture_tokens && log_level() >= LogLevel::kDebug;
  const auto t0 = std::chrono::steady_clock::now();
  m.upload(batch, ids_on_device);
  const bool profile = profile_this_decode(uniform_decode);
  if (profile) {
    DSV4_CUDA_CHECK(cudaStreamSynchronize(m.stream));
    DSV4_CUDA_CHECK(cudaProfilerStart());
    log_info("profiling one decode forward of ", batch.num_tokens(), " tokens (DSV4_PROFILE_DECODE)");
  }
  const auto t_uploaded = std::chrono::steady_clock::now();
  const graph::GraphRunner::Dispatch d = m.target->run(static_cast<int>(T), uniform_decode);
  if (trace) {
    const auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
    log_debug("target forward of ", T, " tokens ", d.mode == graph::GraphMode::kNone ? "eager" : "replayed", " at ",
              d.batch.num_tokens_padded, "; host ms: upload ", ms(t0, t_uploaded), ", launch ",
              ms(t_uploaded, std::chrono::steady_clock::now()));
  }
  return profile;
}

void DeviceForward::forward(ExecContext& ctx, BatchBuilder& batch, std::vector<float>* logits,
                            std::vector<float>* residual, bool uniform_decode) {
  DSV4_INTERNAL_CHECK(!impl_->any_stage_busy(), "forward() while a token forward is in flight");
  const bool profile = run_target(batch, uniform_decode, /*ids_on_device=*/false);
  impl_->download(batch.num_logit_rows(), batch.num_tokens(), logits, residual);
  if (profile) DSV4_CUDA_CHECK(cudaProfilerStop());
}

void DeviceForward::forward_tokens(ExecContext& ctx, BatchBuilder& batch,
                                   const std::vector<ops::TokenSamplingParams>& params, std::vector<int32_t>* tokens,
                                   bool uniform_decode) {
  finish_tokens(start_tokens(ctx, batch, params, uniform_decode, /*ids_from_previous=*/false), tokens);
}

int DeviceForward::start_tokens(ExecContext& ctx, BatchBuilder& batch,
                                const std::vector<ops::TokenSamplingParams>& params, bool uniform_decode,
                                bool ids_from_previous) {
  Impl& m = *impl_;
  const int64_t R = batch.num_logit_rows(), T = batch.num_tokens();
  DSV4_CHECK_ARG(static_cast<int64_t>(params.size()) == R, "forward_tokens: ", params.size(), " sampling rows for ", R,
                 " logit rows");
  DSV4_CHECK_ARG(!ids_from_previous || m.last_sampled_rows == T, "start_tokens: ids from the previous forward need ", T,
                 " sampled rows there, it has ", m.last_sampled_rows);
  // A profiled forward's range ends where the next one starts: the profile holds exactly its launches.
  for (bool& profiled : m.stage_profiled) {
    if (profiled) DSV4_CUDA_CHECK(cudaProfilerStop());
    profiled = false;
  }
  const int s = m.next_stage;
  DSV4_INTERNAL_CHECK(!m.stage_busy[s], "start_tokens: ", Impl::kStages, " token forwards already in flight");
  m.next_stage = (s + 1) % Impl::kStages;
  m.use_stage(s);  // this stage's last copy ran before its forward, which finish_tokens waited for
  if (R > 0) std::memcpy(m.h_sampling, params.data(), R * sizeof(ops::TokenSamplingParams));
  m.stage_profiled[s] = run_target(batch, uniform_decode, ids_from_previous);
  // Eager, after the (possibly replayed) forward: the kernel reads only the logits and these buffers.
  m.sample(ctx, R);
  m.publish_tokens(s, R);
  DSV4_CUDA_CHECK(cudaEventRecord(m.tokens_ready[s], m.stream));
  m.stage_busy[s] = true;
  m.stage_rows[s] = R;
  m.last_sampled_rows = R;
  return s;
}

void DeviceForward::finish_tokens(int ticket, std::vector<int32_t>* tokens) {
  Impl& m = *impl_;
  DSV4_INTERNAL_CHECK(ticket >= 0 && ticket < Impl::kStages && m.stage_busy[ticket], "finish_tokens: no forward ",
                      ticket, " in flight");
  DSV4_CUDA_CHECK(cudaEventSynchronize(m.tokens_ready[ticket]));
  Impl::read_tokens(m.h_tokens + ticket * 2 * m.max_rows, m.stage_rows[ticket], tokens);
  m.stage_busy[ticket] = false;
  if (m.stage_profiled[ticket]) DSV4_CUDA_CHECK(cudaProfilerStop());
  m.stage_profiled[ticket] = false;
}

void DeviceForward::mtp_forward(ExecContext& ctx, BatchBuilder& batch, const std::vector<float>& hidden,
                                std::vector<float>* logits, std::vector<float>* hidden_out) {
  Impl& m = *impl_;
  DSV4_CHECK(m.drafter != nullptr, kUnsupported, "this checkpoint has no MTP layer (mtp.0.*)");
  const int64_t T = batch.num_tokens();
  DSV4_INTERNAL_CHECK(!m.any_stage_busy(), "mtp_forward() while a token forward is in flight");
  m.upload(batch);
  m.h_hidden.resize(m.residual(m.d_hidden, T).nbytes());
  convert_from_f32(hidden.data(), m.act, m.h_hidden.data(), hidden.size());
  DSV4_CUDA_CHECK(cudaMemcpyAsync(m.d_hidden, m.h_hidden.data(), m.h_hidden.size(), cudaMemcpyHostToDevice, m.stream));
  m.drafter->run(static_cast<int>(T), /*uniform_decode=*/false);
  m.download(batch.num_logit_rows(), T, logits, hidden_out);  // the sync also keeps h_hidden alive until copied
}

// ---- speculative decoding ----

int64_t DeviceForward::spec_max_seqs(int64_t K) const { return impl_->spec_max_seqs(K); }

void DeviceForward::spec_prefill(ExecContext& ctx, BatchBuilder& batch, const std::vector<int32_t>& drafter_ids,
                                 const std::vector<int32_t>& carry_slot,
                                 const std::vector<ops::TokenSamplingParams>& params, std::vector<int32_t>* tokens,
                                 std::vector<float>* logits) {
  Impl& m = *impl_;
  DSV4_CHECK(m.drafter != nullptr && m.d_carry != nullptr, kUnsupported,
             "speculative decoding needs a checkpoint with an MTP layer (mtp.0.*)");
  DSV4_INTERNAL_CHECK(!m.any_stage_busy(), "spec_prefill() while a token forward is in flight");
  const int64_t T = batch.num_tokens(), R = batch.num_logit_rows();
  DSV4_CHECK_ARG(static_cast<int64_t>(drafter_ids.size()) == T && static_cast<int64_t>(carry_slot.size()) == T &&
                     static_cast<int64_t>(params.size()) == R,
                 "spec_prefill: ", drafter_ids.size(), " drafter ids, ", carry_slot.size(), " carry slots and ",
                 params.size(), " sampling rows for ", T, " tokens and ", R, " logit rows");
  // The target, its rows' tokens drawn on the device.
  if (R > 0) std::memcpy(m.h_sampling, params.data(), R * sizeof(ops::TokenSamplingParams));
  run_target(batch, /*uniform_decode=*/false, /*ids_on_device=*/false);
  m.sample(ctx, R);
  m.last_sampled_rows = -1;
  DSV4_CUDA_CHECK(cudaMemcpyAsync(m.h_tokens, m.d_tokens, 2 * R * sizeof(int32_t), cudaMemcpyDeviceToHost, m.stream));
  if (logits != nullptr) {  // before the drafter overwrites them
    logits->resize(static_cast<size_t>(R * m.vocab));
    DSV4_CUDA_CHECK(
        cudaMemcpyAsync(logits->data(), m.d_logits, logits->size() * sizeof(float), cudaMemcpyDeviceToHost, m.stream));
  }
  // Carry rows, then the drafter over the same rows: the target's residuals in, the next tokens as ids.
  auto* h_rows = reinterpret_cast<int32_t*>(m.h_spec);
  int32_t* h_ids = h_rows + m.max_tokens;
  for (int64_t t = 0; t < T; ++t) {
    h_rows[t] = carry_slot[t] >= 0 ? static_cast<int32_t>(carry_slot[t] * m.carry_stride()) : -1;
  }
  std::memcpy(h_ids, drafter_ids.data(), T * sizeof(int32_t));
  DSV4_CUDA_CHECK(cudaMemcpyAsync(m.d_spec, h_rows, T * sizeof(int32_t), cudaMemcpyHostToDevice, m.stream));
  const Tensor residual = m.residual(m.d_residual, T);
  ops::scatter_rows(ctx, m.spec_buffers().carry, residual, Tensor(m.d_spec, DType::I32, {T}, Device::kCUDA));
  DSV4_CUDA_CHECK(cudaMemcpyAsync(m.d_hidden, m.d_residual, residual.nbytes(), cudaMemcpyDeviceToDevice, m.stream));
  DSV4_CUDA_CHECK(cudaMemcpyAsync(m.d_ints, h_ids, T * sizeof(int32_t), cudaMemcpyHostToDevice, m.stream));
  m.drafter->run(static_cast<int>(T), /*uniform_decode=*/false);
  DSV4_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  Impl::read_tokens(m.h_tokens, R, tokens);
}

void DeviceForward::spec_step(ExecContext& ctx, const std::vector<SpecSeq>& seqs, int64_t K,
                              std::vector<int32_t>* tokens, std::vector<int32_t>* counts,
                              std::vector<float>* verify_logits) {
  Impl& m = *impl_;
  DSV4_CHECK(m.drafter != nullptr && m.d_carry != nullptr, kUnsupported,
             "speculative decoding needs a checkpoint with an MTP layer (mtp.0.*)");
  DSV4_INTERNAL_CHECK(!m.any_stage_busy(), "spec_step() while a token forward is in flight");
  const int64_t b = static_cast<int64_t>(seqs.size());
  DSV4_CHECK_ARG(b > 0 && b <= m.spec_max_seqs(K), "spec_step: ", b, " sequences (at most ", m.spec_max_seqs(K), ")");
  Impl::SpecRunners& r = m.spec_runners(K);
  const int64_t bp = r.draft->dispatch(static_cast<int>(b), /*uniform_decode=*/true).batch.num_tokens_padded;
  const SpecLayout layout = Impl::spec_layout(bp, K);
  fill_spec_block(seqs, layout, /*compact=*/false, m.carry_stride(), m.h_spec);
  DSV4_CUDA_CHECK(cudaMemcpyAsync(m.d_spec, m.h_spec, layout.bytes, cudaMemcpyHostToDevice, m.stream));
  if (m.state->table_dirty()) m.state->sync_table(m.stream, m.h_table);
  r.draft->run(static_cast<int>(b), /*uniform_decode=*/true);
  r.verify->run(static_cast<int>(b), /*uniform_decode=*/true);
  // The one read-back: accepted tokens [bp (K + 1)], counts [bp] and the target rows' non-finite flags [bp (K + 1)],
  // contiguous.
  const int64_t Tv = bp * (K + 1);
  DSV4_CUDA_CHECK(cudaMemcpyAsync(m.h_spec_out, m.d_spec_ints + 2 * Tv, (2 * Tv + bp) * sizeof(int32_t),
                                  cudaMemcpyDeviceToHost, m.stream));
  if (verify_logits != nullptr) {
    verify_logits->resize(static_cast<size_t>(b * (K + 1) * m.vocab));
    DSV4_CUDA_CHECK(cudaMemcpyAsync(verify_logits->data(), m.d_logits, verify_logits->size() * sizeof(float),
                                    cudaMemcpyDeviceToHost, m.stream));
  }
  DSV4_CUDA_CHECK(cudaStreamSynchronize(m.stream));
  tokens->assign(m.h_spec_out, m.h_spec_out + b * (K + 1));
  counts->assign(m.h_spec_out + Tv, m.h_spec_out + Tv + b);
  mark_nonfinite_sequences(m.h_spec_out + Tv + bp, b, K, counts);
}

double DeviceForward::time_drafter_replays(int64_t num_tokens, int reps) {
  Impl& m = *impl_;
  DSV4_CHECK(m.drafter != nullptr, kUnsupported, "this checkpoint has no MTP layer (mtp.0.*)");
  DSV4_CHECK_ARG(num_tokens > 0 && num_tokens <= m.max_tokens && reps > 0, "time_drafter_replays: bad arguments");
  return time_replays(reps, [&] { m.drafter->run(static_cast<int>(num_tokens), /*uniform_decode=*/false); });
}

double DeviceForward::time_spec_replays(int64_t batch, int64_t K, int reps) {
  Impl& m = *impl_;
  DSV4_CHECK(m.d_carry != nullptr, kUnsupported, "speculative decoding needs an MTP layer and max_spec_tokens > 0");
  DSV4_CHECK_ARG(batch > 0 && batch <= m.spec_max_seqs(K) && reps > 0, "time_spec_replays: bad arguments");
  Impl::SpecRunners& r = m.spec_runners(K);
  return time_replays(reps, [&] {
    r.draft->run(static_cast<int>(batch), /*uniform_decode=*/true);
    r.verify->run(static_cast<int>(batch), /*uniform_decode=*/true);
  });
}

size_t DeviceForward::device_bytes() const {
  return impl_->io.size() + impl_->sampling_io.size() + impl_->spec_io.size() + impl_->blas->workspace_bytes;
}

std::string DeviceForward::graph_summary() const {
  const Impl& m = *impl_;
  if (!m.pool) return "";
  const graph::GraphRunnerStats t = m.pool->totals();
  std::string spec;
  for (const auto& [K, r] : m.spec) spec += "; " + r.draft->stats().summary() + "; " + r.verify->stats().summary();
  return str_cat("CUDA graphs: ", t.num_captured, " entries captured (", t.num_failed, " failed) in ",
                 m.capture_seconds * 1e3, " ms, graph memory ", t.graph_bytes / (1024.0 * 1024.0), " MiB; ",
                 m.target->stats().summary(), m.drafter ? "; " + m.drafter->stats().summary() : "", spec);
}

std::vector<GraphEntryInfo> DeviceForward::graph_entries() const {
  std::vector<GraphEntryInfo> out;
  std::vector<std::pair<std::string, const graph::GraphRunner*>> runners = {{"target", impl_->target.get()},
                                                                            {"drafter", impl_->drafter.get()}};
  for (const auto& [K, r] : impl_->spec) {
    runners.emplace_back(r.draft->options().name, r.draft.get());
    runners.emplace_back(r.verify->options().name, r.verify.get());
  }
  for (const auto& [name, r] : runners) {
    if (r == nullptr) continue;
    for (const graph::GraphEntryStats& e : r->stats().entries) {
      // Speculative entries are keyed by sequences: `tokens` is the padded sequence count there.
      out.push_back({name, e.batch.num_tokens_padded, e.batch.uniform_decode, graph::graph_mode_name(e.mode),
                     e.captured, e.num_graphs, e.num_eager_regions});
    }
  }
  return out;
}

double DeviceForward::capture_seconds() const { return impl_->capture_seconds; }
int64_t DeviceForward::graph_bytes() const { return impl_->pool ? impl_->pool->totals().graph_bytes : 0; }

double DeviceForward::time_decode_replays(int64_t num_tokens, int reps) {
  Impl& m = *impl_;
  DSV4_CHECK_ARG(num_tokens > 0 && num_tokens <= m.max_tokens && reps > 0, "time_decode_replays: bad arguments");
  return time_replays(reps, [&] { m.target->run(static_cast<int>(num_tokens), /*uniform_decode=*/true); });
}

// ms of one call of `step`, queued `reps` times back to back: median of 5 runs after one warm-up run.
double DeviceForward::time_replays(int reps, const std::function<void()>& step) {
  Impl& m = *impl_;
  cudaEvent_t begin = nullptr, end = nullptr;
  DSV4_CUDA_CHECK(cudaEventCreate(&begin));
  DSV4_CUDA_CHECK(cudaEventCreate(&end));
  std::vector<double> runs;
  for (int r = 0; r < 6; ++r) {  // the first run warms up
    DSV4_CUDA_CHECK(cudaEventRecord(begin, m.stream));
    for (int i = 0; i < reps; ++i) step();
    DSV4_CUDA_CHECK(cudaEventRecord(end, m.stream));
    DSV4_CUDA_CHECK(cudaEventSynchronize(end));
    float ms = 0;
    DSV4_CUDA_CHECK(cudaEventElapsedTime(&ms, begin, end));
    if (r > 0) runs.push_back(ms / reps);
  }
  cudaEventDestroy(begin);
  cudaEventDestroy(end);
  std::sort(runs.begin(), runs.end());
  return runs[runs.size() / 2];
}

namespace {

// The CUDA executor: DeviceForward behind the Executor interface.
class CudaExecutor final : public Executor {
 public:
  explicit CudaExecutor(const ExecutorSetup& s) : s_(s), device_(*s.cfg, *s.state, s.max_tokens, s.max_rows, *s.ctx) {
    GraphSetup g;
    g.cudagraph_mode = s.cudagraph_mode;
    g.enforce_eager = s.enforce_eager;
    g.capture_sizes = s.capture_sizes;
    g.spec_tokens = s.spec_tokens;
    g.architecture = s.architecture;
    g.max_spec_tokens = s.max_spec_tokens;
    g.max_seqs = s.max_seqs;
    g.spec_graph_tokens = s.spec_graph_tokens;
    device_.setup_graphs(g, *s.ctx, *s.cfg, *s.weights, *s.state);
  }

  void forward(BatchBuilder& batch, bool uniform_decode, std::vector<float>* logits,
               std::vector<float>* residual) override {
    s_.ctx->scratch->reset();
    std::vector<float> unused;
    device_.forward(*s_.ctx, batch, logits != nullptr ? logits : &unused, residual, uniform_decode);
  }
  bool samples_on_device() const override { return true; }
  void forward_tokens(BatchBuilder& batch, bool uniform_decode, const std::vector<ops::TokenSamplingParams>& params,
                      std::vector<int32_t>* tokens) override {
    s_.ctx->scratch->reset();
    device_.forward_tokens(*s_.ctx, batch, params, tokens, uniform_decode);
  }
  int start_tokens(BatchBuilder& batch, bool uniform_decode, const std::vector<ops::TokenSamplingParams>& params,
                   bool ids_from_previous) override {
    s_.ctx->scratch->reset();
    return device_.start_tokens(*s_.ctx, batch, params, uniform_decode, ids_from_previous);
  }
  void finish_tokens(int ticket, std::vector<int32_t>* tokens) override { device_.finish_tokens(ticket, tokens); }
  void drafter(BatchBuilder& batch, const std::vector<float>& hidden, std::vector<float>* logits,
               std::vector<float>* hidden_out) override {
    s_.ctx->scratch->reset();
    device_.mtp_forward(*s_.ctx, batch, hidden, logits, hidden_out);
  }
  void spec_prefill(BatchBuilder& batch, const std::vector<int32_t>& drafter_ids,
                    const std::vector<int32_t>& carry_slot, const std::vector<ops::TokenSamplingParams>& params,
                    std::vector<int32_t>* tokens, std::vector<float>* logits) override {
    s_.ctx->scratch->reset();
    device_.spec_prefill(*s_.ctx, batch, drafter_ids, carry_slot, params, tokens, logits);
  }
  void spec_step(const std::vector<SpecSeq>& seqs, int64_t K, std::vector<int32_t>* tokens,
                 std::vector<int32_t>* counts, std::vector<float>* verify_logits) override {
    s_.ctx->scratch->reset();
    device_.spec_step(*s_.ctx, seqs, K, tokens, counts, verify_logits);
  }
  int64_t spec_max_seqs(int64_t K) const override { return device_.spec_max_seqs(K); }
  int64_t replayed_tokens_at_most(int64_t num_tokens) const override {
    return device_.replayed_tokens_at_most(num_tokens);
  }
  double time_drafter_replays(int64_t num_tokens, int reps) override {
    return device_.time_drafter_replays(num_tokens, reps);
  }
  double time_spec_replays(int64_t batch, int64_t K, int reps) override {
    return device_.time_spec_replays(batch, K, reps);
  }
  size_t device_bytes() const override { return device_.device_bytes(); }
  std::string graph_summary() const override { return device_.graph_summary(); }
  double capture_seconds() const override { return device_.capture_seconds(); }
  int64_t graph_bytes() const override { return device_.graph_bytes(); }
  std::vector<GraphEntryInfo> graph_entries() const override { return device_.graph_entries(); }
  double time_decode_replays(int64_t num_tokens, int reps) override {
    return device_.time_decode_replays(num_tokens, reps);
  }

 private:
  ExecutorSetup s_;
  DeviceForward device_;
};

}  // namespace

std::unique_ptr<Executor> make_cuda_executor(const ExecutorSetup& setup) {
  return std::make_unique<CudaExecutor>(setup);
}

}  // namespace dsv4
