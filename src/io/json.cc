#include "dsv4/io/json.h"

#include "dsv4/core/status.h"

namespace dsv4 {
namespace {

using json = nlohmann::json;

// Counts nesting without building values; stops (returns false) once `stop_at` is exceeded. Syntax errors
// end the pass quietly: the parse that follows reports them.
struct DepthCounter : json::json_sax_t {
  int depth = 0, deepest = 0, stop_at = 0;
  bool open() {
    deepest = std::max(deepest, ++depth);
    return depth <= stop_at;
  }
  bool close() {
    --depth;
    return true;
  }
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return open(); }
  bool key(string_t&) override { return true; }
  bool end_object() override { return close(); }
  bool start_array(std::size_t) override { return open(); }
  bool end_array() override { return close(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }
};

}  // namespace

int json_depth(std::string_view text, int stop_at) {
  DepthCounter counter;
  counter.stop_at = stop_at;
  json::sax_parse(text.begin(), text.end(), &counter, json::input_format_t::json, /*strict=*/false);
  return counter.deepest;
}

json parse_json(std::string_view text, const std::string& origin, int max_depth) {
  // The depth pass first: nothing deep is ever built (building and destroying a deep value is recursive in
  // places).
  if (json_depth(text, max_depth) > max_depth) {
    fail(StatusCode::kParseError, origin, ": JSON nested deeper than ", max_depth, " levels");
  }
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    fail(StatusCode::kParseError, origin, ": invalid JSON: ", e.what());
  }
}

}  // namespace dsv4
