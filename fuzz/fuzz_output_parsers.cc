// Fuzzes the streaming parsers of generated text (server/output_parsers.h): stop strings, </think> reasoning split
// and DeepSeek-V4 DSML tool calls. The input is a text and the points where it is cut into pieces (as token
// decoding would cut it); the parsers promise that the concatenated outputs are the same whatever the split, so
// each runs once on the whole text and once piece by piece, and any difference (or any exception) is a finding.
//
// Layout: byte 0 = flags (bit 0 thinking), byte 1 = number of cut points n, then n bytes of piece lengths, then the
// text. The stop strings are fixed (one ASCII, one multi-byte, one DSML-like).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "dsv4/server/output_parsers.h"

namespace srv = dsv4::server;

namespace {

struct Result {
  std::string stop_text, reasoning, content;
  std::vector<std::string> calls;  // "name(arguments)"
  bool stopped = false;
  bool operator==(const Result&) const = default;
};

Result run(std::string_view text, const std::vector<size_t>& cuts, bool thinking) {
  srv::StopMatcher stop({"STOP", "\xef\xbd\x9c" "END", "</tool>"});
  srv::ReasoningParser reasoning(thinking);
  srv::DsmlToolParser tools;
  Result r;
  auto take_tools = [&](const srv::DsmlToolParser::Out& o) {
    r.content += o.content;
    for (const srv::ToolCall& c : o.calls) r.calls.push_back(c.name + "(" + c.arguments + ")");
  };
  auto take_reasoning = [&](const srv::ReasoningParser::Out& o) {
    r.reasoning += o.reasoning;
    take_tools(tools.push(o.content));
  };
  size_t begin = 0;
  std::vector<size_t> ends = cuts;
  ends.push_back(text.size());
  for (size_t end : ends) {
    if (end < begin) continue;
    const std::string_view piece = text.substr(begin, end - begin);
    begin = end;
    if (stop.stopped()) break;
    const srv::StopMatcher::Out s = stop.push(piece);
    r.stop_text += s.text;
    take_reasoning(reasoning.push(s.text));
  }
  if (!stop.stopped()) {
    const std::string rest = stop.flush();
    r.stop_text += rest;
    take_reasoning(reasoning.push(rest));
  }
  r.stopped = stop.stopped();
  const srv::ReasoningParser::Out last = reasoning.flush();
  r.reasoning += last.reasoning;
  take_tools(tools.push(last.content));
  take_tools(tools.flush());
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const bool thinking = data[0] & 1;
  const size_t n = data[1];
  if (size < 2 + n) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 2 + n, size - 2 - n);
  std::vector<size_t> cuts;
  size_t at = 0;
  for (size_t i = 0; i < n; ++i) {
    at += data[2 + i];
    if (at > text.size()) break;
    cuts.push_back(at);
  }
  const Result whole = run(text, {}, thinking);
  const Result pieces = run(text, cuts, thinking);
  if (!(whole == pieces)) {
    if (std::getenv("DSV4_FUZZ_VERBOSE") != nullptr) {  // reproducing a finding: what differs
      auto show = [](const char* what, const Result& r) {
        std::fprintf(stderr, "%s: stopped %d\n  stop_text [%s]\n  reasoning [%s]\n  content [%s]\n", what, r.stopped,
                     r.stop_text.c_str(), r.reasoning.c_str(), r.content.c_str());
        for (const std::string& c : r.calls) std::fprintf(stderr, "  call %s\n", c.c_str());
      };
      show("whole", whole);
      show("pieces", pieces);
    }
    __builtin_trap();
  }
  return 0;
}
