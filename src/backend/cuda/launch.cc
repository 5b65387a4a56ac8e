#include "backend/cuda/launch.h"

#include "dsv4/core/log.h"

namespace dsv4::cuda {

bool pdl_enabled() {
  static const bool enabled = [] {
    bool v = false;
    env_bool("DSV4_PDL", &v);
    return v;
  }();
  return enabled;
}

}  // namespace dsv4::cuda
