#include "backend/cuda/launch.h"

#include "dsv4/core/log.h"

namespace dsv4::cuda {

// On by default: every kernel launched with the attribute starts with griddepcontrol.wait, which waits for
// the full completion (and memory flush) of the grid it follows, so overlapping the launch with that grid
// is correct whatever the predecessor is. DSV4_PDL=0 turns it off (A/B timing, debugging).
bool pdl_enabled() {
  static const bool enabled = [] {
    bool v = true;
    env_bool("DSV4_PDL", &v);
    return v;
  }();
  return enabled;
}

}  // namespace dsv4::cuda
