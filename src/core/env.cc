#include "dsv4/core/env.h"

#include <cstdlib>

#include "dsv4/core/status.h"

namespace dsv4 {
namespace {

bool any(const std::string&) { return true; }
// env_bool's spellings (core/log.h); empty is not one of them.
bool boolean(const std::string& v) {
  for (const char* ok : {"0", "1", "true", "false", "on", "off", "yes", "no"}) {
    if (v == ok) return true;
  }
  return false;
}
bool zero_or_one(const std::string& v) { return v == "0" || v == "1"; }
bool gemv_mode(const std::string& v) { return v == "0" || v == "1" || v == "2"; }
bool log_level(const std::string& v) {  // empty: the default
  return v.empty() || v == "error" || v == "warn" || v == "info" || v == "debug";
}
bool boolean_or_unset(const std::string& v) { return v.empty() || boolean(v); }  // the graph policy's reading
bool positive_seconds(const std::string& v) {  // as default_collective_timeout() (parallel/in_process.cc) reads it
  char* end = nullptr;
  const double s = std::strtod(v.c_str(), &end);
  return !v.empty() && end == v.c_str() + v.size() && s > 0 && s < 1e7;
}
bool non_negative_integer(const std::string& v) {
  return !v.empty() && v.size() <= 18 && v.find_first_not_of("0123456789") == std::string::npos;
}

constexpr EnvSwitch kSwitches[] = {
    {"DSV4_PDL", "0 | 1", "programmatic dependent launch of the CUDA kernels (default on)", boolean},
    {"DSV4_GEMV", "0 | 1 | 2",
     "small-batch projections: 0 cuBLASLt only, 1 the weight-streaming GEMV where it wins (default), 2 the GEMV "
     "wherever it can serve",
     gemv_mode},
    {"DSV4_SPLIT_ATTENTION", "0 | 1", "tensor-core split attention kernel (default 1; 0: the warp-per-head kernel)",
     zero_or_one},
    {"DSV4_PREFILL_ATTENTION", "0 | 1",
     "64-head prefill attention kernel for batches of >= 64 rows (default 1; 0: the split kernel)", zero_or_one},
    {"DSV4_MOE_FP8", "0 | 1",
     "MoE prefill products on E4M3 MMAs under --activation-quant fp8 (default 1; 0: bf16 MMAs on the round-tripped "
     "activations)",
     zero_or_one},
    {"DSV4_PIPELINE_DECODE", "0 | 1", "queue the next decode step before the tokens are back (default on)", boolean},
    {"DSV4_PROMPT_STEP_GRAPHS", "0 | 1",
     "trim steps with prompt chunks to a size whose forward replays a captured graph (CUDA; default off)", boolean},
    {"DSV4_USE_BREAKABLE_CUDAGRAPH", "0 | 1",
     "breakable CUDA graphs for prefill (default: the architecture's; --cudagraph-mode overrides)", boolean_or_unset},
    {"DSV4_LOG_LEVEL", "error | warn | info | debug", "log messages shown on stderr (default info)", log_level},
    {"DSV4_PROFILE_DECODE", "N >= 0", "bracket the N-th decode step with cudaProfilerStart/Stop (ncu)",
     non_negative_integer},
    {"DSV4_API_KEY", "any text", "dsv4 serve: the bearer token clients must send (--api-key overrides)", any},
    {"DSV4_COLLECTIVE_TIMEOUT_S", "seconds > 0",
     "how long a rank waits in a collective before every rank stops with an error (default 300)", positive_seconds},
};

}  // namespace

std::span<const EnvSwitch> env_switches() { return kSwitches; }

void check_environment() {
  for (const EnvSwitch& s : kSwitches) {
    const char* v = std::getenv(s.name);
    if (v == nullptr) continue;
    DSV4_CHECK_ARG(s.accepts(v), "environment variable ", s.name, "='", v, "' is not valid: use ", s.values, " (",
                   s.what, ")");
  }
}

}  // namespace dsv4
