#include "dsv4/server/server.h"

#include <httplib.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <random>
#include <regex>

#include "dsv4/core/log.h"
#include "dsv4/core/status.h"
#include "dsv4/server/api.h"
#include "dsv4/server/engine_loop.h"
#include "dsv4/server/metrics.h"
#include "dsv4/server/output_parsers.h"

namespace dsv4::server {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
constexpr auto kHeartbeat = std::chrono::milliseconds(1000);
constexpr int kListenBacklog = 4096;
constexpr size_t kMaxBodyBytes = size_t{64} << 20;  // a request body over this is a 413
const char* kJsonType = "application/json";
// Chunked JSON bodies carry a charset so httplib does not gzip them: compression would buffer the heartbeat spaces
// that detect a client gone away.
const char* kChunkedJsonType = "application/json; charset=utf-8";

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump_json(body), kJsonType);
}

json bytes_array(const std::string& s) {
  json a = json::array();
  for (unsigned char c : s) a.push_back(static_cast<int>(c));
  return a;
}

// Decrements the in-flight count when the last copy goes (the response is done).
struct InFlight {
  std::atomic<int64_t>* counter;
  int64_t position;  // requests in flight with this one, when it arrived
  explicit InFlight(std::atomic<int64_t>* c) : counter(c), position(c->fetch_add(1) + 1) {}
  ~InFlight() { --*counter; }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;
};

}  // namespace

// One generation as its handler and response writer see it.
struct Job {
  bool chat = true, stream = false, include_usage = false;
  std::string id, model;
  std::time_t created = 0;
  int64_t logprobs = -1, prompt_tokens = 0, completion_tokens = 0;
  bool tokens_as_ids = false;
  std::shared_ptr<RequestChannel> channel;
  std::unique_ptr<OutputPipeline> pipeline;
  std::vector<int32_t> hidden_ids;
  std::unique_ptr<InFlight> in_flight;
  Clock::time_point t0, t_first, t_last, last_write;
  // Whole-response accumulators (non-streaming).
  std::string content, reasoning;
  json tool_calls = json::array();
  json chat_logprobs = json::array();
  json cmpl_tokens = json::array(), cmpl_token_logprobs = json::array(), cmpl_top = json::array(),
       cmpl_offsets = json::array();
  int64_t text_offset = 0;
  bool role_sent = false, done = false, answered = false;
  std::string finish_reason, error;
};

struct Server::Impl {
  ServerOptions opt;
  Generator& generator;  // for its constant properties only; the engine thread alone drives it
  TextCodec codec;
  bool dsv4_format = false;
  EngineLoop loop;
  Metrics metrics;
  httplib::Server http;
  std::atomic<int64_t> in_flight{0};
  std::atomic<bool> shutting_down{false};
  int listen_fd = -1;  // the listening socket, captured when httplib creates it
  std::time_t created = std::time(nullptr);
  std::mutex rng_mu;
  std::mt19937_64 rng{std::random_device{}()};

  Impl(ServerOptions o, Generator& gen, TextCodec c)
      : opt(std::move(o)), generator(gen), codec(std::move(c)), loop(gen) {
    dsv4_format = true;
    for (const char* t : {dsv4_tokens::kUser, dsv4_tokens::kAssistant, dsv4_tokens::kThinkStart, dsv4_tokens::kThinkEnd,
                          dsv4_tokens::kBos, dsv4_tokens::kEos}) {
      dsv4_format = dsv4_format && codec.token_id(t).has_value();
    }
  }

  uint64_t random_u64() {
    std::lock_guard<std::mutex> lock(rng_mu);
    return rng();
  }
  std::string random_id(const char* prefix) {
    static const char* hex = "0123456789abcdef";
    std::string s = prefix;
    uint64_t a = random_u64(), b = random_u64();
    for (int i = 0; i < 16; ++i) s += hex[(a >> (4 * i)) & 15];
    for (int i = 0; i < 8; ++i) s += hex[(b >> (4 * i)) & 15];
    return s;
  }

  // ---- request plumbing ----

  void check_auth(const httplib::Request& req) const {
    if (opt.api_key.empty()) return;
    const std::string auth = req.get_header_value("Authorization");
    const std::string bearer = "Bearer ";
    if (auth.rfind(bearer, 0) == 0 && auth.substr(bearer.size()) == opt.api_key) return;
    throw ApiError(401, auth.empty() ? "missing API key: send 'Authorization: Bearer <key>'" : "invalid API key", "",
                   "invalid_request_error", "invalid_api_key");
  }

  void check_model(const std::string& model) const {
    if (!model.empty() && model != opt.served_model_name) {
      throw ApiError(404,
                     "the model '" + model + "' does not exist; this server serves '" + opt.served_model_name + "'",
                     "model", "invalid_request_error", "model_not_found");
    }
  }

  // Runs a handler: errors become OpenAI-shaped responses; every request is counted by status.
  template <typename Fn>
  void guarded(const std::string& endpoint, const httplib::Request& req, httplib::Response& res, Fn&& fn) {
    try {
      check_auth(req);
      fn();
    } catch (const ApiError& e) {
      send_json(res, e.status(), e.body());
    } catch (const Error& e) {
      const bool client = e.code() == StatusCode::kInvalidArgument || e.code() == StatusCode::kParseError;
      send_json(res, client ? 400 : 500, ApiError(client ? 400 : 500, e.what()).body());
    } catch (const std::exception& e) {
      send_json(res, 500, ApiError(500, std::string("internal error: ") + e.what()).body());
    }
    metrics.request_done(endpoint, res.status);
  }

  std::vector<int32_t> encode_text(const std::string& text, bool add_special) const {
    if (codec.tokenizer()) return codec.tokenizer()->encode(text, add_special);
    return codec.encode(text);
  }

  std::string chat_prompt(const ChatRequest& r) const {
    return dsv4_format ? encode_chat_dsv4(r.messages, r.encode) : encode_chat_plain(r.messages, r.encode);
  }

  std::vector<int32_t> chat_ids(const std::string& prompt) const {
    // The DeepSeek-V4 prompt holds its BOS as text; the plain template gets the tokenizer's BOS id.
    return dsv4_format ? codec.encode(prompt) : encode_text(prompt, /*add_special=*/true);
  }

  // ---- generation ----

  void generate(const httplib::Request& req, httplib::Response& res, bool chat) {
    const Clock::time_point t0 = Clock::now();
    if (shutting_down) throw ApiError(503, "the server is shutting down", "", "server_error");
    const auto body = parse_json_body(req.body);
    ChatRequest chat_req;
    CompletionRequest cmpl_req;
    GenerationParams* gen;
    std::vector<int32_t> prompt;
    if (chat) {
      chat_req = parse_chat_request(body);
      gen = &chat_req.gen;
      check_model(gen->model);
      prompt = chat_ids(chat_prompt(chat_req));
    } else {
      cmpl_req = parse_completion_request(body);
      gen = &cmpl_req.gen;
      check_model(gen->model);
      prompt = cmpl_req.token_prompt ? cmpl_req.prompt_ids : encode_text(cmpl_req.prompt, /*add_special=*/true);
      for (int32_t id : prompt) {
        if (id >= loop.vocab_size()) {
          throw ApiError(400,
                         "prompt token id " + std::to_string(id) + " is outside the vocabulary (" +
                             std::to_string(loop.vocab_size()) + " tokens)",
                         "prompt");
        }
      }
    }
    if (prompt.empty()) throw ApiError(400, "the prompt is empty after tokenization", chat ? "messages" : "prompt");
    const int64_t P = static_cast<int64_t>(prompt.size()), limit = loop.max_model_len();
    const int64_t max_tokens = gen->max_tokens > 0 ? gen->max_tokens : limit - P;
    if (P >= limit || max_tokens > limit - P) {
      throw ApiError(400,
                     "this model's maximum context length is " + std::to_string(limit) + " tokens; the request has " +
                         std::to_string(P) + " prompt tokens and asks for " +
                         std::to_string(gen->max_tokens > 0 ? gen->max_tokens : 1) +
                         " completion tokens; shorten the prompt or lower max_tokens",
                     gen->max_tokens > 0 ? "max_tokens" : (chat ? "messages" : "prompt"), "",
                     "context_length_exceeded");
    }
    if (const std::string why = generator.unsupported_sampling(gen->sampling); !why.empty()) {
      const SamplingParams& sp = gen->sampling;
      throw ApiError(400, why,
                     sp.has_penalties() ? (sp.presence_penalty != 0.0f ? "presence_penalty" : "frequency_penalty")
                                        : (sp.top_k > 0 ? "top_k" : "min_p"));
    }
    RequestOptions ro;
    ro.max_new_tokens = max_tokens;
    ro.sampling = gen->sampling;
    if (!gen->seed_given) ro.sampling.seed = random_u64();
    ro.stop_at_eos = !gen->ignore_eos;
    ro.stop_token_ids = gen->stop_token_ids;
    ro.logprobs = gen->logprobs;

    // A place among the requests in flight (taken atomically, so concurrent handlers cannot overshoot the bound).
    auto slot = std::make_unique<InFlight>(&in_flight);
    if (slot->position > opt.max_queued_requests) {
      throw ApiError(429, "the server is at capacity (" + std::to_string(opt.max_queued_requests) +
                              " requests in flight); retry later");
    }
    auto job = std::make_shared<Job>();
    job->in_flight = std::move(slot);
    job->chat = chat;
    job->stream = gen->stream;
    job->include_usage = gen->include_usage;
    job->id = random_id(chat ? "chatcmpl-" : "cmpl-");
    job->model = opt.served_model_name;
    job->created = std::time(nullptr);
    job->logprobs = gen->logprobs;
    job->tokens_as_ids = gen->tokens_as_ids;
    job->prompt_tokens = P;
    job->t0 = t0;
    job->last_write = Clock::now();
    job->hidden_ids = loop.eos_ids();
    for (int32_t t : gen->stop_token_ids) job->hidden_ids.push_back(t);
    OutputPipeline::Options po;
    po.thinking = chat && chat_req.encode.thinking;
    po.parse_tools = chat && dsv4_format && !chat_req.encode.tools.empty();
    po.stop = gen->stop;
    po.hidden_ids = job->hidden_ids;
    job->pipeline = std::make_unique<OutputPipeline>(codec, po);

    job->channel = loop.submit(std::move(prompt), ro);
    if (job->channel->wait_admission() == RequestChannel::Admission::kRejected) {
      const bool invalid = job->channel->rejected_as_invalid();
      throw ApiError(invalid ? 400 : 503, job->channel->reject_message(), "", invalid ? "" : "server_error");
    }
    res.status = 200;
    auto provider = [this, job](size_t, httplib::DataSink& sink) { return write_some(*job, sink); };
    auto release = [this, job](bool) { release_job(*job); };
    if (job->stream) {
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider("text/event-stream", provider, release);
    } else {
      res.set_chunked_content_provider(kChunkedJsonType, provider, release);
    }
  }

  // Takes the events that arrived (waiting up to a heartbeat) and writes what they make. False = the client is
  // gone (httplib then drops the connection and calls release_job).
  bool write_some(Job& job, httplib::DataSink& sink) {
    if (job.answered) {
      sink.done();
      return true;
    }
    std::vector<TokenEvent> events = job.channel->take(kHeartbeat);
    std::string out = consume(job, events);
    if (job.done) {
      out += job.stream ? stream_tail(job) : dump_json(final_body(job));
      job.answered = true;
    }
    // Nothing written for a heartbeat: an SSE comment or a JSON space (allowed before the value), so that a
    // client gone away shows as a failed write.
    const Clock::time_point now = Clock::now();
    if (out.empty() && now - job.last_write >= kHeartbeat) out = job.stream ? ": keep-alive\n\n" : " ";
    if (out.empty()) return true;
    job.last_write = now;
    if (!sink.write(out.data(), out.size())) return false;
    if (job.answered) sink.done();
    return true;
  }

  void release_job(Job& job) {
    if (!job.done) {
      loop.cancel(job.channel);  // the client went away: free the sequence
      job.finish_reason = "abort";
    }
    const Clock::time_point now = Clock::now();
    metrics.generation_done(job.finish_reason.empty() ? "abort" : job.finish_reason, job.prompt_tokens,
                            job.completion_tokens);
    metrics.request_latency(seconds(now - job.t0));
    if (job.completion_tokens > 1) {
      metrics.time_per_output_token(seconds(job.t_last - job.t_first) / double(job.completion_tokens - 1));
    }
    job.in_flight.reset();
  }

  // Runs events through the output pipeline; returns SSE text (streaming) or "" (accumulated).
  std::string consume(Job& job, const std::vector<TokenEvent>& events) {
    OutputPipeline::Delta delta;
    json lp_batch = json::array();
    const auto merge = [&](OutputPipeline::Delta&& d) {
      delta.reasoning += d.reasoning;
      delta.content += d.content;
      for (ToolCall& c : d.calls) delta.calls.push_back(std::move(c));
      delta.stopped = delta.stopped || d.stopped;
    };
    for (const TokenEvent& e : events) {
      if (job.done) break;
      if (e.token >= 0) {
        const Clock::time_point now = Clock::now();
        if (job.completion_tokens == 0) {
          job.t_first = now;
          metrics.time_to_first_token(seconds(now - job.t0));
        }
        job.t_last = now;
        ++job.completion_tokens;
        const bool hidden = std::find(job.hidden_ids.begin(), job.hidden_ids.end(), e.token) != job.hidden_ids.end();
        if (job.logprobs >= 0 && !hidden) add_logprobs(job, e, lp_batch);
        merge(job.pipeline->push(e.token));
        if (delta.stopped) {
          loop.cancel(job.channel);  // a stop string matched: end the sequence now
          job.finish_reason = "stop";
          job.done = true;
          break;
        }
      }
      if (e.finished) {
        merge(job.pipeline->finish());
        job.done = true;
        switch (e.reason) {
          case FinishReason::kLength:
            job.finish_reason = "length";
            break;
          case FinishReason::kStop:
            job.finish_reason = "stop";
            break;
          case FinishReason::kCancelled:
            job.finish_reason = "abort";
            break;
          default:
            job.finish_reason = "error";
            job.error = e.error.empty() ? "the request failed" : e.error;
        }
      }
    }
    if (job.done && job.finish_reason == "stop" && job.pipeline->tool_calls() > 0) job.finish_reason = "tool_calls";
    // Tool calls get their ids and indices.
    json calls = json::array();
    for (ToolCall& c : delta.calls) {
      c.id = random_id("call_");
      json tc = {{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}};
      tc["index"] = job.tool_calls.size();
      job.tool_calls.push_back(tc);
      calls.push_back(tc);
    }
    if (!job.stream) {
      job.content += delta.content;
      job.reasoning += delta.reasoning;
      return "";
    }
    return stream_chunk(job, delta, calls, lp_batch);
  }

  // A token as logprobs show it: its text (invalid UTF-8 of a partial character repaired), or "token_id:N".
  std::string token_label(const Job& job, int32_t id) const {
    return job.tokens_as_ids ? "token_id:" + std::to_string(id) : repair_utf8(codec.token_bytes(id));
  }

  void add_logprobs(Job& job, const TokenEvent& e, json& batch) {
    const std::string bytes = codec.token_bytes(e.token);
    const std::string text = token_label(job, e.token);
    if (job.chat) {
      json top = json::array();
      for (const auto& [id, lp] : e.top_logprobs) {
        const std::string b = codec.token_bytes(id);
        top.push_back({{"token", token_label(job, id)}, {"logprob", lp}, {"bytes", bytes_array(b)}});
      }
      json entry = {{"token", text}, {"logprob", e.logprob}, {"bytes", bytes_array(bytes)}, {"top_logprobs", top}};
      batch.push_back(entry);
      if (!job.stream) job.chat_logprobs.push_back(entry);
    } else {
      json top = json::object();
      for (const auto& [id, lp] : e.top_logprobs) top[token_label(job, id)] = lp;
      json entry = {{"token", text}, {"logprob", e.logprob}, {"top", top}, {"offset", job.text_offset}};
      job.text_offset += static_cast<int64_t>(repair_utf8(bytes).size());
      batch.push_back(entry);
      if (!job.stream) {
        job.cmpl_tokens.push_back(text);
        job.cmpl_token_logprobs.push_back(e.logprob);
        job.cmpl_top.push_back(job.logprobs > 0 ? top : json(nullptr));
        job.cmpl_offsets.push_back(entry["offset"]);
      }
    }
  }

  json completion_logprobs(const json& batch, int64_t k) const {
    json out = {{"tokens", json::array()},
                {"token_logprobs", json::array()},
                {"top_logprobs", json::array()},
                {"text_offset", json::array()}};
    for (const json& e : batch) {
      out["tokens"].push_back(e["token"]);
      out["token_logprobs"].push_back(e["logprob"]);
      out["top_logprobs"].push_back(k > 0 ? e["top"] : json(nullptr));
      out["text_offset"].push_back(e["offset"]);
    }
    return out;
  }

  json usage(const Job& job) const {
    return {{"prompt_tokens", job.prompt_tokens},
            {"completion_tokens", job.completion_tokens},
            {"total_tokens", job.prompt_tokens + job.completion_tokens}};
  }

  json chunk_head(const Job& job) const {
    json c = {{"id", job.id},
              {"object", job.chat ? "chat.completion.chunk" : "text_completion"},
              {"created", job.created},
              {"model", job.model}};
    if (job.include_usage) c["usage"] = nullptr;
    return c;
  }

  std::string stream_chunk(Job& job, const OutputPipeline::Delta& d, const json& calls, const json& lp_batch) {
    std::string out;
    if (job.chat) {
      json delta = json::object();
      if (!job.role_sent) {
        delta["role"] = "assistant";
        delta["content"] = "";
        job.role_sent = true;
      }
      if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
      if (!d.content.empty()) delta["content"] = d.content;
      if (!calls.empty()) delta["tool_calls"] = calls;
      if (delta.empty() && lp_batch.empty()) return out;
      json c = chunk_head(job);
      c["choices"] = json::array({{{"index", 0},
                                   {"delta", delta},
                                   {"logprobs", lp_batch.empty() ? json(nullptr) : json{{"content", lp_batch}}},
                                   {"finish_reason", nullptr}}});
      out += sse_event(c);
    } else {
      if (d.content.empty() && lp_batch.empty()) return out;
      json c = chunk_head(job);
      c["choices"] =
          json::array({{{"index", 0},
                        {"text", d.content},
                        {"logprobs", lp_batch.empty() ? json(nullptr) : completion_logprobs(lp_batch, job.logprobs)},
                        {"finish_reason", nullptr}}});
      out += sse_event(c);
    }
    return out;
  }

  std::string stream_tail(Job& job) {
    std::string out;
    if (job.finish_reason == "error") {
      out += sse_event(ApiError(500, job.error, "", "server_error").body());
    } else {
      json c = chunk_head(job);
      json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", job.finish_reason}};
      if (job.chat) {
        choice["delta"] = json::object();
      } else {
        choice["text"] = "";
      }
      c["choices"] = json::array({choice});
      out += sse_event(c);
      if (job.include_usage) {
        json u = chunk_head(job);
        u["choices"] = json::array();
        u["usage"] = usage(job);
        out += sse_event(u);
      }
    }
    return out + sse_done();
  }

  json final_body(const Job& job) const {
    if (job.finish_reason == "error") return ApiError(500, job.error, "", "server_error").body();
    json choice = {{"index", 0}, {"finish_reason", job.finish_reason}};
    if (job.chat) {
      json message = {{"role", "assistant"}, {"content", job.content}};
      if (job.content.empty() && !job.tool_calls.empty()) message["content"] = nullptr;
      if (!job.reasoning.empty()) message["reasoning_content"] = job.reasoning;
      if (!job.tool_calls.empty()) {
        json calls = job.tool_calls;
        for (json& c : calls) c.erase("index");
        message["tool_calls"] = calls;
      }
      choice["message"] = message;
      choice["logprobs"] = job.logprobs >= 0 ? json{{"content", job.chat_logprobs}} : json(nullptr);
    } else {
      choice["text"] = job.content;
      choice["logprobs"] = job.logprobs >= 0 ? json{{"tokens", job.cmpl_tokens},
                                                    {"token_logprobs", job.cmpl_token_logprobs},
                                                    {"top_logprobs", job.cmpl_top},
                                                    {"text_offset", job.cmpl_offsets}}
                                             : json(nullptr);
    }
    return {{"id", job.id},
            {"object", job.chat ? "chat.completion" : "text_completion"},
            {"created", job.created},
            {"model", job.model},
            {"choices", json::array({choice})},
            {"usage", usage(job)}};
  }

  // ---- other endpoints ----

  void tokenize(const httplib::Request& req, httplib::Response& res) {
    const auto body = parse_json_body(req.body);
    std::vector<int32_t> ids;
    if (body.contains("messages")) {
      ChatRequest r = parse_chat_request(body);
      check_model(r.gen.model);
      ids = chat_ids(chat_prompt(r));
    } else {
      auto it = body.find("prompt");
      if (it == body.end() || !it->is_string())
        throw ApiError(400, "'prompt' (a string) or 'messages' is required", "prompt");
      bool add_special = true;
      if (auto a = body.find("add_special_tokens"); a != body.end()) {
        if (!a->is_boolean()) throw ApiError(400, "'add_special_tokens' must be a boolean", "add_special_tokens");
        add_special = a->get<bool>();
      }
      ids = encode_text(it->get<std::string>(), add_special);
    }
    send_json(res, 200, {{"count", ids.size()}, {"max_model_len", loop.max_model_len()}, {"tokens", ids}});
  }

  void detokenize(const httplib::Request& req, httplib::Response& res) {
    const auto body = parse_json_body(req.body);
    auto it = body.find("tokens");
    if (it == body.end() || !it->is_array())
      throw ApiError(400, "'tokens' (an array of token ids) is required", "tokens");
    std::vector<int32_t> ids;
    for (const auto& x : *it) {
      if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= loop.vocab_size()) {
        throw ApiError(
            400, "'tokens' must hold token ids in [0, " + std::to_string(loop.vocab_size()) + "), got " + x.dump(),
            "tokens");
      }
      ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
    }
    send_json(res, 200, {{"prompt", codec.decode(ids)}});
  }

  // The served model as /v1/models lists it.
  json model_card() const {
    return {{"id", opt.served_model_name},
            {"object", "model"},
            {"created", created},
            {"owned_by", "dsv4"},
            {"root", opt.served_model_name},
            {"max_model_len", loop.max_model_len()},
            {"vocab_size", loop.vocab_size()}};
  }

  // Every route goes through here, so the error handler's 405 (a known path with another method) reads the same
  // table the server serves from. Guarded routes check the API key and answer errors in the OpenAI shape.
  enum class Guard { kAuthAndErrors, kNone };
  // (path pattern, method): httplib matches a route's path as a whole-path regular expression, and so does the 405.
  std::vector<std::pair<std::regex, std::string>> known_routes;

  // How a request meets the route table: a route with its path and method, or the method of one with its path only.
  struct RouteMatch {
    bool exact = false;
    std::string other_method;
  };
  RouteMatch match_route(const httplib::Request& req) const {
    RouteMatch m;
    for (const auto& [path, method] : known_routes) {
      if (!std::regex_match(req.path, path)) continue;
      if (req.method == method) {
        m.exact = true;
      } else {
        m.other_method = method;
      }
    }
    return m;
  }

  // `path` is a whole-path pattern (httplib's); `endpoint` names the route in the metrics (default: the path).
  template <class Handler>
  void add_route(const std::string& method, const std::string& path, Handler handler,
                 Guard guard = Guard::kAuthAndErrors, std::string endpoint = "") {
    known_routes.emplace_back(std::regex(path), method);
    if (endpoint.empty()) endpoint = path;
    auto serve = [this, endpoint, guard, handler](const httplib::Request& req, httplib::Response& res) {
      if (guard == Guard::kNone) return handler(req, res);
      guarded(endpoint, req, res, [&] { handler(req, res); });
    };
    if (method == "GET") {
      http.Get(path, serve);
    } else if (method == "POST") {
      http.Post(path, serve);
    } else {
      throw Error(StatusCode::kInternal, "server: no registration for method " + method);
    }
  }

  void routes() {
    using Req = httplib::Request;
    using Res = httplib::Response;
    add_route("POST", "/v1/chat/completions", [this](const Req& req, Res& res) { generate(req, res, /*chat=*/true); });
    add_route("POST", "/v1/completions", [this](const Req& req, Res& res) { generate(req, res, /*chat=*/false); });
    add_route("GET", "/v1/models", [this](const Req&, Res& res) {
      send_json(res, 200, {{"object", "list"}, {"data", json::array({model_card()})}});
    });
    // OpenAI's "retrieve model" (client.models.retrieve): the served model, or 404 model_not_found.
    add_route(
        "GET", R"(/v1/models/(.+))",
        [this](const Req& req, Res& res) {
          check_model(req.matches[1].str());
          send_json(res, 200, model_card());
        },
        Guard::kAuthAndErrors, "/v1/models/{model}");
    // Unauthenticated, for load balancers.
    add_route(
        "GET", "/health",
        [this](const Req&, Res& res) {
          res.status = shutting_down ? 503 : 200;
          res.set_content(shutting_down ? "shutting down\n" : "ok\n", "text/plain");
          metrics.request_done("/health", res.status);
        },
        Guard::kNone);
    add_route("GET", "/metrics", [this](const Req&, Res& res) {
      res.set_content(metrics.render(loop.stats(), in_flight.load()), "text/plain; version=0.0.4");
    });
    add_route("POST", "/tokenize", [this](const Req& req, Res& res) { tokenize(req, res); });
    add_route("POST", "/detokenize", [this](const Req& req, Res& res) { detokenize(req, res); });
    // A request of a body-carrying method that announces no body (no Content-Length, not chunked: `curl -X POST`
    // without -d) is answered before httplib reads its body, which it would do until the read timeout (30 s): 411
    // on a route that takes it, else the 404 / 405 below.
    http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      using Handled = httplib::Server::HandlerResponse;
      const bool body_method =
          req.method == "POST" || req.method == "PUT" || req.method == "PATCH" || req.method == "DELETE";
      if (!body_method || req.has_header("Content-Length") || req.get_header_value("Transfer-Encoding") == "chunked") {
        return Handled::Unhandled;
      }
      res.status = match_route(req).exact ? 411 : 404;
      return Handled::Handled;
    });
    // Errors httplib answers itself, in the OpenAI error shape: an unknown path (404), a known path with another
    // method (405, with the Allow header), a body over the limit (413) and the like keep their status.
    http.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      int status = res.status >= 400 ? res.status : 404;
      if (const RouteMatch m = match_route(req); status == 404 && !m.other_method.empty()) {
        status = 405;
        res.set_header("Allow", m.other_method);
      }
      const std::string at = req.method + " " + req.path;
      std::string message = "request failed with HTTP status " + std::to_string(status) + ": " + at;
      if (status == 404) message = "no route for " + at;
      if (status == 405) message = "method not allowed: " + at;
      if (status == 413) message = "request body over the " + std::to_string(kMaxBodyBytes >> 20) + " MiB limit: " + at;
      if (status == 411) message = at + " has no body: send the JSON request with a Content-Length (or chunked) header";
      send_json(res, status, ApiError(status, message).body());
    });
  }
};

Server::Server(ServerOptions options, Generator& generator, TextCodec codec)
    : impl_(std::make_unique<Impl>(std::move(options), generator, std::move(codec))) {
  DSV4_CHECK_ARG(!impl_->opt.served_model_name.empty(), "serve: the served model name is empty");
  DSV4_CHECK_ARG(impl_->opt.max_queued_requests >= 1, "serve: --max-queued-requests must be >= 1, got ",
                 impl_->opt.max_queued_requests);
  const size_t threads = impl_->opt.http_threads > 0 ? static_cast<size_t>(impl_->opt.http_threads)
                                                     : static_cast<size_t>(impl_->opt.max_queued_requests) + 8;
  impl_->http.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, which would let a second server share the port.
  impl_->http.set_socket_options([impl = impl_.get()](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    impl->listen_fd = sock;
  });
  impl_->http.set_tcp_nodelay(true);
  impl_->http.set_payload_max_length(kMaxBodyBytes);
  impl_->http.set_read_timeout(30, 0);
  impl_->http.set_write_timeout(30, 0);
  impl_->routes();
}

Server::~Server() {
  shutdown();
  impl_->loop.stop();
}

// A plain socket bound and closed (an httplib::Server bound without listening keeps its socket open until it is
// destroyed in some versions and not at all in others): the address resolved as httplib does (getaddrinfo, passive),
// SO_REUSEADDR as httplib sets it, so that the server's own bind right after succeeds.
void check_bindable(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  const int rc = getaddrinfo(host.c_str(), service.c_str(), &hints, &found);
  DSV4_CHECK(rc == 0, kIoError, "serve: cannot resolve --host '", host, "': ", gai_strerror(rc));
  bool bound = false;
  for (addrinfo* a = found; a != nullptr && !bound; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    const int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    bound = ::bind(fd, a->ai_addr, a->ai_addrlen) == 0;
    ::close(fd);
  }
  freeaddrinfo(found);
  DSV4_CHECK(bound || port != 0, kIoError, "serve: cannot bind a port on ", host, " (not an address of this machine)");
  DSV4_CHECK(bound, kIoError, "serve: cannot bind ", host, ":", port, " (in use, or not an address of this machine)");
}

int Server::bind() {
  int port = impl_->opt.port;
  if (port == 0) {
    port = impl_->http.bind_to_any_port(impl_->opt.host);
    DSV4_CHECK(port > 0, kIoError, "serve: cannot bind a port on ", impl_->opt.host);
  } else {
    DSV4_CHECK(impl_->http.bind_to_port(impl_->opt.host, port), kIoError, "serve: cannot bind ", impl_->opt.host, ":",
               port, " (in use, or not an address of this machine)");
  }
  // Debian's libcpp-httplib listens with a backlog of 5: concurrent clients beyond it see failed connections.
  // Listening again on the bound socket raises the backlog.
  if (impl_->listen_fd >= 0) {
    DSV4_CHECK(::listen(impl_->listen_fd, kListenBacklog) == 0, kIoError, "serve: cannot listen on ", impl_->opt.host,
               ":", port);
  }
  impl_->opt.port = port;
  return port;
}

void Server::serve() { impl_->http.listen_after_bind(); }

void Server::shutdown() {
  if (impl_->shutting_down.exchange(true)) return;
  // Running generations end (cancelled: finish_reason "abort") and are answered; then the listener stops.
  impl_->loop.stop();
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (impl_->in_flight.load() > 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  impl_->http.stop();
}

bool Server::deepseek_chat_format() const { return impl_->dsv4_format; }

}  // namespace dsv4::server
