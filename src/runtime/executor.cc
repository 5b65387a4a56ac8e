#include "runtime/executor.h"

#include "dsv4/model/mtp.h"

namespace dsv4 {

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
    s_.state->sync_table(nullptr, nullptr);
    std::vector<float> unused;
    std::vector<float>* l = logits != nullptr ? logits : &unused;
    l->assign(static_cast<size_t>(R * V), 0.0f);
    Tensor residual_t;
    if (residual != nullptr) {
      residual->assign(static_cast<size_t>(T * c.hc_dim()), 0.0f);
      residual_t = Tensor(residual->data(), DType::F32, {T, c.hc_mult, c.hidden_size});
    }
    s_.ctx->scratch->reset();
    target_forward(*s_.ctx, c, *s_.weights, *s_.state, batch.meta(), batch.logit_rows(),
                   Tensor(l->data(), DType::F32, {R, V}), residual_t);
  }

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

 private:
  ExecutorSetup s_;
};

}  // namespace

std::unique_ptr<Executor> make_cpu_executor(const ExecutorSetup& setup) { return std::make_unique<CpuExecutor>(setup); }

}  // namespace dsv4
