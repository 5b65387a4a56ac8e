// Model FLOPs of a forward, for MFU: 2 × the multiply-adds of every matrix product and attention contraction the
// target forward runs (elementwise work, norms and softmaxes are not counted, as usual). Routed experts count
// top-k per token; attention counts each position's keys as DeepSeek-V4 chooses them (the sliding window, plus the
// CSA layers' selected entries or the HCA layers' visible ones), and the CSA indexer scores every visible entry.
#pragma once

#include <map>
#include <string>

#include "dsv4/io/config.h"

namespace dsv4 {

struct ForwardFlops {
  std::map<std::string, double> by_part;  // "projections", "experts", "attention", "indexer", "mhc", "lm_head"
  double total() const;
};

// One sequence's prefill of positions [0, tokens), with `logit_rows` rows through the lm_head (1: the last).
ForwardFlops prefill_flops(const ModelConfig& cfg, int64_t tokens, int64_t logit_rows = 1);

// Dense (no sparsity) tensor-core peak in TFLOP/s of a GPU by its name (cudaDeviceProp::name) for BF16 or FP8
// products; 0 when the card is not in the table.
double dense_peak_tflops(const std::string& device_name, const std::string& format);

}  // namespace dsv4
