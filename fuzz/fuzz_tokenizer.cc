// Fuzzes tokenizer.json loading and encode/decode. Input byte 0 selects the mode:
//   even: the rest is a tokenizer.json; when it loads, a fixed text is encoded and decoded with it;
//   odd:  the rest is text, encoded (with and without special tokens) and decoded (whole and streaming) by
//         the DeepSeek-style fixture tokenizer; the ids are also decoded as raw bytes of the input.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dsv4/core/status.h"
#include "dsv4/tokenizer/tokenizer.h"

namespace {

const dsv4::Tokenizer& fixture() {
  static const dsv4::Tokenizer tok =
      dsv4::Tokenizer::from_file(DSV4_SOURCE_DIR "/tests/fixtures/tokenizer/deepseek_style.tokenizer.json");
  return tok;
}

void round_trip(const dsv4::Tokenizer& tok, std::string_view text) {
  const std::vector<int32_t> ids = tok.encode(text, /*add_special=*/true);
  (void)tok.decode(ids);
  (void)tok.decode(tok.encode(text), /*skip_special=*/true);
  dsv4::StreamDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) streamed += stream.push(id);
  streamed += stream.flush();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    try {
      const dsv4::Tokenizer tok = dsv4::Tokenizer::from_json(rest);
      round_trip(tok, "Hello, world! 12345 \xe4\xbd\xa0\xe5\xa5\xbd  <｜begin▁of▁sentence｜>x\n\n\ty");
    } catch (const dsv4::Error&) {
    }
    return 0;
  }
  const dsv4::Tokenizer& tok = fixture();
  round_trip(tok, rest);
  // Arbitrary ids (out of range ones included) must decode or fail cleanly.
  std::vector<int32_t> ids;
  for (size_t i = 0; i + 4 <= rest.size() && ids.size() < 64; i += 4) {
    int32_t v = 0;
    for (int k = 0; k < 4; ++k)
      v = static_cast<int32_t>((static_cast<uint32_t>(v) << 8) | static_cast<uint8_t>(rest[i + k]));
    ids.push_back(v);
  }
  try {
    (void)tok.decode(ids);
  } catch (const dsv4::Error&) {
  }
  return 0;
}
