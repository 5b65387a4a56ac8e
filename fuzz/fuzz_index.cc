// Fuzzes model.safetensors.index.json: the input is written as the index of a checkpoint directory holding
// two small valid shards (a.safetensors: "x", "y"; b.safetensors: "z"), then Checkpoint::open reads it.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dsv4/core/buffer.h"
#include "dsv4/core/status.h"
#include "dsv4/io/safetensors.h"

namespace {

std::string make_dir() {
  std::string templ = (std::filesystem::temp_directory_path() / "dsv4_fuzz_index_XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) std::abort();
  dsv4::HostTensor x(dsv4::DType::F32, {2, 3}), y(dsv4::DType::BF16, {4}), z(dsv4::DType::I64, {2});
  dsv4::save_safetensors(templ + "/a.safetensors", {{"x", x.t()}, {"y", y.t()}});
  dsv4::save_safetensors(templ + "/b.safetensors", {{"z", z.t()}});
  return templ;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string dir = make_dir();
  {
    std::ofstream out(dir + "/model.safetensors.index.json", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    const dsv4::Checkpoint c = dsv4::Checkpoint::open(dir);
    for (const std::string& name : c.names()) (void)c.view(name);
    (void)c.total_bytes();
  } catch (const dsv4::Error&) {
  }
  return 0;
}
