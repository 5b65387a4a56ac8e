// Fuzzes the safetensors header and tensor table: length prefix, JSON, dtypes, shapes, offsets, overlaps,
// gaps. The input is a whole file image. Only dsv4::Error may come out; anything else (a crash, a sanitizer
// report, another exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "dsv4/core/status.h"
#include "dsv4/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<dsv4::TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  try {
    dsv4::parse_safetensors_header(reinterpret_cast<const char*>(data), size, "fuzz.safetensors", &tensors, &metadata);
    // A header that validates describes tensors inside the data: touch their first and last bytes.
    volatile uint8_t sink = 0;
    for (const dsv4::TensorInfo& t : tensors) {
      if (t.nbytes == 0) continue;
      sink = sink ^ data[t.offset] ^ data[t.offset + t.nbytes - 1];
      (void)t.numel();
    }
  } catch (const dsv4::Error&) {
  }
  return 0;
}
