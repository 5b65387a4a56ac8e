// The expert-sorted plan of moe_experts on CUDA, shared by the tiled prefill GEMMs (moe.cu) and the
// weight-streaming decode path (moe_decode.cu).
//
// moe_plan_kernel (moe.cu) gives every (token, expert) pair a row of the expert-sorted order — the routed
// pairs p = t*k + i, then, when the shared expert runs as the last stacked expert, p = T*k + t — and lists
// each expert's segment as tiles of at most kPlanTileRows consecutive rows. The number of tiles is
// only known on the device; launches are sized from the capacity min(P, ceil(P / kPlanTileRows) + E) and
// blocks of tiles past *num_tiles exit.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/cuda/common.cuh"

namespace dsv4::cuda {

constexpr int kPlanTileRows = 64;

struct MoePlan {
  int32_t* row_of;     // [P]: expert-sorted row of pair p (t*k + i routed, T*k + t shared)
  int32_t* token_of;   // [P]: token of each expert-sorted row
  int32_t* tile_info;  // [max_tiles, 3]: expert, first row, end row of the expert's segment
  int32_t* num_tiles;  // [1]
};

// The largest pair count P (T·k, plus T with the shared expert) served by the decode path: up to it every
// touched expert has few rows, so streaming each expert's weights once at full bandwidth beats the
// tensor-core tiles, which are latency-bound on mostly empty 64-row tiles.
constexpr int64_t kMoeDecodeMaxPairs = 128;

struct MoeActQuant;  // act_quant.h

// The decode path (bf16 operands): act[r] = SwiGLU(x[token_of[r]] · w1[e]ᵀ, x[token_of[r]] · w3[e]ᵀ) stored
// bf16 [P, I], then y[r] = act[r] · w2[e]ᵀ stored f32 [P, H], for every row r of every planned tile
// (expert e). Weights are [E, I, H] (w1, w3) and [E, H, I] (w2); `tokens` (T) bounds the rows of one expert.
// Deterministic; graph-capturable. `aq` (optional): the activation round trip between the two products.
void moe_decode_experts(cudaStream_t stream, bf16* act, float* y, const bf16* x, const bf16* w1, const bf16* w3,
                        const bf16* w2, const MoePlan& plan, int64_t max_tiles, int64_t tokens, int64_t H, int64_t I,
                        float limit, const MoeActQuant* aq = nullptr);

}  // namespace dsv4::cuda
