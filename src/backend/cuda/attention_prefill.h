// Sink attention for prefill-sized batches of the model's head layout (64-head blocks, head dim 512): the batch rows
// split_attention would otherwise give one block per 16 heads (attention_prefill.cu).
#pragma once

#include <cstdint>

#include "backend/cuda/attention_split.h"

namespace dsv4::cuda {

// Batch rows from which the 64-head kernel serves a batch (below: split_attention's key splits fill the GPU better).
constexpr int64_t kPrefillAttentionMinTokens = 64;

// Whether prefill_attention computes these operands: heads % 64 == 0, D == 512, bf16 ring and entry rows (the fp8
// cache's packed rows stay on split_attention), T >= kPrefillAttentionMinTokens, unless DSV4_PREFILL_ATTENTION=0.
bool prefill_attention_supports(const SplitAttnArgs& a, int64_t T);

// out[t, h] = attention of q[t, h] over batch row t's keys (attention_keys.cuh) with the sink of head h; as
// split_attention, the same arguments.
void prefill_attention(ExecContext& ctx, bf16* out, const bf16* q, const bf16* kv, const float* sinks,
                       const SplitAttnArgs& a, int64_t T);

}  // namespace dsv4::cuda
