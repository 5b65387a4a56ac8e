// DeepSeek-V4 chat encoding against the published format (encoding/encoding_dsv4.py of the model repositories:
// its examples and templates, transcribed here independently of the encoder's code), and the plain fallback.
#include <gtest/gtest.h>

#include "dsv4/core/status.h"
#include "dsv4/server/chat_template.h"

namespace dsv4::server {
namespace {

const std::string BOS = "<｜begin▁of▁sentence｜>", EOS = "<｜end▁of▁sentence｜>", U = "<｜User｜>",
                  A = "<｜Assistant｜>";

ChatMessage msg(std::string role, std::string content) {
  ChatMessage m;
  m.role = std::move(role);
  m.content = std::move(content);
  return m;
}

TEST(ServerChatTemplate, SingleTurnChatAndThinking) {
  ChatEncodeOptions chat;
  EXPECT_EQ(encode_chat_dsv4({msg("user", "Hello")}, chat), BOS + U + "Hello" + A + "</think>");
  ChatEncodeOptions thinking;
  thinking.thinking = true;
  EXPECT_EQ(encode_chat_dsv4({msg("system", "Be brief."), msg("user", "Hello")}, thinking),
            BOS + "Be brief." + U + "Hello" + A + "<think>");
}

TEST(ServerChatTemplate, EarlierReasoningIsDroppedInThinkingMode) {
  // The published multi-turn example: history turns get </think> and lose their reasoning.
  ChatMessage answer = msg("assistant", "Hello! I am DeepSeek.");
  answer.reasoning_content = "thinking...";
  const std::vector<ChatMessage> conv = {msg("system", "You are a helpful assistant."), msg("user", "hello"), answer,
                                         msg("user", "1+1=?")};
  ChatEncodeOptions thinking;
  thinking.thinking = true;
  EXPECT_EQ(encode_chat_dsv4(conv, thinking), BOS + "You are a helpful assistant." + U + "hello" + A + "</think>" +
                                                  "Hello! I am DeepSeek." + EOS + U + "1+1=?" + A + "<think>");
  ChatEncodeOptions chat;
  EXPECT_EQ(encode_chat_dsv4(conv, chat), BOS + "You are a helpful assistant." + U + "hello" + A + "</think>" +
                                              "Hello! I am DeepSeek." + EOS + U + "1+1=?" + A + "</think>");
}

TEST(ServerChatTemplate, ReasoningEffortMaxPrependsItsParagraph) {
  ChatEncodeOptions o;
  o.thinking = true;
  o.reasoning_effort = "max";
  const std::string max_prompt =
      "Reasoning Effort: Absolute maximum with no shortcuts permitted.\nYou MUST be very thorough in your thinking and "
      "comprehensively decompose the problem to resolve the root cause, rigorously stress-testing your logic against "
      "all potential paths, edge cases, and adversarial scenarios.\nExplicitly write out your entire deliberation "
      "process, documenting every intermediate step, considered alternative, and rejected hypothesis to ensure "
      "absolutely no assumption is left unchecked.\n\n";
  EXPECT_EQ(encode_chat_dsv4({msg("user", "Hi")}, o), BOS + max_prompt + U + "Hi" + A + "<think>");
  o.reasoning_effort = "high";  // adds nothing
  EXPECT_EQ(encode_chat_dsv4({msg("user", "Hi")}, o), BOS + U + "Hi" + A + "<think>");
  o.thinking = false;  // only in thinking mode
  o.reasoning_effort = "max";
  EXPECT_EQ(encode_chat_dsv4({msg("user", "Hi")}, o), BOS + U + "Hi" + A + "</think>");
  o.reasoning_effort = "extreme";
  EXPECT_THROW(encode_chat_dsv4({msg("user", "Hi")}, o), Error);
}

TEST(ServerChatTemplate, ToolsCallsAndResultsKeepReasoning) {
  ChatEncodeOptions o;
  o.thinking = true;
  o.tools = nlohmann::ordered_json::parse(
      R"([{"type": "function", "function": {"name": "get_weather", "description": "Get weather",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])");
  ChatMessage call = msg("assistant", "");
  call.reasoning_content = "Need weather.";
  call.tool_calls.push_back({"c1", "get_weather", R"({"city": "Paris", "days": 2})"});
  ChatMessage result = msg("tool", "sunny");
  result.tool_call_id = "c1";
  const std::string tools_block =
      "## Tools\n\nYou have access to a set of tools to help answer the user's question. You can invoke tools by "
      "writing a \"<｜DSML｜tool_calls>\" block like the following:\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke "
      "name=\"$TOOL_NAME\">\n<｜DSML｜parameter name=\"$PARAMETER_NAME\" "
      "string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n...\n</｜DSML｜invoke>\n<｜DSML｜invoke "
      "name=\"$TOOL_NAME2\">\n...\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>\n\nString parameters should be specified "
      "as is and set `string=\"true\"`. For all other types (numbers, booleans, arrays, objects), pass the value in "
      "JSON format and set `string=\"false\"`.\n\nIf thinking_mode is enabled (triggered by <think>), you MUST "
      "output your complete reasoning inside <think>...</think> BEFORE any tool calls or final response.\n\n"
      "Otherwise, output directly after </think> with tool calls or final response.\n\n### Available Tool "
      "Schemas\n\n{\"name\": \"get_weather\", \"description\": \"Get weather\", \"parameters\": {\"type\": "
      "\"object\", \"properties\": {\"city\": {\"type\": \"string\"}}}}\n\nYou MUST strictly follow the above "
      "defined tool name and parameter schemas to invoke tool calls.\n";
  const std::string dsml =
      "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" "
      "string=\"true\">Paris</｜DSML｜parameter>\n<｜DSML｜parameter name=\"days\" "
      "string=\"false\">2</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  EXPECT_EQ(render_dsml_tool_calls(call.tool_calls), dsml);
  const std::vector<ChatMessage> conv = {msg("system", "You are helpful."), msg("user", "Weather in Paris?"), call,
                                         result};
  EXPECT_EQ(encode_chat_dsv4(conv, o), BOS + "You are helpful.\n\n" + tools_block + U + "Weather in Paris?" + A +
                                           "<think>Need weather.</think>\n\n" + dsml + EOS + U +
                                           "<tool_result>sunny</tool_result>" + A + "<think>");
  // Without a system message, one is inserted to carry the tools block.
  EXPECT_EQ(encode_chat_dsv4({msg("user", "Hi")}, o), BOS + "\n\n" + tools_block + U + "Hi" + A + "<think>");
}

TEST(ServerChatTemplate, ToolResultsFollowCallOrderAndMergeWithUserText) {
  ChatMessage calls = msg("assistant", "");
  calls.tool_calls.push_back({"c1", "a", "{}"});
  calls.tool_calls.push_back({"c2", "b", R"({"x": [1,2], "s": "v"})"});
  ChatMessage r2 = msg("tool", "B"), r1 = msg("tool", "A");
  r2.tool_call_id = "c2";
  r1.tool_call_id = "c1";
  const std::string dsml =
      "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"a\">\n\n</｜DSML｜invoke>\n<｜DSML｜invoke name=\"b\">\n"
      "<｜DSML｜parameter name=\"x\" string=\"false\">[1, 2]</｜DSML｜parameter>\n<｜DSML｜parameter name=\"s\" "
      "string=\"true\">v</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  EXPECT_EQ(encode_chat_dsv4({msg("user", "q"), calls, r2, r1, msg("user", "and?")}, ChatEncodeOptions{}),
            BOS + U + "q" + A + "</think>\n\n" + dsml + EOS + U +
                "<tool_result>A</tool_result>\n\n<tool_result>B</tool_result>\n\nand?" + A + "</think>");
  // Arguments that are not JSON are passed as one "arguments" string, as the published encoder does.
  EXPECT_EQ(render_dsml_tool_calls({{"c", "f", "not json"}}),
            "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"arguments\" "
            "string=\"true\">not json</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>");
  EXPECT_THROW(render_dsml_tool_calls({{"c", "f", "[1, 2]"}}), Error);  // not an object
  // A number JSON cannot hold is unparsable text too, not an escaping exception (found by fuzz_http_request).
  EXPECT_EQ(render_dsml_tool_calls({{"c", "f", "7e7777"}}),
            "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"arguments\" "
            "string=\"true\">7e7777</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>");
}

TEST(ServerChatTemplate, DeveloperMessagesAndBadConversations) {
  EXPECT_EQ(encode_chat_dsv4({msg("developer", "Rules."), msg("user", "Hi")}, ChatEncodeOptions{}),
            BOS + U + "Rules." + U + "Hi" + A + "</think>");
  EXPECT_THROW(encode_chat_dsv4({msg("user", "Hi"), msg("assistant", "Hello")}, ChatEncodeOptions{}), Error);
  EXPECT_THROW(encode_chat_dsv4({msg("wizard", "Hi")}, ChatEncodeOptions{}), Error);
  EXPECT_THROW(encode_chat_dsv4({}, ChatEncodeOptions{}), Error);
  try {
    encode_chat_dsv4({msg("user", "Hi"), msg("robot", "x"), msg("user", "y")}, ChatEncodeOptions{});
    FAIL() << "an unknown role must be rejected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("messages[1].role"), std::string::npos) << e.what();
  }
}

TEST(ServerChatTemplate, PythonJsonDumps) {
  const auto v = nlohmann::ordered_json::parse(R"({"b": [1, 2.5, true, null], "a": {"é": "x\ny\"z"}, "e": {}})");
  EXPECT_EQ(python_json_dumps(v), R"({"b": [1, 2.5, true, null], "a": {"é": "x\ny\"z"}, "e": {}})");
}

TEST(ServerChatTemplate, PlainFallback) {
  ChatEncodeOptions o;
  EXPECT_EQ(encode_chat_plain({msg("system", "S"), msg("user", "Hi"), msg("assistant", "Yo"), msg("user", "And?")}, o),
            "S\n\nUser: Hi\n\nAssistant: Yo\n\nUser: And?\n\nAssistant:");
  o.thinking = true;
  EXPECT_THROW(encode_chat_plain({msg("user", "Hi")}, o), Error);
  o.thinking = false;
  o.tools = nlohmann::ordered_json::parse(R"([{"type": "function", "function": {"name": "f"}}])");
  EXPECT_THROW(encode_chat_plain({msg("user", "Hi")}, o), Error);
}

}  // namespace
}  // namespace dsv4::server
