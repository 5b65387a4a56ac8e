// CUDA implementations of dsv4::ops (same signatures as backend/cpu, plus the context for the stream and
// cuBLASLt). Each op lives in its own .cu file with its kernels and launcher.
#pragma once

#include "dsv4/ops/op_types.h"

namespace dsv4::cuda {

// While a DryRunScope(true) is alive, this thread's kernel launches, GEMMs and copies are skipped: the measuring
// pass (ExecContext::measuring) runs the backend for its scratch allocations only.
bool dry_run();
class DryRunScope {
 public:
  explicit DryRunScope(bool on);
  ~DryRunScope();
  DryRunScope(const DryRunScope&) = delete;
  DryRunScope& operator=(const DryRunScope&) = delete;

 private:
  bool previous_;
};

void embedding(ExecContext& ctx, Tensor out, Tensor table, Tensor ids);
void broadcast_streams(ExecContext& ctx, Tensor out, Tensor x);
void linear(ExecContext& ctx, Tensor out, Tensor x, const Weight& w);
void grouped_linear(ExecContext& ctx, Tensor out, Tensor x, const Weight& w, int64_t groups);
void rms_norm(ExecContext& ctx, Tensor out, Tensor x, Tensor w, float eps);
void linears(ExecContext& ctx, Tensor x, const std::vector<ops::Projection>& projections);
void add(ExecContext& ctx, Tensor out, Tensor a, Tensor b);
void copy(ExecContext& ctx, Tensor out, Tensor x);
void convert(ExecContext& ctx, Tensor out, Tensor x);
void gather_rows(ExecContext& ctx, Tensor out, Tensor x, Tensor rows);
void swiglu(ExecContext& ctx, Tensor out, Tensor gate, Tensor up, float limit);
void fill_random(ExecContext& ctx, Tensor out, uint64_t seed, float mean, float std);
void fill_expert_table(ExecContext& ctx, Tensor out, uint64_t seed, int64_t num_experts);
void argmax(ExecContext& ctx, Tensor out, Tensor logits);
void sample_tokens(ExecContext& ctx, Tensor out, Tensor logits, Tensor params, Tensor info, Tensor nonfinite);
void scatter_rows(ExecContext& ctx, Tensor out, Tensor x, Tensor rows);
void speculative_verify_ids(ExecContext& ctx, Tensor ids, Tensor drafts, int64_t K);
void speculative_accept(ExecContext& ctx, Tensor out, Tensor counts, Tensor target_logits, Tensor target_info,
                        Tensor target_tokens, Tensor draft_logits, Tensor draft_info, Tensor draft_tokens,
                        Tensor params);
void rope(ExecContext& ctx, Tensor x, Tensor pos, const RopeTable& table, bool inverse);
void rms_norm_rope(ExecContext& ctx, std::span<const NormRopeHeads> parts, float eps, Tensor pos,
                   const RopeTable& table);
void fused_mtp_input_rms_norm(ExecContext& ctx, Tensor enorm_out, Tensor hnorm_out, Tensor inputs_embeds,
                              Tensor positions, Tensor prev_hidden, Tensor enorm_w, Tensor hnorm_w, float eps);
void fused_mtp_input_rms_norm_eh(ExecContext& ctx, Tensor out, Tensor inputs_embeds, Tensor positions,
                                 Tensor prev_hidden, Tensor enorm_w, Tensor hnorm_w, float eps);
void hc_pre(ExecContext& ctx, Tensor collapsed, Tensor post, Tensor comb, Tensor x, Tensor fn, Tensor base,
            Tensor scale, const ops::MhcParams& params, const ops::HcNorm& norm);
void hc_post(ExecContext& ctx, Tensor out, Tensor y, Tensor x, Tensor post, Tensor comb);
void hc_head(ExecContext& ctx, Tensor out, Tensor x, Tensor fn, Tensor base, Tensor scale, const ops::MhcParams& params,
             const ops::HcNorm& norm);
void compressor_emit(ExecContext& ctx, CompressorState& state, Tensor kv, Tensor gate, Tensor ape, Tensor norm_w,
                     const RopeTable& rope, const BatchMeta& meta, float eps);
void indexer_topk(ExecContext& ctx, Tensor out, Tensor q, Tensor w, const CompressorState& keys, const BatchMeta& meta,
                  float softmax_scale);
void attention(ExecContext& ctx, Tensor out, Tensor q, Tensor kv, const PagedRows& kv_ring,
               const CompressorState* compressed, Tensor selected, Tensor sinks, const BatchMeta& meta, int64_t window,
               float scale);
void ring_stores(ExecContext& ctx, const std::vector<ops::RingStore>& stores, const BatchMeta& meta);
// --kv-cache-dtype fp8: x's rows (F32 or BF16) replaced in place by the values the packed format gives back
// (kFp8Blocks / kFp8Row / kFp4Rotated, as the CPU's kv_round_trip). backend/cuda/kv_fp8.cu.
void kv_round_trip(ExecContext& ctx, Tensor x, int64_t rope_dim, KvRoundTrip format);
void moe_route(ExecContext& ctx, Tensor weights, Tensor indices, Tensor logits, Tensor bias, Tensor tid2eid, Tensor ids,
               const ops::RouteParams& params);
// linear, linears, grouped_linear and moe_experts take quantised weights too (core/weight.h): quant_gemv /
// moe_decode_experts_quant where they serve the shapes, else the weights dequantised to bf16 in ctx.scratch.
// activation_quant: DeepSeek's FP8 round trip of x and of each expert's weighted SwiGLU output before w2 (the CPU's
// moe_experts with activation_quant; act_quant.h).
void moe_experts(ExecContext& ctx, Tensor out, Tensor x, Tensor indices, Tensor weights, const Weight& w1,
                 const Weight& w2, const Weight& w3, float limit, bool shared_expert, bool activation_quant = false);
// Whether linear(out [of out_dtype], x, w) under ExecContext::fp8_input_rows runs on x's FP8 codes (the block-scaled
// FP8 product), which are the same for x and for its act_quant round trip: a quantised FP8-block matrix past
// quant_gemv's rows with a cuBLASLt algorithm (ops::linear_reads_fp8_codes).
bool linear_reads_fp8_codes(const ExecContext& ctx, Tensor x, const Weight& w, DType out_dtype);
// --activation-quant fp8: x's rows (F32 or BF16) replaced in place by their FP8 round trip per 128 values
// (the CPU's kv_round_trip kFp8Blocks128). backend/cuda/act_quant.cu.
void activation_round_trip(ExecContext& ctx, Tensor x);
// The same into out (out may be x).
void activation_round_trip(ExecContext& ctx, Tensor out, Tensor x);

}  // namespace dsv4::cuda
