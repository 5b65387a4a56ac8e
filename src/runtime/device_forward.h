// DeviceForward: what the engine needs to run a forward on a CUDA device — its stream, the cuBLASLt
// handle and workspace, and persistent device buffers at fixed addresses for the per-step inputs
// (BatchMeta, logit rows) and outputs (logits, the pre-hc_head residual). Created once with the engine;
// a forward copies the host batch in (async, pinned staging), runs target_forward on the stream and
// copies the outputs back. Nothing is allocated per forward, so the same buffers can feed CUDA graphs.
#pragma once

#include <memory>
#include <vector>

#include "dsv4/model/deepseek_v4.h"
#include "dsv4/runtime/batch.h"

namespace dsv4 {

class DeviceForward {
 public:
  // Sets ctx.stream and ctx.blas (owned here; ctx must not outlive this object).
  DeviceForward(const ModelConfig& cfg, const ModelState& state, int64_t max_tokens, int64_t max_rows,
                ExecContext& ctx);
  ~DeviceForward();
  DeviceForward(const DeviceForward&) = delete;
  DeviceForward& operator=(const DeviceForward&) = delete;

  // One target forward: logits [R, V] (and, if residual != nullptr, the residual [T, n*H] as f32) on the host.
  // ctx.scratch must have been reset by the caller.
  void forward(ExecContext& ctx, const ModelConfig& cfg, const ModelWeights& w, ModelState& state, BatchBuilder& batch,
               std::vector<float>* logits, std::vector<float>* residual);

  // One MTP drafter forward (model/mtp.h): `hidden` [T, n*H] host residual rows in, draft logits [R, V] and
  // the new residual [T, n*H] out (host, f32).
  void mtp_forward(ExecContext& ctx, const ModelConfig& cfg, const ModelWeights& w, ModelState& state,
                   BatchBuilder& batch, const std::vector<float>& hidden, std::vector<float>* logits,
                   std::vector<float>* hidden_out);

  // Device batch inputs for a host batch (copied asynchronously on ctx's stream); valid until the next call.
  BatchMeta upload_meta(ExecContext& ctx, BatchBuilder& batch);

  size_t device_bytes() const;  // persistent input/output buffers + cuBLASLt workspace

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv4
