#include "dsv4/server/api.h"

#include <cmath>
#include <limits>
#include <optional>

namespace dsv4::server {
namespace {

using ojson = nlohmann::ordered_json;

const char* default_type(int status) {
  if (status == 401) return "authentication_error";
  if (status == 404) return "not_found_error";
  if (status == 429) return "rate_limit_error";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

[[noreturn]] void bad(const std::string& param, const std::string& message) { throw ApiError(400, message, param); }

const char* type_name(const ojson& v) {
  switch (v.type()) {
    case ojson::value_t::null:
      return "null";
    case ojson::value_t::boolean:
      return "a boolean";
    case ojson::value_t::string:
      return "a string";
    case ojson::value_t::array:
      return "an array";
    case ojson::value_t::object:
      return "an object";
    default:
      return "a number";
  }
}

// Field accessors: absent or null = not given; a wrong type is a 400 naming the field.
const ojson* field(const ojson& obj, const char* name) {
  auto it = obj.find(name);
  return (it == obj.end() || it->is_null()) ? nullptr : &*it;
}

bool get_bool(const ojson& obj, const char* name, bool fallback) {
  const ojson* v = field(obj, name);
  if (!v) return fallback;
  if (!v->is_boolean()) bad(name, std::string("'") + name + "' must be a boolean, got " + type_name(*v));
  return v->get<bool>();
}

double get_number(const ojson& obj, const char* name, double fallback, double lo, double hi) {
  const ojson* v = field(obj, name);
  if (!v) return fallback;
  if (!v->is_number()) bad(name, std::string("'") + name + "' must be a number, got " + type_name(*v));
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi)) {
    bad(name, std::string("'") + name + "' must be in [" + ojson(lo).dump() + ", " + ojson(hi).dump() + "], got " +
                  v->dump());
  }
  return x;
}

int64_t get_int(const ojson& obj, const char* name, int64_t fallback, int64_t lo, int64_t hi) {
  const ojson* v = field(obj, name);
  if (!v) return fallback;
  const bool integral =
      v->is_number_integer() ||
      (v->is_number_float() && std::floor(v->get<double>()) == v->get<double>() && std::abs(v->get<double>()) < 9e15);
  if (!integral) bad(name, std::string("'") + name + "' must be an integer, got " + v->dump());
  const int64_t x = v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())
                        ? std::numeric_limits<int64_t>::max()
                        : (v->is_number_float() ? static_cast<int64_t>(v->get<double>()) : v->get<int64_t>());
  if (x < lo || x > hi) {
    bad(name, std::string("'") + name + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                  std::to_string(x));
  }
  return x;
}

std::string get_string(const ojson& obj, const char* name, const std::string& fallback) {
  const ojson* v = field(obj, name);
  if (!v) return fallback;
  if (!v->is_string()) bad(name, std::string("'") + name + "' must be a string, got " + type_name(*v));
  return v->get<std::string>();
}

std::vector<int32_t> token_ids(const ojson& v, const std::string& param) {
  std::vector<int32_t> ids;
  for (const auto& x : v) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > std::numeric_limits<int32_t>::max()) {
      bad(param, "'" + param + "' must hold non-negative integer token ids, got " + x.dump());
    }
    ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
  }
  return ids;
}

void parse_common(const ojson& b, GenerationParams& g, bool chat) {
  g.model = get_string(b, "model", "");
  const int64_t n = get_int(b, "n", 1, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
  if (n != 1) bad("n", "only n = 1 is supported, got " + std::to_string(n));
  if (!chat) {
    const int64_t best_of = get_int(b, "best_of", 1, 1, 1 << 20);
    if (best_of != 1) bad("best_of", "only best_of = 1 is supported");
    if (get_bool(b, "echo", false)) bad("echo", "'echo' is not supported");
    if (field(b, "suffix")) bad("suffix", "'suffix' is not supported");
  }
  constexpr int64_t kMaxTokens = int64_t{1} << 40;
  g.max_tokens = get_int(b, "max_tokens", -1, 1, kMaxTokens);
  if (chat && field(b, "max_completion_tokens")) g.max_tokens = get_int(b, "max_completion_tokens", -1, 1, kMaxTokens);
  SamplingParams& s = g.sampling;
  s.temperature = static_cast<float>(get_number(b, "temperature", 1.0, 0.0, 2.0));
  s.top_p = static_cast<float>(get_number(b, "top_p", 1.0, 0.0, 1.0));
  if (s.top_p <= 0.0f) bad("top_p", "'top_p' must be in (0, 1], got 0");
  const int64_t top_k = get_int(b, "top_k", 0, -1, std::numeric_limits<int32_t>::max());
  s.top_k = top_k < 0 ? 0 : static_cast<int32_t>(top_k);  // -1 = off, as vLLM
  s.min_p = static_cast<float>(get_number(b, "min_p", 0.0, 0.0, 1.0));
  s.presence_penalty = static_cast<float>(get_number(b, "presence_penalty", 0.0, -2.0, 2.0));
  s.frequency_penalty = static_cast<float>(get_number(b, "frequency_penalty", 0.0, -2.0, 2.0));
  if (field(b, "seed")) {
    s.seed = static_cast<uint64_t>(
        get_int(b, "seed", 0, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()));
    g.seed_given = true;
  }
  if (const ojson* stop = field(b, "stop")) {
    if (stop->is_string()) {
      g.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (stop->size() > 16) bad("stop", "'stop' may hold at most 16 strings");
      for (const auto& x : *stop) {
        if (!x.is_string() || x.get<std::string>().empty()) bad("stop", "'stop' must hold non-empty strings");
        g.stop.push_back(x.get<std::string>());
      }
    } else {
      bad("stop", std::string("'stop' must be a string or an array of strings, got ") + type_name(*stop));
    }
  }
  if (const ojson* ids = field(b, "stop_token_ids")) {
    if (!ids->is_array()) bad("stop_token_ids", "'stop_token_ids' must be an array of token ids");
    g.stop_token_ids = token_ids(*ids, "stop_token_ids");
  }
  g.ignore_eos = get_bool(b, "ignore_eos", false);
  g.stream = get_bool(b, "stream", false);
  if (const ojson* so = field(b, "stream_options")) {
    if (!so->is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!g.stream) bad("stream_options", "'stream_options' is only allowed with stream: true");
    g.include_usage = get_bool(*so, "include_usage", false);
  }
  g.user = get_string(b, "user", "");
  g.tokens_as_ids = get_bool(b, "return_tokens_as_token_ids", false);
  if (const ojson* bias = field(b, "logit_bias")) {
    if (!bias->is_object()) bad("logit_bias", "'logit_bias' must be an object");
    if (!bias->empty()) bad("logit_bias", "'logit_bias' is not supported");
  }
  if (const ojson* rf = field(b, "response_format")) {
    if (!rf->is_object() || get_string(*rf, "type", "text") != "text") {
      bad("response_format", "only response_format {\"type\": \"text\"} is supported (no constrained decoding)");
    }
  }
}

// Message content: a string or an array of {"type": "text", "text": …} parts (joined); absent or null only where
// OpenAI's API allows it, an assistant's turn (e.g. one that only calls tools).
std::string message_content(const ojson& m, size_t i, const std::string& role) {
  const std::string param = "messages[" + std::to_string(i) + "].content";
  const ojson* c = field(m, "content");
  if (!c) {
    if (role != "assistant") bad(param, "'" + param + "' is required for a " + role + " message");
    return "";
  }
  if (c->is_string()) return c->get<std::string>();
  if (!c->is_array()) bad(param, "'" + param + "' must be a string or an array of text parts");
  std::string text;
  for (const auto& part : *c) {
    if (!part.is_object() || get_string(part, "type", "") != "text" || !field(part, "text") ||
        !part["text"].is_string()) {
      bad(param, "'" + param + "' parts must be {\"type\": \"text\", \"text\": \"…\"} (no images or audio)");
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

ChatMessage parse_message(const ojson& m, size_t i) {
  const std::string at = "messages[" + std::to_string(i) + "]";
  if (!m.is_object()) bad(at, "'" + at + "' must be an object");
  ChatMessage msg;
  const ojson* role = field(m, "role");
  if (!role || !role->is_string()) bad(at + ".role", "'" + at + ".role' must be a string");
  msg.role = role->get<std::string>();
  if (msg.role != "system" && msg.role != "developer" && msg.role != "user" && msg.role != "assistant" &&
      msg.role != "tool") {
    bad(at + ".role", "'" + at + ".role' must be system, developer, user, assistant or tool, got '" + msg.role + "'");
  }
  msg.content = message_content(m, i, msg.role);
  if (msg.role == "assistant") {
    msg.reasoning_content = get_string(m, "reasoning_content", "");
    if (const ojson* calls = field(m, "tool_calls")) {
      if (!calls->is_array()) bad(at + ".tool_calls", "'" + at + ".tool_calls' must be an array");
      for (size_t k = 0; k < calls->size(); ++k) {
        const ojson& c = (*calls)[k];
        const std::string cp = at + ".tool_calls[" + std::to_string(k) + "]";
        const ojson* fn = c.is_object() ? field(c, "function") : nullptr;
        if (!fn || !fn->is_object()) bad(cp, "'" + cp + "' must be {\"id\", \"type\": \"function\", \"function\"}");
        ToolCall call;
        call.id = get_string(c, "id", "");
        call.name = get_string(*fn, "name", "");
        if (call.name.empty()) bad(cp + ".function.name", "'" + cp + ".function.name' must be a non-empty string");
        const ojson* args = field(*fn, "arguments");
        if (!args) {
          call.arguments = "{}";
        } else if (args->is_string()) {
          call.arguments = args->get<std::string>();
        } else if (args->is_object()) {
          call.arguments = python_json_dumps(*args);
        } else {
          bad(cp + ".function.arguments", "'" + cp + ".function.arguments' must be a JSON string");
        }
        msg.tool_calls.push_back(std::move(call));
      }
    }
  }
  if (msg.role == "tool") msg.tool_call_id = get_string(m, "tool_call_id", "");
  return msg;
}

}  // namespace

ApiError::ApiError(int status, const std::string& message, std::string param, std::string type, std::string code)
    : std::runtime_error(message),
      status_(status),
      type_(type.empty() ? default_type(status) : std::move(type)),
      param_(std::move(param)),
      code_(std::move(code)) {}

nlohmann::json ApiError::body() const {
  nlohmann::json e = {{"message", what()}, {"type", type_}, {"param", nullptr}, {"code", nullptr}};
  if (!param_.empty()) e["param"] = param_;
  if (!code_.empty()) e["code"] = code_;
  return {{"error", e}};
}

ojson parse_json_body(std::string_view body, size_t max_depth) {
  // Nesting depth first (outside strings), so a hostile body cannot make the parser recurse deeply.
  size_t depth = 0;
  bool in_string = false, escaped = false;
  for (char c : body) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) {
        throw ApiError(400, "the JSON body nests deeper than " + std::to_string(max_depth) + " levels");
      }
    } else if ((c == '}' || c == ']') && depth > 0) {
      --depth;
    }
  }
  ojson j;
  try {
    j = ojson::parse(body);
  } catch (const ojson::exception& e) {  // syntax errors and out-of-range numbers (1e999) alike
    throw ApiError(400, std::string("invalid JSON body: ") + e.what());
  }
  if (!j.is_object()) throw ApiError(400, std::string("the JSON body must be an object, got ") + type_name(j));
  return j;
}

ChatRequest parse_chat_request(const ojson& b) {
  ChatRequest r;
  parse_common(b, r.gen, /*chat=*/true);
  const ojson* msgs = field(b, "messages");
  if (!msgs) bad("messages", "'messages' is required");
  if (!msgs->is_array() || msgs->empty()) bad("messages", "'messages' must be a non-empty array");
  for (size_t i = 0; i < msgs->size(); ++i) r.messages.push_back(parse_message((*msgs)[i], i));
  // logprobs is a boolean here, top_logprobs the count of alternatives.
  const bool logprobs = get_bool(b, "logprobs", false);
  const int64_t top = get_int(b, "top_logprobs", 0, 0, 20);
  if (field(b, "top_logprobs") && !logprobs) bad("top_logprobs", "'top_logprobs' needs logprobs: true");
  r.gen.logprobs = logprobs ? top : -1;
  // Thinking: DeepSeek's {"thinking": {"type": "enabled"}}, a boolean, vLLM's chat_template_kwargs, or
  // reasoning_effort (which turns it on unless it is explicitly off).
  std::optional<bool> thinking;
  if (const ojson* t = field(b, "thinking")) {
    if (t->is_boolean()) {
      thinking = t->get<bool>();
    } else if (t->is_object()) {
      const std::string type = get_string(*t, "type", "");
      if (type != "enabled" && type != "disabled")
        bad("thinking", "'thinking.type' must be \"enabled\" or \"disabled\"");
      thinking = type == "enabled";
    } else {
      bad("thinking", "'thinking' must be a boolean or {\"type\": \"enabled\" | \"disabled\"}");
    }
  }
  if (const ojson* kw = field(b, "chat_template_kwargs")) {
    if (!kw->is_object()) bad("chat_template_kwargs", "'chat_template_kwargs' must be an object");
    for (const char* key : {"thinking", "enable_thinking"}) {
      if (field(*kw, key)) thinking = get_bool(*kw, key, false);
    }
  }
  const std::string effort = get_string(b, "reasoning_effort", "");
  if (!effort.empty()) {
    if (effort != "low" && effort != "medium" && effort != "high" && effort != "max") {
      bad("reasoning_effort", "'reasoning_effort' must be low, medium, high or max, got '" + effort + "'");
    }
    r.encode.reasoning_effort = effort == "max" ? "max" : "high";
    if (!thinking) thinking = true;
  }
  r.encode.thinking = thinking.value_or(false);
  // Tools.
  const ojson* tools = field(b, "tools");
  if (tools) {
    if (!tools->is_array()) bad("tools", "'tools' must be an array");
    for (size_t i = 0; i < tools->size(); ++i) {
      const ojson& t = (*tools)[i];
      const std::string tp = "tools[" + std::to_string(i) + "]";
      const ojson* fn = t.is_object() ? field(t, "function") : nullptr;
      if (!t.is_object() || get_string(t, "type", "function") != "function" || !fn || !fn->is_object() ||
          get_string(*fn, "name", "").empty()) {
        bad(tp, "'" + tp + "' must be {\"type\": \"function\", \"function\": {\"name\": …, \"parameters\": …}}");
      }
    }
  }
  std::string choice = "auto";
  if (const ojson* tc = field(b, "tool_choice")) {
    if (!tc->is_string()) {
      bad("tool_choice", "only tool_choice \"auto\" or \"none\" is supported (no constrained decoding)");
    }
    choice = tc->get<std::string>();
    if (choice != "auto" && choice != "none") {
      bad("tool_choice", "only tool_choice \"auto\" or \"none\" is supported, got '" + choice + "'");
    }
  }
  if (tools && choice == "auto") r.encode.tools = *tools;
  return r;
}

CompletionRequest parse_completion_request(const ojson& b) {
  CompletionRequest r;
  parse_common(b, r.gen, /*chat=*/false);
  r.gen.logprobs = get_int(b, "logprobs", -1, 0, 20);
  const ojson* p = field(b, "prompt");
  if (!p) bad("prompt", "'prompt' is required");
  if (p->is_array() && p->size() == 1 && ((*p)[0].is_string() || (*p)[0].is_array())) p = &(*p)[0];
  if (p->is_string()) {
    r.prompt = p->get<std::string>();
    if (r.prompt.empty()) bad("prompt", "'prompt' must not be empty");
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
    r.token_prompt = true;
    r.prompt_ids = token_ids(*p, "prompt");
  } else if (p->is_array() && p->size() > 1) {
    bad("prompt", "one prompt per request is supported (got a batch of " + std::to_string(p->size()) + ")");
  } else {
    bad("prompt", "'prompt' must be a non-empty string or an array of token ids");
  }
  return r;
}

std::string dump_json(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string sse_event(const nlohmann::json& payload) { return "data: " + dump_json(payload) + "\n\n"; }

}  // namespace dsv4::server
