// dsv4::ops — one function per op. Each validates shapes and dtypes (kInvalidArgument naming the
// operand) and dispatches on ctx.device to the CPU reference (backend/cpu) or the CUDA kernels
// (backend/cuda). Model code is written once against these functions.
//
// Conventions: activations are row-major [T, ...] with T = tokens in the forward; per-token batch
// metadata (BatchMeta) lives in device buffers so kernels never read host data and shapes depend only
// on T; outputs never alias inputs unless an op says so.
#pragma once

#include <span>
#include <vector>

#include "dsv4/core/exec_context.h"
#include "dsv4/core/tensor.h"
#include "dsv4/io/config.h"
#include "dsv4/ops/op_types.h"

namespace dsv4 {
namespace ops {

// The scalars of the mHC and routing ops, from a model's config.
inline MhcParams mhc_params(const ModelConfig& c) {
  return {static_cast<float>(c.rms_norm_eps), static_cast<float>(c.hc_eps), c.hc_sinkhorn_iters};
}
inline RouteParams route_params(const ModelConfig& c) {
  return {c.scoring_func, static_cast<float>(c.routed_scaling_factor), c.norm_topk_prob};
}

// out[t] = table[ids[t]]  (ids int32, validated against the vocabulary by the caller)
void embedding(ExecContext& ctx, Tensor out, Tensor table, Tensor ids);
// out[t, s, :] = x[t, :] for every stream s  (out [T, n, H])
void broadcast_streams(ExecContext& ctx, Tensor out, Tensor x);
// out = x @ w^T   (x [T, K], w [N, K], out [T, N]). The projections and the MoE take a Weight (core/weight.h): plain
// everywhere, or on CUDA kept quantised (--cuda-weights quantized: FP8 / FP4 codes expanded in the GEMV's registers at
// small T, otherwise dequantised to bf16 in scratch for the bf16 product; x must then be bf16). The CPU backend takes
// plain weights only (kInternal otherwise: its loader dequantises).
void linear(ExecContext& ctx, Tensor out, Tensor x, const Weight& w);
// Several projections of the same x: out_i = x @ w_i^T for each {out_i, w_i} (shapes as linear). On CUDA the
// small-T weight-streaming ones share one launch; the values are those of separate linear calls.
void linears(ExecContext& ctx, Tensor x, const std::vector<Projection>& projections);
// Block-diagonal grouped projection: x [T, G*K] viewed [T, G, K], w [G*N, K] → out [T, G*N]
void grouped_linear(ExecContext& ctx, Tensor out, Tensor x, const Weight& w, int64_t groups);
// RMSNorm over the last dimension of x viewed [rows, dim]; w may be undefined (no weight). out may be x.
void rms_norm(ExecContext& ctx, Tensor out, Tensor x, Tensor w, float eps);
// out = a + b (same shapes). out may alias a or b.
void add(ExecContext& ctx, Tensor out, Tensor a, Tensor b);
// out = x (same number of elements; a device-to-device copy)
void copy(ExecContext& ctx, Tensor out, Tensor x);
// out = x converted to out's dtype (same number of elements): between F32 and BF16, or I32 -> I64.
void convert(ExecContext& ctx, Tensor out, Tensor x);
// out[r] = x[rows[r]]
void gather_rows(ExecContext& ctx, Tensor out, Tensor x, Tensor rows);
// out[rows[r]] = x[r] for every r with rows[r] >= 0 (rows I32 [R], x [R, ...]; the other rows of out are kept).
void scatter_rows(ExecContext& ctx, Tensor out, Tensor x, Tensor rows);

// GPT-J interleaved RoPE on the last table.rope_dim channels of each head of x [T, heads, dim], at
// positions pos [T]; inverse = rotate by -angle (used on the attention output). In place.
void rope(ExecContext& ctx, Tensor x, Tensor pos, const RopeTable& table, bool inverse);
// rms_norm of each head of x [T, heads, dim] (weight w [dim] or undefined), then rope at pos (not inverse), in
// place: the same values as the two ops one after the other (the norm's output rounded to x's dtype before the
// rotation), in one pass on CUDA. Several parts (the same T and dim, each with its own heads and weight) share one
// launch on CUDA where their dtypes allow: a layer's query heads and its kv row.
void rms_norm_rope(ExecContext& ctx, std::span<const NormRopeHeads> parts, float eps, Tensor pos,
                   const RopeTable& table);
inline void rms_norm_rope(ExecContext& ctx, Tensor x, Tensor w, float eps, Tensor pos, const RopeTable& table) {
  const NormRopeHeads part{x, w};
  rms_norm_rope(ctx, std::span<const NormRopeHeads>(&part, 1), eps, pos, table);
}
// The MTP draft layer's input norms (DeepSeek-V4's MTP module), RMSNorms as above of two kinds of
// rows: enorm_out [T, H] = rms_norm(positions[t] == 0 ? 0 : inputs_embeds[t]; enorm_w) and hnorm_out [T, hc, H] =
// rms_norm(prev_hidden[t, s]; hnorm_w), prev_hidden given as [T, hc, H] or [T, hc*H]. positions [T] int32;
// activations, weights and outputs share one dtype; every tensor contiguous.
void fused_mtp_input_rms_norm(ExecContext& ctx, Tensor enorm_out, Tensor hnorm_out, Tensor inputs_embeds,
                              Tensor positions, Tensor prev_hidden, Tensor enorm_w, Tensor hnorm_w, float eps);
// The same values in the layout of the MTP's input projection: out [T, hc, 2H] with out[t, s, :H] =
// hnorm(prev[t, s]) and out[t, s, H:] = enorm(e[t]), so that out.view(T*hc, 2H) @ [W_h | W_e]^T is one GEMM.
void fused_mtp_input_rms_norm_eh(ExecContext& ctx, Tensor out, Tensor inputs_embeds, Tensor positions,
                                 Tensor prev_hidden, Tensor enorm_w, Tensor hnorm_w, float eps);

// mHC pre: from streams x [T, n, H] and fn [(2+n)n, nH], base [(2+n)n], scale [3] compute
// post [T, n], comb [T, n, n] (Sinkhorn-normalised) and collapsed [T, H] = sum_i pre_i x_i (RMS-normalised with
// norm's weight when it has one).
void hc_pre(ExecContext& ctx, Tensor collapsed, Tensor post, Tensor comb, Tensor x, Tensor fn, Tensor base,
            Tensor scale, const MhcParams& params, const HcNorm& norm = {});
// mHC post: out[t, j] = post[t, j] * y[t] + sum_i comb[t, i, j] * x[t, i]   (out [T, n, H], not aliasing x)
void hc_post(ExecContext& ctx, Tensor out, Tensor y, Tensor x, Tensor post, Tensor comb);
// hc_head: out[t] = sum_i (sigmoid(m_i * scale + base_i) + hc_eps) x[t, i], m = (fn @ x[t]) * rsqrt(mean x²)
// (RMS-normalised with norm's weight when it has one)
void hc_head(ExecContext& ctx, Tensor out, Tensor x, Tensor fn, Tensor base, Tensor scale, const MhcParams& params,
             const HcNorm& norm = {});

// Compressor, step 1: for every token of the batch that closes a window (pos + 1 ≡ 0 mod rate), compute
// that window's entry from the raw kv/gate of its positions (taken from the batch rows kv/gate [T, width]
// for positions >= start, from the state ring otherwise), softmax-weighted per channel with ape
// [rate, width], RMSNorm(norm_w), RoPE at the window's first position, and store it in state.entries.
void compressor_emit(ExecContext& ctx, CompressorState& state, Tensor kv, Tensor gate, Tensor ape, Tensor norm_w,
                     const RopeTable& rope, const BatchMeta& meta, float eps);
// Compressor, step 2: store the batch's raw kv/gate in the state ring (after every read of this step).
void compressor_store(ExecContext& ctx, CompressorState& state, Tensor kv, Tensor gate, const BatchMeta& meta);

// Lightning indexer: for each token, score its visible compressed keys s < (pos+1)/rate with
// sum_h relu(q[t,h] · k[s]) * softmax_scale * w[t, h] and keep the top-k (descending score; fewer when
// fewer are visible). out [T, topk] int32, -1 padded. q [T, Hi, Di], w [T, Hi]; softmax_scale carries every
// constant factor (Di^-0.5 * Hi^-0.5).
void indexer_topk(ExecContext& ctx, Tensor out, Tensor q, Tensor w, const CompressorState& keys, const BatchMeta& meta,
                  float softmax_scale);

// Attention core with sinks. For each token: keys = the sliding window (positions pos-window+1..pos, from
// the batch kv [T, D] for positions >= start and from the kv_ring rows (position % ring) otherwise) ∪ compressed
// entries (HCA: every visible entry s < (pos+1)/rate; CSA: the indexer's selection `selected` [T, topk]);
// K = V; out [T, heads, D] = softmax-with-sink(q · k * scale) · v.  `compressed` may be null (sliding).
void attention(ExecContext& ctx, Tensor out, Tensor q, Tensor kv, const PagedRows& kv_ring,
               const CompressorState* compressed, Tensor selected, Tensor sinks, const BatchMeta& meta, int64_t window,
               float scale);
// In place on x [rows, width] (F32; on CUDA also BF16): the values a cache of `format` gives back (see KvRoundTrip).
// E4M3 is rounded to nearest-even and saturates at +-448; kFp8Blocks scales each block of 64 no-RoPE values (the last
// block may be shorter) by s = 2^ceil(log2(max(amax, 1e-4) / 448)) (exactly: io/quantization.h's scale_exponent);
// kFp8Row the whole row by s = max(amax, 1e-4) / 448 (fp32). The value given back is e4m3(x / s) * s (fp32 division
// and product). kFp4Rotated (rows a power of two wide) rotates the row, then rounds it through E2M1 per 32 values
// (dsv4/ops/kv_fp4.h). CUDA: kFp8Blocks, kFp8Row and kFp4Rotated (at most 256 wide): the fp8 cache's formats, with
// the packed rows' codec (dsv4/ops/kv_fp8.h, kv_fp4.h).
void kv_round_trip(ExecContext& ctx, Tensor x, int64_t rope_dim, KvRoundTrip format);
// --activation-quant fp8, in place on x [rows, width] (F32; on CUDA also BF16): each row through E4M3 per 128 values
// with a UE8M0 scale (KvRoundTrip::kFp8Blocks128), as DeepSeek's reference quantises the activations entering an
// FP8/FP4 product.
void activation_round_trip(ExecContext& ctx, Tensor x);
// The same into out (x's shape and dtype; out may be x).
void activation_round_trip(ExecContext& ctx, Tensor out, Tensor x);
// Whether linear(out, x, w) (out of out_dtype) with ExecContext::fp8_input_rows set reads x only through its FP8
// codes and per-128 scales — CUDA's block-scaled FP8 product: a quantised FP8-block matrix past the GEMV's rows, with
// a cuBLASLt algorithm — which are the same values for x as for its activation_round_trip. False on the CPU.
bool linear_reads_fp8_codes(ExecContext& ctx, Tensor x, const Weight& w, DType out_dtype);
// Store the batch's kv rows into the sliding-window ring (after attention has read it).
void kv_ring_store(ExecContext& ctx, const PagedRows& kv_ring, Tensor kv, const BatchMeta& meta);
// Several ring stores at once (compressor_store and kv_ring_store are one and two of them): each batch row of
// `rows` [>= T, ring.width] (F32 or BF16) goes to `ring` at position % ring.rows, for each sequence's last ring.rows
// positions of this forward. A layer's stores run together after every read of the step: one launch on CUDA.
void ring_stores(ExecContext& ctx, const std::vector<RingStore>& stores, const BatchMeta& meta);

// MoE routing. logits [T, E] (float32). Hash layers: indices from tid2eid[ids] ([V, k] int32), no bias;
// others: top-k of score + bias. weights = score[idx] / sum (if normalise) * routed_scaling_factor.
void moe_route(ExecContext& ctx, Tensor weights, Tensor indices, Tensor logits, Tensor bias, Tensor tid2eid, Tensor ids,
               const RouteParams& params);
// Routed experts: out[t] = sum_k weights[t,k] * f_e(x[t]), e = indices[t, k], with the SwiGLU expert
// f_e(x) = w2[e] · (silu(min(w1[e]·x, L)) * clamp(w3[e]·x, -L, L)); w1/w3 [E, I, H], w2 [E, H, I].
// shared_expert: the last expert of w1/w2/w3 is a shared expert applied to every token with weight 1 and
// added after the routed terms: out[t] = sum_k weights[t,k] * f_{indices[t,k]}(x[t]) + f_{E-1}(x[t]); the
// routed indices must then be < E - 1. Sums in fp32 in that fixed order, rounded once to out's dtype.
// activation_quant (--activation-quant fp8): as DeepSeek's reference runs its FP4/FP8 experts — x through
// activation_round_trip before w1/w3, each term's routing weight applied before w2 (w2 · (weight · h)) and that input
// through activation_round_trip too; the terms are then summed with weight 1. CUDA rounds the weighted intermediate to
// the activation dtype before its round trip (bf16: close to, not equal to, the CPU's f32).
// Quantised stacks (CUDA): the routed experts in one format, the shared expert (stack index E - 1) in its own.
void moe_experts(ExecContext& ctx, Tensor out, Tensor x, Tensor indices, Tensor weights, const Weight& w1,
                 const Weight& w2, const Weight& w3, float limit, bool shared_expert = false,
                 bool activation_quant = false);
// out = silu(min(gate, L)) * clamp(up, -L, L)
void swiglu(ExecContext& ctx, Tensor out, Tensor gate, Tensor up, float limit);

// Synthetic weights: out[i] = mean + std * z_i with z_i a counter-based normal of (seed, i) (identical on
// every device; core/hash_random.h). Float tensors of any dtype.
void fill_random(ExecContext& ctx, Tensor out, uint64_t seed, float mean, float std);
// A hash-routing table tid2eid [V, k] (int32): k distinct experts per token, (h(seed, row) + j) mod E.
void fill_expert_table(ExecContext& ctx, Tensor out, uint64_t seed, int64_t num_experts);

// Greedy next tokens: out[r] = argmax(logits[r]) (int32; ties → lowest index).
void argmax(ExecContext& ctx, Tensor out, Tensor logits);

// Next tokens (int32 out [R]) from logits [R, V] (f32, V <= 2^23) with per-row params (U8 [R, 32]):
// - temperature <= 0: argmax_token (ties → lowest index; a NaN in column 0 selects token 0).
// - otherwise weights w = exp((logit - max) / T) (finite logits) as integer masses round(w * 2^40)
//   (exact, order-independent sums), restricted to the smallest nucleus reaching ceil(top_p * total)
//   (weights descending, ties → lower index), and a draw at floor(mass * bits / 2^24) with 24 bits from
//   Philox4x32-10(key seed; counter, stream), walking the vocabulary in lane-major order (v % kSampleLanes,
//   then v / kSampleLanes) — the order the CUDA kernel scans in. backend/cpu/sample.cc is the reference.
// `info` (optional, U8 [R, sizeof(NucleusInfo)]): each sampled row's nucleus, so that a later op can recompute
// any token's mass without the sort (speculative_accept); rows with temperature <= 0 leave theirs unwritten.
// `nonfinite` (optional, I32 [R]): 1 for a row whose logits hold a NaN or an infinity, else 0 (the token drawn for
// such a row is still a valid id, so device-side consumers stay in bounds; callers must not emit it).
void sample_tokens(ExecContext& ctx, Tensor out, Tensor logits, Tensor params, Tensor info = Tensor(),
                   Tensor nonfinite = Tensor());

// Speculative decoding's verification ids: ids [b * (K + 1)] holds per sequence [last, d_1 .. d_K]; rows r >= 1 are
// overwritten with drafts [K * b] (step-major: d_j of sequence i at (j - 1) * b + i). Row 0 is kept.
void speculative_verify_ids(ExecContext& ctx, Tensor ids, Tensor drafts, int64_t K);

// Acceptance of K drafts per sequence (b sequences) against the target (docs/speculative.md):
//   target_logits [b * (K + 1), V] f32 (row i * (K + 1) + r: the target after [last, d_1 .. d_r]), target_tokens
//   [b * (K + 1)] (sample_tokens of those rows: the argmax for greedy rows, else a draw with Philox word 3 at counter
//   g + r), target_info (their nuclei); draft_logits [K * b, V], draft_tokens [K * b], draft_info (step-major, the
//   drafter's rows and draws with word 1 at counter g + j - 1); params [b] (U8 [b, 32]: temperature, top_p, seed,
//   stream, counter = g, the tokens the sequence has generated).
// Greedy (temperature <= 0): d_j is accepted while it equals the target's argmax of row j - 1; then the argmax of
// the first row not matched (recovered, or the bonus token after K acceptances). Sampled: d_j is accepted when
// bits * q(d_j) < p(d_j) * 2^24 (24 bits of Philox word 2 at counter g + j - 1; p, q the normalised probabilities of
// the target's row j - 1 and the drafter's row j); on the first rejection the next token is drawn from
// max(0, p - q) (word 3 at counter g + j - 1; from p where that is 0 everywhere); after K acceptances it is the
// target's draw of row K. Writes out [b, K + 1] (the accepted drafts, then the next token, then -1) and counts [b]
// (accepted + 1). backend/cpu/sample.cc is the reference.
void speculative_accept(ExecContext& ctx, Tensor out, Tensor counts, Tensor target_logits, Tensor target_info,
                        Tensor target_tokens, Tensor draft_logits, Tensor draft_info, Tensor draft_tokens,
                        Tensor params);

}  // namespace ops
}  // namespace dsv4
