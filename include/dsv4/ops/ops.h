// dsv4::ops — one function per op. Each validates shapes and dtypes (kInvalidArgument naming the
// operand) and dispatches on ctx.device to the CPU reference (backend/cpu) or the CUDA kernels
// (backend/cuda). Model code is written once against these functions.
//
// Conventions: activations are row-major [T, ...] with T = tokens in the forward; per-token batch
// metadata (BatchMeta) lives in device buffers so kernels never read host data and shapes depend only
// on T; outputs never alias inputs unless an op says so.
#pragma once

#include <vector>

#include "dsv4/core/exec_context.h"
#include "dsv4/core/tensor.h"
#include "dsv4/io/config.h"
#include "dsv4/ops/paged_rows.h"

namespace dsv4 {

// Per-token metadata of one forward. All [T] int32 on the compute device. A sequence's tokens are
// contiguous in the batch with consecutive positions; `start` is the position of its first token in
// this forward (= tokens already held in its state), `end` = start + its tokens in this forward; `slot` is
// the sequence's row of the state page table (PagedRows). Padding rows have slot = -1 and are ignored by every
// stateful op.
struct BatchMeta {
  Tensor ids, pos, slot, start, end;
  int64_t num_tokens = 0;
};

// Rotary table of one rope type: inv_freq [rope_dim/2] (float32) and the cos/sin scale.
struct RopeTable {
  Tensor inv_freq;
  float attention_factor = 1.0f;
  int64_t rope_dim = 0;
};

// The values an attention cache of a given format gives back (--kv-cache-dtype; ops::kv_round_trip).
enum class KvRoundTrip : uint8_t {
  kNone,       // as computed (f32 on the CPU, the activation dtype on CUDA)
  kBf16,       // every value rounded to bf16
  kFp8Blocks,  // DeepSeek-V4's window / compressed kv: the no-RoPE part in E4M3 per 64 values with a power-of-two
               // (UE8M0) scale, the RoPE part (last rope_dim values) in bf16
  kFp8Row,     // the indexer's keys: the whole row in E4M3 with one fp32 scale
};
const char* kv_round_trip_name(KvRoundTrip f);

// Per-sequence compressor state of one layer in the paged state (position-indexed: ring row = position % ring
// rows, entry j at row j; rejected speculative positions leave no trace because every entry is a function of
// the positions that produced it).
struct CompressorState {
  PagedRows raw_kv, raw_gate;  // ring rows of `width` float32: projected kv / gate (without ape) per position
  PagedRows entries;           // rows of `dim`: normalised, rotated compressed entries (entry capacity = rows)
  int64_t rate = 0;            // tokens per entry
  bool overlap = false;        // CSA-style: entry j mixes block j-1's first half with block j's second half
  int64_t dim = 0;             // entry width (head_dim or index_head_dim); width = (overlap ? 2 : 1) * dim
  KvRoundTrip entry_format = KvRoundTrip::kNone;  // what an entry goes through before it is stored
};

namespace ops {

// out[t] = table[ids[t]]  (ids int32, validated against the vocabulary by the caller)
void embedding(ExecContext& ctx, Tensor out, Tensor table, Tensor ids);
// out[t, s, :] = x[t, :] for every stream s  (out [T, n, H])
void broadcast_streams(ExecContext& ctx, Tensor out, Tensor x);
// out = x @ w^T   (x [T, K], w [N, K], out [T, N])
void linear(ExecContext& ctx, Tensor out, Tensor x, Tensor w);
// Several projections of the same x: out_i = x @ w_i^T for each {out_i, w_i} (shapes as linear). On CUDA the
// small-T weight-streaming ones share one launch; the values are those of separate linear calls.
struct Projection {
  Tensor out, w;
};
void linears(ExecContext& ctx, Tensor x, const std::vector<Projection>& projections);
// Block-diagonal grouped projection: x [T, G*K] viewed [T, G, K], w [G*N, K] → out [T, G*N]
void grouped_linear(ExecContext& ctx, Tensor out, Tensor x, Tensor w, int64_t groups);
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
// rotation), in one pass on CUDA.
void rms_norm_rope(ExecContext& ctx, Tensor x, Tensor w, float eps, Tensor pos, const RopeTable& table);
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
// post [T, n], comb [T, n, n] (Sinkhorn-normalised) and collapsed [T, H] = sum_i pre_i x_i.
void hc_pre(ExecContext& ctx, Tensor collapsed, Tensor post, Tensor comb, Tensor x, Tensor fn, Tensor base,
            Tensor scale, const ModelConfig& cfg);
// mHC post: out[t, j] = post[t, j] * y[t] + sum_i comb[t, i, j] * x[t, i]   (out [T, n, H], not aliasing x)
void hc_post(ExecContext& ctx, Tensor out, Tensor y, Tensor x, Tensor post, Tensor comb);
// hc_head: out[t] = sum_i (sigmoid(m_i * scale + base_i) + hc_eps) x[t, i], m = (fn @ x[t]) * rsqrt(mean x²)
void hc_head(ExecContext& ctx, Tensor out, Tensor x, Tensor fn, Tensor base, Tensor scale, const ModelConfig& cfg);

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
// In place on x [rows, width] (F32): the values a cache of `format` gives back (see KvRoundTrip). E4M3 is rounded to
// nearest-even and saturates at +-448; kFp8Blocks scales each block of 64 no-RoPE values (the last block may be
// shorter) by s = 2^ceil(log2(max(amax, 1e-4) / 448)) (exactly: io/quantization.h's scale_exponent);
// kFp8Row the whole row by s = max(amax, 1e-4) / 448 (fp32). The value given back is e4m3(x / s) * s (fp32 division
// and product). CPU only for now (the CUDA build rejects the fp8 cache up front).
void kv_round_trip(ExecContext& ctx, Tensor x, int64_t rope_dim, KvRoundTrip format);
// Store the batch's kv rows into the sliding-window ring (after attention has read it).
void kv_ring_store(ExecContext& ctx, const PagedRows& kv_ring, Tensor kv, const BatchMeta& meta);
// Several ring stores at once (compressor_store and kv_ring_store are one and two of them): each batch row of
// `rows` [>= T, ring.width] (F32 or BF16) goes to `ring` at position % ring.rows, for each sequence's last ring.rows
// positions of this forward. A layer's stores run together after every read of the step: one launch on CUDA.
struct RingStore {
  PagedRows ring;
  Tensor rows;
};
void ring_stores(ExecContext& ctx, const std::vector<RingStore>& stores, const BatchMeta& meta);

// MoE routing. logits [T, E] (float32). Hash layers: indices from tid2eid[ids] ([V, k] int32), no bias;
// others: top-k of score + bias. weights = score[idx] / sum (if normalise) * routed_scaling_factor.
void moe_route(ExecContext& ctx, Tensor weights, Tensor indices, Tensor logits, Tensor bias, Tensor tid2eid, Tensor ids,
               const ModelConfig& cfg);
// Routed experts: out[t] = sum_k weights[t,k] * f_e(x[t]), e = indices[t, k], with the SwiGLU expert
// f_e(x) = w2[e] · (silu(min(w1[e]·x, L)) * clamp(w3[e]·x, -L, L)); w1/w3 [E, I, H], w2 [E, H, I].
// shared_expert: the last expert of w1/w2/w3 is a shared expert applied to every token with weight 1 and
// added after the routed terms: out[t] = sum_k weights[t,k] * f_{indices[t,k]}(x[t]) + f_{E-1}(x[t]); the
// routed indices must then be < E - 1. Sums in fp32 in that fixed order, rounded once to out's dtype.
void moe_experts(ExecContext& ctx, Tensor out, Tensor x, Tensor indices, Tensor weights, Tensor w1, Tensor w2,
                 Tensor w3, float limit, bool shared_expert = false);
// out = silu(min(gate, L)) * clamp(up, -L, L)
void swiglu(ExecContext& ctx, Tensor out, Tensor gate, Tensor up, float limit);

// Synthetic weights: out[i] = mean + std * z_i with z_i a counter-based normal of (seed, i) (identical on
// every device; core/hash_random.h). Float tensors of any dtype.
void fill_random(ExecContext& ctx, Tensor out, uint64_t seed, float mean, float std);
// A hash-routing table tid2eid [V, k] (int32): k distinct experts per token, (h(seed, row) + j) mod E.
void fill_expert_table(ExecContext& ctx, Tensor out, uint64_t seed, int64_t num_experts);

// Greedy next tokens: out[r] = argmax(logits[r]) (int32; ties → lowest index).
void argmax(ExecContext& ctx, Tensor out, Tensor logits);

// One row's parameters of sample_tokens, stored as raw bytes in its `params` tensor (U8 [R, 32]) so they
// can live in a device buffer written before a (captured) forward.
struct TokenSamplingParams {
  float temperature = 0.0f;  // <= 0: greedy
  float top_p = 1.0f;        // nucleus mass in (0, 1]
  uint64_t seed = 0;         // Philox key
  uint64_t stream = 0;       // Philox counter, high half (e.g. the sequence)
  uint64_t counter = 0;      // Philox counter, low half (e.g. tokens the sequence has drawn)
};
static_assert(sizeof(TokenSamplingParams) == 32, "sample_tokens reads 32-byte parameter rows");
// Lanes of sample_tokens' draw order (see below).
constexpr int64_t kSampleLanes = 512;

// Next tokens (int32 out [R]) from logits [R, V] (f32, V <= 2^23) with per-row params (U8 [R, 32]):
// - temperature <= 0: argmax_token (ties → lowest index; a NaN in column 0 selects token 0).
// - otherwise weights w = exp((logit - max) / T) (finite logits) as integer masses round(w * 2^40)
//   (exact, order-independent sums), restricted to the smallest nucleus reaching ceil(top_p * total)
//   (weights descending, ties → lower index), and a draw at floor(mass * bits / 2^24) with 24 bits from
//   Philox4x32-10(key seed; counter, stream), walking the vocabulary in lane-major order (v % kSampleLanes,
//   then v / kSampleLanes) — the order the CUDA kernel scans in. backend/cpu/sample.cc is the reference.
// `info` (optional, U8 [R, sizeof(NucleusInfo)]): each sampled row's nucleus, so that a later op can recompute
// any token's mass without the sort (speculative_accept); rows with temperature <= 0 leave theirs unwritten.
void sample_tokens(ExecContext& ctx, Tensor out, Tensor logits, Tensor params, Tensor info = Tensor());

// A sampled row's nucleus as sample_tokens found it: token v of the row has weight w = exp((logit[v] - max) / T)
// and mass round(w * 2^40) if bits(w) > boundary or (bits(w) == boundary and v <= limit), else 0; `total` is the sum
// of the masses (0 only for non-finite logits). Its normalised probability is round(mass / total * 2^40)
// (nucleus_probability, backend/philox.h), the unit speculative acceptance works in.
struct NucleusInfo {
  float max = 0.0f;
  uint32_t boundary = 0;  // float bits of the smallest kept weight (0 with top_p = 1: every token)
  int64_t limit = 0;      // the last kept index among the tokens tied at the boundary
  uint64_t total = 0;
};
static_assert(sizeof(NucleusInfo) == 24, "NucleusInfo rows are 24 bytes");

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

// Testing hook on the forward's discrete choices. A low-precision backend (bf16 on CUDA) can order two
// nearly tied candidates of the MoE router or the indexer differently from the fp32 reference, and the
// forward then follows another path. Parity tests install a tap (per thread) that sees every routing and
// selection result right after it is computed — and may overwrite it with the reference's choice — to
// detect and report such flips instead of loosening tolerances. No tap is installed outside tests.
class ChoiceTap {
 public:
  virtual ~ChoiceTap() = default;
  virtual void after_moe_route(ExecContext& ctx, Tensor weights, Tensor indices, Tensor logits, Tensor bias,
                               const ModelConfig& cfg) = 0;
  virtual void after_indexer_topk(ExecContext& ctx, Tensor selected, Tensor q, Tensor w, const CompressorState& keys,
                                  const BatchMeta& meta, float softmax_scale) = 0;
};
// Installs `tap` for this thread (nullptr removes it); returns the previous one.
ChoiceTap* set_choice_tap(ChoiceTap* tap);

}  // namespace ops
}  // namespace dsv4
