// Split-KV sink attention on tensor cores (flash-decoding for MQA with K = V), used by cuda::attention
// for the bf16 shapes it supports; the warp-per-head kernel in attention.cu covers the rest.
#pragma once

#include <cstdint>

#include "backend/cuda/common.cuh"
#include "dsv4/ops/paged_rows.h"

namespace dsv4::cuda {

// Per-token ranges are read from device memory (see attention.cu); the grid depends only on T and heads.
struct SplitAttnArgs {
  const int32_t* pos;
  const int32_t* slot;
  const int32_t* start;
  const int32_t* selected;  // [T, topk] or null (HCA: every visible entry; sliding: no compressed keys)
  int64_t topk;
  int64_t heads, D, window;
  int64_t rate;       // 0: no compressed entries
  PagedRows ring;     // the sliding-window kv ring (row = position % ring.rows)
  PagedRows entries;  // compressed entries (used when rate > 0; capacity entries.rows)
  float scale;
};

// Whether split_attention handles the shape: head_dim a multiple of 32 up to 512, any head count (the
// fastest instantiation needs heads % 16 == 0 and head_dim % 64 == 0), 16-byte aligned operands (bf16),
// unless DSV4_SPLIT_ATTENTION=0 (then never: the warp kernel of attention.cu serves every shape).
bool split_attention_supports(int64_t heads, int64_t D, bool aligned16);

// Batches prefill_attention supports (attention_prefill.h: 64-head blocks at prefill sizes) go there.
void split_attention(ExecContext& ctx, bf16* out, const bf16* q, const bf16* kv, const float* sinks,
                     const SplitAttnArgs& a, int64_t T);

// Batch rows a block of split_attention serves: 16 / heads at prefill sizes (T >= 256) with at most 8 heads (their
// heads share one 16-row MMA tile), else 1.
int split_attention_tokens_per_block(int64_t heads, int64_t T);

// The parts (8, 4, 2 or 1) split_attention cuts each (token, head group)'s keys into for `blocks` such groups on
// `multiprocessors` SMs: the most that still fit one wave of blocks.
int split_attention_parts(int64_t blocks, int multiprocessors);

}  // namespace dsv4::cuda
