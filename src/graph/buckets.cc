#include "dsv4/graph/buckets.h"

#include <algorithm>
#include <charconv>
#include <string>

#include "dsv4/core/status.h"

namespace dsv4::graph {

std::vector<int> CaptureSizes::default_sizes(int max_size) {
  std::vector<int> sizes;
  for (int s : {1, 2, 4}) {
    if (s <= max_size) sizes.push_back(s);
  }
  for (int s = 8; s <= max_size; s += 8) sizes.push_back(s);
  return sizes;
}

CaptureSizes::CaptureSizes(const CaptureSizeOptions& options) {
  DSV4_CHECK_ARG(options.num_speculative_tokens >= 0, "number of speculative tokens must be >= 0, got ",
                 options.num_speculative_tokens);
  DSV4_CHECK_ARG(options.sizes.empty() || options.max_size < 0,
                 "give either an explicit list of capture sizes or a maximum capture size, not both");
  DSV4_CHECK_ARG(options.max_size <= kLimit, "maximum capture size ", options.max_size, " is above ", kLimit);
  std::vector<int> sizes = options.sizes.empty()
                               ? default_sizes(options.max_size < 0 ? kDefaultMaxSize : options.max_size)
                               : options.sizes;
  for (int s : sizes) {
    DSV4_CHECK_ARG(s >= 1 && s <= kLimit, "capture size ", s, " is outside [1, ", kLimit, "]");
  }
  const int step = 1 + options.num_speculative_tokens;
  for (int& s : sizes) s = (s + step - 1) / step * step;
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  sizes_ = std::move(sizes);
}

std::optional<int> CaptureSizes::pad_to_bucket(int n) const {
  DSV4_CHECK_ARG(n >= 0, "token count must be >= 0, got ", n);
  const auto it = std::lower_bound(sizes_.begin(), sizes_.end(), n);
  if (it == sizes_.end()) return std::nullopt;
  return *it;
}

std::vector<int> parse_capture_sizes(std::string_view text) {
  std::vector<int> sizes;
  size_t begin = 0;
  while (begin <= text.size()) {
    const size_t end = std::min(text.find(',', begin), text.size());
    const std::string_view item = text.substr(begin, end - begin);
    int value = 0;
    const auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), value);
    DSV4_CHECK_ARG(!item.empty() && ec == std::errc() && ptr == item.data() + item.size(), "capture sizes '",
                   text, "': '", item, "' is not an integer (expected e.g. 1,2,4,8)");
    sizes.push_back(value);
    begin = end + 1;
  }
  return sizes;
}

}  // namespace dsv4::graph
