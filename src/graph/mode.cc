#include "dsv4/graph/mode.h"

#include <algorithm>
#include <array>

#include "dsv4/core/log.h"
#include "dsv4/core/status.h"

namespace dsv4::graph {
namespace {

constexpr std::array<std::string_view, 2> kBreakableByDefault = {"DeepseekV4ForCausalLM",
                                                                 "DeepSeekV4MTPModel"};

// Breakable graphs on: decode and drafter steps have no eager break (full), mixed batches do.
GraphPolicy breakable_on(PolicySource source, std::string reason) {
  return {GraphMode::kFull, GraphMode::kBreakable, GraphMode::kFull, source, std::move(reason)};
}
// Breakable graphs off: decode and drafter keep their full graphs, mixed/prefill batches run eagerly.
GraphPolicy breakable_off(PolicySource source, std::string reason) {
  return {GraphMode::kFull, GraphMode::kNone, GraphMode::kFull, source, std::move(reason)};
}
// Flags set one mode for every class of batch.
GraphPolicy everywhere(GraphMode mode, std::string reason) {
  return {mode, mode, mode, PolicySource::kFlag, std::move(reason)};
}

// Same spellings as env_bool (core/log.h). An empty value counts as unset (`VAR= cmd` idiom).
std::optional<bool> parse_env_switch(const std::string& value) {
  if (value.empty()) return std::nullopt;
  if (value == "1" || value == "true" || value == "on" || value == "yes") return true;
  if (value == "0" || value == "false" || value == "off" || value == "no") return false;
  fail(StatusCode::kInvalidArgument, kBreakableGraphEnv, "='", value,
       "' is not a valid value: use 1 to force breakable CUDA graphs on, 0 to turn them off, or unset it "
       "for the architecture default");
}

}  // namespace

const char* graph_mode_name(GraphMode mode) {
  switch (mode) {
    case GraphMode::kNone:
      return "none";
    case GraphMode::kBreakable:
      return "breakable";
    case GraphMode::kFull:
      return "full";
  }
  return "?";
}

bool uses_breakable_graphs_by_default(std::string_view architecture) {
  return std::find(kBreakableByDefault.begin(), kBreakableByDefault.end(), architecture) !=
         kBreakableByDefault.end();
}

GraphPolicy resolve_graph_policy(const GraphModeInputs& in) {
  std::optional<GraphMode> flag_mode;  // nullopt: flag absent or "auto"
  if (in.cudagraph_mode_flag) {
    const std::string& v = *in.cudagraph_mode_flag;
    if (v == "none") {
      flag_mode = GraphMode::kNone;
    } else if (v == "breakable") {
      flag_mode = GraphMode::kBreakable;
    } else if (v == "full") {
      flag_mode = GraphMode::kFull;
    } else if (v != "auto") {
      fail(StatusCode::kInvalidArgument, "--cudagraph-mode '", v, "' is not one of ", kCudaGraphModeChoices);
    }
  }

  // Validated even when a flag decides, so a typo in the environment never goes unnoticed.
  const std::optional<bool> env_on = in.breakable_env ? parse_env_switch(*in.breakable_env) : std::nullopt;

  // 1. Flags.
  if (in.enforce_eager) {
    DSV4_CHECK_ARG(!flag_mode || *flag_mode == GraphMode::kNone,
                   "--enforce-eager conflicts with --cudagraph-mode ", *in.cudagraph_mode_flag,
                   ": pass one or the other");
    return everywhere(GraphMode::kNone, "--enforce-eager");
  }
  if (flag_mode) return everywhere(*flag_mode, str_cat("--cudagraph-mode ", graph_mode_name(*flag_mode)));

  // 2. An explicit env value always wins over the architecture.
  if (env_on) {
    const std::string reason = str_cat(kBreakableGraphEnv, "=", *in.breakable_env);
    return *env_on ? breakable_on(PolicySource::kEnv, reason) : breakable_off(PolicySource::kEnv, reason);
  }

  // 3. Architecture default.
  for (const std::string& arch : in.architectures) {
    if (uses_breakable_graphs_by_default(arch))
      return breakable_on(PolicySource::kArchitecture, str_cat("default for ", arch));
  }
  const std::string arch_list =
      in.architectures.empty() ? std::string("no architecture") : in.architectures[0];
  return breakable_off(PolicySource::kArchitecture, str_cat("default for ", arch_list));
}

GraphPolicy resolve_graph_policy_from_env(GraphModeInputs inputs) {
  std::string value;
  if (env_string(kBreakableGraphEnv, &value)) {
    inputs.breakable_env = value;
  } else {
    inputs.breakable_env.reset();
  }
  return resolve_graph_policy(inputs);
}

std::string GraphPolicy::describe() const {
  const std::string chosen = str_cat("CUDA graphs: uniform decode=", graph_mode_name(uniform_decode),
                                     ", mixed/prefill=", graph_mode_name(mixed),
                                     ", drafter=", graph_mode_name(drafter), " (", reason, ")");
  if (source == PolicySource::kFlag) {
    return chosen + (any_graphs() ? "; --cudagraph-mode none or --enforce-eager runs every batch eagerly"
                                  : "; drop the flag for the default graphs");
  }
  if (mixed == GraphMode::kBreakable) {
    return str_cat(chosen, "; opt out: ", kBreakableGraphEnv,
                   "=0 runs mixed batches eagerly, --enforce-eager runs every batch eagerly");
  }
  return str_cat(chosen, "; ", kBreakableGraphEnv,
                 "=1 captures mixed batches as breakable graphs, --enforce-eager runs every batch eagerly");
}

void log_graph_policy(const GraphPolicy& policy) { log_info(policy.describe()); }

}  // namespace dsv4::graph
