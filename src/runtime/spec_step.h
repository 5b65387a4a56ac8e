// One speculative decoding step — drafter, verification, acceptance — as one algorithm over tensors, run by both
// executors: the CPU executor on host memory (the reference), the CUDA executor inside two captured graphs (the K
// drafter steps; the verification with the acceptance). docs/speculative.md describes the design.
//
// The host builds every piece of a step's metadata in one block (fill_spec_block: positions, slots, page rows, the
// Philox counters), uploaded in one copy; drafts, draft distributions, residuals and the acceptance stay in device
// buffers, and the host reads back only the accepted tokens and counts. What a sequence carries from one step to the
// next on the device is its `carry`: the target's residual rows of the positions the last verification accepted,
// kept per slot ([slot * (Kmax + 1) + r]), which the next step's drafter step 0 runs over.
#pragma once

#include <cstdint>
#include <vector>

#include "dsv4/model/deepseek_v4.h"
#include "dsv4/ops/ops.h"

namespace dsv4 {

// One sequence of a speculative step (built by the scheduler).
struct SpecSeq {
  int32_t slot = 0;
  int64_t computed = 0;               // c: positions [0, c) are in the target's state; `last` sits at position c
  std::vector<int32_t> carry_ids;     // n = size() in [1, K + 1]: the token after each position [c - n, c), whose
                                      // target residual rows are carried (carry row r = position c - n + r)
  int32_t last = 0;                   // the sequence's last token (not yet in the state)
  ops::TokenSamplingParams sampling;  // temperature, top_p, seed, stream; counter = tokens generated so far
};

// The shapes of a step: b sequences (padding included), K drafts, T0 rows of the drafter's step 0.
struct SpecShape {
  int64_t b = 0, K = 0, T0 = 0;
  int64_t verify_tokens() const { return b * (K + 1); }
};

// Where each input lives in the step's block: int32 fields first (offsets in int32 elements), then the sampling
// parameters (byte offsets, 16-byte aligned). The layout is a function of the shape only, so a captured graph's
// pointers stay valid for every step of its shape.
struct SpecLayout {
  SpecShape shape;
  size_t meta0 = 0, gather0 = 0, rows0 = 0, metaj = 0, metav = 0, scatter = 0, rowsv = 0;  // int32 elements
  size_t params_draft = 0, params_target = 0, params_accept = 0;                           // bytes
  size_t bytes = 0;
  static SpecLayout make(const SpecShape& shape);
};

// Step-0 rows: compact (only each sequence's n carried rows, T0 = sum of n; the CPU) or uniform (K + 1 rows per
// sequence, T0 = b (K + 1): the rows past n run at the positions after c with placeholder tokens, and whatever they
// write there is rewritten before it is read — every state is indexed by position; CUDA graphs).
int64_t spec_step0_rows(const std::vector<SpecSeq>& seqs, int64_t K, bool compact);

// Writes the step's block (layout.bytes at `block`): sequences [0, seqs.size()), then padding sequences (slot -1,
// greedy) up to layout.shape.b. carry_stride: carry rows per slot (Kmax + 1).
void fill_spec_block(const std::vector<SpecSeq>& seqs, const SpecLayout& layout, bool compact, int64_t carry_stride,
                     char* block);
// A block of padding sequences only (safe values for warm-up and capture).
void fill_spec_padding(const SpecLayout& layout, char* block);

// The executor's persistent buffers a step reads and writes (device memory on CUDA, host memory on the CPU).
struct SpecBuffers {
  Tensor carry;          // [slots * (Kmax + 1), n, H] activation dtype
  Tensor hidden;         // [>= a step's rows, n, H]: the drafter's inputs,
  Tensor residual;       // and its outputs, the verification's residual
  Tensor draft_logits;   // [>= K b, V] f32
  Tensor target_logits;  // [>= b (K + 1), V] f32
  Tensor ints;  // I32 [>= 5 b (K + 1)]: draft tokens, target tokens, accepted tokens + counts + target rows' flags
  Tensor info;  // U8 [>= 2 b (K + 1) * sizeof(NucleusInfo)]: the drafts' and the target rows' nuclei
};

// Views of one step's tensors: the block's inputs (at `block`, on `device`) and the buffers' outputs.
struct SpecTensors {
  SpecShape shape;
  BatchMeta meta0;
  Tensor gather0, rows0;
  std::vector<BatchMeta> metaj;  // drafter steps 1 .. K - 1 (b rows each)
  BatchMeta metav;
  Tensor scatter, rowsv;
  Tensor params_draft, params_target, params_accept;
  Tensor carry, hidden, residual;
  Tensor draft_logits, draft_tokens, draft_info;
  Tensor target_logits, target_tokens, target_info;
  Tensor out_tokens, counts;  // contiguous: out [b (K + 1)], then counts [b], then target_nonfinite
  Tensor target_nonfinite;    // [b (K + 1)]: 1 where a verified row's logits hold a NaN or an infinity
};
SpecTensors spec_tensors(const SpecLayout& layout, char* block, Device device, const SpecBuffers& buffers);

// The host's read-back of a step: counts[i] becomes -1 for every sequence i < b one of whose K + 1 verified rows was
// flagged non-finite (flags: target_nonfinite's values), so that the scheduler ends it with an error instead of
// emitting tokens drawn from such logits.
void mark_nonfinite_sequences(const int32_t* flags, int64_t b, int64_t K, std::vector<int32_t>* counts);

// The drafter's K steps: step 0 over the carried rows (gathered from the carry), then K - 1 single-token steps,
// each continuing from the previous step's residual and token; the K draft rows are sampled on the device.
void spec_draft_forward(ExecContext& ctx, const ModelConfig& cfg, const ModelWeights& w, ModelState& state,
                        const SpecTensors& t);
// The target over [last, d_1 .. d_K] of every sequence, its residual rows into the carry, and the acceptance.
void spec_verify_forward(ExecContext& ctx, const ModelConfig& cfg, const ModelWeights& w, ModelState& state,
                         const SpecTensors& t);

}  // namespace dsv4
