// dsv4_serve_main: the body of `dsv4 serve` (server/serve.h), in libdsv4_server.so.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>

#include "dsv4/core/log.h"
#include "dsv4/core/status.h"
#include "dsv4/model/random_checkpoint.h"
#include "dsv4/model/weights.h"
#include "dsv4/server/serve.h"

namespace dsv4::server {
namespace {

void serve_main(const ServeConfig& cfg) {
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
  Server* serving = nullptr;
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

  check_bindable(cfg.server.host, cfg.server.port);  // before the model loads
  const std::string& host = cfg.server.host;
  if (cfg.server.api_key.empty() && host != "127.0.0.1" && host != "localhost" && host != "::1") {
    log_warn("serving on ", host, " without an API key: any client that reaches it may use it (--api-key)");
  }
  EngineOptions eo = cfg.engine;
  eo.graph_spec_tokens = cfg.spec_tokens;
  std::unique_ptr<Engine> owned;
  if (cfg.synthetic.empty()) {
    owned = std::make_unique<Engine>(cfg.model_dir, eo);
  } else {
    ModelConfig mc = synthetic_config(cfg.synthetic, cfg.synthetic_layers);
    ModelWeights w = random_weights(mc, {eo.device, true, eo.cuda_precision}, cfg.seed + 1);
    owned = std::make_unique<Engine>(std::move(mc), std::move(w), eo);
  }
  Engine& engine = *owned;
  if (cfg.spec_tokens > 0) {
    DSV4_CHECK_ARG(engine.has_mtp(), "--spec-tokens needs a model with its MTP layer (mtp.0.*)");
    engine.set_spec_tokens(cfg.spec_tokens);
  }
  auto generator = make_engine_generator(engine);
  Server srv(cfg.server, *generator, cfg.synthetic.empty() ? TextCodec::from_model_dir(cfg.model_dir) : TextCodec());
  const int port = srv.bind();
  {
    std::lock_guard<std::mutex> lock(mu);
    serving = &srv;
  }
  log_info("serve: model '", cfg.server.served_model_name, "' (",
           srv.deepseek_chat_format() ? "DeepSeek-V4 chat format" : "plain chat template", "), max_model_len ",
           engine.max_model_len(), ", listening on http://", cfg.server.host, ":", port);
  std::printf("dsv4 serve: listening on http://%s:%d\n", cfg.server.host.c_str(), port);
  std::fflush(stdout);
  srv.serve();
  {
    std::lock_guard<std::mutex> lock(mu);
    serving = nullptr;
  }
}

}  // namespace
}  // namespace dsv4::server

extern "C" void dsv4_serve_main(const dsv4::server::ServeConfig& config) { dsv4::server::serve_main(config); }
