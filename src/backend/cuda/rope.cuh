// The rotary angle as the CPU reference (and transformers) rounds it: an fp32 angle inv_freq * position,
// cos/sin evaluated in double and rounded to fp32, scaled by the attention factor.
#pragma once

namespace dsv4::cuda {

__device__ __forceinline__ void rope_cos_sin(float inv_freq, float position, float attention_factor, bool inverse,
                                             float* c, float* s) {
  const float angle = inv_freq * position;
  double sd, cd;
  sincos(static_cast<double>(angle), &sd, &cd);
  *c = static_cast<float>(cd) * attention_factor;
  *s = static_cast<float>(sd) * attention_factor * (inverse ? -1.0f : 1.0f);
}

}  // namespace dsv4::cuda
