// The table of DSV4_* environment switches (core/env.h): complete, and checked before anything loads.
#include "dsv4/core/env.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "dsv4/core/status.h"
#include "unit/test_util.h"

namespace dsv4 {
namespace {

std::set<std::string> table_names() {
  std::set<std::string> names;
  for (const EnvSwitch& s : env_switches()) names.insert(s.name);
  return names;
}

// Every switch a source file reads (env_string / env_bool / env_bool_or / getenv of a "DSV4_..." literal, or a
// constant holding one) is in the table: a new switch cannot bypass it.
TEST(EnvSwitches, TableHoldsEverySwitchTheSourcesRead) {
  const std::set<std::string> table = table_names();
  const std::regex read(R"((env_string|env_bool_or|env_bool|getenv|Env\w* =)\(?\s*"(DSV4_[A-Z0-9_]+)\")");
  int found = 0;
  for (const char* dir : {"src", "include"}) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(test::source_dir() + "/" + dir)) {
      const std::string ext = entry.path().extension().string();
      if (ext != ".cc" && ext != ".cu" && ext != ".h" && ext != ".cuh") continue;
      std::ifstream in(entry.path());
      std::stringstream text;
      text << in.rdbuf();
      const std::string s = text.str();
      for (std::sregex_iterator m(s.begin(), s.end(), read), end; m != end; ++m) {
        ++found;
        EXPECT_TRUE(table.count((*m)[2].str())) << (*m)[2] << " (read in " << entry.path() << ") is not in env.cc";
      }
    }
  }
  EXPECT_GE(found, 7) << "the scan found too few switch reads: has the reading idiom changed?";
}

TEST(EnvSwitches, BadValuesFailBeforeLoadingWithTheAcceptedValues) {
  EXPECT_NO_THROW(check_environment());
  const struct {
    const char* name;
    const char* bad;
    const char* good;
  } cases[] = {{"DSV4_PDL", "maybe", "0"},
               {"DSV4_GEMV", "3", "2"},
               {"DSV4_SPLIT_ATTENTION", "on", "0"},
               {"DSV4_LOG_LEVEL", "verbose", "debug"},
               {"DSV4_PROFILE_DECODE", "-1", "3"},
               {"DSV4_USE_BREAKABLE_CUDAGRAPH", "2", ""},
               {"DSV4_PREFILL_ATTENTION", "yes", "1"},
               {"DSV4_MOE_FP8", "on", "0"}};
  for (const auto& c : cases) {
    const char* old = getenv(c.name);
    const std::string saved = old != nullptr ? old : "";
    setenv(c.name, c.bad, 1);
    try {
      check_environment();
      ADD_FAILURE() << c.name << "=" << c.bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find(c.name), std::string::npos) << e.what();
    }
    setenv(c.name, c.good, 1);
    EXPECT_NO_THROW(check_environment()) << c.name << "=" << c.good;
    if (old != nullptr) {
      setenv(c.name, saved.c_str(), 1);
    } else {
      unsetenv(c.name);
    }
  }
}

}  // namespace
}  // namespace dsv4
