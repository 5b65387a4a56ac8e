// Text <-> token ids for the server: the model's tokenizer.json, or byte-level ids (each UTF-8 byte b is token
// id b) for a model without one, as the CLI does. Byte-level ids past 255 (a synthetic model's vocabulary is the real
// model's, e.g. Flash's 129,280) have no byte: they decode to the text "<id>", so that every generated token shows in
// the output and streams as text, as it would with a tokenizer (a load test's clients time tokens by their text).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dsv4/tokenizer/tokenizer.h"

namespace dsv4::server {

class TextCodec {
 public:
  // Byte-level ids.
  TextCodec() = default;
  explicit TextCodec(std::shared_ptr<const Tokenizer> tokenizer) : tok_(std::move(tokenizer)) {}
  // The directory's tokenizer.json if present, else byte-level.
  static TextCodec from_model_dir(const std::string& dir);

  bool byte_level() const { return tok_ == nullptr; }
  const Tokenizer* tokenizer() const { return tok_.get(); }
  // Ids of `text`, special tokens written in the text recognised, no BOS added.
  std::vector<int32_t> encode(std::string_view text) const;
  // Text of `ids` (special tokens included), invalid UTF-8 repaired to U+FFFD.
  std::string decode(std::span<const int32_t> ids) const;
  // Raw bytes of one token (possibly a partial UTF-8 sequence); byte-level ids past 255: "<id>".
  std::string token_bytes(int32_t id) const;
  // The id of a token written as text (a special token such as "<｜User｜>"); none for byte-level.
  std::optional<int32_t> token_id(std::string_view token) const;
  std::optional<int32_t> bos_id() const;

  // Incremental decoding: push ids, get complete UTF-8 text back.
  class Stream {
   public:
    explicit Stream(const TextCodec& codec);
    std::string push(int32_t id);
    std::string flush();

   private:
    const TextCodec* codec_;
    std::unique_ptr<StreamDecoder> dec_;
    std::string pending_;  // byte-level: bytes of an unfinished character
  };

 private:
  std::shared_ptr<const Tokenizer> tok_;
};

// Valid UTF-8 prefix length of `s` that ends at a character boundary, and repair of invalid bytes (U+FFFD).
size_t complete_utf8_prefix(std::string_view s);
std::string repair_utf8(std::string_view s);

}  // namespace dsv4::server
