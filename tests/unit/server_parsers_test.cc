// Streaming parsers of generated text: stop strings, reasoning, DSML tool calls, on recorded outputs fed whole,
// at every split point and byte by byte (markup cut across tokens), and the whole pipeline over token ids.
#include <gtest/gtest.h>

#include "dsv4/server/output_parsers.h"

namespace dsv4::server {
namespace {

// A recorded DeepSeek-V4 answer with text before two calls.
const std::string kTwoCalls =
    "Let me check.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" "
    "string=\"true\">Paris \"centre\"</｜DSML｜parameter>\n<｜DSML｜parameter name=\"days\" "
    "string=\"false\">2</｜DSML｜parameter>\n</｜DSML｜invoke>\n<｜DSML｜invoke name=\"get_time\">\n<｜DSML｜parameter "
    "name=\"tz\" string=\"true\">Europe/Paris</｜DSML｜parameter>\n<｜DSML｜parameter name=\"opts\" "
    "string=\"false\">{\"a\": [1, 2]}</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

struct Parsed {
  std::string content;
  std::vector<ToolCall> calls;
};

Parsed run_dsml(const std::vector<std::string>& pieces) {
  DsmlToolParser p;
  Parsed r;
  auto take = [&](DsmlToolParser::Out o) {
    r.content += o.content;
    for (auto& c : o.calls) r.calls.push_back(c);
  };
  for (const auto& piece : pieces) take(p.push(piece));
  take(p.flush());
  return r;
}

// Every way to feed `text`: whole, every 2-way split, byte by byte.
std::vector<std::vector<std::string>> feeds(const std::string& text) {
  std::vector<std::vector<std::string>> out = {{text}};
  for (size_t i = 1; i < text.size(); ++i) out.push_back({text.substr(0, i), text.substr(i)});
  std::vector<std::string> bytes;
  for (char c : text) bytes.emplace_back(1, c);
  out.push_back(bytes);
  return out;
}

TEST(ServerDsmlParser, TwoCallsWithTextBeforeAtEverySplit) {
  for (const auto& feed : feeds(kTwoCalls)) {
    const Parsed r = run_dsml(feed);
    ASSERT_EQ(r.content, "Let me check.") << "split " << feed.size() << " / " << feed[0].size();
    ASSERT_EQ(r.calls.size(), 2u);
    EXPECT_EQ(r.calls[0].name, "get_weather");
    EXPECT_EQ(r.calls[0].arguments, R"({"city": "Paris \"centre\"", "days": 2})");
    EXPECT_EQ(r.calls[1].name, "get_time");
    EXPECT_EQ(r.calls[1].arguments, R"({"tz": "Europe/Paris", "opts": {"a": [1, 2]}})");
    EXPECT_TRUE(nlohmann::json::accept(r.calls[1].arguments));
  }
}

TEST(ServerDsmlParser, NoMarkupReachesContentWhileStreaming) {
  // Byte by byte, what has been returned as content never holds any part of the DSML markup.
  DsmlToolParser p;
  std::string content;
  for (char c : kTwoCalls) {
    content += p.push(std::string(1, c)).content;
    ASSERT_EQ(content.find("<"), std::string::npos) << content;
    ASSERT_EQ(content.find("\xEF\xBD\x9C"), std::string::npos);  // no byte of ｜ either
  }
}

TEST(ServerDsmlParser, MalformedMarkupIsReturnedAsText) {
  const std::string bad_flag =
      "Hi\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" "
      "string=\"maybe\">1</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  const std::string bad_json =
      "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" "
      "string=\"false\">{oops</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  const std::string duplicate =
      "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"a\" "
      "string=\"true\">1</｜DSML｜parameter>\n<｜DSML｜parameter name=\"a\" "
      "string=\"true\">2</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
  const std::string unterminated = "x\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter";
  for (const std::string& text : {bad_flag, bad_json, duplicate, unterminated}) {
    for (const auto& feed : feeds(text)) {
      const Parsed r = run_dsml(feed);
      ASSERT_EQ(r.content, text);
      ASSERT_TRUE(r.calls.empty());
    }
  }
}

// After a malformed block the text is scanned again, so a later well-formed block still gives its calls, at every
// split (found by fuzz_output_parsers: the whole text used to return everything after the first malformed tag as
// content, while a stream split inside it parsed the second block).
TEST(ServerDsmlParser, ABlockAfterAMalformedOneStillParses) {
  const std::string bad = "<｜DSML｜tool_calls>\"junk";
  const std::string text = "See" + bad + kTwoCalls.substr(std::string("Let me check.").size());
  for (const auto& feed : feeds(text)) {
    const Parsed r = run_dsml(feed);
    ASSERT_EQ(r.content, "See" + bad) << "split " << feed.size() << " / " << feed[0].size();
    ASSERT_EQ(r.calls.size(), 2u);
    EXPECT_EQ(r.calls[1].name, "get_time");
  }
}

TEST(ServerDsmlParser, GarbageAfterAValidCallKeepsTheCall) {
  const std::string text =
      "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n</｜DSML｜invoke>\noops\n</｜DSML｜tool_calls>";
  for (const auto& feed : feeds(text)) {
    const Parsed r = run_dsml(feed);
    ASSERT_EQ(r.calls.size(), 1u);
    EXPECT_EQ(r.calls[0].arguments, "{}");
    EXPECT_EQ(r.content, "\noops\n</｜DSML｜tool_calls>");
  }
  // A block whose calls parsed but that the generation cut before its closing tag: the calls, no stray text.
  const Parsed cut = run_dsml({"<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n</｜DSML｜invoke>\n"});
  EXPECT_EQ(cut.calls.size(), 1u);
  EXPECT_EQ(cut.content, "");
}

TEST(ServerDsmlParser, PlainTextAndLookalikesPassThrough) {
  for (const std::string text : {"a\n\nb", "a\n", "<｜DSML｜tool", "x <｜DSML｜tool_callz> y", "\n\n\n"}) {
    for (const auto& feed : feeds(text)) EXPECT_EQ(run_dsml(feed).content, text);
  }
  // Text after a finished block is content again.
  const Parsed r =
      run_dsml({"<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"g\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls> done"});
  EXPECT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.content, " done");
}

TEST(ServerStopMatcher, MatchesAcrossPiecesAndDropsTheStop) {
  const std::vector<std::string> stops = {"END", "\n\n"};
  const std::string text = "abc E EN\nxyzEND tail";
  for (const auto& feed : feeds(text)) {
    StopMatcher m(stops);
    std::string out;
    bool stopped = false;
    for (const auto& piece : feed) {
      auto o = m.push(piece);
      out += o.text;
      if (o.stopped) {
        stopped = true;
        break;
      }
    }
    EXPECT_TRUE(stopped);
    EXPECT_EQ(out, "abc E EN\nxyz");
  }
  StopMatcher none({"zz"});
  EXPECT_EQ(none.push("abz").text, "ab");
  EXPECT_EQ(none.flush(), "z");  // a partial stop at the end is text
  StopMatcher earliest({"cd", "bcde"});
  EXPECT_EQ(earliest.push("abcdef").text, "a");  // the match that starts first wins
}

TEST(ServerReasoningParser, SplitsAtThinkEnd) {
  const std::string text = "Let me think.</think>The answer is 4.";
  for (const auto& feed : feeds(text)) {
    ReasoningParser p(/*thinking=*/true);
    std::string reasoning, content;
    for (const auto& piece : feed) {
      auto o = p.push(piece);
      reasoning += o.reasoning;
      content += o.content;
      ASSERT_EQ(reasoning.find('<'), std::string::npos);
    }
    auto o = p.flush();
    reasoning += o.reasoning;
    content += o.content;
    EXPECT_EQ(reasoning, "Let me think.");
    EXPECT_EQ(content, "The answer is 4.");
  }
  ReasoningParser unfinished(true);
  EXPECT_EQ(unfinished.push("still </thi").reasoning, "still ");
  EXPECT_EQ(unfinished.flush().reasoning, "</thi");
  ReasoningParser chat(false);
  EXPECT_EQ(chat.push("a</think>b").content, "a</think>b");
}

// The pipeline over byte-level ids (every byte a token: markup and UTF-8 characters cut across tokens).
std::vector<int32_t> byte_ids(const std::string& s) {
  std::vector<int32_t> ids;
  for (unsigned char c : s) ids.push_back(c);
  return ids;
}

TEST(ServerOutputPipeline, ReasoningToolCallsAndEndOfSequence) {
  TextCodec bytes;
  OutputPipeline::Options o;
  o.thinking = true;
  o.parse_tools = true;
  o.hidden_ids = {1};
  OutputPipeline p(bytes, o);
  std::string reasoning, content;
  std::vector<ToolCall> calls;
  auto take = [&](OutputPipeline::Delta d) {
    reasoning += d.reasoning;
    content += d.content;
    for (auto& c : d.calls) calls.push_back(c);
  };
  for (int32_t id : byte_ids("Weather needed — ask.</think>" + kTwoCalls)) take(p.push(id));
  take(p.push(1));  // end of sequence: no text
  take(p.finish());
  EXPECT_EQ(reasoning, "Weather needed — ask.");
  EXPECT_EQ(content, "Let me check.");
  EXPECT_EQ(calls.size(), 2u);
  EXPECT_EQ(p.tool_calls(), 2u);
}

TEST(ServerOutputPipeline, StopStringEndsAndFlushes) {
  TextCodec bytes;
  OutputPipeline::Options o;
  o.stop = {"\nAnd"};
  OutputPipeline p(bytes, o);
  std::string content;
  bool stopped = false;
  for (int32_t id : byte_ids("In the beginning é\nAnd God")) {
    auto d = p.push(id);
    content += d.content;
    if (d.stopped) {
      stopped = true;
      break;
    }
  }
  EXPECT_TRUE(stopped);
  EXPECT_TRUE(p.stopped());
  EXPECT_EQ(content, "In the beginning é");
  EXPECT_TRUE(p.finish().empty());
}

TEST(ServerTextCodec, ByteLevelStreamHoldsPartialCharacters) {
  TextCodec bytes;
  TextCodec::Stream s(bytes);
  const std::string e_acute = "é";  // 2 bytes
  EXPECT_EQ(s.push(static_cast<unsigned char>(e_acute[0])), "");
  EXPECT_EQ(s.push(static_cast<unsigned char>(e_acute[1])), "é");
  EXPECT_EQ(s.push(0xE2), "");
  EXPECT_EQ(s.flush(), "\xEF\xBF\xBD");  // an unfinished character becomes U+FFFD
  EXPECT_EQ(repair_utf8("a\xFF"
                        "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(bytes.decode(byte_ids("héllo")), "héllo");
}

// A synthetic model's vocabulary is the real model's: ids past the 256 bytes show as "<id>" (every token streams as
// text), decoded and streamed alike; a pending partial character is cut off (U+FFFD) by such a token.
TEST(ServerTextCodec, ByteLevelIdsPastTheBytesShowAsTheirNumber) {
  TextCodec bytes;
  EXPECT_EQ(bytes.token_bytes(65), "A");
  EXPECT_EQ(bytes.token_bytes(70213), "<70213>");
  EXPECT_EQ(bytes.token_bytes(-1), "");
  const std::vector<int32_t> ids = {72, 105, 256, 129279};
  EXPECT_EQ(bytes.decode(ids), "Hi<256><129279>");
  TextCodec::Stream s(bytes);
  std::string streamed;
  for (int32_t id : ids) streamed += s.push(id);
  streamed += s.flush();
  EXPECT_EQ(streamed, bytes.decode(ids));
  TextCodec::Stream cut(bytes);
  EXPECT_EQ(cut.push(0xC3), "");
  EXPECT_EQ(cut.push(300), "\xEF\xBF\xBD<300>");
  EXPECT_EQ(cut.flush(), "");
}

}  // namespace
}  // namespace dsv4::server
