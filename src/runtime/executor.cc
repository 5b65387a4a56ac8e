#include "runtime/executor.h"

#include <algorithm>

#include "dsv4/model/mtp.h"

namespace dsv4 {

void Executor::forward_into(BatchBuilder& batch, float* logits) {
  std::vector<float> l;
  forward(batch, false, &l, nullptr);
  std::copy(l.begin(), l.end(), logits);
}

void Executor::forward_tokens(BatchBuilder&, bool, const std::vector<ops::TokenSamplingParams>&,
                              std::vector<int32_t>*) {
  fail(StatusCode::kInternal, "this executor does not sample on the device");
}

int Executor::start_tokens(BatchBuilder&, bool, const std::vector<ops::TokenSamplingParams>&, bool) {
  fail(StatusCode::kInternal, "this executor does not sample on the device");
}

void Executor::finish_tokens(int, std::vector<int32_t>*) {
  fail(StatusCode::kInternal, "this executor does not sample on the device");
}

namespace {

class CpuExecutor final : public Executor {
 public:
  explicit CpuExecutor(const ExecutorSetup& s) : s_(s) {}

  void forward(BatchBuilder& batch, bool, std::vector<float>* logits, std::vector<float>* residual) override {
    const ModelConfig& c = *s_.cfg;
    const int64_t T = batch.num_tokens(), R = batch.num_logit_rows(), V = c.vocab_size;
    std::vector<float> unused;
    std::vector<float>* l = logits != nullptr ? logits : &unused;
    l->assign(static_cast<size_t>(R * V), 0.0f);
    Tensor residual_t;
    if (residual != nullptr) {
      residual->assign(static_cast<size_t>(T * c.hc_dim()), 0.0f);
      residual_t = Tensor(residual->data(), DType::F32, {T, c.hc_mult, c.hidden_size});
    }
    run(batch, l->data(), residual_t);
  }

  void forward_into(BatchBuilder& batch, float* logits) override { run(batch, logits, Tensor()); }

  void drafter(BatchBuilder& batch, const std::vector<float>& hidden, std::vector<float>* logits,
               std::vector<float>* hidden_out) override {
    const ModelConfig& c = *s_.cfg;
    const int64_t T = batch.num_tokens(), R = batch.num_logit_rows(), V = c.vocab_size;
    const int64_t n = c.hc_mult, H = c.hidden_size;
    s_.state->sync_table(nullptr, nullptr);
    ExecContext& ctx = *s_.ctx;
    logits->assign(static_cast<size_t>(R * V), 0.0f);
    hidden_out->assign(static_cast<size_t>(T * n * H), 0.0f);
    ctx.scratch->reset();
    drafter_forward(ctx, c, *s_.weights, *s_.state, batch.meta(),
                    Tensor(const_cast<float*>(hidden.data()), DType::F32, {T, n, H}),
                    Tensor(hidden_out->data(), DType::F32, {T, n, H}), batch.logit_rows(),
                    Tensor(logits->data(), DType::F32, {R, V}));
  }

  // The reference of the CUDA executor's speculative path: the same ops over host buffers (the drafter's step 0
  // runs only the carried rows: no graph shape to keep).
  void spec_prefill(BatchBuilder& batch, const std::vector<int32_t>& drafter_ids,
                    const std::vector<int32_t>& carry_slot, const std::vector<ops::TokenSamplingParams>& params,
                    std::vector<int32_t>* tokens, std::vector<float>* logits) override {
    const ModelConfig& c = *s_.cfg;
    const int64_t T = batch.num_tokens(), R = batch.num_logit_rows(), V = c.vocab_size, W = c.hc_dim();
    DSV4_CHECK_ARG(static_cast<int64_t>(drafter_ids.size()) == T && static_cast<int64_t>(carry_slot.size()) == T &&
                       static_cast<int64_t>(params.size()) == R,
                   "spec_prefill: ", drafter_ids.size(), " drafter ids, ", carry_slot.size(), " carry slots and ",
                   params.size(), " sampling rows for ", T, " tokens and ", R, " logit rows");
    std::vector<float> local, residual;
    std::vector<float>& l = logits != nullptr ? *logits : local;
    forward(batch, false, &l, &residual);
    ExecContext& ctx = *s_.ctx;
    tokens->assign(static_cast<size_t>(R), 0);
    std::vector<int32_t> nonfinite(static_cast<size_t>(R), 0);
    ops::sample_tokens(ctx, Tensor(tokens->data(), DType::I32, {R}), Tensor(l.data(), DType::F32, {R, V}),
                       Tensor(const_cast<ops::TokenSamplingParams*>(params.data()), DType::U8,
                              {R, static_cast<int64_t>(sizeof(ops::TokenSamplingParams))}),
                       Tensor(), Tensor(nonfinite.data(), DType::I32, {R}));
    for (int64_t r = 0; r < R; ++r) {  // as the CUDA executor: -1 marks a row the scheduler must not emit
      if (nonfinite[static_cast<size_t>(r)] != 0) (*tokens)[static_cast<size_t>(r)] = -1;
    }
    ensure_spec_buffers();
    for (int64_t t = 0; t < T; ++t) {
      if (carry_slot[t] < 0) continue;
      std::copy(residual.begin() + t * W, residual.begin() + (t + 1) * W,
                carry_.begin() + carry_slot[t] * carry_stride() * W);
    }
    // The drafter over the same rows: its state at every position (no logits needed).
    const BatchMeta m = batch.meta();
    const BatchMeta dm{
        Tensor(const_cast<int32_t*>(drafter_ids.data()), DType::I32, {T}), m.pos, m.slot, m.start, m.end, T};
    std::vector<float> out(static_cast<size_t>(T * W));
    ctx.scratch->reset();
    mtp_forward(ctx, c, *s_.weights, *s_.state, dm, Tensor(residual.data(), DType::F32, {T, c.hc_mult, c.hidden_size}),
                Tensor(out.data(), DType::F32, {T, c.hc_mult, c.hidden_size}));
  }

  void spec_step(const std::vector<SpecSeq>& seqs, int64_t K, std::vector<int32_t>* tokens,
                 std::vector<int32_t>* counts, std::vector<float>* verify_logits) override {
    const ModelConfig& c = *s_.cfg;
    const int64_t b = static_cast<int64_t>(seqs.size()), V = c.vocab_size, n = c.hc_mult, H = c.hidden_size;
    DSV4_CHECK_ARG(b > 0 && b <= spec_max_seqs(K), "spec_step: ", b, " sequences (at most ", spec_max_seqs(K), ")");
    ensure_spec_buffers();
    const SpecLayout layout = SpecLayout::make({b, K, spec_step0_rows(seqs, K, /*compact=*/true)});
    block_.resize(layout.bytes / sizeof(int64_t) + 1);
    char* block = reinterpret_cast<char*>(block_.data());
    fill_spec_block(seqs, layout, /*compact=*/true, carry_stride(), block);
    const int64_t rows = std::max(layout.shape.T0, layout.shape.verify_tokens());
    hidden_.resize(static_cast<size_t>(rows * n * H));
    residual_.resize(hidden_.size());
    draft_logits_.resize(static_cast<size_t>(K * b * V));
    target_logits_.resize(static_cast<size_t>(b * (K + 1) * V));
    ints_.assign(static_cast<size_t>(5 * b * (K + 1)), 0);
    info_.assign(static_cast<size_t>(2 * b * (K + 1)) * sizeof(ops::NucleusInfo), 0);
    SpecBuffers buf;
    buf.carry = Tensor(carry_.data(), DType::F32, {s_.max_seqs * carry_stride(), n, H});
    buf.hidden = Tensor(hidden_.data(), DType::F32, {rows, n, H});
    buf.residual = Tensor(residual_.data(), DType::F32, {rows, n, H});
    buf.draft_logits = Tensor(draft_logits_.data(), DType::F32, {K * b, V});
    buf.target_logits = Tensor(target_logits_.data(), DType::F32, {b * (K + 1), V});
    buf.ints = Tensor(ints_.data(), DType::I32, {static_cast<int64_t>(ints_.size())});
    buf.info = Tensor(info_.data(), DType::U8, {static_cast<int64_t>(info_.size())});
    const SpecTensors t = spec_tensors(layout, block, Device::kCPU, buf);
    s_.state->sync_table(nullptr, nullptr);
    ExecContext& ctx = *s_.ctx;
    ctx.scratch->reset();
    spec_draft_forward(ctx, c, *s_.weights, *s_.state, t);
    ctx.scratch->reset();
    spec_verify_forward(ctx, c, *s_.weights, *s_.state, t);
    const int32_t* out = t.out_tokens.ptr<int32_t>();
    tokens->assign(out, out + b * (K + 1));
    counts->assign(t.counts.ptr<int32_t>(), t.counts.ptr<int32_t>() + b);
    mark_nonfinite_sequences(t.target_nonfinite.ptr<int32_t>(), b, K, counts);
    if (verify_logits != nullptr) *verify_logits = target_logits_;
  }

  int64_t spec_max_seqs(int64_t K) const override {
    return std::max<int64_t>(1, std::min(s_.max_seqs, s_.max_rows / (K + 1)));
  }

 private:
  int64_t carry_stride() const { return s_.max_spec_tokens + 1; }
  void ensure_spec_buffers() {
    const size_t need = static_cast<size_t>(s_.max_seqs * carry_stride() * s_.cfg->hc_dim());
    if (carry_.size() != need) carry_.assign(need, 0.0f);
  }

  // target_forward with its logit rows' logits into `logits` [R, V] (every value written by the LM head).
  void run(BatchBuilder& batch, float* logits, Tensor residual) {
    const ModelConfig& c = *s_.cfg;
    s_.state->sync_table(nullptr, nullptr);
    s_.ctx->scratch->reset();
    target_forward(*s_.ctx, c, *s_.weights, *s_.state, batch.meta(), batch.logit_rows(),
                   Tensor(logits, DType::F32, {batch.num_logit_rows(), c.vocab_size}), residual);
  }

  ExecutorSetup s_;
  std::vector<float> carry_, hidden_, residual_, draft_logits_, target_logits_;
  std::vector<int32_t> ints_;
  std::vector<uint8_t> info_;
  std::vector<int64_t> block_;  // the step's block (8-byte aligned)
};

}  // namespace

std::unique_ptr<Executor> make_cpu_executor(const ExecutorSetup& setup) { return std::make_unique<CpuExecutor>(setup); }

}  // namespace dsv4
