// The argument types of the ops (ops/ops.h), apart from the ops themselves: the backends (backend/cpu, backend/cuda)
// include this header, not ops.h.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "dsv4/core/exec_context.h"
#include "dsv4/core/tensor.h"
#include "dsv4/core/weight.h"
#include "dsv4/io/config.h"  // ScoringFunc
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

// One part of ops::rms_norm_rope: the heads x [T, heads, dim] normalised in place with weight w [dim] (or none).
struct NormRopeHeads {
  Tensor x;
  Tensor w;
};

// Rotary table of one rope type: inv_freq [rope_dim/2] (float32) and the cos/sin scale.
struct RopeTable {
  Tensor inv_freq;
  float attention_factor = 1.0f;
  int64_t rope_dim = 0;
};

// The values an attention cache of a given format gives back (--kv-cache-dtype; ops::kv_round_trip).
enum class KvRoundTrip : uint8_t {
  kNone,          // as computed (f32 on the CPU, the activation dtype on CUDA)
  kBf16,          // every value rounded to bf16
  kFp8Blocks,     // DeepSeek-V4's window / compressed kv: the no-RoPE part in E4M3 per 64 values with a power-of-two
                  // (UE8M0) scale, the RoPE part (last rope_dim values) in bf16
  kFp8Row,        // the indexer's keys: the whole row in E4M3 with one fp32 scale
  kFp8Blocks128,  // activations before a product DeepSeek runs in FP8/FP4 (--activation-quant fp8): the whole row in
                  // E4M3 per 128 values with a UE8M0 scale, as the reference's act_quant
  kFp4Rotated,    // the indexer's query and keys as DeepSeek's reference holds them: the row (a power of two wide)
                  // rotated by the normalised Hadamard transform, then E2M1 per 32 values with a UE8M0 scale
                  // (dsv4/ops/kv_fp4.h); the stored keys stay rotated, and so does the query scored against them
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

// Several projections of the same x (ops::linears): out_i = x @ w_i^T for each {out_i, w_i}.
struct Projection {
  Tensor out;
  Weight w;
};

// One ring store of ops::ring_stores: the batch rows `rows` into `ring`.
struct RingStore {
  PagedRows ring;
  Tensor rows;
};

// The scalars of the mHC ops (hc_pre, hc_head): the RMSNorm epsilon of the mixing logits, the epsilon added to
// the pre / comb weights, and the Sinkhorn iterations of comb.
struct MhcParams {
  float norm_eps = 1e-6f;
  float hc_eps = 1e-6f;
  int64_t sinkhorn_iters = 20;
};

// The RMSNorm that follows hc_pre / hc_head in every block, optionally fused into them: with a weight the op's
// output is rms_norm(collapse) * weight, the collapse rounded to the output's dtype first (as when the two run
// apart). The CUDA backend fuses it at decode (one launch fewer per call).
struct HcNorm {
  Tensor weight;  // [H]; none: the plain collapse
  float eps = 1e-6f;
};

// The scalars of moe_route: the scoring function, the routed scaling factor, and whether the top-k weights are
// normalised to sum 1 before it.
struct RouteParams {
  ScoringFunc scoring = ScoringFunc::kSqrtSoftplus;
  float routed_scaling_factor = 1.0f;
  bool norm_topk_prob = true;
};

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

}  // namespace ops
}  // namespace dsv4
