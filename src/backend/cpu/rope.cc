// Interleaved (GPT-J) rotary embeddings on the CPU, in transformers' rounding.
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "backend/cpu/parallel.h"

namespace dsv4::cpu {

namespace {

// cos and sin of one position's angles, in transformers' rounding: an fp32 angle, cos/sin scaled by the attention
// factor (sin negated for the inverse rotation).
void rope_angles(const RopeTable& table, float position, bool inverse, float* c, float* s) {
  const float* inv_freq = table.inv_freq.ptr<float>();
  for (int64_t i = 0; i < table.rope_dim / 2; ++i) {
    const float angle = inv_freq[i] * position;
    c[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * table.attention_factor;
    s[i] = static_cast<float>(std::sin(static_cast<double>(angle))) * table.attention_factor;
    if (inverse) s[i] = -s[i];
  }
}

// Rotates the last rope_dim channels of v[dim] by the angles' cos c / sin s.
void rotate(float* v, int64_t dim, int64_t rope_dim, const float* c, const float* s) {
  float* r = v + (dim - rope_dim);
  for (int64_t i = 0; i < rope_dim / 2; ++i) {
    const float x0 = r[2 * i], x1 = r[2 * i + 1];
    r[2 * i] = x0 * c[i] - x1 * s[i];
    r[2 * i + 1] = x1 * c[i] + x0 * s[i];
  }
}

// A thread's buffer for one position's cos (first half) and sin (second half): no allocation per vector or token.
float* angle_buffer(int64_t rope_dim) {
  thread_local std::vector<float> cs;
  cs.resize(static_cast<size_t>(rope_dim));
  return cs.data();
}

}  // namespace

void rope_vector(float* v, int64_t dim, const RopeTable& table, float position, bool inverse) {
  float* cs = angle_buffer(table.rope_dim);
  const int64_t half = table.rope_dim / 2;
  rope_angles(table, position, inverse, cs, cs + half);
  rotate(v, dim, table.rope_dim, cs, cs + half);
}

void rope(Tensor x, Tensor pos, const RopeTable& table, bool inverse) {
  const int64_t T = x.size(0), heads = x.size(1), dim = x.size(2), half = table.rope_dim / 2;
  // A token's angles once for all its heads; tokens in parallel (a double cos + sin: ~256 multiply-adds' time).
  parallel_for(T, T * half * 256, [&](int64_t t) {
    float* cs = angle_buffer(table.rope_dim);
    rope_angles(table, static_cast<float>(pos.ptr<int32_t>()[t]), inverse, cs, cs + half);
    for (int64_t h = 0; h < heads; ++h)
      rotate(x.ptr<float>() + (t * heads + h) * dim, dim, table.rope_dim, cs, cs + half);
  });
}

}  // namespace dsv4::cpu
