// Chat prompts. DeepSeek-V4's format, written from DeepSeek's published encoder (encoding/encoding_dsv4.py in
// the model repositories; no Jinja template ships with the model):
//
//   <｜begin▁of▁sentence｜>{system}[\n\n{tools
//   block}]<｜User｜>{user}<｜Assistant｜></think>{answer}<｜end▁of▁sentence｜> <｜User｜>{user}<｜Assistant｜><think>
//   (thinking mode: the model writes reasoning, </think>, answer)
//
// - user and developer messages start with <｜User｜>; consecutive user messages and tool results merge into one
//   user turn, blocks joined by a blank line; a tool result is <tool_result>{content}</tool_result>, tool results
//   ordered as the assistant's calls were.
// - after the last user turn: <｜Assistant｜> then </think> (chat) or <think> (thinking).
// - assistant history:
// [reasoning</think>]{content}[\n\n<｜DSML｜tool_calls>…</｜DSML｜tool_calls>]<｜end▁of▁sentence｜>;
//   in thinking mode the reasoning of turns before the last user message is dropped (kept when tools are given or
//   the conversation ends with tool results, as vLLM does), earlier turns get </think> after <｜Assistant｜>.
// - reasoning_effort "max" prepends a fixed paragraph in thinking mode ("high" adds nothing).
// - tools (OpenAI format) are appended to the first system message (one is inserted when there is none) as the
//   "## Tools" block with one JSON schema per line (Python json.dumps spacing, keys in request order).
//
// Models whose tokenizer lacks these special tokens (the default tiny model) use the plain template:
//   "{system}\n\n" "User: {user}\n\n" "Assistant: {assistant}\n\n" "Tool: {tool result}\n\n" … "Assistant:"
// (BOS prepended as an id by the caller when the tokenizer has one); tools and thinking are rejected there.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace dsv4::server {

struct ToolCall {
  std::string id, name;
  std::string arguments;  // JSON text of an object
};

struct ChatMessage {
  std::string role;  // system | developer | user | assistant | tool
  std::string content;
  std::string reasoning_content;     // assistant
  std::vector<ToolCall> tool_calls;  // assistant
  std::string tool_call_id;          // tool
};

struct ChatEncodeOptions {
  bool thinking = false;
  std::string reasoning_effort;                                    // "", "high" or "max"
  nlohmann::ordered_json tools = nlohmann::ordered_json::array();  // [{"type": "function", "function": {...}}]
};

enum class ChatFormat { kDeepSeekV4, kPlain };

// The special tokens of DeepSeek-V4's format, as text.
namespace dsv4_tokens {
inline constexpr const char* kBos = "<｜begin▁of▁sentence｜>";
inline constexpr const char* kEos = "<｜end▁of▁sentence｜>";
inline constexpr const char* kUser = "<｜User｜>";
inline constexpr const char* kAssistant = "<｜Assistant｜>";
inline constexpr const char* kThinkStart = "<think>";
inline constexpr const char* kThinkEnd = "</think>";
inline constexpr const char* kDsml = "｜DSML｜";
}  // namespace dsv4_tokens

// Throws dsv4::Error(kInvalidArgument) naming the message at fault (unknown role, a conversation that does not
// end with a user or tool turn, tool calls with bad arguments, an unknown reasoning_effort).
std::string encode_chat_dsv4(const std::vector<ChatMessage>& messages, const ChatEncodeOptions& options);
std::string encode_chat_plain(const std::vector<ChatMessage>& messages, const ChatEncodeOptions& options);

// DSML rendering of assistant tool calls ("<｜DSML｜tool_calls>\n<｜DSML｜invoke name=…>…</｜DSML｜tool_calls>"):
// string arguments raw with string="true", others as JSON with string="false".
std::string render_dsml_tool_calls(const std::vector<ToolCall>& calls);

// JSON text as Python's json.dumps(value, ensure_ascii=False) writes it: ", " and ": " separators.
std::string python_json_dumps(const nlohmann::ordered_json& value);

}  // namespace dsv4::server
