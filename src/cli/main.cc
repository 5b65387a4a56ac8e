// dsv4 command-line interface: make-tiny | info | score | generate | bench | serve | quantize | perplexity.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "cli/commands.h"
#include "dsv4/core/status.h"

namespace {

// Output that did not reach stdout (a full disk, /dev/full, a closed pipe) is a failure, not a success.
int finish_stdout() {
  std::cout.flush();
  errno = 0;
  if (std::fflush(stdout) != 0 || std::ferror(stdout) || !std::cout) {
    std::fprintf(stderr, "error: writing to standard output failed%s%s\n", errno ? ": " : "",
                 errno ? std::strerror(errno) : "");
    return 1;
  }
  return 0;
}

// -n: an integer in [0, 2^30] (checked on the text, so a 23-digit count is an error, never clamped).
CLI::Validator max_new_tokens_validator() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        const bool negative = !v.empty() && v[0] == '-';
        const std::string digits = negative ? v.substr(1) : v;
        if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) {
          return "-n must be an integer, got '" + v + "'";
        }
        if (negative) return "-n must be >= 0, got " + v;
        constexpr int64_t kMax = int64_t{1} << 30;
        const std::string trimmed = digits.substr(std::min(digits.find_first_not_of('0'), digits.size() - 1));
        if (trimmed.size() > 10 || std::stoll(trimmed) > kMax) {
          return "-n " + v + " exceeds the largest possible max_model_len (" + std::to_string(kMax) + " positions)";
        }
        return std::string();
      },
      "0..2^30");
}

// OpenMP's wait policy: passive unless the user chose one. libgomp's default spins ~300k iterations at every
// barrier and after every parallel region; with other processes on the cores that turned a 0.3 s generation into
// 4-22 s and cut the server's throughput 5-20x on this project's 2-core build box (a thread spinning for a
// descheduled peer takes the core the peer needs). Passive waits cost a futex wake per region instead, which the
// loops' work threshold (backend/cpu/cpu_ops.h, kParallelWork) keeps small against the region (bench/RESULTS.md).
// libgomp reads the variable once, while it loads, before any code of ours runs (glibc's own start-up rebuilds the
// environment after the executable's pre-initialisers), so the process re-executes itself with it set; should that
// fail it runs on with libgomp's default.
void default_openmp_wait_policy(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 0) != 0) return;
  execv("/proc/self/exe", argv);
}

}  // namespace

int main(int argc, char** argv) {
  default_openmp_wait_policy(argv);
  CLI::App app{"dsv4: a C++/CUDA inference engine for DeepSeek-V4 and its MTP drafter"};
  app.require_subcommand(1);
#ifdef DSV4_NO_CUDA
  app.set_version_flag("--version", "dsv4 " DSV4_VERSION " (CPU-only build: DSV4_CUDA=OFF)");
#else
  app.set_version_flag("--version", "dsv4 " DSV4_VERSION " (CUDA backend built in)");
#endif
  // Usage errors get the same "error: " prefix as every other failure.
  app.failure_message(
      [](const CLI::App* a, const CLI::Error& e) { return "error: " + CLI::FailureMessage::simple(a, e); });
  dsv4::cli::register_make_tiny(app);
  dsv4::cli::register_info(app);
  dsv4::cli::register_score(app);
  dsv4::cli::register_generate(app);
  dsv4::cli::register_bench(app);
  dsv4::cli::register_serve(app);
  dsv4::cli::register_quantize(app);
  dsv4::cli::register_perplexity(app);
  // generate -n is bounded here: a sequence never holds more than 2^30 positions, so a larger count can never be
  // honoured (the engine also checks prompt + n against --max-model-len without overflow).
  app.get_subcommand("generate")->get_option("--max-new-tokens")->check(max_new_tokens_validator());
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Usage errors: the message, then exit 2 (errors exit 1; --help exits 0). Sanitizer reports of the
    // sanitizer build exit 86/87, so a test expecting 1 or 2 cannot pass on one.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const dsv4::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return finish_stdout();
}
