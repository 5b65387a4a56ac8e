// The expert-sorted plan of moe_experts on CUDA, shared by the tiled prefill GEMMs (moe.cu) and the
// weight-streaming decode path (moe_decode.cu).
//
// moe_plan_kernel (moe.cu) gives every (token, expert) pair a row of the expert-sorted order — the routed
// pairs p = t*k + i, then, when the shared expert runs as the last stacked expert, p = T*k + t — and lists
// each expert's segment as tiles of at most `tile_rows` consecutive rows: kPlanTileRows for the decode path and
// the WMMA GEMM, kPlanWideTileRows for the wide prefill GEMM. The number of tiles is only known on the device;
// launches are sized from the capacity min(P, ceil(P / tile_rows) + E) and blocks of tiles past *num_tiles exit. The
// decode kernels also take a single-token plan that needs no kernel (MoePlan::pair_experts); kernels read a plan
// through plan_tile / plan_token / plan_row.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backend/cuda/common.cuh"

namespace dsv4::cuda {

constexpr int kPlanTileRows = 64;
constexpr int kPlanWideTileRows = 128;

struct MoePlan {
  int32_t* row_of;     // [P]: expert-sorted row of pair p (t*k + i routed, T*k + t shared)
  int32_t* token_of;   // [P]: token of each expert-sorted row
  int32_t* tile_info;  // [max_tiles, 3]: expert, first row, end row of the expert's segment
  int32_t* num_tiles;  // [1]
  // One token (decode at b = 1) needs no planning kernel: each pair is its expert's only row (top-k picks an expert
  // once; a hash table that repeats one only reads its weights twice), so pair p is row p and tile p, its expert
  // pair_experts[p] (the routing's indices) for the routed pairs and shared_expert after them. Set: the fields
  // above are unused (null).
  const int32_t* pair_experts = nullptr;
  int32_t pairs = 0, routed_pairs = 0, shared_expert = 0;
};

// Tile `tile`'s expert and rows [*row0, *row_end) of its segment; false for a tile past the plan's count.
__device__ __forceinline__ bool plan_tile(const MoePlan& p, int tile, int32_t* e, int32_t* row0, int32_t* row_end) {
  if (p.pair_experts != nullptr) {
    if (tile >= p.pairs) return false;
    *e = tile < p.routed_pairs ? p.pair_experts[tile] : p.shared_expert;
    *row0 = tile;
    *row_end = tile + 1;
    return true;
  }
  if (tile >= *p.num_tiles) return false;
  *e = p.tile_info[3 * tile];
  *row0 = p.tile_info[3 * tile + 1];
  *row_end = p.tile_info[3 * tile + 2];
  return true;
}
// The token of expert-sorted row r, and the row of pair `pair`.
__device__ __forceinline__ int32_t plan_token(const MoePlan& p, int32_t r) {
  return p.pair_experts != nullptr ? 0 : p.token_of[r];
}
__device__ __forceinline__ int32_t plan_row(const MoePlan& p, int64_t pair) {
  return p.pair_experts != nullptr ? static_cast<int32_t>(pair) : p.row_of[pair];
}

// Whether moe_experts takes the decode path for P pairs (T·k, plus T with the shared expert) over E stacked experts:
// while the touched experts hold few rows each, streaming each expert's weights once per 8 of its rows at full
// bandwidth beats the tensor-core tiles, which read them once per 64-row tile but are latency-bound on mostly empty
// tiles. So up to kMoeDecodeMaxPairs pairs, and beyond while there are at most kMoeDecodeRowsPerExpert pairs per
// expert on average (b = 64 on the Flash slice: 448 pairs over 257 experts; the tiles took 22-24 ms a step of the
// H100's 24, bench/RESULTS.md eighteenth entry). The shared expert's T rows then take T / 8 passes over its weights.
constexpr int64_t kMoeDecodeMaxPairs = 128;
constexpr int64_t kMoeDecodeRowsPerExpert = 4;
inline bool moe_takes_decode_path(int64_t pairs, int64_t experts) {
  return pairs <= kMoeDecodeMaxPairs || pairs <= kMoeDecodeRowsPerExpert * experts;
}

struct MoeActQuant;  // act_quant.h

// The decode path (bf16 operands): act[r] = SwiGLU(x[token_of[r]] · w1[e]ᵀ, x[token_of[r]] · w3[e]ᵀ) stored
// bf16 [P, I], then y[r] = act[r] · w2[e]ᵀ stored f32 [P, H], for every row r of every planned tile
// (expert e). Weights are [E, I, H] (w1, w3) and [E, H, I] (w2); `tokens` (T) bounds the rows of one expert.
// Deterministic; graph-capturable. `aq` (optional): the activation round trip between the two products.
void moe_decode_experts(cudaStream_t stream, bf16* act, float* y, const bf16* x, const bf16* w1, const bf16* w3,
                        const bf16* w2, const MoePlan& plan, int64_t max_tiles, int64_t tokens, int64_t H, int64_t I,
                        float limit, const MoeActQuant* aq = nullptr);

}  // namespace dsv4::cuda
