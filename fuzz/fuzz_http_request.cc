// Fuzzes what an HTTP client controls before any engine work: the request body (JSON with the server's depth
// limit), the OpenAI field parsing of /v1/chat/completions and /v1/completions, and the chat encoders (DeepSeek-V4
// and the plain fallback) on every accepted message list. Byte 0 picks the endpoint; only the errors the server
// turns into a 4xx (server::ApiError, dsv4::Error) may escape, anything else (or a crash) is a finding.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "dsv4/core/status.h"
#include "dsv4/server/api.h"
#include "dsv4/server/chat_template.h"

namespace srv = dsv4::server;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool chat = (data[0] & 1) == 0;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    const nlohmann::ordered_json j = srv::parse_json_body(body);
    if (!chat) {
      const srv::CompletionRequest r = srv::parse_completion_request(j);
      // Accepted: exactly one non-empty prompt form.
      const bool ok = r.token_prompt ? !r.prompt_ids.empty() && r.prompt.empty() : !r.prompt.empty() && r.prompt_ids.empty();
      if (!ok) __builtin_trap();
      return 0;
    }
    const srv::ChatRequest r = srv::parse_chat_request(j);
    const std::string a = srv::encode_chat_dsv4(r.messages, r.encode);
    const std::string b = srv::encode_chat_plain(r.messages, r.encode);
    if (a.empty() && !r.messages.empty()) __builtin_trap();  // every message renders at least its role token
    (void)b;
  } catch (const srv::ApiError&) {
  } catch (const dsv4::Error&) {
  }
  return 0;
}
