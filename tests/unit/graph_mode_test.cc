#include <gtest/gtest.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#include "dsv4/core/status.h"
#include "dsv4/graph/mode.h"

namespace dsv4::graph {
namespace {

constexpr GraphMode N = GraphMode::kNone, B = GraphMode::kBreakable, F = GraphMode::kFull;

struct Modes {
  GraphMode uniform_decode, mixed, drafter;
};
constexpr Modes kOn{F, B, F};   // breakable graphs on: full decode + drafter, breakable mixed
constexpr Modes kOff{F, N, F};  // breakable graphs off: mixed batches eager
constexpr Modes kAllNone{N, N, N}, kAllBreakable{B, B, B}, kAllFull{F, F, F};

// Expected policy for every --cudagraph-mode x env value, for a DeepSeek-V4 architecture and for any
// other one. --enforce-eager is derived: no graphs, or an error next to --cudagraph-mode breakable|full.
struct Row {
  std::optional<std::string> flag;
  std::optional<std::string> env;
  Modes dsv4, other;
  PolicySource source;
};
const std::vector<Row> kTable = {
    {std::nullopt, std::nullopt, kOn, kOff, PolicySource::kArchitecture},
    {std::nullopt, "0", kOff, kOff, PolicySource::kEnv},
    {std::nullopt, "1", kOn, kOn, PolicySource::kEnv},
    {"auto", std::nullopt, kOn, kOff, PolicySource::kArchitecture},
    {"auto", "0", kOff, kOff, PolicySource::kEnv},
    {"auto", "1", kOn, kOn, PolicySource::kEnv},
    {"none", std::nullopt, kAllNone, kAllNone, PolicySource::kFlag},
    {"none", "0", kAllNone, kAllNone, PolicySource::kFlag},
    {"none", "1", kAllNone, kAllNone, PolicySource::kFlag},
    {"breakable", std::nullopt, kAllBreakable, kAllBreakable, PolicySource::kFlag},
    {"breakable", "0", kAllBreakable, kAllBreakable, PolicySource::kFlag},
    {"breakable", "1", kAllBreakable, kAllBreakable, PolicySource::kFlag},
    {"full", std::nullopt, kAllFull, kAllFull, PolicySource::kFlag},
    {"full", "0", kAllFull, kAllFull, PolicySource::kFlag},
    {"full", "1", kAllFull, kAllFull, PolicySource::kFlag},
};

struct Arch {
  std::vector<std::string> names;
  bool dsv4;
};
const std::vector<Arch> kArchitectures = {
    {{"DeepseekV4ForCausalLM"}, true},
    {{"DeepSeekV4MTPModel"}, true},
    {{"LlamaForCausalLM", "DeepSeekV4MTPModel"}, true},  // any listed architecture counts
    {{"LlamaForCausalLM"}, false},
    {{"DeepseekV3ForCausalLM"}, false},
    {{}, false},
};

std::string show(const std::optional<std::string>& v) { return v ? "'" + *v + "'" : "unset"; }

TEST(GraphMode, ResolutionOverEveryFlagEnvAndArchitecture) {
  int cases = 0;
  for (const Row& row : kTable) {
    for (const Arch& arch : kArchitectures) {
      for (bool enforce_eager : {false, true}) {
        SCOPED_TRACE(str_cat("flag=", show(row.flag), " env=", show(row.env), " arch=",
                             arch.names.empty() ? "-" : arch.names.back(), " enforce_eager=", enforce_eager));
        const GraphModeInputs in{row.flag, enforce_eager, row.env, arch.names};
        ++cases;
        if (enforce_eager && row.flag && (*row.flag == "breakable" || *row.flag == "full")) {
          EXPECT_THROW(resolve_graph_policy(in), Error);
          continue;
        }
        const GraphPolicy p = resolve_graph_policy(in);
        const Modes want = enforce_eager ? kAllNone : (arch.dsv4 ? row.dsv4 : row.other);
        EXPECT_EQ(p.uniform_decode, want.uniform_decode);
        EXPECT_EQ(p.mixed, want.mixed);
        EXPECT_EQ(p.drafter, want.drafter);
        EXPECT_EQ(p.source, enforce_eager ? PolicySource::kFlag : row.source);
        EXPECT_FALSE(p.reason.empty());
      }
    }
  }
  EXPECT_EQ(cases, 15 * 6 * 2);
}

TEST(GraphMode, EnvSpellingsAndEmptyValue) {
  for (const char* on : {"1", "true", "on", "yes"}) {
    EXPECT_EQ(resolve_graph_policy({std::nullopt, false, on, {"LlamaForCausalLM"}}).mixed, B) << on;
  }
  for (const char* off : {"0", "false", "off", "no"}) {
    EXPECT_EQ(resolve_graph_policy({std::nullopt, false, off, {"DeepseekV4ForCausalLM"}}).mixed, N) << off;
  }
  // `DSV4_USE_BREAKABLE_CUDAGRAPH= dsv4 ...` means unset: the architecture decides.
  const GraphPolicy p = resolve_graph_policy({std::nullopt, false, "", {"DeepseekV4ForCausalLM"}});
  EXPECT_EQ(p.mixed, B);
  EXPECT_EQ(p.source, PolicySource::kArchitecture);
}

TEST(GraphMode, InvalidValuesAreClearErrors) {
  for (const char* bad : {"2", "maybe", " 1", "TRUE"}) {
    try {
      resolve_graph_policy({std::nullopt, false, bad, {"DeepseekV4ForCausalLM"}});
      ADD_FAILURE() << "env value '" << bad << "' was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(kBreakableGraphEnv), std::string::npos) << e.what();
    }
  }
  for (const char* bad : {"", "FULL", "piecewise", "eager"}) {
    try {
      resolve_graph_policy({bad, false, std::nullopt, {"DeepseekV4ForCausalLM"}});
      ADD_FAILURE() << "flag value '" << bad << "' was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("none|breakable|full|auto"), std::string::npos) << e.what();
    }
  }
  // A bad env value is reported even when a flag overrides it: a typo never goes unnoticed.
  EXPECT_THROW(resolve_graph_policy({"none", false, "junk", {}}), Error);
  try {
    resolve_graph_policy({"full", true, std::nullopt, {}});
    ADD_FAILURE() << "--enforce-eager with --cudagraph-mode full was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--enforce-eager"), std::string::npos) << e.what();
  }
}

TEST(GraphMode, LogLineSaysWhatAndHowToOptOut) {
  const std::string on =
      resolve_graph_policy({std::nullopt, false, std::nullopt, {"DeepseekV4ForCausalLM"}}).describe();
  EXPECT_NE(on.find("uniform decode=full, mixed/prefill=breakable, drafter=full"), std::string::npos) << on;
  EXPECT_NE(on.find("DeepseekV4ForCausalLM"), std::string::npos) << on;
  EXPECT_NE(on.find("DSV4_USE_BREAKABLE_CUDAGRAPH=0"), std::string::npos) << on;
  EXPECT_NE(on.find("--enforce-eager"), std::string::npos) << on;

  const std::string off =
      resolve_graph_policy({std::nullopt, false, "0", {"DeepseekV4ForCausalLM"}}).describe();
  EXPECT_NE(off.find("mixed/prefill=none"), std::string::npos) << off;
  EXPECT_NE(off.find("DSV4_USE_BREAKABLE_CUDAGRAPH=1"), std::string::npos) << off;

  const std::string flag = resolve_graph_policy({"full", false, "1", {}}).describe();
  EXPECT_NE(flag.find("--cudagraph-mode full"), std::string::npos) << flag;
  EXPECT_EQ(flag.find("DSV4_USE_BREAKABLE_CUDAGRAPH"), std::string::npos) << "env has no effect under a flag";
}

TEST(GraphMode, FromEnvReadsTheProcessEnvironment) {
  const char* saved = std::getenv(kBreakableGraphEnv);
  const std::optional<std::string> restore = saved ? std::optional<std::string>(saved) : std::nullopt;
  GraphModeInputs in;
  in.architectures = {"DeepseekV4ForCausalLM"};
  in.breakable_env = "1";  // ignored: replaced by the real environment

  ::setenv(kBreakableGraphEnv, "0", 1);
  EXPECT_EQ(resolve_graph_policy_from_env(in).mixed, N);
  ::unsetenv(kBreakableGraphEnv);
  EXPECT_EQ(resolve_graph_policy_from_env(in).source, PolicySource::kArchitecture);

  if (restore) ::setenv(kBreakableGraphEnv, restore->c_str(), 1);
}

TEST(GraphMode, Names) {
  EXPECT_STREQ(graph_mode_name(N), "none");
  EXPECT_STREQ(graph_mode_name(B), "breakable");
  EXPECT_STREQ(graph_mode_name(F), "full");
  EXPECT_TRUE(uses_breakable_graphs_by_default("DeepseekV4ForCausalLM"));
  EXPECT_TRUE(uses_breakable_graphs_by_default("DeepSeekV4MTPModel"));
  EXPECT_FALSE(uses_breakable_graphs_by_default("deepseekv4forcausallm"));
}

}  // namespace
}  // namespace dsv4::graph
