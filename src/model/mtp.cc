#include "dsv4/model/mtp.h"

#include "dsv4/model/deepseek_v4.h"
#include "dsv4/ops/ops.h"

namespace dsv4 {

void mtp_forward(ExecContext& ctx, const ModelConfig& c, const ModelWeights& w, ModelState& state,
                 const BatchMeta& meta, Tensor prev_hidden, Tensor out) {
  DSV4_CHECK(w.mtp.has_value(), kUnsupported, "this checkpoint has no MTP layer (mtp.0.*)");
  const MtpWeights& m = *w.mtp;
  Arena& A = *ctx.scratch;
  ArenaScope scope(A);
  const int64_t T = meta.num_tokens, n = c.hc_mult, H = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const DType act = prev_hidden.dtype();
  Tensor emb = A.alloc(act, {T, H});
  ops::embedding(ctx, emb, w.embed, meta.ids);
  // [hnorm(prev[t, s]) | enorm(masked e[t])] per slot, so that x = [W_h | W_e] · row is one GEMM.
  Tensor eh = A.alloc(act, {T, n, 2 * H});
  ops::fused_mtp_input_rms_norm_eh(ctx, eh, emb, meta.pos.rows(0, T), prev_hidden, m.enorm, m.hnorm, eps);
  Tensor x = A.alloc(act, {T, n, H});
  // h_proj and e_proj (FP8 in DeepSeek's checkpoints) as one product; each half's activations quantised on its own.
  quantized_linears(ctx, state, eh.view({T * n, 2 * H}), H, {{x.view({T * n, H}), m.eh_proj}});
  decoder_block(ctx, c, m.block, state.mtp, state, meta, x, out);
}

void mtp_logits(ExecContext& ctx, const ModelConfig& c, const ModelWeights& w, Tensor x, Tensor logits) {
  DSV4_CHECK(w.mtp.has_value(), kUnsupported, "this checkpoint has no MTP layer (mtp.0.*)");
  const MtpWeights& m = *w.mtp;
  Arena& A = *ctx.scratch;
  ArenaScope scope(A);
  const int64_t R = x.size(0);
  Tensor hn = A.alloc(x.dtype(), {R, c.hidden_size});
  ops::hc_head(ctx, hn, x, m.hc_head.fn, m.hc_head.base, m.hc_head.scale, ops::mhc_params(c),
               {m.norm, static_cast<float>(c.rms_norm_eps)});
  ops::linear(ctx, logits, hn, w.head);
}

void drafter_forward(ExecContext& ctx, const ModelConfig& c, const ModelWeights& w, ModelState& state,
                     const BatchMeta& meta, Tensor prev_hidden, Tensor out, Tensor logit_rows, Tensor logits) {
  ArenaScope scope(*ctx.scratch);
  mtp_forward(ctx, c, w, state, meta, prev_hidden, out);
  Tensor rows = ctx.scratch->alloc(out.dtype(), {logit_rows.size(0), c.hc_mult, c.hidden_size});
  ops::gather_rows(ctx, rows, out, logit_rows);
  mtp_logits(ctx, c, w, rows, logits);
}

}  // namespace dsv4
