// dsv4 serve: options of the OpenAI-compatible server; the server itself (server/serve.h) is loaded from
// libdsv4_server.so when the command runs.
#include "dsv4/server/serve.h"

#include <dlfcn.h>

#include <filesystem>
#include <string>

#include "cli/commands.h"
#include "dsv4/core/log.h"
#include "dsv4/core/status.h"
#include "dsv4/model/random_checkpoint.h"

namespace dsv4::cli {

void register_serve(CLI::App& app) {
  struct Opts {
    std::string dir, synthetic, host = "127.0.0.1", api_key, name;
    int port = 8000;
    int64_t spec_tokens = 0, max_queued = 512, layers = 3;
    uint64_t seed = 0;
    DeviceFlags flags;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("serve",
                                     "OpenAI-compatible HTTP server (chat/completions, completions, models, "
                                     "health, metrics, tokenize)");
  cmd->add_option("-m,--model", o->dir, "Model directory (or --synthetic)");
  cmd->add_option(
      "--synthetic", o->synthetic,
      "Serve a synthetic model with random weights and byte-level text instead (ids past 255 show as <id>): "
      "'flash' (DeepSeek-V4-Flash's dimensions, the first --layers layers + MTP) or 'tiny' (load tests)");
  cmd->add_option("--layers", o->layers, "Layers of the synthetic Flash slice")->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of the synthetic model's weights")->capture_default_str();
  cmd->add_option("--host", o->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "Port to listen on (0 = any free port, printed at start)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--api-key", o->api_key,
                  "Require 'Authorization: Bearer KEY' on every endpoint but /health (default: env DSV4_API_KEY; "
                  "none when unset)");
  cmd->add_option("--served-model-name", o->name, "Model id clients use (default: the model directory's name)");
  cmd->add_option("--spec-tokens", o->spec_tokens, "MTP draft tokens per decode step (0 = off)")
      ->check(CLI::Range(int64_t{0}, kMaxSpecTokens))
      ->capture_default_str();
  cmd->add_option("--max-queued-requests", o->max_queued,
                  "Generation requests the server holds at once (running and waiting); beyond, 429")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16))
      ->capture_default_str();
  o->flags.add_to(cmd);
  cmd->callback([o, cmd] {
    DSV4_CHECK_ARG(o->dir.empty() != o->synthetic.empty(), "serve needs exactly one of -m DIR and --synthetic");
    if (!o->synthetic.empty()) synthetic_config(o->synthetic, o->layers);  // a bad name or layer count, up front
    // An explicit empty key is almost always an unset shell variable: refuse it rather than serve without a key.
    DSV4_CHECK_ARG(cmd->count("--api-key") == 0 || !o->api_key.empty(),
                   "--api-key is empty (an unset variable?); leave the flag out to serve without a key");
    DSV4_CHECK_ARG(cmd->count("--served-model-name") == 0 || !o->name.empty(),
                   "--served-model-name is empty; leave the flag out for the model directory's name");
    if (o->api_key.empty()) env_string("DSV4_API_KEY", &o->api_key);
    if (o->name.empty() && !o->synthetic.empty()) o->name = synthetic_model_name(o->synthetic, o->layers);
    if (o->name.empty()) {
      std::filesystem::path p = std::filesystem::absolute(o->dir).lexically_normal();
      if (p.filename().empty()) p = p.parent_path();  // "dir/"
      o->name = p.filename().string();
    }
    server::ServeConfig cfg;
    cfg.model_dir = o->dir;
    cfg.synthetic = o->synthetic;
    cfg.synthetic_layers = o->layers;
    cfg.seed = o->seed;
    o->flags.apply(cfg.engine);
    cfg.spec_tokens = o->spec_tokens;
    cfg.server.host = o->host;
    cfg.server.port = o->port;
    cfg.server.api_key = o->api_key;
    cfg.server.served_model_name = o->name;
    cfg.server.max_queued_requests = o->max_queued;
    // The server library (and through it cpp-httplib) is loaded only now: the other commands do not need it.
    const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe");
    std::string errors;
    void* lib = nullptr;
    for (const std::filesystem::path& dir : {exe.parent_path(), exe.parent_path().parent_path() / "lib"}) {
      const std::string path = (dir / server::kServeLibrary).string();
      if ((lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) != nullptr) break;
      errors += std::string("\n  ") + dlerror();
    }
    DSV4_CHECK(
        lib != nullptr, kUnsupported, "dsv4 serve needs ", server::kServeLibrary,
        " next to the dsv4 executable and cpp-httplib (Debian/Ubuntu: apt-get install libcpp-httplib0.11):", errors);
    auto serve_main = reinterpret_cast<server::ServeMainFn>(dlsym(lib, server::kServeMainSymbol));
    DSV4_CHECK(serve_main != nullptr, kInternal, server::kServeLibrary, " has no ", server::kServeMainSymbol);
    serve_main(cfg);
  });
}

}  // namespace dsv4::cli
