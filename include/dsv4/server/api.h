// The OpenAI-compatible request layer: JSON bodies (nesting-depth limited) → validated requests, errors in
// OpenAI's shape, server-sent-event framing.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "dsv4/runtime/sampler.h"
#include "dsv4/server/chat_template.h"

namespace dsv4::server {

// An error answered to the client: HTTP status and OpenAI's {"error": {"message", "type", "param", "code"}}.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message, std::string param = "", std::string type = "",
           std::string code = "");
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  nlohmann::json body() const;

 private:
  int status_;
  std::string type_, param_, code_;
};

inline constexpr size_t kMaxJsonDepth = 64;

// A JSON object from a request body; 400 for invalid JSON, nesting deeper than max_depth, or a non-object.
nlohmann::ordered_json parse_json_body(std::string_view body, size_t max_depth = kMaxJsonDepth);

// Fields shared by /v1/chat/completions and /v1/completions.
struct GenerationParams {
  std::string model;        // "" = not given
  int64_t max_tokens = -1;  // -1 = not given: up to max_model_len
  SamplingParams sampling;  // temperature default 1.0 as OpenAI's API
  bool seed_given = false;  // without a seed the server draws one per request
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;  // extension (vLLM)
  bool ignore_eos = false;              // extension (vLLM)
  bool stream = false, include_usage = false;
  int64_t logprobs = -1;  // -1 none; 0 the sampled token's; k > 0 also the k most likely
  std::string user;
  bool tokens_as_ids = false;  // extension (vLLM's return_tokens_as_token_ids): logprob tokens as "token_id:N"
};

struct ChatRequest {
  GenerationParams gen;
  std::vector<ChatMessage> messages;
  ChatEncodeOptions encode;  // thinking, reasoning_effort, tools (empty when tool_choice is "none")
};

struct CompletionRequest {
  GenerationParams gen;
  bool token_prompt = false;
  std::string prompt;               // text prompt
  std::vector<int32_t> prompt_ids;  // token prompt
};

// 400 naming the offending field for a wrong type or value; unknown fields are ignored.
ChatRequest parse_chat_request(const nlohmann::ordered_json& body);
CompletionRequest parse_completion_request(const nlohmann::ordered_json& body);

// One server-sent event: "data: <json>\n\n"; the end of a stream is sse_done().
std::string sse_event(const nlohmann::json& payload);
inline std::string sse_done() { return "data: [DONE]\n\n"; }

// JSON text for the wire: invalid UTF-8 replaced, never throws.
std::string dump_json(const nlohmann::json& j);

}  // namespace dsv4::server
