// Interleaved (GPT-J) rotary embeddings on the CPU, in transformers' rounding.
#include <cmath>

#include "backend/cpu/cpu_ops.h"

namespace dsv4::cpu {

void rope_vector(float* v, int64_t dim, const RopeTable& table, float position, bool inverse) {
  const int64_t R = table.rope_dim;
  const float* inv_freq = table.inv_freq.ptr<float>();
  float* r = v + (dim - R);
  for (int64_t i = 0; i < R / 2; ++i) {
    // Same rounding as transformers: an fp32 angle, cos/sin scaled by the attention factor.
    const float angle = inv_freq[i] * position;
    const float c = static_cast<float>(std::cos(static_cast<double>(angle))) * table.attention_factor;
    float s = static_cast<float>(std::sin(static_cast<double>(angle))) * table.attention_factor;
    if (inverse) s = -s;
    const float x0 = r[2 * i], x1 = r[2 * i + 1];
    r[2 * i] = x0 * c - x1 * s;
    r[2 * i + 1] = x1 * c + x0 * s;
  }
}

void rope(Tensor x, Tensor pos, const RopeTable& table, bool inverse) {
  const int64_t T = x.size(0), heads = x.size(1), dim = x.size(2);
  for (int64_t t = 0; t < T; ++t) {
    const float p = static_cast<float>(pos.ptr<int32_t>()[t]);
    for (int64_t h = 0; h < heads; ++h) rope_vector(x.ptr<float>() + (t * heads + h) * dim, dim, table, p, inverse);
  }
}

}  // namespace dsv4::cpu
