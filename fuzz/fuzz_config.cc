// Fuzzes config.json parsing and validation (ModelConfig::from_json_text), then the serialisation of what
// was accepted: to_json() must parse back to a config that validates.
#include <cstddef>
#include <cstdint>
#include <string>

#include "dsv4/core/status.h"
#include "dsv4/io/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  dsv4::ModelConfig cfg;
  try {
    cfg = dsv4::ModelConfig::from_json_text(text, "fuzz config.json");
  } catch (const dsv4::Error&) {
    return 0;
  }
  // Accepted: the round trip must be accepted too (an exception here is a bug and aborts).
  const dsv4::ModelConfig again = dsv4::ModelConfig::from_json_text(cfg.to_json(), "round trip");
  if (again.num_hidden_layers != cfg.num_hidden_layers || again.layer_types != cfg.layer_types) __builtin_trap();
  return 0;
}
