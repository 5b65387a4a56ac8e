// The entry point of `dsv4 serve`. It lives in libdsv4_server.so, which the CLI loads only for this command, so
// that every other command runs where cpp-httplib (libcpp-httplib0.11) is not installed.
#pragma once

#include <cstdint>
#include <string>

#include "dsv4/runtime/engine.h"
#include "dsv4/server/server.h"

namespace dsv4::server {

struct ServeConfig {
  std::string model_dir;
  // Or a synthetic model with random weights (model/random_checkpoint.h: "tiny", or "flash" with
  // synthetic_layers layers + MTP) and byte-level text: for load tests of models not on disk.
  std::string synthetic;
  int64_t synthetic_layers = 3;
  uint64_t seed = 0;
  EngineOptions engine;
  int64_t spec_tokens = 0;  // MTP draft tokens per decode step
  ServerOptions server;
};

}  // namespace dsv4::server

// Loads the engine, serves until SIGINT/SIGTERM (graceful: in-flight requests are cancelled and answered), and
// returns; errors are thrown as dsv4::Error. Call with SIGINT and SIGTERM not yet blocked and no threads started.
extern "C" void dsv4_serve_main(const dsv4::server::ServeConfig& config);

namespace dsv4::server {
using ServeMainFn = void (*)(const ServeConfig&);
inline constexpr const char* kServeLibrary = "libdsv4_server.so";
inline constexpr const char* kServeMainSymbol = "dsv4_serve_main";
}  // namespace dsv4::server
