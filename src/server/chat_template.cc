#include "dsv4/server/chat_template.h"

#include <algorithm>
#include <map>

#include "dsv4/core/status.h"

namespace dsv4::server {
namespace {

using ojson = nlohmann::ordered_json;
namespace tk = dsv4_tokens;

// The tools block of the system prompt (TOOLS_TEMPLATE of encoding_dsv4.py).
std::string render_tools(const ojson& tools) {
  std::string schemas;
  for (const auto& t : tools) {
    if (!schemas.empty()) schemas += "\n";
    schemas += python_json_dumps(t.at("function"));
  }
  const std::string d = tk::kDsml;
  return "## Tools\n\n"
         "You have access to a set of tools to help answer the user's question. You can invoke tools by writing a \"<" +
         d + "tool_calls>\" block like the following:\n\n<" + d + "tool_calls>\n<" + d +
         "invoke name=\"$TOOL_NAME\">\n<" + d +
         "parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</" + d + "parameter>\n...\n</" + d +
         "invoke>\n<" + d + "invoke name=\"$TOOL_NAME2\">\n...\n</" + d + "invoke>\n</" + d +
         "tool_calls>\n\n"
         "String parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, "
         "booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\n"
         "If thinking_mode is enabled (triggered by " +
         std::string(tk::kThinkStart) + "), you MUST output your complete reasoning inside " + tk::kThinkStart + "..." +
         tk::kThinkEnd +
         " BEFORE any tool calls or final response.\n\n"
         "Otherwise, output directly after " +
         tk::kThinkEnd +
         " with tool calls or final response.\n\n"
         "### Available Tool Schemas\n\n" +
         schemas +
         "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";
}

const char* kReasoningEffortMax =
    "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n"
    "You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root cause, "
    "rigorously stress-testing your logic against all potential paths, edge cases, and adversarial scenarios.\n"
    "Explicitly write out your entire deliberation process, documenting every intermediate step, considered "
    "alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

struct Block {
  bool tool_result = false;
  std::string text, tool_use_id;
};

// A message after tool results were merged into user turns.
struct Msg {
  std::string role, content, reasoning;
  std::vector<ToolCall> tool_calls;
  std::vector<Block> blocks;  // user turns
  bool has_tools = false;     // the system message carrying the tools block
};

void check_role(const ChatMessage& m, size_t i) {
  static const char* roles[] = {"system", "developer", "user", "assistant", "tool"};
  DSV4_CHECK_ARG(
      std::find_if(std::begin(roles), std::end(roles), [&](const char* r) { return m.role == r; }) != std::end(roles),
      "messages[", i, "].role must be system, developer, user, assistant or tool, got '", m.role, "'");
  DSV4_CHECK_ARG(m.role == "assistant" || m.tool_calls.empty(), "messages[", i,
                 "]: only assistant messages may have tool_calls");
}

int last_user_index(const std::vector<Msg>& msgs) {
  for (int i = static_cast<int>(msgs.size()) - 1; i >= 0; --i) {
    if (msgs[i].role == "user" || msgs[i].role == "developer") return i;
  }
  return -1;
}

std::string render_arguments(const ToolCall& call) {
  ojson args;
  try {
    args = ojson::parse(call.arguments);
  } catch (const ojson::exception&) {  // syntax, or a number out of range (found by fuzz_http_request)
    args = ojson::object({{"arguments", call.arguments}});  // as encoding_dsv4.py does with unparsable text
  }
  DSV4_CHECK_ARG(args.is_object(), "tool call '", call.name, "': arguments must be a JSON object, got ",
                 call.arguments);
  std::string out;
  for (const auto& [key, value] : args.items()) {
    if (!out.empty()) out += "\n";
    const bool is_str = value.is_string();
    out += std::string("<") + tk::kDsml + "parameter name=\"" + key + "\" string=\"" + (is_str ? "true" : "false") +
           "\">" + (is_str ? value.get<std::string>() : python_json_dumps(value)) + "</" + tk::kDsml + "parameter>";
  }
  return out;
}

std::string render_message(size_t index, const std::vector<Msg>& msgs, bool thinking, bool drop_thinking,
                           const std::string& effort, const ojson& tools) {
  const Msg& m = msgs[index];
  const int last_user = last_user_index(msgs);
  std::string p;
  if (index == 0 && thinking && effort == "max") p += kReasoningEffortMax;
  if (m.role == "system") {
    p += m.content;
    if (m.has_tools) p += "\n\n" + render_tools(tools);
  } else if (m.role == "developer") {
    p += tk::kUser + m.content;
  } else if (m.role == "user") {
    p += tk::kUser;
    for (size_t b = 0; b < m.blocks.size(); ++b) {
      if (b > 0) p += "\n\n";
      p += m.blocks[b].tool_result ? "<tool_result>" + m.blocks[b].text + "</tool_result>" : m.blocks[b].text;
    }
  } else {  // assistant
    std::string reasoning;
    if (thinking && (!drop_thinking || static_cast<int>(index) > last_user)) reasoning = m.reasoning + tk::kThinkEnd;
    std::string calls;
    if (!m.tool_calls.empty()) calls = "\n\n" + render_dsml_tool_calls(m.tool_calls);
    p += reasoning + m.content + calls + tk::kEos;
  }
  if (index + 1 < msgs.size() && msgs[index + 1].role != "assistant") return p;
  if (m.role == "user" || m.role == "developer") {
    p += tk::kAssistant;
    const bool open_thinking = thinking && (!drop_thinking || static_cast<int>(index) >= last_user);
    p += open_thinking ? tk::kThinkStart : tk::kThinkEnd;
  }
  return p;
}

}  // namespace

std::string python_json_dumps(const ojson& v) {
  if (v.is_object()) {
    std::string out = "{";
    bool first = true;
    for (const auto& [key, value] : v.items()) {
      if (!first) out += ", ";
      first = false;
      out += ojson(key).dump(-1, ' ', false, ojson::error_handler_t::replace) + ": " + python_json_dumps(value);
    }
    return out + "}";
  }
  if (v.is_array()) {
    std::string out = "[";
    for (size_t i = 0; i < v.size(); ++i) {
      if (i > 0) out += ", ";
      out += python_json_dumps(v[i]);
    }
    return out + "]";
  }
  return v.dump(-1, ' ', false, ojson::error_handler_t::replace);
}

std::string render_dsml_tool_calls(const std::vector<ToolCall>& calls) {
  const std::string d = tk::kDsml;
  std::string out = "<" + d + "tool_calls>\n";
  for (size_t i = 0; i < calls.size(); ++i) {
    if (i > 0) out += "\n";
    out += "<" + d + "invoke name=\"" + calls[i].name + "\">\n" + render_arguments(calls[i]) + "\n</" + d + "invoke>";
  }
  return out + "\n</" + d + "tool_calls>";
}

std::string encode_chat_dsv4(const std::vector<ChatMessage>& messages, const ChatEncodeOptions& opt) {
  DSV4_CHECK_ARG(!messages.empty(), "messages must not be empty");
  DSV4_CHECK_ARG(opt.reasoning_effort.empty() || opt.reasoning_effort == "high" || opt.reasoning_effort == "max",
                 "reasoning_effort must be \"high\" or \"max\", got '", opt.reasoning_effort, "'");
  for (size_t i = 0; i < messages.size(); ++i) check_role(messages[i], i);
  const bool has_tools = !opt.tools.empty();
  for (size_t i = 0; i < opt.tools.size(); ++i) {
    DSV4_CHECK_ARG(opt.tools[i].is_object() && opt.tools[i].contains("function") &&
                       opt.tools[i]["function"].is_object() && opt.tools[i]["function"].contains("name"),
                   "tools[", i, "] must be {\"type\": \"function\", \"function\": {\"name\": …}}");
  }

  // Tool results join the user turn they belong to (merge_tool_messages of encoding_dsv4.py).
  std::vector<Msg> msgs;
  if (has_tools && messages.front().role != "system") msgs.push_back(Msg{"system", "", "", {}, {}, true});
  for (const ChatMessage& m : messages) {
    const bool user_with_blocks = !msgs.empty() && msgs.back().role == "user";
    if (m.role == "tool" || m.role == "user") {
      Block b{m.role == "tool", m.content, m.tool_call_id};
      if (user_with_blocks) {
        msgs.back().blocks.push_back(std::move(b));
      } else {
        Msg u;
        u.role = "user";
        u.blocks.push_back(std::move(b));
        msgs.push_back(std::move(u));
      }
      continue;
    }
    Msg x;
    x.role = m.role;
    x.content = m.content;
    x.reasoning = m.reasoning_content;
    x.tool_calls = m.tool_calls;
    x.has_tools = has_tools && msgs.empty() && m.role == "system";
    msgs.push_back(std::move(x));
  }
  // Tool results in the order of the calls of the assistant turn before them.
  std::map<std::string, size_t> call_order;
  for (Msg& m : msgs) {
    if (m.role == "assistant" && !m.tool_calls.empty()) {
      call_order.clear();
      for (size_t i = 0; i < m.tool_calls.size(); ++i) {
        if (!m.tool_calls[i].id.empty()) call_order[m.tool_calls[i].id] = i;
      }
    } else if (m.role == "user" && !call_order.empty()) {
      std::vector<Block> results;
      for (const Block& b : m.blocks) {
        if (b.tool_result) results.push_back(b);
      }
      if (results.size() < 2) continue;
      const auto order = [&](const Block& b) {
        auto it = call_order.find(b.tool_use_id);
        return it == call_order.end() ? size_t{0} : it->second;
      };
      std::stable_sort(results.begin(), results.end(),
                       [&](const Block& a, const Block& b) { return order(a) < order(b); });
      size_t k = 0;
      for (Block& b : m.blocks) {
        if (b.tool_result) b = results[k++];
      }
    }
  }
  DSV4_CHECK_ARG(msgs.back().role == "user" || msgs.back().role == "developer",
                 "the conversation must end with a user, developer or tool message (got '", messages.back().role, "')");

  // Reasoning of earlier turns is dropped when a new user message opens the turn and no tools are in play.
  const bool drop_thinking = messages.back().role == "user" && !has_tools;
  if (opt.thinking && drop_thinking) {
    const int last_user = last_user_index(msgs);
    std::vector<Msg> kept;
    for (int i = 0; i < static_cast<int>(msgs.size()); ++i) {
      Msg& m = msgs[i];
      if (i >= last_user || m.role == "user" || m.role == "system") {
        kept.push_back(std::move(m));
      } else if (m.role == "assistant") {
        m.reasoning.clear();
        kept.push_back(std::move(m));
      }  // earlier developer messages are dropped
    }
    msgs = std::move(kept);
  }
  std::string prompt = tk::kBos;
  for (size_t i = 0; i < msgs.size(); ++i) {
    prompt += render_message(i, msgs, opt.thinking, drop_thinking, opt.reasoning_effort, opt.tools);
  }
  return prompt;
}

std::string encode_chat_plain(const std::vector<ChatMessage>& messages, const ChatEncodeOptions& opt) {
  DSV4_CHECK_ARG(!messages.empty(), "messages must not be empty");
  DSV4_CHECK_ARG(opt.tools.empty(),
                 "this model's tokenizer has no DeepSeek-V4 chat tokens, so it cannot take tools (plain template)");
  DSV4_CHECK_ARG(!opt.thinking, "this model's tokenizer has no <think> tokens: thinking mode is not available");
  std::string p;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    check_role(m, i);
    DSV4_CHECK_ARG(m.tool_calls.empty(), "messages[", i, "]: tool calls need the DeepSeek-V4 chat format");
    if (m.role == "system" || m.role == "developer") {
      p += m.content + "\n\n";
    } else if (m.role == "user") {
      p += "User: " + m.content + "\n\n";
    } else if (m.role == "assistant") {
      p += "Assistant: " + m.content + "\n\n";
    } else {
      p += "Tool: " + m.content + "\n\n";
    }
  }
  const std::string& last = messages.back().role;
  DSV4_CHECK_ARG(last == "user" || last == "tool" || last == "developer",
                 "the conversation must end with a user, developer or tool message (got '", last, "')");
  return p + "Assistant:";
}

}  // namespace dsv4::server
