// CPU reference kernels (fp32 math, OpenMP over rows). Called by dsv4::ops after validation: every
// tensor is contiguous, float32 unless stated, on the CPU.
#pragma once

#include <cmath>

#include "backend/cpu/dot.h"
#include "dsv4/ops/op_types.h"

namespace dsv4::cpu {

// Work (multiply-adds) below which a loop runs on one thread. The CLI runs OpenMP with passive waits
// (src/cli/main.cc), so a parallel region wakes sleeping threads: tens of microseconds on a virtual machine, which
// only loops of ~100 us of work repay. With passive waits, 2^20 against 2^18 / 2^21 / 2^22 / one thread on this
// project's 2-core box: a b = 1 decode 340 ms against 394 / 355 / 357 / 357, 8 prompts 554 against 551 / 545 / 594
// / 604 (bench/RESULTS.md).
constexpr int64_t kParallelWork = int64_t{1} << 20;

void embedding(Tensor out, Tensor table, Tensor ids);
void broadcast_streams(Tensor out, Tensor x);
void linear(Tensor out, Tensor x, Tensor w);
// Y[m, :N] = X[m, :K] · W[n, :K]^T for m < M: sgemm from kBlasMinRows rows (blas.h), dot_rows below.
void product_nt(int64_t M, int64_t N, int64_t K, const float* X, int64_t ldx, const float* W, int64_t ldw, float* Y,
                int64_t ldy);
void grouped_linear(Tensor out, Tensor x, Tensor w, int64_t groups);
void rms_norm(Tensor out, Tensor x, Tensor w, float eps);
void linears(Tensor x, const std::vector<ops::Projection>& projections);
void add(Tensor out, Tensor a, Tensor b);
void copy(Tensor out, Tensor x);
void convert(Tensor out, Tensor x);  // F32 <-> BF16, I32 -> I64
void gather_rows(Tensor out, Tensor x, Tensor rows);
void swiglu(Tensor out, Tensor gate, Tensor up, float limit);
void fill_random(Tensor out, uint64_t seed, float mean, float std);
void fill_expert_table(Tensor out, uint64_t seed, int64_t num_experts);
void argmax(Tensor out, Tensor logits);
void sample_tokens(Tensor out, Tensor logits, Tensor params, Tensor info, Tensor nonfinite);  // backend/cpu/sample.cc
void scatter_rows(Tensor out, Tensor x, Tensor rows);
void speculative_verify_ids(Tensor ids, Tensor drafts, int64_t K);  // backend/cpu/sample.cc
void speculative_accept(Tensor out, Tensor counts, Tensor target_logits, Tensor target_info, Tensor target_tokens,
                        Tensor draft_logits, Tensor draft_info, Tensor draft_tokens, Tensor params);
void rope(Tensor x, Tensor pos, const RopeTable& table, bool inverse);
void rms_norm_rope(std::span<const NormRopeHeads> parts, float eps, Tensor pos, const RopeTable& table);
void fused_mtp_input_rms_norm(Tensor enorm_out, Tensor hnorm_out, Tensor inputs_embeds, Tensor positions,
                              Tensor prev_hidden, Tensor enorm_w, Tensor hnorm_w, float eps);
void fused_mtp_input_rms_norm_eh(Tensor out, Tensor inputs_embeds, Tensor positions, Tensor prev_hidden, Tensor enorm_w,
                                 Tensor hnorm_w, float eps);
// Rotates the last table.rope_dim channels of one vector v[dim] at `position`.
void rope_vector(float* v, int64_t dim, const RopeTable& table, float position, bool inverse);

void hc_pre(Tensor collapsed, Tensor post, Tensor comb, Tensor x, Tensor fn, Tensor base, Tensor scale,
            const ops::MhcParams& params, const ops::HcNorm& norm);
void hc_post(Tensor out, Tensor y, Tensor x, Tensor post, Tensor comb);
void hc_head(Tensor out, Tensor x, Tensor fn, Tensor base, Tensor scale, const ops::MhcParams& params,
             const ops::HcNorm& norm);

void compressor_emit(CompressorState& state, Tensor kv, Tensor gate, Tensor ape, Tensor norm_w, const RopeTable& rope,
                     const BatchMeta& meta, float eps);
void indexer_topk(Tensor out, Tensor q, Tensor w, const CompressorState& keys, const BatchMeta& meta,
                  float softmax_scale);
void attention(Tensor out, Tensor q, Tensor kv, const PagedRows& kv_ring, const CompressorState* compressed,
               Tensor selected, Tensor sinks, const BatchMeta& meta, int64_t window, float scale);
void ring_stores(const std::vector<ops::RingStore>& stores, const BatchMeta& meta);
void kv_round_trip(Tensor x, int64_t rope_dim, KvRoundTrip format);  // backend/cpu/kv_cache.cc
void kv_round_trip_row(float* row, int64_t width, int64_t rope_dim, KvRoundTrip format);

void moe_route(Tensor weights, Tensor indices, Tensor logits, Tensor bias, Tensor tid2eid, Tensor ids,
               const ops::RouteParams& params);
void moe_experts(Tensor out, Tensor x, Tensor indices, Tensor weights, Tensor w1, Tensor w2, Tensor w3, float limit,
                 bool shared_expert, bool activation_quant = false);

// Shared scalar helpers (also used by tests as the direct formulas).
inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
// out[i] = silu(min(gate[i], limit)) * clamp(up[i], -limit, limit) for i < n (out may be gate), exp on vector lanes
// (vector_exp.h). backend/cpu/dense.cc.
void swiglu_values(float* out, const float* gate, const float* up, int64_t n, float limit);
// torch.nn.functional.softplus with beta 1, threshold 20.
inline float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

}  // namespace dsv4::cpu
