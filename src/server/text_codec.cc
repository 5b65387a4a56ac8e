#include "dsv4/server/text_codec.h"

#include <filesystem>

#include "dsv4/core/status.h"

namespace dsv4::server {
namespace {

// Length of the UTF-8 sequence a lead byte starts (0 for a byte that cannot start one).
int utf8_length(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return 2;
  if (c >= 0xE0 && c <= 0xEF) return 3;
  if (c >= 0xF0 && c <= 0xF4) return 4;
  return 0;
}

// Whether s[i..i+n) is a valid n-byte sequence (overlongs, surrogates and > U+10FFFF rejected).
bool valid_sequence(std::string_view s, size_t i, int n) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  for (int k = 1; k < n; ++k) {
    if ((b(k) & 0xC0) != 0x80) return false;
  }
  if (n == 3 && b(0) == 0xE0 && b(1) < 0xA0) return false;
  if (n == 3 && b(0) == 0xED && b(1) > 0x9F) return false;
  if (n == 4 && b(0) == 0xF0 && b(1) < 0x90) return false;
  if (n == 4 && b(0) == 0xF4 && b(1) > 0x8F) return false;
  return true;
}

}  // namespace

size_t complete_utf8_prefix(std::string_view s) {
  // Walk back over at most 3 continuation bytes to the last lead byte; cut there if its sequence is unfinished.
  size_t i = s.size();
  for (int back = 0; back < 4 && i > 0; ++back) {
    --i;
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if ((c & 0xC0) == 0x80) continue;
    const int n = utf8_length(c);
    return (n > 0 && i + static_cast<size_t>(n) > s.size()) ? i : s.size();
  }
  return s.size();
}

std::string repair_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const int n = utf8_length(static_cast<unsigned char>(s[i]));
    if (n > 0 && i + static_cast<size_t>(n) <= s.size() && valid_sequence(s, i, n)) {
      out.append(s.substr(i, static_cast<size_t>(n)));
      i += static_cast<size_t>(n);
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

TextCodec TextCodec::from_model_dir(const std::string& dir) {
  const std::filesystem::path path = std::filesystem::path(dir) / "tokenizer.json";
  if (!std::filesystem::exists(path)) return TextCodec();
  return TextCodec(std::make_shared<const Tokenizer>(Tokenizer::from_file(path.string())));
}

std::vector<int32_t> TextCodec::encode(std::string_view text) const {
  if (tok_) return tok_->encode(text, /*add_special=*/false);
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (unsigned char c : text) ids.push_back(c);
  return ids;
}

std::string TextCodec::decode(std::span<const int32_t> ids) const {
  if (tok_) return tok_->decode(ids, /*skip_special=*/false);
  std::string bytes;
  for (int32_t id : ids) bytes += token_bytes(id);
  return repair_utf8(bytes);
}

std::string TextCodec::token_bytes(int32_t id) const {
  if (tok_) return tok_->token_bytes(id);
  if (id < 0) return std::string();
  if (id < 256) return std::string(1, static_cast<char>(id));
  std::string text(1, '<');
  text += std::to_string(id);
  text += '>';
  return text;
}

std::optional<int32_t> TextCodec::token_id(std::string_view token) const {
  if (tok_) return tok_->token_to_id(token);
  return std::nullopt;
}

std::optional<int32_t> TextCodec::bos_id() const { return tok_ ? tok_->bos_id() : std::nullopt; }

TextCodec::Stream::Stream(const TextCodec& codec) : codec_(&codec) {
  if (codec.tok_) dec_ = std::make_unique<StreamDecoder>(*codec.tok_, /*skip_special=*/false);
}

std::string TextCodec::Stream::push(int32_t id) {
  if (dec_) return dec_->push(id);
  pending_ += codec_->token_bytes(id);
  const size_t n = complete_utf8_prefix(pending_);
  std::string out = repair_utf8(std::string_view(pending_).substr(0, n));
  pending_.erase(0, n);
  return out;
}

std::string TextCodec::Stream::flush() {
  if (dec_) return dec_->flush();
  std::string out = repair_utf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace dsv4::server
