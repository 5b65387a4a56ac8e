// dsv4 serve: the OpenAI-compatible HTTP server (server/server.h) over the engine's scheduler.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>

#include "cli/commands.h"
#include "dsv4/core/log.h"
#include "dsv4/core/status.h"
#include "dsv4/server/server.h"

namespace dsv4::cli {

void register_serve(CLI::App& app) {
  struct Opts {
    std::string dir, host = "127.0.0.1", api_key, name;
    int port = 8000;
    int64_t spec_tokens = 0, max_queued = 512;
    DeviceFlags flags;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("serve",
                                     "OpenAI-compatible HTTP server (chat/completions, completions, models, "
                                     "health, metrics, tokenize)");
  cmd->add_option("-m,--model", o->dir, "Model directory")->required();
  cmd->add_option("--host", o->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", o->port, "Port to listen on (0 = any free port, printed at start)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--api-key", o->api_key,
                  "Require 'Authorization: Bearer KEY' on every endpoint but /health (default: env DSV4_API_KEY; "
                  "none when unset)");
  cmd->add_option("--served-model-name", o->name, "Model id clients use (default: the model directory's name)");
  cmd->add_option("--spec-tokens", o->spec_tokens, "MTP draft tokens per decode step (0 = off)")
      ->check(CLI::Range(int64_t{0}, int64_t{16}))
      ->capture_default_str();
  cmd->add_option("--max-queued-requests", o->max_queued,
                  "Generation requests the server holds at once (running and waiting); beyond, 429")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 16))
      ->capture_default_str();
  o->flags.add_to(cmd);
  cmd->callback([o] {
    if (o->api_key.empty()) env_string("DSV4_API_KEY", &o->api_key);
    if (o->name.empty()) {
      std::filesystem::path p = std::filesystem::absolute(o->dir).lexically_normal();
      if (p.filename().empty()) p = p.parent_path();  // "dir/"
      o->name = p.filename().string();
    }
    // Signals are taken by one thread (sigwait); every other thread, the engine's and HTTP ones included, blocks
    // them, so they are created after this mask. A signal while the model loads ends the process at once; once
    // serving, it shuts the server down gracefully.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    signal(SIGPIPE, SIG_IGN);  // a client gone away is a failed write, not a signal
    std::mutex mu;
    server::Server* serving = nullptr;
    bool finished = false;
    std::thread waiter([&] {
      int sig = 0;
      sigwait(&stop_signals, &sig);
      std::lock_guard<std::mutex> lock(mu);
      if (finished) return;  // woken by main after serve() ended
      if (serving == nullptr) {
        std::fprintf(stderr, "dsv4 serve: signal %d while loading, exiting\n", sig);
        std::_Exit(128 + sig);
      }
      log_info("serve: signal ", sig, ", shutting down (in-flight requests are cancelled and answered)");
      serving->shutdown();
    });
    struct JoinWaiter {  // wakes and joins the waiter however this scope ends
      std::thread& t;
      std::mutex& mu;
      bool& finished;
      ~JoinWaiter() {
        {
          std::lock_guard<std::mutex> lock(mu);
          finished = true;
        }
        pthread_kill(t.native_handle(), SIGTERM);
        t.join();
      }
    } join_waiter{waiter, mu, finished};

    EngineOptions eo;
    o->flags.apply(eo);
    eo.graph_spec_tokens = o->spec_tokens;
    Engine engine(o->dir, eo);
    if (o->spec_tokens > 0) {
      DSV4_CHECK_ARG(engine.has_mtp(), "--spec-tokens needs a model with its MTP layer (mtp.0.*)");
      engine.set_spec_tokens(o->spec_tokens);
    }
    auto generator = server::make_engine_generator(engine);
    server::ServerOptions so;
    so.host = o->host;
    so.port = o->port;
    so.api_key = o->api_key;
    so.served_model_name = o->name;
    so.max_queued_requests = o->max_queued;
    server::Server srv(so, *generator, server::TextCodec::from_model_dir(o->dir));
    const int port = srv.bind();
    {
      std::lock_guard<std::mutex> lock(mu);
      serving = &srv;
    }
    log_info("serve: model '", o->name, "' (",
             srv.deepseek_chat_format() ? "DeepSeek-V4 chat format" : "plain chat template", "), max_model_len ",
             engine.max_model_len(), ", listening on http://", o->host, ":", port);
    std::printf("dsv4 serve: listening on http://%s:%d\n", o->host.c_str(), port);
    std::fflush(stdout);
    srv.serve();
    {
      std::lock_guard<std::mutex> lock(mu);
      serving = nullptr;
    }
  });
}

}  // namespace dsv4::cli
