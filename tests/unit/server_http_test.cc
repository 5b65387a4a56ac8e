// The HTTP server end to end over real loopback HTTP (httplib's client), with the deterministic fake generator
// and byte-level text: endpoints, streaming, stop strings, errors (server still serving), 401, 429, a client
// that disconnects mid-stream (its sequence cancelled), concurrency, shutdown.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "dsv4/server/chat_template.h"
#include "dsv4/server/server.h"
#include "server_fake_generator.h"
#include "test_util.h"

namespace dsv4::server {
namespace {

using json = nlohmann::json;
using testing::FakeGenerator;

std::vector<int32_t> bytes_of(const std::string& s) {
  std::vector<int32_t> ids;
  for (unsigned char c : s) ids.push_back(c);
  return ids;
}

struct TestServer {
  FakeGenerator gen;
  std::unique_ptr<Server> srv;
  int port = 0;
  std::thread thread;
  explicit TestServer(ServerOptions o = {}, TextCodec codec = TextCodec(), int64_t vocab = 512)
      : gen(/*max_model_len=*/4096, vocab) {
    o.host = "127.0.0.1";
    o.port = 0;
    if (o.served_model_name.empty()) o.served_model_name = "fake";
    o.http_threads = 64;
    srv = std::make_unique<Server>(o, gen, std::move(codec));
    port = srv->bind();
    thread = std::thread([this] { srv->serve(); });
  }
  ~TestServer() {
    srv->shutdown();
    thread.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(20, 0);
    return c;
  }
  httplib::Result post(const std::string& path, const std::string& body, const httplib::Headers& h = {}) const {
    return client().Post(path.c_str(), h, body, "application/json");
  }
};

// Sends `request` as written on a fresh connection and returns the server's first response (headers and a
// Content-Length body), or what came before the server closed or 10 s passed.
std::string raw_http(int port, const std::string& request) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0 &&
      send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[4096];
    for (ssize_t n; (n = recv(fd, buf, sizeof(buf), 0)) > 0;) {
      out.append(buf, static_cast<size_t>(n));
      const size_t head = out.find("\r\n\r\n"), length = out.find("Content-Length: ");
      if (head != std::string::npos && length != std::string::npos && length < head &&
          out.size() >= head + 4 + std::stoul(out.substr(length + 16))) {
        break;
      }
    }
  }
  close(fd);
  return out;
}

// The JSON payloads of an SSE body, "[DONE]" as a string.
std::vector<json> sse_payloads(const std::string& body) {
  std::vector<json> out;
  size_t i = 0;
  while ((i = body.find("data: ", i)) != std::string::npos) {
    const size_t end = body.find("\n\n", i);
    const std::string data = body.substr(i + 6, end - i - 6);
    out.push_back(data == "[DONE]" ? json("[DONE]") : json::parse(data));
    i = end;
  }
  return out;
}

void expect_error(const httplib::Result& r, int status, const std::string& param = "") {
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, status) << r->body;
  const json j = json::parse(r->body);
  ASSERT_TRUE(j.contains("error")) << r->body;
  EXPECT_TRUE(j["error"]["message"].is_string());
  EXPECT_TRUE(j["error"]["type"].is_string());
  EXPECT_TRUE(j["error"].contains("param"));
  EXPECT_TRUE(j["error"].contains("code"));
  if (!param.empty()) {
    EXPECT_EQ(j["error"]["param"], param);
  }
}

TEST(ServerHttp, ModelsHealthTokenize) {
  TestServer s;
  auto c = s.client();
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  const json m = json::parse(models->body);
  EXPECT_EQ(m["object"], "list");
  EXPECT_EQ(m["data"][0]["id"], "fake");
  EXPECT_EQ(m["data"][0]["max_model_len"], 4096);
  // Retrieve one model (client.models.retrieve): the served one, else 404 model_not_found; other methods 405.
  auto one = c.Get("/v1/models/fake");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
  EXPECT_EQ(json::parse(one->body), m["data"][0]);
  auto other = c.Get("/v1/models/deepseek-ai/DeepSeek-V4-Flash");
  expect_error(other, 404, "model");
  EXPECT_EQ(json::parse(other->body)["error"]["code"], "model_not_found");
  auto del_one = c.Delete("/v1/models/fake");
  expect_error(del_one, 405);
  EXPECT_EQ(del_one->get_header_value("Allow"), "GET");
  auto tok = s.post("/tokenize", R"({"prompt": "hé"})");
  ASSERT_TRUE(tok);
  EXPECT_EQ(json::parse(tok->body)["tokens"], json::array({104, 0xC3, 0xA9}));
  auto detok = s.post("/detokenize", R"({"tokens": [104, 195, 169]})");
  ASSERT_TRUE(detok);
  EXPECT_EQ(json::parse(detok->body)["prompt"], "hé");
  auto chat_tok = s.post("/tokenize", R"({"messages": [{"role": "user", "content": "hi"}]})");
  EXPECT_EQ(json::parse(chat_tok->body)["count"], std::string("User: hi\n\nAssistant:").size());
  expect_error(c.Get("/v1/nothing"), 404);
  // A known path with another method: 405 naming the method it takes.
  auto wrong = c.Get("/v1/chat/completions");
  expect_error(wrong, 405);
  EXPECT_EQ(wrong->get_header_value("Allow"), "POST");
  auto del = c.Delete("/v1/models");
  expect_error(del, 405);
  EXPECT_EQ(del->get_header_value("Allow"), "GET");
  // A body-carrying method that announces no body (no Content-Length, not chunked: `curl -X POST` without -d) is
  // answered at once (httplib waited for a body until its 30-s read timeout): 411 on a route that takes a body, else
  // 404 / 405 as with a body.
  const auto started = std::chrono::steady_clock::now();
  const std::string no_body = raw_http(s.port, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(no_body.rfind("HTTP/1.1 411", 0), 0u) << no_body;
  EXPECT_NE(no_body.find("has no body: send the JSON request with a Content-Length"), std::string::npos) << no_body;
  const std::string del_no_body = raw_http(s.port, "DELETE /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(del_no_body.rfind("HTTP/1.1 405", 0), 0u) << del_no_body;
  EXPECT_NE(del_no_body.find("Allow: GET"), std::string::npos) << del_no_body;
  const std::string unknown = raw_http(s.port, "POST /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(unknown.rfind("HTTP/1.1 404", 0), 0u) << unknown;
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
  // A body over the limit keeps httplib's 413 (it was reported as 404 "no route").
  auto big = c.Post("/v1/completions", std::string((size_t{64} << 20) + 1, 'a'), "application/json");
  expect_error(big, 413);
}

TEST(ServerHttp, ChatCompletionWholeAndStreamed) {
  TestServer s;
  s.gen.set_script([](const std::vector<int32_t>&) {
    auto t = bytes_of("Hello world");
    t.push_back(1);  // end of sequence
    return t;
  });
  const std::string prompt = "User: hi\n\nAssistant:";
  auto r = s.post("/v1/chat/completions", R"({"model": "fake", "messages": [{"role": "user", "content": "hi"}]})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(j["choices"][0]["message"]["content"], "Hello world");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"], prompt.size());
  EXPECT_EQ(j["usage"]["completion_tokens"], 12);  // the end-of-sequence token counts, its text is not shown
  EXPECT_EQ(j["usage"]["total_tokens"], prompt.size() + 12);

  auto st = s.post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "hi"}], "stream": true,
                                               "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->get_header_value("Content-Type"), "text/event-stream");
  const auto events = sse_payloads(st->body);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string content;
  std::string finish;
  for (size_t i = 0; i + 2 < events.size(); ++i) {
    EXPECT_EQ(events[i]["object"], "chat.completion.chunk");
    const json& ch = events[i]["choices"][0];
    if (ch["delta"].contains("content")) content += ch["delta"]["content"].get<std::string>();
    if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
  }
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(content, "Hello world");
  EXPECT_EQ(finish, "stop");
  const json& usage = events[events.size() - 2];
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 12);
}

TEST(ServerHttp, StopStringsLengthAndLogprobs) {
  TestServer s;
  s.gen.set_step_delay(std::chrono::milliseconds(5));  // the stop string matches while the sequence still runs
  s.gen.set_script([](const std::vector<int32_t>&) { return bytes_of("In the beginning God created"); });
  auto r = s.post("/v1/completions", R"({"prompt": "x", "stop": ["ning"], "max_tokens": 100})");
  ASSERT_TRUE(r);
  json j = json::parse(r->body);
  EXPECT_EQ(j["choices"][0]["text"], "In the begin");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  for (int i = 0; i < 200 && s.gen.cancels() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(s.gen.cancels(), 1);  // the stop string ended the sequence in the engine too

  auto st = s.post("/v1/completions", R"({"prompt": [120, 121], "max_tokens": 6, "stream": true, "logprobs": 2})");
  ASSERT_TRUE(st);
  std::string text;
  int lp_tokens = 0;
  std::string finish;
  for (const json& e : sse_payloads(st->body)) {
    if (e == "[DONE]") continue;
    text += e["choices"][0]["text"].get<std::string>();
    if (!e["choices"][0]["logprobs"].is_null()) {
      const json& lp = e["choices"][0]["logprobs"];
      lp_tokens += static_cast<int>(lp["tokens"].size());
      EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
    }
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, "In the");
  EXPECT_EQ(lp_tokens, 6);
  EXPECT_EQ(finish, "length");

  auto c = s.post("/v1/chat/completions",
                  R"({"messages": [{"role": "user", "content": "q"}], "max_tokens": 2, "logprobs": true,
                      "top_logprobs": 1})");
  j = json::parse(c->body);
  const json& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 2u);
  EXPECT_EQ(content[0]["token"], "I");
  EXPECT_FLOAT_EQ(content[0]["logprob"].get<float>(), -0.25f);
  EXPECT_EQ(content[0]["bytes"], json::array({73}));
  EXPECT_EQ(content[0]["top_logprobs"].size(), 1u);
}

TEST(ServerHttp, BadRequestsGetErrorsAndTheServerKeepsServing) {
  TestServer s;
  expect_error(s.post("/v1/chat/completions", "{not json"), 400);
  expect_error(s.post("/v1/chat/completions", std::string(1000, '[')), 400);
  expect_error(s.post("/v1/chat/completions", R"({"messages": "hi"})"), 400, "messages");
  expect_error(s.post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "q"}], "n": 3})"), 400, "n");
  expect_error(s.post("/v1/chat/completions", R"({"model": "gpt-9", "messages": [{"role": "user", "content": "q"}]})"),
               404, "model");
  auto too_long = s.post("/v1/completions", R"({"prompt": "abc", "max_tokens": 5000})");
  expect_error(too_long, 400, "max_tokens");
  EXPECT_EQ(json::parse(too_long->body)["error"]["code"], "context_length_exceeded");
  expect_error(s.post("/v1/completions", R"({"prompt": [600]})"), 400, "prompt");  // outside the vocabulary
  expect_error(s.post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "q"}], "thinking": true})"),
               400);  // the plain template has no thinking mode
  s.gen.refuse_penalties("no penalties here");
  auto refused = s.post("/v1/completions", R"({"prompt": "abc", "frequency_penalty": 0.5})");
  expect_error(refused, 400, "frequency_penalty");
  EXPECT_EQ(json::parse(refused->body)["error"]["message"], "no penalties here");
  auto ok = s.post("/v1/completions", R"({"prompt": "abc", "max_tokens": 3})");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(json::parse(ok->body)["choices"][0]["text"], "cba");
  auto metrics = s.client().Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("dsv4_http_requests_total{endpoint=\"/v1/chat/completions\",status=\"400\"} 5"),
            std::string::npos)
      << metrics->body;
}

TEST(ServerHttp, ApiKey) {
  ServerOptions o;
  o.api_key = "sekret";
  TestServer s(o);
  expect_error(s.client().Get("/v1/models"), 401);
  expect_error(s.client().Get("/v1/models/fake"), 401);
  expect_error(s.post("/v1/completions", R"({"prompt": "a"})", {{"Authorization", "Bearer wrong"}}), 401);
  auto ok = s.client().Get("/v1/models", {{"Authorization", "Bearer sekret"}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(s.client().Get("/health")->status, 200);  // health needs no key
}

TEST(ServerHttp, FullQueueAnswers429) {
  ServerOptions o;
  o.max_queued_requests = 2;
  TestServer s(o);
  s.gen.pause(true);
  const std::string body = R"({"prompt": "ab", "max_tokens": 2})";
  auto a = std::async(std::launch::async, [&] { return s.post("/v1/completions", body); });
  auto b = std::async(std::launch::async, [&] { return s.post("/v1/completions", body); });
  for (int i = 0; i < 500 && s.gen.submitted() < 2; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(s.gen.submitted(), 2);
  auto c = s.post("/v1/completions", body);
  expect_error(c, 429);
  EXPECT_EQ(json::parse(c->body)["error"]["type"], "rate_limit_error");
  s.gen.pause(false);
  EXPECT_EQ(a.get()->status, 200);
  EXPECT_EQ(b.get()->status, 200);
  // A client has its whole response a moment before the server's handler releases the request's place in the
  // queue: wait for the gauge to reach 0 (a fixed bound), then the server takes requests again.
  for (int i = 0; i < 500; ++i) {
    auto m = s.client().Get("/metrics");
    if (m && m->body.find("dsv4_num_requests_in_server 0\n") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(s.post("/v1/completions", body)->status, 200);
}

TEST(ServerHttp, ClientDisconnectCancelsItsSequence) {
  TestServer s;
  s.gen.set_step_delay(std::chrono::milliseconds(2));
  s.gen.set_script([](const std::vector<int32_t>&) { return std::vector<int32_t>(100000, 'z'); });
  for (const bool stream : {true, false}) {
    const int64_t before = s.gen.cancels();
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.set_header("Content-Type", "application/json");
    req.body = json{{"prompt", "a"}, {"max_tokens", 4000}, {"stream", stream}}.dump();
    int chunks = 0;
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 2; };  // hang up
    if (!stream) {
      // A whole-response client that gives up: its read timeout closes the connection.
      httplib::Client c("127.0.0.1", s.port);
      c.set_read_timeout(0, 300000);
      c.Post("/v1/completions", req.body, "application/json");
    } else {
      s.client().send(req);
    }
    for (int i = 0; i < 500 && s.gen.cancels() == before; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(s.gen.cancels(), before + 1) << (stream ? "stream" : "whole response");
  }
  for (int i = 0; i < 500 && !s.gen.quiescent(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const std::string metrics = s.client().Get("/metrics")->body;
  EXPECT_NE(metrics.find("dsv4_request_success_total{finish_reason=\"abort\"} 2"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("dsv4_num_requests_running 0\n"), std::string::npos) << metrics;
}

TEST(ServerHttp, ConcurrentRequestsGetTheirOwnTokens) {
  TestServer s;
  std::vector<std::future<httplib::Result>> results;
  std::vector<std::string> prompts;
  for (int i = 0; i < 16; ++i) {
    prompts.push_back("prompt number " + std::to_string(i) + std::string(static_cast<size_t>(i), '!'));
    const bool stream = i % 2 == 1;
    const std::string body = json{{"prompt", prompts.back()}, {"temperature", 0}, {"stream", stream}}.dump();
    results.push_back(std::async(std::launch::async, [&s, body] { return s.post("/v1/completions", body); }));
  }
  for (int i = 0; i < 16; ++i) {
    auto r = results[static_cast<size_t>(i)].get();
    ASSERT_TRUE(r) << httplib::to_string(r.error()) << " request " << i;
    ASSERT_EQ(r->status, 200);
    std::string text;
    if (i % 2 == 1) {
      for (const json& e : sse_payloads(r->body)) {
        if (e != "[DONE]") text += e["choices"][0]["text"].get<std::string>();
      }
    } else {
      text = json::parse(r->body)["choices"][0]["text"];
    }
    const std::string& p = prompts[static_cast<size_t>(i)];
    EXPECT_EQ(text, std::string(p.rbegin(), p.rend()));  // the fake answers each prompt reversed
  }
}

TEST(ServerHttp, EngineFailureReachesTheClientAndTheServerGoesOn) {
  TestServer s;
  for (const bool stream : {false, true}) {
    s.gen.pause(true);
    const std::string body = json{{"prompt", "abc"}, {"max_tokens", 3}, {"stream", stream}}.dump();
    auto pending = std::async(std::launch::async, [&] { return s.post("/v1/completions", body); });
    for (int i = 0; i < 500 && s.gen.quiescent(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    s.gen.fail_next_step("device lost");
    s.gen.pause(false);
    auto r = pending.get();
    ASSERT_TRUE(r);
    // The status line went out with the first bytes; the error is in the body (an SSE event before [DONE]).
    const json err = stream ? sse_payloads(r->body).front() : json::parse(r->body);
    EXPECT_NE(err["error"]["message"].get<std::string>().find("device lost"), std::string::npos) << r->body;
    EXPECT_EQ(err["error"]["type"], "server_error");
    if (stream) {
      EXPECT_EQ(sse_payloads(r->body).back(), "[DONE]");
    }
  }
  auto ok = s.post("/v1/completions", R"({"prompt": "abc", "max_tokens": 3})");
  EXPECT_EQ(json::parse(ok->body)["choices"][0]["text"], "cba");
}

TEST(ServerHttp, ShutdownAnswersRequestsInFlight) {
  auto s = std::make_unique<TestServer>();
  s->gen.pause(true);
  auto pending = std::async(std::launch::async, [&] { return s->post("/v1/completions", R"({"prompt": "ab"})"); });
  for (int i = 0; i < 500 && s->gen.submitted() < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  s->srv->shutdown();
  auto r = pending.get();
  ASSERT_TRUE(r);
  EXPECT_EQ(json::parse(r->body)["choices"][0]["finish_reason"], "abort");
  s.reset();
}

// The default model's tokenizer with DeepSeek-V4's chat tokens added: the server then speaks the DeepSeek-V4
// format (thinking, DSML tool calls) while the fake generator replays a recorded answer token by token.
TextCodec dsv4_codec() {
  std::ifstream in(dsv4::test::source_dir() + "/models/dsv4-tiny-kjv/tokenizer.json");
  std::stringstream ss;
  ss << in.rdbuf();
  json t = json::parse(ss.str());
  int id = 6144;
  for (const char* tok : {"<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "｜DSML｜"}) {
    t["added_tokens"].push_back({{"id", id++},
                                 {"content", tok},
                                 {"single_word", false},
                                 {"lstrip", false},
                                 {"rstrip", false},
                                 {"normalized", false},
                                 {"special", true}});
  }
  return TextCodec(std::make_shared<const Tokenizer>(Tokenizer::from_json(t.dump())));
}

TEST(ServerHttp, DeepSeekV4ThinkingAndToolCallsStreamed) {
  const TextCodec codec = dsv4_codec();
  TestServer s(ServerOptions{}, codec, /*vocab=*/8192);
  ASSERT_TRUE(s.srv->deepseek_chat_format());
  const std::string answer =
      "The user wants weather; call the tool.</think>Checking now.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke "
      "name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" "
      "string=\"true\">Paris</｜DSML｜parameter>\n<｜DSML｜parameter "
      "name=\"days\" string=\"false\">3</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  std::vector<int32_t> seen_prompt;
  std::mutex mu;
  s.gen.set_script([&](const std::vector<int32_t>& prompt) {
    {
      std::lock_guard<std::mutex> lock(mu);
      seen_prompt = prompt;
    }
    std::vector<int32_t> ids = codec.encode(answer);
    ids.push_back(1);  // <｜end▁of▁sentence｜>
    return ids;
  });
  const json tools = json::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}}])");
  json body = {{"messages", {{{"role", "user"}, {"content", "Weather in Paris?"}}}},
               {"tools", tools},
               {"chat_template_kwargs", {{"thinking", true}}},
               {"stream", true}};
  auto st = s.post("/v1/chat/completions", body.dump());
  ASSERT_TRUE(st);
  ASSERT_EQ(st->status, 200) << st->body;
  // The prompt is the published format.
  ChatEncodeOptions enc;
  enc.thinking = true;
  enc.tools = nlohmann::ordered_json::parse(tools.dump());
  ChatMessage user;
  user.role = "user";
  user.content = "Weather in Paris?";
  {
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(codec.decode(seen_prompt), encode_chat_dsv4({user}, enc));
  }
  std::string reasoning, content, finish;
  json calls = json::array();
  for (const json& e : sse_payloads(st->body)) {
    if (e == "[DONE]") continue;
    const json& ch = e["choices"][0];
    const json& d = ch["delta"];
    if (d.contains("reasoning_content")) reasoning += d["reasoning_content"].get<std::string>();
    if (d.contains("content")) {
      content += d["content"].get<std::string>();
      EXPECT_EQ(d["content"].get<std::string>().find("DSML"), std::string::npos);
    }
    if (d.contains("tool_calls")) {
      for (const json& c : d["tool_calls"]) calls.push_back(c);
    }
    if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
  }
  EXPECT_EQ(reasoning, "The user wants weather; call the tool.");
  EXPECT_EQ(content, "Checking now.");
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0]["index"], 0);
  EXPECT_EQ(calls[0]["type"], "function");
  EXPECT_EQ(calls[0]["function"]["name"], "get_weather");
  EXPECT_EQ(json::parse(calls[0]["function"]["arguments"].get<std::string>()), json({{"city", "Paris"}, {"days", 3}}));
  EXPECT_EQ(calls[0]["id"].get<std::string>().rfind("call_", 0), 0u);
  EXPECT_EQ(finish, "tool_calls");

  // The same answer whole.
  body["stream"] = false;
  auto whole = s.post("/v1/chat/completions", body.dump());
  const json m = json::parse(whole->body)["choices"][0];
  EXPECT_EQ(m["finish_reason"], "tool_calls");
  EXPECT_EQ(m["message"]["reasoning_content"], "The user wants weather; call the tool.");
  EXPECT_EQ(m["message"]["content"], "Checking now.");
  EXPECT_EQ(m["message"]["tool_calls"][0]["function"]["name"], "get_weather");
  EXPECT_FALSE(m["message"]["tool_calls"][0].contains("index"));

  // Without tools the markup is not parsed (returned as text), and without thinking there is no reasoning.
  body.erase("tools");
  body.erase("chat_template_kwargs");
  auto plain = s.post("/v1/chat/completions", body.dump());
  const json pm = json::parse(plain->body)["choices"][0];
  EXPECT_EQ(pm["finish_reason"], "stop");
  EXPECT_FALSE(pm["message"].contains("reasoning_content"));
  EXPECT_EQ(pm["message"]["content"], answer);
}

}  // namespace
}  // namespace dsv4::server
