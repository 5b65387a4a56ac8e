// Inverse frequencies of DeepSeek-V4's two rope types, computed with the same float32 steps as
// transformers (default rope and DeepSeek-YaRN with its linear ramp over the correction range).
#pragma once

#include <vector>

#include "dsv4/io/config.h"

namespace dsv4 {

std::vector<float> rope_inv_freq(const RopeParams& params, int64_t rope_dim);

}  // namespace dsv4
