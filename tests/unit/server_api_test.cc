// Request validation, JSON limits, OpenAI error shape, SSE framing and the metrics text.
#include <gtest/gtest.h>

#include "dsv4/server/api.h"
#include "dsv4/server/metrics.h"

namespace dsv4::server {
namespace {

using ojson = nlohmann::ordered_json;

ChatRequest chat(const std::string& body) { return parse_chat_request(parse_json_body(body)); }
CompletionRequest completion(const std::string& body) { return parse_completion_request(parse_json_body(body)); }

// The 400 a body gets, and the field it names.
std::string rejected_param(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400) << e.what();
    EXPECT_FALSE(std::string(e.what()).empty());
    return e.param();
  }
  ADD_FAILURE() << "expected a 400";
  return "";
}

TEST(ServerApi, ChatRequestFields) {
  const ChatRequest r = chat(R"({"model": "m", "messages": [{"role": "system", "content": "S"},
      {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
      "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 3,
      "stop": ["x", "yz"], "presence_penalty": 0.5, "frequency_penalty": -0.5, "logprobs": true, "top_logprobs": 2,
      "n": 1, "user": "u", "stream": true, "stream_options": {"include_usage": true}, "unknown_field": 1})");
  EXPECT_EQ(r.gen.model, "m");
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[1].content, "ab");
  EXPECT_EQ(r.gen.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.gen.sampling.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.gen.sampling.top_p, 0.9f);
  EXPECT_EQ(r.gen.sampling.top_k, 40);
  EXPECT_FLOAT_EQ(r.gen.sampling.min_p, 0.05f);
  EXPECT_EQ(r.gen.sampling.seed, 3u);
  EXPECT_TRUE(r.gen.seed_given);
  EXPECT_EQ(r.gen.stop, (std::vector<std::string>{"x", "yz"}));
  EXPECT_FLOAT_EQ(r.gen.sampling.presence_penalty, 0.5f);
  EXPECT_FLOAT_EQ(r.gen.sampling.frequency_penalty, -0.5f);
  EXPECT_EQ(r.gen.logprobs, 2);
  EXPECT_TRUE(r.gen.stream);
  EXPECT_TRUE(r.gen.include_usage);
  EXPECT_FALSE(r.encode.thinking);
  // Defaults: OpenAI's temperature 1, no limit given, no logprobs.
  const ChatRequest d = chat(R"({"messages": [{"role": "user", "content": "hi"}]})");
  EXPECT_FLOAT_EQ(d.gen.sampling.temperature, 1.0f);
  EXPECT_EQ(d.gen.max_tokens, -1);
  EXPECT_EQ(d.gen.logprobs, -1);
  EXPECT_FALSE(d.gen.seed_given);
}

TEST(ServerApi, ThinkingSwitchesAndTools) {
  EXPECT_TRUE(
      chat(R"({"messages": [{"role": "user", "content": "q"}], "thinking": {"type": "enabled"}})").encode.thinking);
  EXPECT_TRUE(chat(R"({"messages": [{"role": "user", "content": "q"}], "chat_template_kwargs": {"thinking": true}})")
                  .encode.thinking);
  const ChatRequest max = chat(R"({"messages": [{"role": "user", "content": "q"}], "reasoning_effort": "max"})");
  EXPECT_TRUE(max.encode.thinking);
  EXPECT_EQ(max.encode.reasoning_effort, "max");
  EXPECT_FALSE(
      chat(R"({"messages": [{"role": "user", "content": "q"}], "reasoning_effort": "high", "thinking": false})")
          .encode.thinking);
  const std::string tools =
      R"("tools": [{"type": "function", "function": {"name": "f", "parameters": {"b": 1, "a": 2}}}])";
  const ChatRequest t = chat(R"({"messages": [{"role": "user", "content": "q"}], )" + tools + "}");
  ASSERT_EQ(t.encode.tools.size(), 1u);
  EXPECT_EQ(t.encode.tools[0]["function"]["parameters"].dump(), R"({"b":1,"a":2})");  // request order kept
  EXPECT_TRUE(chat(R"({"messages": [{"role": "user", "content": "q"}], "tool_choice": "none", )" + tools + "}")
                  .encode.tools.empty());
  // History with tool calls (arguments as a string or, leniently, an object) and tool results.
  const ChatRequest h = chat(R"({"messages": [{"role": "user", "content": "q"},
      {"role": "assistant", "content": null, "reasoning_content": "r",
       "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]},
      {"role": "tool", "tool_call_id": "c1", "content": "out"}]})");
  EXPECT_EQ(h.messages[1].tool_calls[0].arguments, R"({"x": 1})");
  EXPECT_EQ(h.messages[1].reasoning_content, "r");
  EXPECT_EQ(h.messages[2].tool_call_id, "c1");
}

TEST(ServerApi, BadRequestsNameTheirField) {
  const std::string m = R"("messages": [{"role": "user", "content": "q"}])";
  EXPECT_EQ(rejected_param([&] { chat("{}"); }), "messages");
  EXPECT_EQ(rejected_param([&] { chat(R"({"messages": []})"); }), "messages");
  EXPECT_EQ(rejected_param([&] { chat(R"({"messages": [{"role": "alien", "content": "q"}]})"); }), "messages[0].role");
  EXPECT_EQ(rejected_param([&] { chat(R"({"messages": [{"role": "user", "content": 5}]})"); }), "messages[0].content");
  // Content is required except in an assistant turn (which may only call tools).
  for (const char* role : {"system", "developer", "user", "tool"}) {
    EXPECT_EQ(rejected_param([&] { chat(std::string(R"({"messages": [{"role": ")") + role + R"("}]})"); }),
              "messages[0].content")
        << role;
    EXPECT_EQ(
        rejected_param([&] { chat(std::string(R"({"messages": [{"role": ")") + role + R"(", "content": null}]})"); }),
        "messages[0].content")
        << role;
  }
  EXPECT_EQ(chat(R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant"}]})").messages[1].content, "");
  EXPECT_EQ(rejected_param([&] { chat(R"({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]})"); }),
            "messages[0].content");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "n": 2})"); }), "n");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "temperature": "hot"})"); }), "temperature");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "temperature": 3})"); }), "temperature");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "top_p": 0})"); }), "top_p");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "max_tokens": 0})"); }), "max_tokens");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "max_tokens": 1.5})"); }), "max_tokens");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "stop": 3})"); }), "stop");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "stop": [""]})"); }), "stop");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "stream": "yes"})"); }), "stream");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "stream_options": {"include_usage": true}})"); }),
            "stream_options");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "top_logprobs": 2})"); }), "top_logprobs");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "top_logprobs": 21, "logprobs": true})"); }), "top_logprobs");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "presence_penalty": -2.5})"); }), "presence_penalty");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "tool_choice": "required"})"); }), "tool_choice");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "tools": [{"type": "function"}]})"); }), "tools[0]");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "response_format": {"type": "json_object"}})"); }),
            "response_format");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "reasoning_effort": "huge"})"); }), "reasoning_effort");
  EXPECT_EQ(rejected_param([&] { chat("{" + m + R"(, "logit_bias": {"5": 1}})"); }), "logit_bias");
  EXPECT_EQ(rejected_param([&] { completion(R"({"prompt": ["a", "b"]})"); }), "prompt");
  EXPECT_EQ(rejected_param([&] { completion(R"({"prompt": [1, -2]})"); }), "prompt");
  EXPECT_EQ(rejected_param([&] { completion(R"({"prompt": ""})"); }), "prompt");
  EXPECT_EQ(rejected_param([&] { completion(R"({"prompt": "a", "echo": true})"); }), "echo");
  EXPECT_EQ(rejected_param([&] { completion(R"({"prompt": "a", "logprobs": 30})"); }), "logprobs");
}

TEST(ServerApi, CompletionPrompts) {
  const CompletionRequest t = completion(R"({"prompt": "Once", "logprobs": 3, "max_tokens": 4})");
  EXPECT_FALSE(t.token_prompt);
  EXPECT_EQ(t.prompt, "Once");
  EXPECT_EQ(t.gen.logprobs, 3);
  const CompletionRequest ids = completion(R"({"prompt": [[5, 6, 7]]})");
  EXPECT_TRUE(ids.token_prompt);
  EXPECT_EQ(ids.prompt_ids, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(completion(R"({"prompt": ["solo"]})").prompt, "solo");
}

TEST(ServerApi, JsonBodyLimitsAndErrorShape) {
  EXPECT_THROW(parse_json_body("{not json"), ApiError);
  EXPECT_THROW(parse_json_body("[1, 2]"), ApiError);  // not an object
  // A number out of double's range is a 400 too, not an internal error (found by fuzz_http_request).
  try {
    parse_json_body(R"({"temperature": 11.0E01111})");
    FAIL() << "expected a 400";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
  }
  EXPECT_THROW(parse_json_body(std::string(100, '[') + std::string(100, ']')), ApiError);
  std::string nested = "{\"a\": " + std::string(60, '[') + std::string(60, ']') + "}";
  EXPECT_NO_THROW(parse_json_body(nested));
  EXPECT_NO_THROW(parse_json_body(R"({"s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\""})"));
  try {
    parse_json_body(std::string(65, '{'));
    FAIL();
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 400);
    EXPECT_NE(std::string(e.what()).find("64"), std::string::npos);
  }
  const auto body = ApiError(404, "no such model", "model", "", "model_not_found").body();
  EXPECT_EQ(body["error"]["message"], "no such model");
  EXPECT_EQ(body["error"]["type"], "not_found_error");
  EXPECT_EQ(body["error"]["param"], "model");
  EXPECT_EQ(body["error"]["code"], "model_not_found");
  const auto plain = ApiError(401, "bad key").body();
  EXPECT_EQ(plain["error"]["type"], "authentication_error");
  EXPECT_TRUE(plain["error"]["param"].is_null());
  EXPECT_TRUE(plain["error"]["code"].is_null());
}

TEST(ServerApi, SseFraming) {
  EXPECT_EQ(sse_event(nlohmann::json{{"a", 1}}), "data: {\"a\":1}\n\n");
  EXPECT_EQ(sse_done(), "data: [DONE]\n\n");
  // Invalid UTF-8 never breaks a response.
  EXPECT_EQ(sse_event(nlohmann::json{{"t", std::string("\xFF")}}), "data: {\"t\":\"\xEF\xBF\xBD\"}\n\n");
}

TEST(ServerMetrics, PrometheusText) {
  Metrics m;
  m.request_done("/v1/completions", 200);
  m.request_done("/v1/completions", 200);
  m.request_done("/v1/completions", 400);
  m.generation_done("stop", 10, 5);
  m.generation_done("length", 3, 7);
  m.time_to_first_token(0.03);
  m.time_per_output_token(0.012);
  SchedulerStats s;
  s.running = 2;
  s.waiting = 1;
  s.pages_total = 8;
  s.pages_used = 2;
  s.drafted_tokens = 10;
  s.accepted_tokens = 6;
  s.prefill_steps = 4;
  s.prompt_steps_fitted = 3;
  s.prefill_seconds = 0.5;
  s.decode_seconds = 1.25;
  s.prefill_wait_seconds = 0.125;
  const std::string text = m.render(s, 3);
  for (const char* line : {"dsv4_http_requests_total{endpoint=\"/v1/completions\",status=\"200\"} 2",
                           "dsv4_http_requests_total{endpoint=\"/v1/completions\",status=\"400\"} 1",
                           "dsv4_request_success_total{finish_reason=\"stop\"} 1",
                           "dsv4_prompt_tokens_total 13",
                           "dsv4_generation_tokens_total 12",
                           "dsv4_time_to_first_token_seconds_bucket{le=\"0.02\"} 0",
                           "dsv4_time_to_first_token_seconds_bucket{le=\"0.04\"} 1",
                           "dsv4_time_to_first_token_seconds_count 1",
                           "dsv4_time_per_output_token_seconds_bucket{le=\"+Inf\"} 1",
                           "dsv4_num_requests_running 2",
                           "dsv4_num_requests_waiting 1",
                           "dsv4_num_requests_in_server 3",
                           "dsv4_kv_cache_usage_ratio 0.25",
                           "dsv4_spec_decode_acceptance_rate 0.6",
                           "dsv4_scheduler_prefill_steps_total 4",
                           "dsv4_scheduler_prompt_steps_fitted_total 3",
                           "dsv4_scheduler_step_seconds_total{kind=\"prefill\"} 0.5",
                           "dsv4_scheduler_step_seconds_total{kind=\"decode\"} 1.25",
                           "dsv4_scheduler_prefill_wait_seconds_total 0.125",
                           "# TYPE dsv4_time_to_first_token_seconds histogram"}) {
    EXPECT_NE(text.find(std::string(line) + "\n"), std::string::npos) << line << "\n" << text;
  }
}

}  // namespace
}  // namespace dsv4::server
