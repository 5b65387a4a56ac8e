#include "runtime/device_forward.h"

#include <cuda_runtime_api.h>

#include <cstring>

#include "backend/cuda/blas.h"
#include "backend/cuda/cuda_check.h"
#include "dsv4/core/buffer.h"
#include "dsv4/model/mtp.h"
#include "dsv4/runtime/engine.h"

namespace dsv4 {

struct DeviceForward::Impl {
  int64_t max_tokens = 0, max_rows = 0, vocab = 0, hc_mult = 0, hidden = 0;
  DType act = DType::BF16;  // of the residual the forward writes
  cudaStream_t stream = nullptr;
  std::unique_ptr<cuda::BlasHandle> blas;
  // Device layout (int32 unless stated): ids, pos, slot, start, end [max_tokens] each, logit rows
  // [max_rows]; then logits [max_rows, V] f32, the residual out and the drafter's residual in (each
  // [max_tokens, n*H], activation dtype).
  Buffer io;
  int32_t* d_ints = nullptr;
  float* d_logits = nullptr;
  void* d_residual = nullptr;
  void* d_hidden = nullptr;  // the drafter's input residual [max_tokens, n*H] (activation dtype)
  std::vector<char> h_hidden;
  int32_t* h_ints = nullptr;  // pinned staging with the device layout of the int32 block
  std::vector<char> h_residual;

  size_t int_count() const { return static_cast<size_t>(5 * max_tokens + max_rows); }

  ~Impl() {
    // Destructors must not throw: errors here can only come from a device that already failed.
    if (stream != nullptr) cudaStreamSynchronize(stream);
    blas.reset();
    if (h_ints != nullptr) cudaFreeHost(h_ints);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }
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
  const size_t ints = align256(m.int_count() * sizeof(int32_t));
  const size_t logits = align256(static_cast<size_t>(max_rows * m.vocab) * sizeof(float));
  const size_t residual = align256(static_cast<size_t>(max_tokens * cfg.hc_dim()) * dtype_size(m.act));
  m.io = Buffer(ints + logits + 2 * residual, Device::kCUDA);
  char* base = static_cast<char*>(m.io.data());
  m.d_ints = reinterpret_cast<int32_t*>(base);
  m.d_logits = reinterpret_cast<float*>(base + ints);
  m.d_residual = base + ints + logits;
  m.d_hidden = base + ints + logits + residual;
  DSV4_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&m.h_ints), m.int_count() * sizeof(int32_t)));
  std::memset(m.h_ints, 0, m.int_count() * sizeof(int32_t));
  ctx.stream = m.stream;
  ctx.blas = m.blas.get();
}

DeviceForward::~DeviceForward() = default;

size_t DeviceForward::device_bytes() const { return impl_->io.size() + impl_->blas->workspace_bytes; }

BatchMeta DeviceForward::upload_meta(ExecContext& ctx, BatchBuilder& batch) {
  Impl& m = *impl_;
  const int64_t T = batch.num_tokens(), R = batch.num_logit_rows();
  DSV4_CHECK_ARG(T <= m.max_tokens && R <= m.max_rows, "device forward: ", T, " tokens / ", R,
                 " logit rows exceed the device buffers (", m.max_tokens, " / ", m.max_rows, ")");
  const BatchMeta host = batch.meta();
  const Tensor* fields[5] = {&host.ids, &host.pos, &host.slot, &host.start, &host.end};
  // The previous forward synchronised its stream, so the staging buffer is free to rewrite.
  for (int f = 0; f < 5; ++f) std::memcpy(m.h_ints + f * m.max_tokens, fields[f]->data(), T * sizeof(int32_t));
  const Tensor rows = batch.logit_rows();
  std::memcpy(m.h_ints + 5 * m.max_tokens, rows.data(), R * sizeof(int32_t));
  DSV4_CUDA_CHECK(cudaMemcpyAsync(m.d_ints, m.h_ints, m.int_count() * sizeof(int32_t), cudaMemcpyHostToDevice,
                                  static_cast<cudaStream_t>(ctx.stream)));
  auto view = [&](int f) { return Tensor(m.d_ints + f * m.max_tokens, DType::I32, {T}, Device::kCUDA); };
  return {view(0), view(1), view(2), view(3), view(4), T};
}

void DeviceForward::forward(ExecContext& ctx, const ModelConfig& cfg, const ModelWeights& w, ModelState& state,
                            BatchBuilder& batch, std::vector<float>* logits, std::vector<float>* residual) {
  Impl& m = *impl_;
  const int64_t T = batch.num_tokens(), R = batch.num_logit_rows();
  const cudaStream_t stream = static_cast<cudaStream_t>(ctx.stream);
  const BatchMeta meta = upload_meta(ctx, batch);
  const Tensor rows(m.d_ints + 5 * m.max_tokens, DType::I32, {R}, Device::kCUDA);
  const Tensor logits_d(m.d_logits, DType::F32, {R, m.vocab}, Device::kCUDA);
  Tensor residual_d;
  if (residual != nullptr) residual_d = Tensor(m.d_residual, m.act, {T, m.hc_mult, m.hidden}, Device::kCUDA);
  target_forward(ctx, cfg, w, state, meta, rows, logits_d, residual_d);
  logits->resize(static_cast<size_t>(R * m.vocab));
  DSV4_CUDA_CHECK(
      cudaMemcpyAsync(logits->data(), m.d_logits, logits->size() * sizeof(float), cudaMemcpyDeviceToHost, stream));
  if (residual != nullptr) {
    m.h_residual.resize(residual_d.nbytes());
    DSV4_CUDA_CHECK(
        cudaMemcpyAsync(m.h_residual.data(), m.d_residual, m.h_residual.size(), cudaMemcpyDeviceToHost, stream));
  }
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (residual != nullptr) {
    residual->resize(static_cast<size_t>(residual_d.numel()));
    convert_to_f32(m.act, m.h_residual.data(), residual->data(), residual->size());
  }
}

void DeviceForward::mtp_forward(ExecContext& ctx, const ModelConfig& cfg, const ModelWeights& w, ModelState& state,
                                BatchBuilder& batch, const std::vector<float>& hidden, std::vector<float>* logits,
                                std::vector<float>* hidden_out) {
  Impl& m = *impl_;
  const int64_t T = batch.num_tokens(), R = batch.num_logit_rows();
  const cudaStream_t stream = static_cast<cudaStream_t>(ctx.stream);
  const BatchMeta meta = upload_meta(ctx, batch);
  const Tensor rows(m.d_ints + 5 * m.max_tokens, DType::I32, {R}, Device::kCUDA);
  const Tensor logits_d(m.d_logits, DType::F32, {R, m.vocab}, Device::kCUDA);
  const Tensor prev(m.d_hidden, m.act, {T, m.hc_mult, m.hidden}, Device::kCUDA);
  const Tensor out(m.d_residual, m.act, {T, m.hc_mult, m.hidden}, Device::kCUDA);
  m.h_hidden.resize(prev.nbytes());
  convert_from_f32(hidden.data(), m.act, m.h_hidden.data(), hidden.size());
  DSV4_CUDA_CHECK(cudaMemcpyAsync(m.d_hidden, m.h_hidden.data(), m.h_hidden.size(), cudaMemcpyHostToDevice, stream));
  {
    ArenaScope scope(*ctx.scratch);
    ::dsv4::mtp_forward(ctx, cfg, w, state, meta, prev, out);
    Tensor picked = ctx.scratch->alloc(m.act, {R, m.hc_mult, m.hidden});
    ops::gather_rows(ctx, picked, out, rows);
    mtp_logits(ctx, cfg, w, picked, logits_d);
  }
  logits->resize(static_cast<size_t>(R * m.vocab));
  DSV4_CUDA_CHECK(
      cudaMemcpyAsync(logits->data(), m.d_logits, logits->size() * sizeof(float), cudaMemcpyDeviceToHost, stream));
  m.h_residual.resize(out.nbytes());
  DSV4_CUDA_CHECK(
      cudaMemcpyAsync(m.h_residual.data(), m.d_residual, m.h_residual.size(), cudaMemcpyDeviceToHost, stream));
  DSV4_CUDA_CHECK(cudaStreamSynchronize(stream));  // also keeps h_hidden alive until its copy is done
  hidden_out->resize(static_cast<size_t>(out.numel()));
  convert_to_f32(m.act, m.h_residual.data(), hidden_out->data(), hidden_out->size());
}

size_t Engine::device_io_bytes() const { return device_ ? device_->device_bytes() : 0; }

}  // namespace dsv4
