// Byte-level BPE tokenizer for Hugging Face `tokenizer.json` files (the format DeepSeek ships).
//
// Encoding follows the `tokenizers` pipeline: added tokens are split off first (longest match,
// honouring single_word / lstrip / rstrip / normalized), the rest is normalized, pre-tokenized
// (Sequence / Split / ByteLevel / Digits / Whitespace / WhitespaceSplit, regexes run by PCRE2) and each
// pre-token is run through BPE merges in rank order. Decoding supports the ByteLevel, ByteFallback,
// Fuse and Sequence decoders. Invalid UTF-8 input is repaired first (each maximal invalid subpart
// becomes U+FFFD, as Python's errors="replace" does), so encode(raw) equals the Python package's
// encode(raw.decode("utf-8", "replace")).
//
// A Tokenizer is immutable after loading; encode/decode may be called from several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dsv4 {

class Tokenizer {
 public:
  // Loads a tokenizer.json. Throws dsv4::Error: kNotFound / kIoError for the file, kParseError
  // (message names the offending field) for malformed or unsupported content.
  static Tokenizer from_file(const std::string& path);
  static Tokenizer from_json(std::string_view json_text);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Token ids of `text`. With add_special, the post-processor's template (e.g. a BOS token) is
  // applied as `tokenizers`' encode(..., add_special_tokens=True) does.
  std::vector<int32_t> encode(std::string_view text, bool add_special = false) const;

  // Text of `ids`; ids without a token are skipped (as `tokenizers` does). skip_special drops
  // special added tokens.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  // One past the largest id of the model vocabulary and the added tokens.
  int32_t vocab_size() const;
  bool is_special(int32_t id) const;

  // From the post-processor template if it has one, else from well-known special token names
  // (<｜begin▁of▁sentence｜>, <s>, <|endoftext|>, ...).
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;

  // The raw bytes one token contributes to decoded text (possibly a partial UTF-8 sequence).
  std::string token_bytes(int32_t id) const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  friend class StreamDecoder;
};

// Incremental detokenizer for streaming generation: feed ids one at a time and get back only text
// that is complete UTF-8. Bytes of a character split across tokens are held back until the character
// is complete; bytes that can never become valid are emitted as U+FFFD. The concatenation of all
// push() results and flush() equals Tokenizer::decode of the same ids.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false);

  std::string push(int32_t id);
  // Emits whatever is held back (an unfinished character becomes U+FFFD) and resets the decoder.
  std::string flush();
  // Bytes currently held back.
  std::size_t pending() const { return pending_.size(); }

 private:
  const Tokenizer* tokenizer_;
  bool skip_special_;
  bool first_ = true;
  std::string pending_;
};

}  // namespace dsv4
