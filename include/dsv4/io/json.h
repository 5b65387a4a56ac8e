// JSON parsing for untrusted text (config.json, model.safetensors.index.json, tokenizer.json, safetensors
// headers, and request bodies of a future HTTP layer): nlohmann::json with a nesting-depth limit, so that
// a deeply nested document is an error instead of a stack overflow in whatever walks it recursively, and
// with every parser error (syntax, a number out of range such as 1e999, bad UTF-8) reported as one
// kParseError that names the origin.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace dsv4 {

// Deeper than any checkpoint file (config.json ~3, tokenizer.json ~6) or sensible request, shallow enough for
// recursive walkers (dump, copies, the tokenizer's normalizer/pre-tokenizer trees) to stay far from the stack
// limit.
inline constexpr int kMaxJsonDepth = 64;

// Parses `text`; throws dsv4::Error (kParseError) "<origin>: invalid JSON: ..." on malformed input or
// "<origin>: JSON nested deeper than <max_depth> levels".
nlohmann::json parse_json(std::string_view text, const std::string& origin, int max_depth = kMaxJsonDepth);

// The deepest nesting of arrays/objects in `text` (a scalar is 0, [] is 1); stops counting at `stop_at`.
// Does not validate the document (a SAX pass without building anything).
int json_depth(std::string_view text, int stop_at);

}  // namespace dsv4
