// Incremental parsers of generated text, fed piece by piece as tokens are decoded. Each holds back only the
// text that might still turn into markup (a partial stop string, a partial </think>, a partial DSML tag), so
// streamed content never shows markup, and the concatenated outputs equal the parse of the whole text whatever
// the split.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dsv4/server/chat_template.h"
#include "dsv4/server/text_codec.h"

namespace dsv4::server {

// Stop strings, matched across token boundaries; the matched string and everything after it are dropped.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  struct Out {
    std::string text;  // safe to emit
    bool stopped = false;
  };
  Out push(std::string_view text);
  std::string flush();  // the held-back text, at the end of generation
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string buf_;
  bool stopped_ = false;
};

// Splits reasoning from the answer: in thinking mode the output starts inside the reasoning, which ends at the
// first </think>; without thinking everything is content.
class ReasoningParser {
 public:
  explicit ReasoningParser(bool thinking) : in_reasoning_(thinking) {}
  struct Out {
    std::string reasoning, content;
  };
  Out push(std::string_view text);
  Out flush();

 private:
  bool in_reasoning_;
  std::string buf_;
};

// DeepSeek-V4 DSML tool calls in the answer:
//   [content]\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="N">\n<｜DSML｜parameter name="P" string="true|false">V
//   </｜DSML｜parameter>\n…</｜DSML｜invoke>\n…</｜DSML｜tool_calls>
// Each invoke is returned as a ToolCall (arguments as JSON text: string="true" values as JSON strings, others
// verbatim, validated as JSON) as soon as its closing tag arrives. The blank line before the block is not content.
// Malformed markup (unexpected text inside the block, a bad parameter, a duplicate name, invalid JSON, a block
// still open at the end) is returned as content from where the parse failed, not dropped.
class DsmlToolParser {
 public:
  struct Out {
    std::string content;
    std::vector<ToolCall> calls;  // arguments filled; ids are the caller's
  };
  Out push(std::string_view text);
  Out flush();
  size_t calls() const { return calls_; }

 private:
  enum class State { kText, kBlock };
  void parse_block(Out& out, bool final);
  State state_ = State::kText;
  std::string buf_;
  std::string raw_;  // block text consumed but not yet returned as a call (given back as content if malformed)
  size_t calls_ = 0;
};

// Parses one invoke body (the text between "<｜DSML｜invoke" and "</｜DSML｜invoke>"); false when malformed.
bool parse_dsml_invoke(std::string_view body, ToolCall& call);

// The whole pipeline of one request: ids → text (end-of-sequence ids skipped) → stop strings → reasoning →
// tool calls.
class OutputPipeline {
 public:
  struct Options {
    bool thinking = false;     // output starts inside reasoning
    bool parse_tools = false;  // DSML tool calls (DeepSeek-V4 chat)
    std::vector<std::string> stop;
    std::vector<int32_t> hidden_ids;  // ids whose text is never shown (end of sequence, stop_token_ids)
  };
  struct Delta {
    std::string reasoning, content;
    std::vector<ToolCall> calls;
    bool stopped = false;  // a stop string matched: the request should end
    bool empty() const { return reasoning.empty() && content.empty() && calls.empty(); }
  };
  OutputPipeline(const TextCodec& codec, Options options);
  Delta push(int32_t id);
  Delta finish();  // end of generation: everything held back
  bool stopped() const { return stop_.stopped(); }
  size_t tool_calls() const { return tools_.calls(); }

 private:
  void feed(std::string_view text, Delta& d, bool final);
  Options opt_;
  TextCodec::Stream stream_;
  StopMatcher stop_;
  ReasoningParser reasoning_;
  DsmlToolParser tools_;
};

}  // namespace dsv4::server
