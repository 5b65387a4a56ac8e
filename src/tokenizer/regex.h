// A compiled PCRE2 pattern (UTF + UCP, JIT when available) for the tokenizer's pre-tokenizers.
// HF tokenizers compiles its patterns with Oniguruma; the constructs their tokenizer.json files use
// (\p{..} classes, look-ahead, possessive-free alternations) mean the same in PCRE2 with UCP. The one
// syntax difference seen in practice, Oniguruma's \uHHHH escape, is translated to \x{HHHH}.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dsv4 {

class Regex {
 public:
  // Throws dsv4::Error(kParseError) naming `where` (the tokenizer.json field) on a bad pattern.
  Regex(std::string_view pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping matches, left to right, as byte offsets [begin, end) into `subject`, which must
  // be valid UTF-8. After an empty match the search resumes one character later.
  std::vector<std::pair<std::size_t, std::size_t>> find_all(std::string_view subject) const;

  // Whether the pattern matches at the very start of `subject` (anchored).
  bool matches_prefix(std::string_view subject) const;

 private:
  void* code_ = nullptr;  // pcre2_code_8*, kept opaque so pcre2.h stays out of other files
};

// Oniguruma → PCRE2 syntax: \uHHHH → \x{HHHH} (only where the backslash is not itself escaped).
std::string translate_onig_pattern(std::string_view pattern);

}  // namespace dsv4
