#include "dsv4/ops/rope_table.h"

#include <algorithm>
#include <cmath>

namespace dsv4 {

std::vector<float> rope_inv_freq(const RopeParams& p, int64_t rope_dim) {
  const int64_t half = rope_dim / 2;
  const float base = static_cast<float>(p.theta);
  std::vector<float> pos_freqs(half), inv(half);
  for (int64_t i = 0; i < half; ++i) {
    const float e = static_cast<float>(2 * i) / static_cast<float>(rope_dim);
    pos_freqs[i] = std::pow(base, e);
  }
  if (p.type == RopeType::kDefault) {
    for (int64_t i = 0; i < half; ++i) inv[i] = 1.0f / pos_freqs[i];
    return inv;
  }
  // YaRN (transformers' _compute_yarn_parameters): blend interpolated (/factor) and extrapolated
  // frequencies with a linear ramp over the correction range found from beta_fast / beta_slow.
  const double dim = static_cast<double>(rope_dim);
  auto correction_dim = [&](double rotations) {
    return (dim * std::log(p.original_max_position_embeddings / (rotations * 2 * M_PI))) / (2 * std::log(p.theta));
  };
  double low = correction_dim(p.beta_fast), high = correction_dim(p.beta_slow);
  if (p.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, dim - 1);
  if (low == high) high += 0.001;  // prevent a singular ramp
  const float factor = static_cast<float>(p.factor);
  for (int64_t i = 0; i < half; ++i) {
    const float ramp =
        std::clamp((static_cast<float>(i) - static_cast<float>(low)) / static_cast<float>(high - low), 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    const float inv_extrapolation = 1.0f / pos_freqs[i];
    const float inv_interpolation = 1.0f / (factor * pos_freqs[i]);
    inv[i] = inv_interpolation * (1.0f - extrapolation_factor) + inv_extrapolation * extrapolation_factor;
  }
  return inv;
}

}  // namespace dsv4
