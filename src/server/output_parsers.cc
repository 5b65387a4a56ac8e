#include "dsv4/server/output_parsers.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

namespace dsv4::server {
namespace {

// Length of the longest suffix of `buf` that is a proper prefix of `marker` (text that may still become it).
size_t partial_suffix(std::string_view buf, std::string_view marker) {
  for (size_t n = std::min(buf.size(), marker.size() - 1); n > 0; --n) {
    if (buf.substr(buf.size() - n) == marker.substr(0, n)) return n;
  }
  return 0;
}

const std::string kDsml = dsv4_tokens::kDsml;
const std::string kCallsStart = "<" + kDsml + "tool_calls>";
const std::string kCallsEnd = "</" + kDsml + "tool_calls>";
const std::string kInvokeStart = "<" + kDsml + "invoke";
const std::string kInvokeEnd = "</" + kDsml + "invoke>";
const std::string kParamStart = "<" + kDsml + "parameter";
const std::string kParamEnd = "</" + kDsml + "parameter>";

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }

size_t skip_space(std::string_view s, size_t i) {
  while (i < s.size() && is_space(s[i])) ++i;
  return i;
}

// Reads `lit` at s[i]; advances i.
bool expect(std::string_view s, size_t& i, std::string_view lit) {
  if (s.substr(i, lit.size()) != lit) return false;
  i += lit.size();
  return true;
}

// Reads a quoted attribute value `name="…"` after optional spaces.
bool attribute(std::string_view s, size_t& i, std::string_view name, std::string& value) {
  const size_t j = skip_space(s, i);
  if (j == i) return false;  // attributes are separated by whitespace
  i = j;
  if (!expect(s, i, name) || !expect(s, i, "=\"")) return false;
  const size_t end = s.find('"', i);
  if (end == std::string_view::npos) return false;
  value = std::string(s.substr(i, end - i));
  i = end + 1;
  return true;
}

}  // namespace

// ---- stop strings ----

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
}

StopMatcher::Out StopMatcher::push(std::string_view text) {
  Out out;
  if (stopped_) return out;
  buf_ += text;
  size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, buf_.find(s));
  if (first != std::string::npos) {
    out.text = buf_.substr(0, first);
    out.stopped = stopped_ = true;
    buf_.clear();
    return out;
  }
  size_t hold = 0;
  for (const std::string& s : stops_) hold = std::max(hold, partial_suffix(buf_, s));
  out.text = buf_.substr(0, buf_.size() - hold);
  buf_.erase(0, buf_.size() - hold);
  return out;
}

std::string StopMatcher::flush() {
  std::string out = stopped_ ? std::string() : std::move(buf_);
  buf_.clear();
  return out;
}

// ---- reasoning ----

ReasoningParser::Out ReasoningParser::push(std::string_view text) {
  Out out;
  if (!in_reasoning_) {
    out.content = std::string(text);
    return out;
  }
  buf_ += text;
  const size_t end = buf_.find(dsv4_tokens::kThinkEnd);
  if (end != std::string::npos) {
    out.reasoning = buf_.substr(0, end);
    out.content = buf_.substr(end + std::string_view(dsv4_tokens::kThinkEnd).size());
    buf_.clear();
    in_reasoning_ = false;
    return out;
  }
  const size_t hold = partial_suffix(buf_, dsv4_tokens::kThinkEnd);
  out.reasoning = buf_.substr(0, buf_.size() - hold);
  buf_.erase(0, buf_.size() - hold);
  return out;
}

ReasoningParser::Out ReasoningParser::flush() {
  Out out;
  out.reasoning = std::move(buf_);  // an unfinished </think> is reasoning text
  buf_.clear();
  return out;
}

// ---- DSML tool calls ----

bool parse_dsml_invoke(std::string_view s, ToolCall& call) {
  size_t i = 0;
  std::string name;
  if (!attribute(s, i, "name", name) || name.empty() || !expect(s, i, ">")) return false;
  std::string args = "{";
  std::set<std::string> seen;
  for (i = skip_space(s, i); i < s.size(); i = skip_space(s, i)) {
    std::string pname, is_str;
    if (!expect(s, i, kParamStart) || !attribute(s, i, "name", pname) || !attribute(s, i, "string", is_str) ||
        (is_str != "true" && is_str != "false") || !expect(s, i, ">")) {
      return false;
    }
    const size_t end = s.find(kParamEnd, i);
    if (end == std::string_view::npos || !seen.insert(pname).second) return false;
    const std::string value(s.substr(i, end - i));
    i = end + kParamEnd.size();
    std::string json_value;
    if (is_str == "true") {
      json_value = nlohmann::json(value).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } else {
      if (!nlohmann::json::accept(value)) return false;
      json_value = value;
    }
    if (args.size() > 1) args += ", ";
    args += nlohmann::json(pname).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + ": " + json_value;
  }
  call.name = std::move(name);
  call.arguments = args + "}";
  return true;
}

void DsmlToolParser::parse_block(Out& out, bool final) {
  while (state_ == State::kBlock) {
    const size_t i = skip_space(buf_, 0);
    const std::string_view rest = std::string_view(buf_).substr(i);
    if (rest.starts_with(kCallsEnd)) {
      raw_.clear();
      buf_.erase(0, i + kCallsEnd.size());
      state_ = State::kText;
      return;
    }
    if (rest.starts_with(kInvokeStart)) {
      const size_t end = rest.find(kInvokeEnd);
      if (end != std::string_view::npos) {
        ToolCall call;
        if (parse_dsml_invoke(rest.substr(kInvokeStart.size(), end - kInvokeStart.size()), call)) {
          out.calls.push_back(std::move(call));
          ++calls_;
          raw_.clear();
          buf_.erase(0, i + end + kInvokeEnd.size());
          continue;
        }
      } else if (!final) {
        return;  // the invoke is still arriving
      }
    } else if (!final && (kCallsEnd.starts_with(rest) || kInvokeStart.starts_with(rest))) {
      return;  // a tag is still arriving
    }
    // Malformed: the block's opening markup not yet returned as calls goes back to the content, and the text
    // after it is scanned again as text (it may hold the next block), so the result does not depend on where
    // the text was split. A block whose calls all parsed and that only lacks its closing tag at the end gives
    // back nothing but whitespace, which is dropped.
    if (final && raw_.empty() && skip_space(buf_, 0) == buf_.size()) {
      buf_.clear();
    } else {
      out.content += raw_;
    }
    raw_.clear();
    state_ = State::kText;
    return;
  }
}

DsmlToolParser::Out DsmlToolParser::push(std::string_view text) {
  Out out;
  buf_ += text;
  while (true) {
    if (state_ == State::kBlock) {
      parse_block(out, /*final=*/false);
      if (state_ == State::kBlock) return out;
      continue;
    }
    const size_t start = buf_.find(kCallsStart);
    if (start == std::string::npos) {
      size_t keep = buf_.size() - partial_suffix(buf_, kCallsStart);
      // The blank line before a block is not content: hold back up to two trailing newlines.
      for (int k = 0; k < 2 && keep > 0 && buf_[keep - 1] == '\n'; ++k) --keep;
      out.content += buf_.substr(0, keep);
      buf_.erase(0, keep);
      return out;
    }
    size_t cut = start;
    for (int k = 0; k < 2 && cut > 0 && buf_[cut - 1] == '\n'; ++k) --cut;
    out.content += buf_.substr(0, cut);
    raw_ = buf_.substr(cut, start + kCallsStart.size() - cut);
    buf_.erase(0, start + kCallsStart.size());
    state_ = State::kBlock;
  }
}

DsmlToolParser::Out DsmlToolParser::flush() {
  Out out = push({});  // everything that can be decided before the end
  while (state_ == State::kBlock) {
    parse_block(out, /*final=*/true);
    if (state_ == State::kText) {  // malformed: the rest is text again, which may open another block
      Out more = push({});
      out.content += more.content;
      for (ToolCall& c : more.calls) out.calls.push_back(std::move(c));
    }
  }
  out.content += buf_;
  buf_.clear();
  return out;
}

// ---- the pipeline ----

OutputPipeline::OutputPipeline(const TextCodec& codec, Options options)
    : opt_(std::move(options)), stream_(codec), stop_(opt_.stop), reasoning_(opt_.thinking) {}

void OutputPipeline::feed(std::string_view text, Delta& d, bool final) {
  ReasoningParser::Out r = reasoning_.push(text);
  if (final) {
    ReasoningParser::Out rest = reasoning_.flush();
    r.reasoning += rest.reasoning;
    r.content += rest.content;
  }
  d.reasoning += r.reasoning;
  if (!opt_.parse_tools) {
    d.content += r.content;
    return;
  }
  DsmlToolParser::Out t = tools_.push(r.content);
  if (final) {
    DsmlToolParser::Out rest = tools_.flush();
    t.content += rest.content;
    for (ToolCall& c : rest.calls) t.calls.push_back(std::move(c));
  }
  d.content += t.content;
  for (ToolCall& c : t.calls) d.calls.push_back(std::move(c));
}

OutputPipeline::Delta OutputPipeline::push(int32_t id) {
  Delta d;
  if (stop_.stopped() || std::find(opt_.hidden_ids.begin(), opt_.hidden_ids.end(), id) != opt_.hidden_ids.end()) {
    return d;
  }
  StopMatcher::Out s = stop_.push(stream_.push(id));
  d.stopped = s.stopped;
  feed(s.text, d, /*final=*/s.stopped);
  return d;
}

OutputPipeline::Delta OutputPipeline::finish() {
  Delta d;
  if (stop_.stopped()) return d;  // everything was flushed when the stop string matched
  StopMatcher::Out s = stop_.push(stream_.flush());
  d.stopped = s.stopped;
  std::string text = s.text + stop_.flush();
  feed(text, d, /*final=*/true);
  return d;
}

}  // namespace dsv4::server
