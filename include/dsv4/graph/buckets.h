// Capture sizes ("buckets"): the padded token counts for which graphs are captured.
//
// Default: 1, 2, 4, 8, then every 8 up to 256 (vLLM's list). A batch of n tokens is padded to the smallest
// capture size >= n and runs eagerly above the largest. With speculative decoding (K draft tokens per
// request), a uniform-decode batch of r requests has r * (1 + K) tokens, so every size is rounded up to a
// multiple of 1 + K: otherwise a decode batch would always pad to the next, larger size.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

namespace dsv4::graph {

struct CaptureSizeOptions {
  std::vector<int> sizes;          // explicit list (any order, duplicates allowed); empty = default list
  int max_size = -1;               // largest size of the default list (-1 = 256; 0 = capture nothing)
  int num_speculative_tokens = 0;  // K; sizes are rounded up to multiples of 1 + K
};

class CaptureSizes {
 public:
  static constexpr int kDefaultMaxSize = 256;
  static constexpr int kLimit = 1 << 16;  // sanity bound on one size (tokens)

  CaptureSizes() = default;
  // Validates and normalises (sorted, deduplicated). Throws Error(kInvalidArgument) for a size < 1 or above
  // kLimit, a negative K, or an explicit list together with max_size.
  explicit CaptureSizes(const CaptureSizeOptions& options);

  // 1, 2, 4, 8, 16, 24, ... <= max_size.
  static std::vector<int> default_sizes(int max_size = kDefaultMaxSize);

  const std::vector<int>& sizes() const { return sizes_; }
  bool empty() const { return sizes_.empty(); }
  int max_size() const { return sizes_.empty() ? 0 : sizes_.back(); }
  // Smallest capture size >= n, or nullopt when n is above the largest (the batch runs eagerly).
  std::optional<int> pad_to_bucket(int n) const;

 private:
  std::vector<int> sizes_;
};

// Parses a comma-separated list ("1,2,4,8") as given to a CLI flag; throws Error(kInvalidArgument) on junk.
std::vector<int> parse_capture_sizes(std::string_view text);

}  // namespace dsv4::graph
