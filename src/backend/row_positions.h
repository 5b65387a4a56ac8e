// The positions that mask the MTP draft layer's embedding rows (position 0: the row is normalised as zeros),
// as the raw-pointer kernels of both backends take them.
#pragma once

#include <cstdint>

namespace dsv4 {

// The engine's positions are int32 like every other op's; the C API's are int64 (torch callers) and are
// passed through as they are, so that its edge needs no device copy (which would cost a launch at every
// call and break the promise that its calls can be captured into graphs).
struct RowPositions {
  const void* data = nullptr;
  bool int64 = false;  // false: int32
  bool masked(int64_t row) const {
    return int64 ? static_cast<const int64_t*>(data)[row] == 0 : static_cast<const int32_t*>(data)[row] == 0;
  }
};

}  // namespace dsv4
