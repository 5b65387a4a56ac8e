// The lightning indexer with a decode workspace (see ops::indexer_topk in ops.h for the op itself).
//
// At decode few queries face long contexts; the CUDA indexer then splits each query's entries over many
// blocks, which keep their own exact top-k in `workspace` before a merge picks the final set. The workspace
// is a plain device tensor (any dtype, at least indexer_workspace_bytes(ctx, T, topk) bytes) allocated by the
// caller outside eager regions, like the op's output. Without it (or when the size is 0: CPU, many queries)
// the op runs unsplit; the selection is the same either way.
#pragma once

#include "dsv4/ops/ops.h"

namespace dsv4::ops {

int64_t indexer_workspace_bytes(const ExecContext& ctx, int64_t tokens, int64_t topk);
void indexer_topk(ExecContext& ctx, Tensor out, Tensor q, Tensor w, const CompressorState& keys, const BatchMeta& meta,
                  float softmax_scale, Tensor workspace);

}  // namespace dsv4::ops
