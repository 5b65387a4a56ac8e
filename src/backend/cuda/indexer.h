// The CUDA lightning indexer with the decode workspace (dsv4/ops/indexer_workspace.h).
#pragma once

#include "backend/cuda/cuda_ops.h"

namespace dsv4::cuda {

int64_t indexer_workspace_bytes(int64_t tokens, int64_t topk);
void indexer_topk(ExecContext& ctx, Tensor out, Tensor q, Tensor w, const CompressorState& keys, const BatchMeta& meta,
                  float softmax_scale, Tensor workspace);

}  // namespace dsv4::cuda
