// dsv4 command-line interface: make-tiny | info | score | generate | bench | serve | quantize | perplexity.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/commands.h"
#include "dsv4/core/status.h"

int main(int argc, char** argv) {
  CLI::App app{"dsv4: a C++/CUDA inference engine for DeepSeek-V4 and its MTP drafter"};
  app.require_subcommand(1);
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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);  // usage errors: message + non-zero exit
  } catch (const dsv4::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
