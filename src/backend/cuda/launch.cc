#include "backend/cuda/launch.h"

#include <map>
#include <mutex>

#include "backend/cuda/cuda_ops.h"
#include "dsv4/core/log.h"

namespace dsv4::cuda {

// On by default: every kernel launched with the attribute starts with griddepcontrol.wait, which waits for
// the full completion (and memory flush) of the grid it follows, so overlapping the launch with that grid
// is correct whatever the predecessor is. DSV4_PDL=0 turns it off (A/B timing, debugging).
bool pdl_enabled() {
  static const bool enabled = env_bool_or("DSV4_PDL", true);
  return enabled;
}

namespace {
thread_local bool g_dry_run = false;
}  // namespace

bool dry_run() { return g_dry_run; }

DryRunScope::DryRunScope(bool on) : previous_(g_dry_run) { g_dry_run = g_dry_run || on; }
DryRunScope::~DryRunScope() { g_dry_run = previous_; }

int multiprocessor_count() {
  static std::mutex mu;
  static std::map<int, int> cache;
  int dev = 0;
  throw_if_error(cuda_status(cudaGetDevice(&dev), "cudaGetDevice"));
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(dev);
  if (it == cache.end()) {
    int n = 0;
    throw_if_error(cuda_status(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev),
                               "cudaDeviceGetAttribute(multiprocessor count)"));
    it = cache.emplace(dev, n).first;
  }
  return it->second;
}

}  // namespace dsv4::cuda
