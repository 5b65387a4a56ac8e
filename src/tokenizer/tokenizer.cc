// tokenizer.json loading and the encode/decode pipeline (see include/dsv4/tokenizer/tokenizer.h).
//
// Each stage mirrors the corresponding piece of the Rust `tokenizers` crate closely enough that the
// committed parity fixtures (ids produced by the Python package) come out identical; comments note
// where a behaviour is copied on purpose even though it looks odd.
#include "dsv4/tokenizer/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "dsv4/core/status.h"
#include "dsv4/io/file.h"
#include "dsv4/io/json.h"
#include "dsv4/io/limits.h"
#include "tokenizer/bpe.h"
#include "tokenizer/regex.h"
#include "tokenizer/utf8.h"

namespace dsv4 {

namespace {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// JSON access with field-naming errors

const json& require(const json& j, const char* key, const std::string& where) {
  if (!j.is_object() || !j.contains(key)) fail(StatusCode::kParseError, where, ".", key, ": missing");
  return j[key];
}

std::string require_string(const json& j, const char* key, const std::string& where) {
  const json& v = require(j, key, where);
  if (!v.is_string()) fail(StatusCode::kParseError, where, ".", key, ": expected a string");
  return v.get<std::string>();
}

bool opt_bool(const json& j, const char* key, bool dflt, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  if (!j[key].is_boolean()) fail(StatusCode::kParseError, where, ".", key, ": expected a boolean");
  return j[key].get<bool>();
}

// A token id: an integer in [0, kMaxTokenId] (never truncated to int32).
int32_t token_id(const json& v, const std::string& where) {
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t{1} << 62) ||
      v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxTokenId) {
    fail(StatusCode::kParseError, where, ": expected a token id (integer in [0, ", kMaxTokenId, "]), got ", v.dump());
  }
  return static_cast<int32_t>(v.get<int64_t>());
}

std::string type_of(const json& j, const std::string& where) {
  if (!j.is_object()) fail(StatusCode::kParseError, where, ": expected an object");
  return require_string(j, "type", where);
}

// ---------------------------------------------------------------------------------------------
// GPT-2 byte-level alphabet: every byte maps to a printable code point, so BPE never sees raw
// control bytes or partial UTF-8.

struct ByteLevelAlphabet {
  std::array<std::string, 256> byte_to_text;
  std::unordered_map<char32_t, uint8_t> cp_to_byte;

  ByteLevelAlphabet() {
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const char32_t cp = printable ? static_cast<char32_t>(b) : next++;
      utf8::append(&byte_to_text[b], cp);
      cp_to_byte[cp] = static_cast<uint8_t>(b);
    }
  }
};

const ByteLevelAlphabet& byte_level() {
  static const ByteLevelAlphabet alphabet;
  return alphabet;
}

// Bytes of one token under the ByteLevel decoder: every character mapped back to its byte, or, if
// any character is outside the alphabet (e.g. an added special token), the token's own UTF-8.
std::string byte_level_decode_token(std::string_view tok) {
  const auto& alpha = byte_level();
  std::string out;
  out.reserve(tok.size());
  for (std::size_t i = 0; i < tok.size();) {
    const std::size_t len = utf8::sequence_length(tok, i);
    if (len == 0) return std::string(tok);
    auto it = alpha.cp_to_byte.find(utf8::decode_at(tok, i, len));
    if (it == alpha.cp_to_byte.end()) return std::string(tok);
    out.push_back(static_cast<char>(it->second));
    i += len;
  }
  return out;
}

// "<0xAB>" → 0xAB, else -1.
int parse_byte_token(std::string_view tok) {
  if (tok.size() != 6 || tok.substr(0, 3) != "<0x" || tok[5] != '>') return -1;
  int v = 0;
  for (int k = 3; k < 5; ++k) {
    const char c = tok[static_cast<std::size_t>(k)];
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= c - '0';
    else if (c >= 'A' && c <= 'F')
      v |= c - 'A' + 10;
    else if (c >= 'a' && c <= 'f')
      v |= c - 'a' + 10;
    else
      return -1;
  }
  return v;
}

// ---------------------------------------------------------------------------------------------
// Normalizers

struct Normalizer {
  virtual ~Normalizer() = default;
  virtual std::string apply(std::string s) const = 0;
};

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(utf8proc_option_t options) : options_(options) {}
  std::string apply(std::string s) const override {
    if (s.empty()) return s;
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                            static_cast<utf8proc_ssize_t>(s.size()), &out, options_);
    if (n < 0) fail(StatusCode::kInternal, "utf8proc normalization failed: ", utf8proc_errmsg(n));
    std::string r(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
    std::free(out);
    return r;
  }

 private:
  utf8proc_option_t options_;
};

class LowercaseNormalizer : public Normalizer {
 public:
  std::string apply(std::string s) const override {
    std::string out;
    out.reserve(s.size());
    for (std::size_t i = 0; i < s.size();) {
      const std::size_t len = utf8::sequence_length(s, i);
      utf8::append(&out, static_cast<char32_t>(
                             utf8proc_tolower(static_cast<utf8proc_int32_t>(utf8::decode_at(s, i, len)))));
      i += len;
    }
    return out;
  }
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  std::string apply(std::string s) const override {
    for (const auto& n : steps_) s = n->apply(std::move(s));
    return s;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string p) : prepend_(std::move(p)) {}
  std::string apply(std::string s) const override { return s.empty() ? s : prepend_ + s; }

 private:
  std::string prepend_;
};

class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  std::string apply(std::string s) const override {
    std::size_t b = 0, e = s.size();
    if (left_) {
      while (b < e) {
        const std::size_t len = utf8::sequence_length(s, b);
        if (!utf8::is_whitespace(utf8::decode_at(s, b, len))) break;
        b += len;
      }
    }
    if (right_) {
      while (e > b) {
        std::size_t start = e - 1;
        while (start > b && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
        if (!utf8::is_whitespace(utf8::decode_at(s, start, e - start))) break;
        e = start;
      }
    }
    return s.substr(b, e - b);
  }

 private:
  bool left_, right_;
};

// Shared by the Replace normalizer and decoder: a literal or a regex, every match replaced.
class Replacer {
 public:
  Replacer(const json& j, const std::string& where) {
    const json& pattern = require(j, "pattern", where);
    content_ = require_string(j, "content", where);
    if (pattern.is_object() && pattern.contains("String")) {
      literal_ = require_string(pattern, "String", where + ".pattern");
    } else if (pattern.is_object() && pattern.contains("Regex")) {
      regex_ = std::make_unique<Regex>(require_string(pattern, "Regex", where + ".pattern"),
                                       where + ".pattern.Regex");
    } else {
      fail(StatusCode::kParseError, where, ".pattern: expected {\"String\": ...} or {\"Regex\": ...}");
    }
  }
  std::string apply(const std::string& s) const {
    std::string out;
    std::size_t prev = 0;
    if (regex_) {
      for (const auto& [b, e] : regex_->find_all(s)) {
        out.append(s, prev, b - prev);
        out += content_;
        prev = e;
      }
    } else if (!literal_.empty()) {
      for (std::size_t pos = s.find(literal_); pos != std::string::npos; pos = s.find(literal_, prev)) {
        out.append(s, prev, pos - prev);
        out += content_;
        prev = pos + literal_.size();
      }
    }
    out.append(s, prev);
    return out;
  }

 private:
  std::string literal_, content_;
  std::unique_ptr<Regex> regex_;
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(const json& j, const std::string& where) : r_(j, where) {}
  std::string apply(std::string s) const override { return r_.apply(s); }

 private:
  Replacer r_;
};

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& where) {
  const std::string type = type_of(j, where);
  if (type == "NFC")
    return std::make_unique<UnicodeNormalizer>(utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (type == "NFD")
    return std::make_unique<UnicodeNormalizer>(utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE));
  if (type == "NFKC") {
    return std::make_unique<UnicodeNormalizer>(
        utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
  }
  if (type == "NFKD") {
    return std::make_unique<UnicodeNormalizer>(
        utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT));
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(require_string(j, "prepend", where));
  if (type == "Strip") {
    return std::make_unique<StripNormalizer>(opt_bool(j, "strip_left", false, where),
                                             opt_bool(j, "strip_right", false, where));
  }
  if (type == "Replace") return std::make_unique<ReplaceNormalizer>(j, where);
  if (type == "Sequence") {
    const json& list = require(j, "normalizers", where);
    if (!list.is_array()) fail(StatusCode::kParseError, where, ".normalizers: expected an array");
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (std::size_t i = 0; i < list.size(); ++i) {
      steps.push_back(make_normalizer(list[i], str_cat(where, ".normalizers[", i, "]")));
    }
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  fail(StatusCode::kParseError, where, ".type: unsupported normalizer \"", type, "\"");
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizers: each turns a list of pieces into a finer list (empty pieces are dropped, as
// PreTokenizedString::split does).

struct PreTokenizer {
  virtual ~PreTokenizer() = default;
  virtual void apply(std::vector<std::string>* pieces) const = 0;
};

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(std::unique_ptr<Regex> regex, std::string literal, SplitBehavior behavior, bool invert)
      : regex_(std::move(regex)), literal_(std::move(literal)), behavior_(behavior), invert_(invert) {}

  void apply(std::vector<std::string>* pieces) const override {
    std::vector<std::string> out;
    for (const std::string& piece : *pieces) split_one(piece, &out);
    *pieces = std::move(out);
  }

 private:
  struct Span {
    std::size_t b, e;
    bool is_match;
  };

  // The whole piece as alternating non-match / match spans (Pattern::find_matches).
  std::vector<Span> find_matches(const std::string& s) const {
    std::vector<Span> spans;
    if (s.empty()) return {{0, 0, false}};
    std::vector<std::pair<std::size_t, std::size_t>> matches;
    if (regex_) {
      matches = regex_->find_all(s);
    } else if (!literal_.empty()) {
      for (std::size_t p = s.find(literal_); p != std::string::npos;
           p = s.find(literal_, p + literal_.size())) {
        matches.emplace_back(p, p + literal_.size());
      }
    }
    std::size_t prev = 0;
    for (const auto& [b, e] : matches) {
      if (prev != b) spans.push_back({prev, b, false});
      spans.push_back({b, e, true});
      prev = e;
    }
    if (prev != s.size()) spans.push_back({prev, s.size(), false});
    if (invert_) {
      for (Span& sp : spans) sp.is_match = !sp.is_match;
    }
    return spans;
  }

  void split_one(const std::string& s, std::vector<std::string>* out) const {
    const std::vector<Span> spans = find_matches(s);
    // (begin, end, remove) — the same folds as NormalizedString::split.
    std::vector<Span> parts;
    switch (behavior_) {
      case SplitBehavior::kIsolated:
        for (const Span& sp : spans) parts.push_back({sp.b, sp.e, false});
        break;
      case SplitBehavior::kRemoved:
        parts = spans;  // is_match doubles as "remove"
        break;
      case SplitBehavior::kContiguous: {
        bool prev_match = false;
        for (const Span& sp : spans) {
          if (sp.is_match == prev_match && !parts.empty()) {
            parts.back().e = sp.e;
          } else {
            parts.push_back({sp.b, sp.e, false});
          }
          prev_match = sp.is_match;
        }
        break;
      }
      case SplitBehavior::kMergedWithPrevious: {
        bool prev_match = false;
        for (const Span& sp : spans) {
          if (sp.is_match && !prev_match && !parts.empty()) {
            parts.back().e = sp.e;
          } else {
            parts.push_back({sp.b, sp.e, false});
          }
          prev_match = sp.is_match;
        }
        break;
      }
      case SplitBehavior::kMergedWithNext: {
        bool prev_match = false;
        for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
          if (it->is_match && !prev_match && !parts.empty()) {
            parts.back().b = it->b;
          } else {
            parts.push_back({it->b, it->e, false});
          }
          prev_match = it->is_match;
        }
        std::reverse(parts.begin(), parts.end());
        break;
      }
    }
    for (const Span& p : parts) {
      if (!p.is_match && p.e > p.b) out->push_back(s.substr(p.b, p.e - p.b));
    }
  }

  std::unique_ptr<Regex> regex_;
  std::string literal_;
  SplitBehavior behavior_;
  bool invert_;
};

// The regex GPT-2 (and ByteLevel with use_regex) splits on.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex) : add_prefix_space_(add_prefix_space) {
    if (use_regex) {
      split_ = std::make_unique<SplitPreTokenizer>(std::make_unique<Regex>(kGpt2Pattern, "ByteLevel regex"),
                                                   std::string(), SplitBehavior::kIsolated, false);
    }
  }
  void apply(std::vector<std::string>* pieces) const override {
    // Like `tokenizers`, the prefix space is added to every piece that lacks one, not only the first.
    if (add_prefix_space_) {
      for (std::string& p : *pieces) {
        if (p.empty() || p[0] != ' ') p.insert(p.begin(), ' ');
      }
    }
    if (split_) split_->apply(pieces);
    const auto& alpha = byte_level();
    for (std::string& p : *pieces) {
      std::string mapped;
      mapped.reserve(p.size() * 2);
      for (unsigned char c : p) mapped += alpha.byte_to_text[c];
      p = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::unique_ptr<SplitPreTokenizer> split_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps)
      : steps_(std::move(steps)) {}
  void apply(std::vector<std::string>* pieces) const override {
    for (const auto& s : steps_) s->apply(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

SplitBehavior parse_behavior(const std::string& s, const std::string& where) {
  if (s == "Removed") return SplitBehavior::kRemoved;
  if (s == "Isolated") return SplitBehavior::kIsolated;
  if (s == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (s == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (s == "Contiguous") return SplitBehavior::kContiguous;
  fail(StatusCode::kParseError, where, ".behavior: unknown split behavior \"", s, "\"");
}

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& where) {
  const std::string type = type_of(j, where);
  if (type == "Sequence") {
    const json& list = require(j, "pretokenizers", where);
    if (!list.is_array()) fail(StatusCode::kParseError, where, ".pretokenizers: expected an array");
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (std::size_t i = 0; i < list.size(); ++i) {
      steps.push_back(make_pre_tokenizer(list[i], str_cat(where, ".pretokenizers[", i, "]")));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "Split") {
    const json& pattern = require(j, "pattern", where);
    std::unique_ptr<Regex> regex;
    std::string literal;
    if (pattern.is_object() && pattern.contains("Regex")) {
      regex = std::make_unique<Regex>(require_string(pattern, "Regex", where + ".pattern"),
                                      where + ".pattern.Regex");
    } else if (pattern.is_object() && pattern.contains("String")) {
      literal = require_string(pattern, "String", where + ".pattern");
    } else {
      fail(StatusCode::kParseError, where, ".pattern: expected {\"Regex\": ...} or {\"String\": ...}");
    }
    return std::make_unique<SplitPreTokenizer>(std::move(regex), std::move(literal),
                                               parse_behavior(require_string(j, "behavior", where), where),
                                               opt_bool(j, "invert", false, where));
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(opt_bool(j, "add_prefix_space", true, where),
                                                   opt_bool(j, "use_regex", true, where));
  }
  if (type == "Digits") {
    // Digits splits on char::is_numeric (= \p{N}); non-individual mode merges adjacent digits.
    const bool individual = opt_bool(j, "individual_digits", false, where);
    return std::make_unique<SplitPreTokenizer>(
        std::make_unique<Regex>(individual ? R"(\p{N})" : R"(\p{N}+)", where), std::string(),
        SplitBehavior::kIsolated, false);
  }
  if (type == "Whitespace") {
    // Keeps the matches of \w+|[^\w\s]+ and drops everything else.
    return std::make_unique<SplitPreTokenizer>(std::make_unique<Regex>(R"(\w+|[^\w\s]+)", where),
                                               std::string(), SplitBehavior::kRemoved, true);
  }
  if (type == "WhitespaceSplit") {
    return std::make_unique<SplitPreTokenizer>(std::make_unique<Regex>(R"(\p{White_Space}+)", where),
                                               std::string(), SplitBehavior::kRemoved, false);
  }
  fail(StatusCode::kParseError, where, ".type: unsupported pre-tokenizer \"", type, "\"");
}

// ---------------------------------------------------------------------------------------------
// Decoders: a chain over the list of token strings, as Decoder::decode_chain.

enum class DecodeStep { kByteLevel, kByteFallback, kFuse, kStrip, kReplace };

struct DecoderStep {
  DecodeStep kind;
  std::string strip_content;
  std::size_t strip_start = 0, strip_stop = 0;
  std::shared_ptr<Replacer> replacer;
};

void parse_decoder(const json& j, const std::string& where, std::vector<DecoderStep>* steps) {
  const std::string type = type_of(j, where);
  if (type == "Sequence") {
    const json& list = require(j, "decoders", where);
    if (!list.is_array()) fail(StatusCode::kParseError, where, ".decoders: expected an array");
    for (std::size_t i = 0; i < list.size(); ++i)
      parse_decoder(list[i], str_cat(where, ".decoders[", i, "]"), steps);
  } else if (type == "ByteLevel") {
    steps->push_back({DecodeStep::kByteLevel, {}, 0, 0, nullptr});
  } else if (type == "ByteFallback") {
    steps->push_back({DecodeStep::kByteFallback, {}, 0, 0, nullptr});
  } else if (type == "Fuse") {
    steps->push_back({DecodeStep::kFuse, {}, 0, 0, nullptr});
  } else if (type == "Strip") {
    DecoderStep s{DecodeStep::kStrip, require_string(j, "content", where), 0, 0, nullptr};
    const json& start = require(j, "start", where);
    const json& stop = require(j, "stop", where);
    if (!start.is_number_unsigned() || !stop.is_number_unsigned()) {
      fail(StatusCode::kParseError, where, ".start/stop: expected non-negative integers");
    }
    s.strip_start = start.get<std::size_t>();
    s.strip_stop = stop.get<std::size_t>();
    steps->push_back(std::move(s));
  } else if (type == "Replace") {
    steps->push_back({DecodeStep::kReplace, {}, 0, 0, std::make_shared<Replacer>(j, where)});
  } else {
    fail(StatusCode::kParseError, where, ".type: unsupported decoder \"", type, "\"");
  }
}

std::string strip_token(const std::string& tok, const std::string& content, std::size_t start,
                        std::size_t stop) {
  if (content.empty()) return tok;
  std::size_t b = 0, e = tok.size();
  for (std::size_t k = 0; k < start && tok.compare(b, content.size(), content) == 0 && b < e; ++k)
    b += content.size();
  for (std::size_t k = 0;
       k < stop && e >= b + content.size() && tok.compare(e - content.size(), content.size(), content) == 0;
       ++k) {
    e -= content.size();
  }
  return tok.substr(b, e - b);
}

std::vector<std::string> run_decoder(const std::vector<DecoderStep>& steps, std::vector<std::string> tokens) {
  for (const DecoderStep& step : steps) {
    switch (step.kind) {
      case DecodeStep::kByteLevel: {
        // All tokens' bytes are joined before UTF-8 repair, so a character split across tokens survives.
        std::string bytes;
        for (const std::string& t : tokens) bytes += byte_level_decode_token(t);
        tokens.assign(1, utf8::to_valid(bytes));
        break;
      }
      case DecodeStep::kByteFallback: {
        std::vector<std::string> out;
        std::string pending;
        std::size_t pending_n = 0;
        const auto flush = [&] {
          if (pending_n == 0) return;
          if (utf8::is_valid(pending)) {
            out.push_back(pending);
          } else {
            // `tokenizers` emits one U+FFFD per byte of an invalid run (not per maximal subpart).
            std::string r;
            for (std::size_t k = 0; k < pending_n; ++k) r += utf8::kReplacement;
            out.push_back(r);
          }
          pending.clear();
          pending_n = 0;
        };
        for (const std::string& t : tokens) {
          const int b = parse_byte_token(t);
          if (b >= 0) {
            pending.push_back(static_cast<char>(b));
            ++pending_n;
          } else {
            flush();
            out.push_back(t);
          }
        }
        flush();
        tokens = std::move(out);
        break;
      }
      case DecodeStep::kFuse: {
        std::string all;
        for (const std::string& t : tokens) all += t;
        tokens.assign(1, all);
        break;
      }
      case DecodeStep::kStrip:
        for (std::string& t : tokens)
          t = strip_token(t, step.strip_content, step.strip_start, step.strip_stop);
        break;
      case DecodeStep::kReplace:
        for (std::string& t : tokens) t = step.replacer->apply(t);
        break;
    }
  }
  return tokens;
}

// ---------------------------------------------------------------------------------------------
// Added tokens

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// Leftmost-longest non-overlapping matching of a set of added tokens (aho-corasick's
// MatchKind::LeftmostLongest in `tokenizers`), plus the single_word / lstrip / rstrip rules.
class AddedTokenMatcher {
 public:
  void add(const AddedToken* t) {
    if (t->content.empty()) return;  // an empty token would match everywhere
    by_first_byte_[static_cast<unsigned char>(t->content[0])].push_back(t);
    any_ = true;
  }
  void finalize() {
    for (auto& v : by_first_byte_) {
      std::stable_sort(v.begin(), v.end(), [](const AddedToken* a, const AddedToken* b) {
        return a->content.size() > b->content.size();
      });
    }
  }
  bool empty() const { return !any_; }

  // Splits `s` into (token or null, [b, e)) pieces covering it (AddedVocabulary::find_matches).
  std::vector<std::pair<const AddedToken*, std::pair<std::size_t, std::size_t>>> split(
      std::string_view s) const {
    std::vector<std::pair<const AddedToken*, std::pair<std::size_t, std::size_t>>> out;
    std::size_t start_offset = 0;
    std::size_t i = 0;
    while (i < s.size()) {
      const AddedToken* hit = nullptr;
      for (const AddedToken* t : by_first_byte_[static_cast<unsigned char>(s[i])]) {
        if (s.compare(i, t->content.size(), t->content) == 0) {
          hit = t;
          break;
        }
      }
      if (hit == nullptr) {
        ++i;
        continue;
      }
      std::size_t start = i, stop = i + hit->content.size();
      i = stop;  // the matcher moves past a match even if the checks below discard it
      if (hit->single_word) {
        const bool start_space = start == 0 || !ends_with_word(s.substr(0, start));
        const bool stop_space = stop == s.size() || !starts_with_word(s.substr(stop));
        if (!start_space || !stop_space) continue;
      }
      if (hit->lstrip) start = std::max(space_leftmost_at_end(s.substr(0, start)), start_offset);
      if (hit->rstrip) stop += space_rightmost_at_start(s.substr(stop));
      if (start_offset < start) out.push_back({nullptr, {start_offset, start}});
      out.push_back({hit, {start, stop}});
      start_offset = stop;
      i = std::max(i, stop);
    }
    if (start_offset < s.size()) out.push_back({nullptr, {start_offset, s.size()}});
    return out;
  }

 private:
  static char32_t last_char(std::string_view s, std::size_t* begin) {
    std::size_t b = s.size() - 1;
    while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
    *begin = b;
    return utf8::decode_at(s, b, s.size() - b);
  }
  static bool is_word_char(char32_t cp) {
    // char::is_alphanumeric || '_' ; utf8proc categories approximate the Alphabetic property.
    if (cp == U'_') return true;
    const utf8proc_category_t c = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
    return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
           (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
  }
  static bool ends_with_word(std::string_view s) {
    if (s.empty()) return false;
    std::size_t b;
    return is_word_char(last_char(s, &b));
  }
  static bool starts_with_word(std::string_view s) {
    if (s.empty()) return false;
    return is_word_char(utf8::decode_at(s, 0, utf8::sequence_length(s, 0)));
  }
  static std::size_t space_leftmost_at_end(std::string_view s) {
    std::size_t e = s.size();
    while (e > 0) {
      std::size_t b;
      if (!utf8::is_whitespace(last_char(s.substr(0, e), &b))) break;
      e = b;
    }
    return e;
  }
  static std::size_t space_rightmost_at_start(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
      const std::size_t len = utf8::sequence_length(s, i);
      if (!utf8::is_whitespace(utf8::decode_at(s, i, len))) break;
      i += len;
    }
    return i;
  }

  std::array<std::vector<const AddedToken*>, 256> by_first_byte_;
  bool any_ = false;
};

// Well-known special token names, for bos_id()/eos_id() when the post-processor does not say.
constexpr std::array<const char*, 5> kBosNames = {"<｜begin▁of▁sentence｜>", "<s>", "<|begin_of_text|>",
                                                  "<bos>", "<|bos|>"};
constexpr std::array<const char*, 6> kEosNames = {"<｜end▁of▁sentence｜>", "</s>",  "<|end_of_text|>",
                                                  "<|endoftext|>",         "<eos>", "<|eos|>"};

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  std::unique_ptr<BpeModel> model;
  std::vector<std::unique_ptr<AddedToken>> added;
  StringIdMap added_by_content;
  std::unordered_map<int32_t, const AddedToken*> added_by_id;
  AddedTokenMatcher raw_matcher;         // normalized == false: matched on the input text
  AddedTokenMatcher normalized_matcher;  // normalized == true: matched after normalization
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  bool has_decoder = false;
  std::vector<DecoderStep> decoder;
  bool decoder_byte_level = false, decoder_byte_fallback = false;
  std::vector<int32_t> prefix, suffix;  // post-processor template around the sequence
  std::optional<int32_t> bos, eos;
  int32_t vocab_size = 0;

  void parse(const json& root);
  void parse_post_processor(const json& j, const std::string& where);
  int32_t special_id(const std::string& name, const json& special_tokens, const std::string& where) const;
  void encode_normalized_piece(std::string s, std::vector<int32_t>* out) const;
  std::optional<std::string> token_of(int32_t id) const {
    if (auto it = added_by_id.find(id); it != added_by_id.end()) return it->second->content;
    if (const std::string* t = model->id_to_token(id)) return *t;
    return std::nullopt;
  }
};

int32_t Tokenizer::Impl::special_id(const std::string& name, const json& special_tokens,
                                    const std::string& where) const {
  if (special_tokens.is_object() && special_tokens.contains(name)) {
    const json& ids = require(special_tokens[name], "ids", where + ".special_tokens[\"" + name + "\"]");
    if (!ids.is_array() || ids.size() != 1) {
      fail(StatusCode::kParseError, where, ".special_tokens[\"", name, "\"].ids: expected one integer id");
    }
    return token_id(ids[0], str_cat(where, ".special_tokens[\"", name, "\"].ids[0]"));
  }
  if (auto it = added_by_content.find(name); it != added_by_content.end()) return it->second;
  if (auto id = model->token_to_id(name)) return *id;
  fail(StatusCode::kParseError, where, ": special token \"", name, "\" is not defined");
}

void Tokenizer::Impl::parse_post_processor(const json& j, const std::string& where) {
  const std::string type = type_of(j, where);
  std::vector<int32_t> pre, post;
  if (type == "TemplateProcessing") {
    const json& single = require(j, "single", where);
    const json special = j.contains("special_tokens") ? j["special_tokens"] : json::object();
    bool seen_sequence = false;
    const auto add_special = [&](const std::string& name) {
      (seen_sequence ? post : pre).push_back(special_id(name, special, where));
    };
    if (single.is_array()) {
      for (std::size_t i = 0; i < single.size(); ++i) {
        const json& piece = single[i];
        const std::string pw = str_cat(where, ".single[", i, "]");
        if (piece.is_object() && piece.contains("SpecialToken")) {
          add_special(require_string(piece["SpecialToken"], "id", pw + ".SpecialToken"));
        } else if (piece.is_object() && piece.contains("Sequence")) {
          seen_sequence = true;
        } else {
          fail(StatusCode::kParseError, pw, ": expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
        }
      }
    } else if (single.is_string()) {
      // The string form "<s> $A </s>" (with optional ":type_id" suffixes).
      std::istringstream words(single.get<std::string>());
      for (std::string w; words >> w;) {
        if (w[0] == '$') {
          seen_sequence = true;
          continue;
        }
        const auto colon = w.rfind(':');
        if (colon != std::string::npos && colon + 1 < w.size() &&
            std::all_of(w.begin() + static_cast<std::ptrdiff_t>(colon) + 1, w.end(),
                        [](char c) { return c >= '0' && c <= '9'; })) {
          w.resize(colon);
        }
        add_special(w);
      }
    } else {
      fail(StatusCode::kParseError, where, ".single: expected an array or a string");
    }
    if (!seen_sequence) fail(StatusCode::kParseError, where, ".single: the template has no $A sequence");
    if (!pre.empty() && !bos) bos = pre.front();
    if (!post.empty() && !eos) eos = post.back();
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    const auto id_of = [&](const char* key) {
      const json& v = require(j, key, where);  // ["<s>", 0]
      if (!v.is_array() || v.size() != 2) fail(StatusCode::kParseError, where, ".", key, ": expected [token, id]");
      return token_id(v[1], str_cat(where, ".", key, "[1]"));
    };
    pre.push_back(id_of("cls"));
    post.push_back(id_of("sep"));
  } else if (type == "ByteLevel") {
    // Only adjusts offsets, which dsv4 does not report.
  } else if (type == "Sequence") {
    const json& list = require(j, "processors", where);
    if (!list.is_array()) fail(StatusCode::kParseError, where, ".processors: expected an array");
    for (std::size_t i = 0; i < list.size(); ++i)
      parse_post_processor(list[i], str_cat(where, ".processors[", i, "]"));
    return;
  } else {
    fail(StatusCode::kParseError, where, ".type: unsupported post-processor \"", type, "\"");
  }
  // Later processors wrap the output of earlier ones.
  prefix.insert(prefix.begin(), pre.begin(), pre.end());
  suffix.insert(suffix.end(), post.begin(), post.end());
}

void Tokenizer::Impl::parse(const json& root) {
  if (!root.is_object())
    fail(StatusCode::kParseError, "tokenizer.json: expected a JSON object at the top level");
  if (!root.contains("model") || root["model"].is_null()) fail(StatusCode::kParseError, "model: missing");
  model = std::make_unique<BpeModel>(root["model"]);
  vocab_size = model->max_id() + 1;

  if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
    const json& list = root["added_tokens"];
    if (!list.is_array()) fail(StatusCode::kParseError, "added_tokens: expected an array");
    for (std::size_t i = 0; i < list.size(); ++i) {
      const std::string where = str_cat("added_tokens[", i, "]");
      const json& t = list[i];
      auto tok = std::make_unique<AddedToken>();
      const json& id = require(t, "id", where);
      tok->id = token_id(id, where + ".id");
      tok->content = require_string(t, "content", where);
      tok->special = opt_bool(t, "special", false, where);
      tok->single_word = opt_bool(t, "single_word", false, where);
      tok->lstrip = opt_bool(t, "lstrip", false, where);
      tok->rstrip = opt_bool(t, "rstrip", false, where);
      // `tokenizers` defaults `normalized` to !special.
      tok->normalized = opt_bool(t, "normalized", !tok->special, where);
      added_by_content[tok->content] = tok->id;
      added_by_id[tok->id] = tok.get();
      vocab_size = std::max(vocab_size, tok->id + 1);
      added.push_back(std::move(tok));
    }
  }

  if (root.contains("normalizer") && !root["normalizer"].is_null()) {
    normalizer = make_normalizer(root["normalizer"], "normalizer");
  }
  if (root.contains("pre_tokenizer") && !root["pre_tokenizer"].is_null()) {
    pre_tokenizer = make_pre_tokenizer(root["pre_tokenizer"], "pre_tokenizer");
  }
  // Two passes as in `tokenizers`: non-normalized tokens (specials by default) on the raw text first,
  // then normalized ones on the normalized remainder. The order matters when tokens overlap.
  for (const auto& t : added) (t->normalized ? normalized_matcher : raw_matcher).add(t.get());
  raw_matcher.finalize();
  normalized_matcher.finalize();

  if (root.contains("decoder") && !root["decoder"].is_null()) {
    has_decoder = true;
    parse_decoder(root["decoder"], "decoder", &decoder);
    for (const DecoderStep& s : decoder) {
      decoder_byte_level |= s.kind == DecodeStep::kByteLevel;
      decoder_byte_fallback |= s.kind == DecodeStep::kByteFallback;
    }
  }
  if (root.contains("post_processor") && !root["post_processor"].is_null()) {
    parse_post_processor(root["post_processor"], "post_processor");
  }
  const auto find_named = [&](const auto& names) -> std::optional<int32_t> {
    for (const char* n : names) {
      if (auto it = added_by_content.find(std::string_view(n)); it != added_by_content.end())
        return it->second;
    }
    return std::nullopt;
  };
  if (!bos) bos = find_named(kBosNames);
  if (!eos) eos = find_named(kEosNames);
}

void Tokenizer::Impl::encode_normalized_piece(std::string s, std::vector<int32_t>* out) const {
  std::vector<std::string> pieces;
  pieces.push_back(std::move(s));
  if (pre_tokenizer) pre_tokenizer->apply(&pieces);
  for (const std::string& p : pieces) model->tokenize(p, out);
}

// ---------------------------------------------------------------------------------------------

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json(std::string_view json_text) {
  const json root = parse_json(json_text, "tokenizer.json");
  auto impl = std::make_unique<Impl>();
  try {
    impl->parse(root);
  } catch (const json::exception& e) {
    // A value of an unexpected JSON type deep inside a field we did not check by hand.
    fail(StatusCode::kParseError, "tokenizer.json: ", e.what());
  }
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_file(const std::string& path) {
  const std::string text = read_text_file(path, "tokenizer file", kMaxTokenizerBytes);
  try {
    return from_json(text);
  } catch (const Error& e) {
    throw Error(e.code(), str_cat(path, ": ", e.what()));
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special) const {
  const Impl& m = *impl_;
  std::vector<int32_t> ids;
  if (add_special) ids = m.prefix;
  const std::string valid = utf8::to_valid(text);
  const auto encode_raw_piece = [&](std::string_view piece) {
    std::string normalized = m.normalizer ? m.normalizer->apply(std::string(piece)) : std::string(piece);
    if (m.normalized_matcher.empty()) {
      m.encode_normalized_piece(std::move(normalized), &ids);
      return;
    }
    for (const auto& [tok, span] : m.normalized_matcher.split(normalized)) {
      if (tok) {
        ids.push_back(tok->id);
      } else {
        m.encode_normalized_piece(normalized.substr(span.first, span.second - span.first), &ids);
      }
    }
  };
  if (m.raw_matcher.empty()) {
    encode_raw_piece(valid);
  } else {
    for (const auto& [tok, span] : m.raw_matcher.split(valid)) {
      if (tok) {
        ids.push_back(tok->id);
      } else {
        encode_raw_piece(std::string_view(valid).substr(span.first, span.second - span.first));
      }
    }
  }
  if (add_special) ids.insert(ids.end(), m.suffix.begin(), m.suffix.end());
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& m = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (skip_special && is_special(id)) continue;
    if (auto t = m.token_of(id)) tokens.push_back(std::move(*t));
  }
  std::string out;
  if (!m.has_decoder) {
    // No decoder: `tokenizers` joins the tokens with spaces.
    for (std::size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  for (const std::string& t : run_decoder(m.decoder, std::move(tokens))) out += t;
  return out;
}

std::string Tokenizer::token_bytes(int32_t id) const {
  const Impl& m = *impl_;
  auto tok = m.token_of(id);
  if (!tok) return {};
  if (m.decoder_byte_fallback) {
    const int b = parse_byte_token(*tok);
    if (b >= 0) return std::string(1, static_cast<char>(b));
  }
  std::vector<std::string> one{m.decoder_byte_level ? byte_level_decode_token(*tok) : *tok};
  // The per-token steps (Strip, Replace) still apply; ByteLevel/ByteFallback/Fuse were handled above.
  for (const DecoderStep& s : m.decoder) {
    if (s.kind == DecodeStep::kStrip)
      one[0] = strip_token(one[0], s.strip_content, s.strip_start, s.strip_stop);
    if (s.kind == DecodeStep::kReplace) one[0] = s.replacer->apply(one[0]);
  }
  return one[0];
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(token); it != impl_->added_by_content.end()) return it->second;
  return impl_->model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const { return impl_->token_of(id); }

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

bool Tokenizer::is_special(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && it->second->special;
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }

// ---------------------------------------------------------------------------------------------

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : tokenizer_(&tokenizer), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  if (skip_special_ && tokenizer_->is_special(id)) return {};
  if (!tokenizer_->impl_->token_of(id)) return {};
  if (!tokenizer_->impl_->has_decoder && !first_) pending_ += ' ';
  first_ = false;
  pending_ += tokenizer_->token_bytes(id);
  std::size_t tail = 0;
  std::string out = utf8::to_valid(pending_, &tail);
  pending_.erase(0, pending_.size() - tail);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = utf8::to_valid(pending_);
  pending_.clear();
  first_ = true;
  return out;
}

}  // namespace dsv4
