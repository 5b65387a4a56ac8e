// UTF-8 helpers for the tokenizer: lossy validation with the same replacement rule as Rust's
// String::from_utf8_lossy and Python's errors="replace" (one U+FFFD per maximal invalid subpart), so
// invalid input and partial byte-level decodes produce the text the `tokenizers` package produces.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dsv4::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 sequence starting at s[i]; 0 if the bytes there are not a complete valid
// sequence. When `incomplete` is given it is set to true if the bytes are a valid but truncated
// prefix that runs into the end of `s` (more bytes could still complete it).
std::size_t sequence_length(std::string_view s, std::size_t i, bool* incomplete = nullptr);

// Converts `s` to valid UTF-8, replacing each maximal invalid subpart with U+FFFD.
// If `keep_incomplete_tail` is non-null, a trailing valid-but-truncated sequence is not replaced:
// its length is stored there and it is left out of the result (the streaming decoder keeps it).
std::string to_valid(std::string_view s, std::size_t* keep_incomplete_tail = nullptr);

bool is_valid(std::string_view s);

// Decodes the code point of a valid sequence of length `len` at s[i].
char32_t decode_at(std::string_view s, std::size_t i, std::size_t len);

void append(std::string* out, char32_t cp);

// Unicode White_Space property (what Rust's char::is_whitespace tests).
bool is_whitespace(char32_t cp);

}  // namespace dsv4::utf8
