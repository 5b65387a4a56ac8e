// The built dsv4 CLI (DSV4_CLI_PATH) run as a process, for the tests of its commands: exit status, stdout, stderr.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "dsv4/core/status.h"
#include "test_util.h"

namespace dsv4::test {

// An empty directory under gtest's temporary directory, named PREFIX and this process's id (emptied if it exists).
inline std::string fresh_scratch_dir(const std::string& prefix) {
  const std::filesystem::path dir = std::filesystem::path(testing::TempDir()) / str_cat(prefix, ::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

struct CliResult {
  int status = -1;  // the exit code, or 128 + the signal that ended it
  std::string out, err;
};

// `dsv4 ARGS` through the shell, its stdout and stderr captured in files under `scratch_dir` (removed after), or its
// stdout sent to `stdout_to` when that is given (then `out` stays empty).
inline CliResult run_cli(const std::string& scratch_dir, const std::string& args, const std::string& stdout_to = "") {
  static int counter = 0;
  const std::string out = str_cat(scratch_dir, "/out", counter, ".txt"),
                    err = str_cat(scratch_dir, "/err", counter++, ".txt");
  const std::string cmd =
      str_cat("'", DSV4_CLI_PATH, "' ", args, " > '", stdout_to.empty() ? out : stdout_to, "' 2> '", err, "'");
  const int raw = std::system(cmd.c_str());
  CliResult r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : 128 + WTERMSIG(raw);
  if (stdout_to.empty()) r.out = slurp(out);
  r.err = slurp(err);
  std::filesystem::remove(out);
  std::filesystem::remove(err);
  return r;
}

// stdout of a run that must succeed, parsed as one JSON object; anything else is a test failure (and an empty object).
inline nlohmann::json cli_json(const CliResult& r, const std::string& args) {
  EXPECT_EQ(r.status, 0) << args << "\n" << r.err;
  try {
    return nlohmann::json::parse(r.out);
  } catch (const nlohmann::json::parse_error& e) {
    ADD_FAILURE() << args << ": output is not one JSON object: " << e.what() << "\n" << r.out;
    return nlohmann::json::object();
  }
}

}  // namespace dsv4::test
