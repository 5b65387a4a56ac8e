#include "tokenizer/regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>
#include <memory>

#include "dsv4/core/status.h"

namespace dsv4 {

namespace {

pcre2_code* as_code(void* p) { return static_cast<pcre2_code*>(p); }

struct MatchDataDeleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

}  // namespace

std::string translate_onig_pattern(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size());
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c != '\\' || i + 1 >= pattern.size()) {
      out.push_back(c);
      continue;
    }
    // An escape: copy it whole so that "\\u" (escaped backslash, then 'u') is left alone.
    const char n = pattern[i + 1];
    if (n == 'u' && i + 6 <= pattern.size() && std::isxdigit(static_cast<unsigned char>(pattern[i + 2])) &&
        std::isxdigit(static_cast<unsigned char>(pattern[i + 3])) &&
        std::isxdigit(static_cast<unsigned char>(pattern[i + 4])) &&
        std::isxdigit(static_cast<unsigned char>(pattern[i + 5]))) {
      out.append("\\x{").append(pattern.substr(i + 2, 4)).append("}");
      i += 5;
      continue;
    }
    out.push_back(c);
    out.push_back(n);
    ++i;
  }
  return out;
}

Regex::Regex(std::string_view pattern, const std::string& where) {
  const std::string translated = translate_onig_pattern(pattern);
  int err = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                                   PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof(msg));
    fail(StatusCode::kParseError, where, ": invalid regex at offset ", offset, ": ",
         reinterpret_cast<const char*>(msg));
  }
  // JIT is an optimisation only: the interpreter gives the same matches if it is unavailable.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(as_code(code_)); }

std::vector<std::pair<std::size_t, std::size_t>> Regex::find_all(std::string_view subject) const {
  std::vector<std::pair<std::size_t, std::size_t>> out;
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(
      pcre2_match_data_create_from_pattern(as_code(code_), nullptr));
  const auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
  std::size_t start = 0;
  while (start <= subject.size()) {
    // The subject was validated (or repaired) once before pre-tokenization: skip per-call checks.
    const int rc =
        pcre2_match(as_code(code_), s, subject.size(), start, PCRE2_NO_UTF_CHECK, md.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(rc, msg, sizeof(msg));
      fail(StatusCode::kInternal, "regex match failed: ", reinterpret_cast<const char*>(msg));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
    const std::size_t b = ov[0], e = ov[1];
    out.emplace_back(b, e);
    if (e > b) {
      start = e;
    } else {
      // Empty match: step over one whole UTF-8 character.
      if (e >= subject.size()) break;
      std::size_t next = e + 1;
      while (next < subject.size() && (static_cast<unsigned char>(subject[next]) & 0xC0) == 0x80) ++next;
      start = next;
    }
  }
  return out;
}

bool Regex::matches_prefix(std::string_view subject) const {
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(
      pcre2_match_data_create_from_pattern(as_code(code_), nullptr));
  const int rc = pcre2_match(as_code(code_), reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), 0,
                             PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, md.get(), nullptr);
  return rc >= 0;
}

}  // namespace dsv4
