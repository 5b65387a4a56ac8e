// The expert-sorted plan of moe.cu's moe_plan_kernel (moe_plan.h), built on the host: the reference the CUDA tests
// check plans against and the kernel lab (bench/kernels/moe_gemm) feeds its products. Host code only.
#pragma once

#include <cstdint>
#include <vector>

namespace dsv4::cuda {

struct MoePlanReference {
  std::vector<int32_t> row_of, token_of, tile_info;  // as MoePlan's arrays
  int32_t num_tiles = 0;
};

// Routed pairs p = t*k + i of expert indices[p], then (shared) the shared expert's pairs p = T*k + t as expert E; each
// expert's rows consecutive in pair order, cut into tiles of at most tile_rows rows.
inline MoePlanReference moe_plan_reference(const std::vector<int32_t>& indices, int64_t T, int64_t k, int64_t E,
                                           bool shared, int32_t tile_rows) {
  const int64_t P = T * k + (shared ? T : 0);
  MoePlanReference plan;
  plan.row_of.resize(P);
  std::vector<std::vector<int64_t>> pairs(E + 1);  // by expert, in one pass (O(E P) is too slow at Flash shapes)
  for (int64_t p = 0; p < P; ++p) pairs[p < T * k ? indices[p] : E].push_back(p);
  int32_t row = 0;
  for (int32_t e = 0; e <= E; ++e) {
    const int32_t start = row;
    for (int64_t p : pairs[e]) {
      plan.row_of[p] = row++;
      plan.token_of.push_back(static_cast<int32_t>(p < T * k ? p / k : p - T * k));
    }
    for (int32_t r = start; r < row; r += tile_rows) {
      plan.tile_info.insert(plan.tile_info.end(), {e, r, row});
      ++plan.num_tiles;
    }
  }
  return plan;
}

}  // namespace dsv4::cuda
