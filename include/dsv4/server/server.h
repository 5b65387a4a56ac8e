// `dsv4 serve`: an OpenAI-compatible HTTP server (cpp-httplib) over a Generator.
//
//   POST /v1/chat/completions, /v1/completions   (JSON, or server-sent events with "stream": true)
//   GET  /v1/models, /health, /metrics            POST /tokenize, /detokenize
//
// HTTP handler threads parse and validate a request, encode its prompt, post it to the engine thread
// (EngineLoop) and turn its token events into responses. A client that disconnects has its request cancelled
// (streams notice on their next write; non-streaming responses write a space every second while waiting, which
// JSON allows before the value). At most max_queued_requests generations are held at once; beyond, 429.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "dsv4/server/generator.h"
#include "dsv4/server/text_codec.h"

namespace dsv4::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                // 0 = any free port (see Server::bind)
  std::string api_key;            // "" = no authentication
  std::string served_model_name;  // the model id clients name
  int64_t max_queued_requests = 512;
  int http_threads = 0;  // 0 = max_queued_requests + 8 (handlers block while their request runs)
};

// Throws dsv4::Error(kIoError) when host:port (port 0: any port of host) cannot be bound now — a typo in --host or a
// port in use — so that `dsv4 serve` says so before it spends minutes loading a model. The socket is closed again.
void check_bindable(const std::string& host, int port);

class Server {
 public:
  // `codec` decides the chat format: DeepSeek-V4's when its tokenizer has <｜User｜>, <｜Assistant｜>, <think>,
  // </think> and ｜DSML｜ tokens, else the plain template (server/chat_template.h).
  Server(ServerOptions options, Generator& generator, TextCodec codec);
  ~Server();
  // Binds the listening socket; returns the port. Throws dsv4::Error(kIoError) when it cannot.
  int bind();
  // Serves until shutdown() (blocks). bind() first.
  void serve();
  // Graceful: new generations get 503, running ones are cancelled and answered, then the listener stops.
  // Callable from any thread (e.g. a signal-waiting thread).
  void shutdown();
  bool deepseek_chat_format() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsv4::server
