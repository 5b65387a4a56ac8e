// Graph modes and their resolution: which kind of CUDA graph each class of batch runs under.
//
// Three modes: kNone (eager), kBreakable (graph segments around eager regions) and kFull (one graph;
// every kernel reads its per-step metadata from device buffers). A GraphPolicy assigns a mode to each
// class of forward:
//   - uniform decode batches of the target (every request contributes 1 + K tokens),
//   - mixed / prefill batches of the target,
//   - the drafter's steps.
//
// Resolution, highest priority first (vLLM's rule, requirement 14 of the breakable-graph notes):
//   1. flags: `--enforce-eager` (no graphs) or `--cudagraph-mode none|breakable|full|auto`
//      (`auto` = as if the flag were absent);
//   2. env DSV4_USE_BREAKABLE_CUDAGRAPH: an explicit 0 turns breakable graphs off (mixed batches run
//      eagerly, decode keeps its full graphs), 1 turns them on for any architecture;
//   3. architecture default: DeepseekV4ForCausalLM and DeepSeekV4MTPModel turn breakable graphs on.
// "Breakable graphs on" means: full for uniform decode and drafter steps (no eager break in decode;
// users measured breaks in decode costing 1.57x throughput), breakable for mixed/prefill batches.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4::graph {

enum class GraphMode { kNone, kBreakable, kFull };

const char* graph_mode_name(GraphMode mode);  // "none", "breakable", "full"

// The environment variable that overrides the architecture default.
inline constexpr const char* kBreakableGraphEnv = "DSV4_USE_BREAKABLE_CUDAGRAPH";
// Accepted values of --cudagraph-mode (for CLI help text).
inline constexpr const char* kCudaGraphModeChoices = "none|breakable|full|auto";

// Architectures that turn breakable graphs on by default (config.json "architectures").
bool uses_breakable_graphs_by_default(std::string_view architecture);

struct GraphModeInputs {
  std::optional<std::string> cudagraph_mode_flag;  // --cudagraph-mode as typed; nullopt = not given
  bool enforce_eager = false;                      // --enforce-eager
  std::optional<std::string> breakable_env;        // DSV4_USE_BREAKABLE_CUDAGRAPH; nullopt = unset
  std::vector<std::string> architectures;          // config.json "architectures"
};

// Which input decided the policy (the log line's opt-out hint depends on it).
enum class PolicySource { kFlag, kEnv, kArchitecture };

struct GraphPolicy {
  GraphMode uniform_decode = GraphMode::kNone;
  GraphMode mixed = GraphMode::kNone;
  GraphMode drafter = GraphMode::kNone;
  PolicySource source = PolicySource::kArchitecture;
  std::string reason;  // what decided it, e.g. "DSV4_USE_BREAKABLE_CUDAGRAPH=0"

  bool any_graphs() const {
    return uniform_decode != GraphMode::kNone || mixed != GraphMode::kNone || drafter != GraphMode::kNone;
  }
  // The one log line: what was chosen, why, and how to opt out.
  std::string describe() const;
  bool operator==(const GraphPolicy& o) const {
    return uniform_decode == o.uniform_decode && mixed == o.mixed && drafter == o.drafter;
  }
};

// Resolves the policy from explicit inputs (the environment is never read here, so tests are hermetic).
// Throws dsv4::Error(kInvalidArgument) for an unknown flag or env value, or for --enforce-eager together
// with --cudagraph-mode breakable|full.
GraphPolicy resolve_graph_policy(const GraphModeInputs& inputs);

// Same, with inputs.breakable_env replaced by the process's DSV4_USE_BREAKABLE_CUDAGRAPH.
GraphPolicy resolve_graph_policy_from_env(GraphModeInputs inputs);

// Logs policy.describe() at info level (call once per engine).
void log_graph_policy(const GraphPolicy& policy);

}  // namespace dsv4::graph
