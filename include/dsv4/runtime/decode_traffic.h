// The HBM floor of a decode step: the fewest bytes one step must move through device memory — the weights
// it reads (attention, mHC, router, the shared expert, the routed experts the routing touched, lm_head,
// the embedding rows) and the per-sequence state it touches (sliding-window KV, compressed entries
// attended or scored, compressor rings) — to be divided by measured copy bandwidth.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "dsv4/model/weights.h"

namespace dsv4 {

struct DecodeTraffic {
  std::map<std::string, double> bytes;  // by component
  double total() const;
};

// Distinct experts a batch of `tokens` routed tokens touches on average when each picks k of E uniformly:
// E (1 - (1 - k/E)^tokens). Exact (k) for one token.
double expected_distinct_experts(int64_t num_experts, int64_t k, int64_t tokens);

// Traffic of one decode step of `batch` sequences, each at `position` (0-based index of the new token),
// with `experts_touched[l]` distinct routed experts read in layer l (empty: expected_distinct_experts).
// Byte sizes come from the weights as stored (dtypes of the device they live on); state element sizes
// from `state_dtype` (kv ring and compressed entries) and float32 (compressor rings).
DecodeTraffic decode_step_traffic(const ModelConfig& cfg, const ModelWeights& w, int64_t batch, int64_t position,
                                  DType state_dtype, const std::vector<double>& experts_touched = {});

// Bytes of one stored row of the attention caches: a kv row (window ring and compressed entries) and an indexer key.
struct KeyRowBytes {
  double kv = 0, indexer = 0;
};
// Rows of `state_dtype` elements, or the packed rows of the CUDA fp8 cache (dsv4/ops/kv_fp8.h: 584 and 132 bytes at
// the Flash shapes) when packed_fp8.
KeyRowBytes key_row_bytes(const ModelConfig& cfg, DType state_dtype, bool packed_fp8);
DecodeTraffic decode_step_traffic(const ModelConfig& cfg, const ModelWeights& w, int64_t batch, int64_t position,
                                  const KeyRowBytes& rows, const std::vector<double>& experts_touched = {});

}  // namespace dsv4
