#include "tokenizer/utf8.h"

namespace dsv4::utf8 {

namespace {

bool is_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

}  // namespace

std::size_t sequence_length(std::string_view s, std::size_t i, bool* incomplete) {
  if (incomplete) *incomplete = false;
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  // Allowed range of the second byte (Unicode Table 3-7, well-formed byte sequences); later bytes
  // are plain continuation bytes.
  std::size_t len = 0;
  unsigned char lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 == 0xE0) {
    len = 3, lo = 0xA0;
  } else if ((b0 >= 0xE1 && b0 <= 0xEC) || b0 == 0xEE || b0 == 0xEF) {
    len = 3;
  } else if (b0 == 0xED) {
    len = 3, hi = 0x9F;  // excludes UTF-16 surrogates
  } else if (b0 == 0xF0) {
    len = 4, lo = 0x90;
  } else if (b0 >= 0xF1 && b0 <= 0xF3) {
    len = 4;
  } else if (b0 == 0xF4) {
    len = 4, hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  for (std::size_t k = 1; k < len; ++k) {
    if (i + k >= s.size()) {
      if (incomplete) *incomplete = true;
      return 0;
    }
    const auto b = static_cast<unsigned char>(s[i + k]);
    const bool ok = k == 1 ? (b >= lo && b <= hi) : is_cont(b);
    if (!ok) return 0;
  }
  return len;
}

std::string to_valid(std::string_view s, std::size_t* keep_incomplete_tail) {
  std::string out;
  out.reserve(s.size());
  if (keep_incomplete_tail) *keep_incomplete_tail = 0;
  std::size_t i = 0;
  while (i < s.size()) {
    bool incomplete = false;
    const std::size_t len = sequence_length(s, i, &incomplete);
    if (len > 0) {
      out.append(s.substr(i, len));
      i += len;
      continue;
    }
    if (incomplete && keep_incomplete_tail) {
      *keep_incomplete_tail = s.size() - i;
      return out;
    }
    // The maximal subpart is the lead byte plus the continuation bytes that were still acceptable:
    // skip exactly those, then resume at the first byte that broke the sequence.
    std::size_t skip = 1;
    const auto b0 = static_cast<unsigned char>(s[i]);
    if (b0 >= 0xC2 && b0 <= 0xF4) {
      const unsigned char lo = b0 == 0xE0 ? 0xA0 : b0 == 0xF0 ? 0x90 : 0x80;
      const unsigned char hi = b0 == 0xED ? 0x9F : b0 == 0xF4 ? 0x8F : 0xBF;
      const std::size_t need = b0 < 0xE0 ? 2 : b0 < 0xF0 ? 3 : 4;
      while (skip < need && i + skip < s.size()) {
        const auto b = static_cast<unsigned char>(s[i + skip]);
        const bool ok = skip == 1 ? (b >= lo && b <= hi) : is_cont(b);
        if (!ok) break;
        ++skip;
      }
    }
    out.append(kReplacement);
    i += skip;
  }
  return out;
}

bool is_valid(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const std::size_t len = sequence_length(s, i);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

char32_t decode_at(std::string_view s, std::size_t i, std::size_t len) {
  const auto b = [&](std::size_t k) { return static_cast<char32_t>(static_cast<unsigned char>(s[i + k])); };
  switch (len) {
    case 1:
      return b(0);
    case 2:
      return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3:
      return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default:
      return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

void append(std::string* out, char32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

bool is_whitespace(char32_t cp) {
  // The White_Space property list (PropList.txt); it has been stable since Unicode 6.3.
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

}  // namespace dsv4::utf8
