// Tokenizer tests: hand-built tokenizer.json files whose expected ids follow from the BPE rules, and
// parity with the Python `tokenizers` package on committed fixtures (tests/fixtures/tokenizer/, made
// by tools/reference/make_tokenizer_fixtures.py).
#include "dsv4/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "dsv4/core/status.h"

namespace dsv4 {
namespace {

using json = nlohmann::json;

std::string source_dir() {
  const char* env = std::getenv("DSV4_SOURCE_DIR");
  return env ? env : DSV4_SOURCE_DIR;
}

// The GPT-2 byte → printable character table, written out independently of the implementation.
std::string byte_char(int b) {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    int next = 256;
    for (int i = 0; i < 256; ++i) {
      const bool printable = (i >= 33 && i <= 126) || (i >= 161 && i <= 172) || (i >= 174 && i <= 255);
      const int cp = printable ? i : next++;
      std::string s;
      if (cp < 0x80) {
        s.push_back(static_cast<char>(cp));
      } else {
        s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
      }
      t[i] = s;
    }
    return t;
  }();
  return table[static_cast<std::size_t>(b)];
}

std::string bl(std::string_view raw) {  // raw text → its byte-level token string
  std::string s;
  for (unsigned char c : raw) s += byte_char(c);
  return s;
}

// A byte-level BPE tokenizer: ids 0..255 are the bytes, then one id per merge result, then
// `extra` (added tokens) after that. Merges are given on raw text ("t", "h") for readability.
struct Spec {
  std::vector<std::pair<std::string, std::string>> merges;
  json pre_tokenizer = json{{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  json added_tokens = json::array();
  json post_processor = nullptr;
  json normalizer = nullptr;
  bool pair_form = false;
};

json build(const Spec& spec) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
  json merges = json::array();
  int next = 256;
  for (const auto& [a, b] : spec.merges) {
    const std::string merged = bl(a + b);
    if (!vocab.contains(merged)) vocab[merged] = next++;
    if (spec.pair_form) {
      merges.push_back(json::array({bl(a), bl(b)}));
    } else {
      merges.push_back(bl(a) + " " + bl(b));
    }
  }
  return json{
      {"version", "1.0"},
      {"added_tokens", spec.added_tokens},
      {"normalizer", spec.normalizer},
      {"pre_tokenizer", spec.pre_tokenizer},
      {"post_processor", spec.post_processor},
      {"decoder",
       {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"vocab", vocab},
        {"merges", merges}}}};
}

Tokenizer make(const Spec& spec) { return Tokenizer::from_json(build(spec).dump()); }

int32_t id_of(const Tokenizer& t, std::string_view raw) {
  auto id = t.token_to_id(bl(raw));
  EXPECT_TRUE(id.has_value()) << "no token for " << raw;
  return id.value_or(-1);
}

std::vector<int32_t> bytes_ids(std::string_view raw) {
  std::vector<int32_t> ids;
  for (unsigned char c : raw) ids.push_back(c);
  return ids;
}

TEST(Tokenizer, MergesApplyInRankOrderLeftmostFirst) {
  // "abc": with a+b ranked first we get [ab, c]; with b+c first, [a, bc].
  Tokenizer ab_first = make({.merges = {{"a", "b"}, {"b", "c"}}});
  EXPECT_EQ(ab_first.encode("abc"), (std::vector<int32_t>{id_of(ab_first, "ab"), 'c'}));
  Tokenizer bc_first = make({.merges = {{"b", "c"}, {"a", "b"}}});
  EXPECT_EQ(bc_first.encode("abc"), (std::vector<int32_t>{'a', id_of(bc_first, "bc")}));
  // Equal ranks resolve left to right: "aaa" with a+a gives [aa, a].
  Tokenizer aa = make({.merges = {{"a", "a"}}});
  EXPECT_EQ(aa.encode("aaa"), (std::vector<int32_t>{id_of(aa, "aa"), 'a'}));
  EXPECT_EQ(aa.encode("aaaa"), (std::vector<int32_t>{id_of(aa, "aa"), id_of(aa, "aa")}));
  // A chain of merges builds a whole word; merges use the byte-level alphabet (Ġ for the space).
  Tokenizer the = make({.merges = {{"t", "h"}, {"th", "e"}, {" ", "the"}}});
  EXPECT_EQ(the.encode("the the"), (std::vector<int32_t>{id_of(the, "the"), id_of(the, " the")}));
  EXPECT_EQ(the.vocab_size(), 259);
}

TEST(Tokenizer, PairAndStringMergeFormsAreEquivalent) {
  Spec s{.merges = {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}}};
  Tokenizer a = make(s);
  s.pair_form = true;
  Tokenizer b = make(s);
  EXPECT_EQ(a.encode("hello hell"), b.encode("hello hell"));
  EXPECT_EQ(a.encode("hello"), (std::vector<int32_t>{id_of(a, "hello")}));
}

TEST(Tokenizer, RoundTripsArbitraryUtf8) {
  Tokenizer t = make({.merges = {{"t", "h"}, {"th", "e"}}});
  for (std::string text : {"", " ", "the cat", "  leading and trailing  ", "tabs\tand\nnewlines\r\n",
                           "中文和日本語のテキスト", "emoji 🎉👍🏽👨‍👩‍👧",
                           "code: for (int i = 0; i < n; ++i) {}", "digits 1234567890 ٣٤٥ １２３"}) {
    const auto ids = t.encode(text);
    EXPECT_EQ(t.decode(ids), text);
  }
  // With no merges every byte is its own token.
  EXPECT_EQ(t.encode("é"), bytes_ids("é"));
}

TEST(Tokenizer, InvalidUtf8IsReplacedPerMaximalSubpart) {
  Tokenizer t = make({});
  const std::string fffd = "\xEF\xBF\xBD";
  // Lone continuation bytes, a truncated 3-byte sequence, a surrogate, an overlong form.
  EXPECT_EQ(t.decode(t.encode("a\xff\xfe"
                              "b")),
            "a" + fffd + fffd + "b");
  EXPECT_EQ(t.decode(t.encode("x\xe4\xbd")), "x" + fffd);
  EXPECT_EQ(t.decode(t.encode("\xed\xa0\x80")), fffd + fffd + fffd);
  EXPECT_EQ(t.decode(t.encode("\xc0\xaf")), fffd + fffd);
  EXPECT_EQ(t.decode(t.encode("\xf0\x9f\x98 ok")), fffd + " ok");
  // Decoding ids that split a character also yields U+FFFD (the first byte of "中").
  EXPECT_EQ(t.decode(std::vector<int32_t>{0xE4, 'a'}), fffd + "a");
}

TEST(Tokenizer, DeepSeekPreTokenizerSplitsDigitsCjkAndWords) {
  // DeepSeek-V3's pre-tokenizer: digits in groups of at most three, CJK runs, then the word regex.
  Spec s;
  s.pre_tokenizer = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", "\\p{N}{1,3}"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "Split"},
         {"pattern", {{"Regex", "[一-龥\\u3040-ゟ゠-ヿ]+"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "Split"},
         {"pattern",
          {{"Regex",
            "[\r\n]|\\s[^\\S\r\n]+|[!\"#$%&'()*+,\\-./"
            ":;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}"
            "\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}}}}};
  // Merges that would join across every boundary if the pre-tokenizer did not split there.
  s.merges = {{"1", "2"},
              {"12", "3"},
              {"3", "4"},
              {"a", "1"},
              {" ", "b"},
              // 中 = E4 B8 AD and 文 = E6 96 87 are built from their bytes first.
              {"\xE4", "\xB8"},
              {"\xE4\xB8", "\xAD"},
              {"\xE6", "\x96"},
              {"\xE6\x96", "\x87"},
              {"中", "文"},
              {"文", "a"}};
  Tokenizer t = make(s);
  // "1234" → "123" | "4"; "a1" is split (letters vs digits); "中文a" → "中文" | "a".
  EXPECT_EQ(t.encode("1234"), (std::vector<int32_t>{id_of(t, "123"), '4'}));
  EXPECT_EQ(t.encode("a1"), (std::vector<int32_t>{'a', '1'}));
  const auto zh = t.encode("中文a");
  ASSERT_EQ(zh.size(), 2u);
  EXPECT_EQ(zh[0], id_of(t, "中文"));
  EXPECT_EQ(zh[1], 'a');
  EXPECT_EQ(t.encode("a b"), (std::vector<int32_t>{'a', id_of(t, " b")}));
  EXPECT_EQ(t.decode(t.encode("数字 12345 and 中文")), "数字 12345 and 中文");
}

struct SplitCase {
  const char* behavior;
  bool invert;
  std::vector<std::string> pieces;  // expected pre-tokens of "a-b--c"
};

TEST(Tokenizer, SplitBehaviorsMatchTokenizersSemantics) {
  // Merges join any two adjacent pieces' characters, so each pre-token comes out as one id when it
  // is in the vocab: comparing ids tells us the pre-token boundaries.
  const std::vector<SplitCase> cases = {
      {"Isolated", false, {"a", "-", "b", "--", "c"}},   {"Removed", false, {"a", "b", "c"}},
      {"MergedWithPrevious", false, {"a-", "b--", "c"}}, {"MergedWithNext", false, {"a", "-b", "--c"}},
      {"Contiguous", false, {"a", "-", "b", "--", "c"}}, {"Removed", true, {"-", "--"}},
      {"MergedWithPrevious", true, {"a", "-b", "--c"}},
  };
  for (const SplitCase& c : cases) {
    Spec s;
    s.pre_tokenizer = {
        {"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"}, {"pattern", {{"Regex", "-+"}}}, {"behavior", c.behavior}, {"invert", c.invert}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
    s.merges = {{"a", "-"}, {"-", "b"}, {"-", "-"}, {"b", "--"}, {"-", "c"}, {"--", "c"}};
    Tokenizer t = make(s);
    std::vector<int32_t> expected;
    for (const std::string& p : c.pieces) expected.push_back(p.size() == 1 ? p[0] : id_of(t, p));
    EXPECT_EQ(t.encode("a-b--c"), expected) << c.behavior << " invert=" << c.invert;
  }
  // A literal String pattern behaves like the escaped regex.
  Spec s;
  s.pre_tokenizer = {
      {"type", "Split"}, {"pattern", {{"String", "."}}}, {"behavior", "Removed"}, {"invert", false}};
  s.merges = {{"a", "b"}};
  Tokenizer t = make(s);
  // No ByteLevel here, so BPE sees raw characters (the same as their byte-level form for ASCII).
  EXPECT_EQ(t.encode("ab.ab"), (std::vector<int32_t>{id_of(t, "ab"), id_of(t, "ab")}));
  EXPECT_EQ(t.encode("a.b"), (std::vector<int32_t>{'a', 'b'}));
}

TEST(Tokenizer, AddedTokensAreMatchedBeforePreTokenization) {
  Spec s{.merges = {{"h", "i"}}};
  s.added_tokens = json::array(
      {{{"id", 300}, {"content", "<|end|>"}, {"special", true}, {"normalized", false}},
       {{"id", 301}, {"content", "<|end|>x"}, {"special", true}, {"normalized", false}},
       {{"id", 302}, {"content", "[L]"}, {"special", false}, {"normalized", false}, {"lstrip", true}},
       {{"id", 303}, {"content", "[R]"}, {"special", false}, {"normalized", false}, {"rstrip", true}},
       {{"id", 304}, {"content", "w"}, {"special", false}, {"normalized", true}, {"single_word", true}}});
  Tokenizer t = make(s);
  const int32_t hi = id_of(t, "hi");
  EXPECT_EQ(t.encode("hi<|end|>hi"), (std::vector<int32_t>{hi, 300, hi}));
  EXPECT_EQ(t.encode("<|end|>xhi"), (std::vector<int32_t>{301, hi}));     // longest match wins
  EXPECT_EQ(t.encode("hi  [L]hi"), (std::vector<int32_t>{hi, 302, hi}));  // lstrip eats the spaces
  EXPECT_EQ(t.encode("hi[R]  hi"), (std::vector<int32_t>{hi, 303, hi}));  // rstrip eats the spaces
  EXPECT_EQ(t.encode("a w b"), (std::vector<int32_t>{'a', ' ', 304, ' ', 'b'}));
  EXPECT_EQ(t.encode("awb"), (std::vector<int32_t>{'a', 'w', 'b'}));  // not a single word
  EXPECT_EQ(t.decode(t.encode("hi<|end|>hi")), "hi<|end|>hi");
  EXPECT_EQ(t.decode(t.encode("hi<|end|>hi"), /*skip_special=*/true), "hihi");
  EXPECT_TRUE(t.is_special(300));
  EXPECT_FALSE(t.is_special(302));
  EXPECT_EQ(t.token_to_id("<|end|>"), 300);
  EXPECT_EQ(t.id_to_token(300), "<|end|>");
  EXPECT_EQ(t.vocab_size(), 305);
  EXPECT_EQ(t.eos_id(), std::nullopt);
}

TEST(Tokenizer, TemplatePostProcessorAddsBos) {
  Spec s;
  s.added_tokens = json::array(
      {{{"id", 256}, {"content", "<｜begin▁of▁sentence｜>"}, {"special", true}, {"normalized", false}},
       {{"id", 257}, {"content", "<｜end▁of▁sentence｜>"}, {"special", true}, {"normalized", false}}});
  s.post_processor = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<｜begin▁of▁sentence｜>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"pair", json::array()},
      {"special_tokens",
       {{"<｜begin▁of▁sentence｜>",
         {{"id", "<｜begin▁of▁sentence｜>"}, {"ids", {256}}, {"tokens", {"<｜begin▁of▁sentence｜>"}}}}}}};
  Tokenizer t = make(s);
  EXPECT_EQ(t.encode("ab", true), (std::vector<int32_t>{256, 'a', 'b'}));
  EXPECT_EQ(t.encode("ab", false), (std::vector<int32_t>{'a', 'b'}));
  EXPECT_EQ(t.bos_id(), 256);
  EXPECT_EQ(t.eos_id(), 257);  // by its well-known name
}

TEST(Tokenizer, NfcNormalizerComposes) {
  Spec s;
  s.normalizer = {{"type", "NFC"}};
  Tokenizer t = make(s);
  // "e" + U+0301 COMBINING ACUTE composes to U+00E9.
  EXPECT_EQ(t.encode("e\xCC\x81"), bytes_ids("\xC3\xA9"));
  s.normalizer = {{"type", "Sequence"}, {"normalizers", {{{"type", "NFKC"}}, {{"type", "Lowercase"}}}}};
  Tokenizer k = make(s);
  EXPECT_EQ(k.decode(k.encode("ＡＢＣ Straße")), "abc straße");
}

TEST(Tokenizer, ByteFallbackAndUnk) {
  // A sentencepiece-like BPE without ByteLevel: unknown characters fall back to <0xXX> tokens.
  json vocab = {{"<unk>", 0}, {"a", 1}, {"b", 2}, {"ab", 3}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 4 + b;
  }
  json j = {
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges", {"a b"}},
        {"byte_fallback", true},
        {"unk_token", "<unk>"}}},
      {"decoder", {{"type", "Sequence"}, {"decoders", {{{"type", "ByteFallback"}}, {{"type", "Fuse"}}}}}}};
  Tokenizer t = Tokenizer::from_json(j.dump());
  EXPECT_EQ(t.encode("abé"), (std::vector<int32_t>{3, 4 + 0xC3, 4 + 0xA9}));
  EXPECT_EQ(t.decode(t.encode("abé")), "abé");
  j["model"]["byte_fallback"] = false;
  j["model"]["fuse_unk"] = true;
  Tokenizer u = Tokenizer::from_json(j.dump());
  EXPECT_EQ(u.encode("aéé b"), (std::vector<int32_t>{1, 0, 2}));  // é é and space fuse into one unk
}

TEST(StreamDecoder, HoldsBackPartialCharacters) {
  Tokenizer t = make({});
  const std::string text = "héllo 你好 🎉!";
  const auto ids = t.encode(text);  // one id per byte: every multi-byte character is split
  StreamDecoder sd(t);
  std::string streamed;
  std::vector<std::string> chunks;
  for (int32_t id : ids) {
    std::string piece = sd.push(id);
    EXPECT_TRUE(piece.empty() || t.decode(t.encode(piece)) == piece);
    if (!piece.empty()) chunks.push_back(piece);
    streamed += piece;
  }
  streamed += sd.flush();
  EXPECT_EQ(streamed, text);
  // Each character came out whole: "é", "你", "好" and "🎉" are single chunks.
  EXPECT_NE(std::find(chunks.begin(), chunks.end(), "你"), chunks.end());
  EXPECT_NE(std::find(chunks.begin(), chunks.end(), "🎉"), chunks.end());
  // An unfinished character is held back, then replaced at flush.
  StreamDecoder partial(t);
  EXPECT_EQ(partial.push(0xF0), "");
  EXPECT_EQ(partial.push(0x9F), "");
  EXPECT_EQ(partial.pending(), 2u);
  EXPECT_EQ(partial.flush(), "\xEF\xBF\xBD");
  // A byte that can never start a valid sequence is emitted at once.
  EXPECT_EQ(partial.push(0xFF), "\xEF\xBF\xBD");
  EXPECT_EQ(partial.push('a'), "a");
}

void expect_parse_error(const std::string& json_text, const std::string& field) {
  try {
    Tokenizer::from_json(json_text);
    ADD_FAILURE() << "no error for: " << json_text.substr(0, 200);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kParseError) << e.what();
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos)
        << "message does not name " << field << ": " << e.what();
  }
}

TEST(Tokenizer, MalformedFilesAreParseErrors) {
  const json good = build({.merges = {{"a", "b"}}});
  expect_parse_error("{not json", "invalid JSON");
  {
    json j = good;
    j.erase("model");
    expect_parse_error(j.dump(), "model");
  }
  {
    json j = good;
    j["model"]["type"] = "WordPiece";
    expect_parse_error(j.dump(), "model.type");
  }
  {
    json j = good;
    j["model"]["merges"] = {"a"};  // no space
    expect_parse_error(j.dump(), "model.merges[0]");
  }
  {
    json j = good;
    j["model"]["merges"] = {"a zz"};  // unknown token
    expect_parse_error(j.dump(), "model.merges[0]");
  }
  {
    json j = good;
    j["model"]["merges"] = {{"a"}};  // pair form with one element
    expect_parse_error(j.dump(), "model.merges[0]");
  }
  {
    json j = good;
    j["model"]["merges"] = "a b";
    expect_parse_error(j.dump(), "model.merges");
  }
  {
    json j = good;
    j["model"]["vocab"] = json::array();
    expect_parse_error(j.dump(), "model.vocab");
  }
  {
    json j = good;
    j["model"]["vocab"]["x"] = "seven";
    expect_parse_error(j.dump(), "model.vocab");
  }
  {
    json j = good;
    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
    expect_parse_error(j.dump(), "pre_tokenizer.pattern.Regex");
  }
  {
    json j = good;
    j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Metaspace"}}}}};
    expect_parse_error(j.dump(), "pre_tokenizer.pretokenizers[0]");
  }
  {
    json j = good;
    j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "a"}}}, {"behavior", "Sideways"}};
    expect_parse_error(j.dump(), "pre_tokenizer.behavior");
  }
  {
    json j = good;
    j["normalizer"] = {{"type", "BertNormalizer"}};
    expect_parse_error(j.dump(), "normalizer");
  }
  {
    json j = good;
    j["added_tokens"] = {{{"content", "<x>"}}};
    expect_parse_error(j.dump(), "added_tokens[0].id");
  }
  {
    json j = good;
    j["decoder"] = {{"type", "WordPiece"}};
    expect_parse_error(j.dump(), "decoder");
  }
  try {
    Tokenizer::from_file("/nonexistent/tokenizer.json");
    ADD_FAILURE() << "no error for a missing file";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kNotFound);
  }
}

// ---------------------------------------------------------------------------------------------
// Parity with the `tokenizers` package.

std::string from_hex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

std::vector<std::filesystem::path> fixture_files() {
  std::vector<std::filesystem::path> out;
  const std::filesystem::path dir = std::filesystem::path(source_dir()) / "tests/fixtures/tokenizer";
  if (!std::filesystem::exists(dir)) return out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() == ".json" && e.path().filename().string().ends_with(".cases.json"))
      out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(TokenizerParity, MatchesTokenizersPackageOnFixtures) {
  const auto files = fixture_files();
  if (files.empty()) {
    GTEST_SKIP()
        << "no fixtures under tests/fixtures/tokenizer/ (run tools/reference/make_tokenizer_fixtures.py)";
  }
  for (const auto& file : files) {
    SCOPED_TRACE(file.string());
    const json fx = read_json(file);
    const std::filesystem::path tok_path =
        std::filesystem::path(source_dir()) / fx.at("tokenizer").get<std::string>();
    Tokenizer t = Tokenizer::from_file(tok_path.string());
    EXPECT_EQ(t.vocab_size(), fx.at("vocab_size").get<int32_t>());
    if (fx.contains("bos_id") && !fx["bos_id"].is_null()) {
      EXPECT_EQ(t.bos_id(), fx["bos_id"].get<int32_t>());
    }
    if (fx.contains("eos_id") && !fx["eos_id"].is_null()) {
      EXPECT_EQ(t.eos_id(), fx["eos_id"].get<int32_t>());
    }
    for (const auto& [id, tok] : fx.at("token_samples").get<std::vector<std::pair<int32_t, std::string>>>()) {
      EXPECT_EQ(t.id_to_token(id), tok);
      EXPECT_EQ(t.token_to_id(tok), id);
    }
    int n = 0;
    for (const json& c : fx.at("cases")) {
      const std::string input = from_hex(c.at("input_hex").get<std::string>());
      SCOPED_TRACE(c.at("name").get<std::string>());
      const auto ids = c.at("ids").get<std::vector<int32_t>>();
      EXPECT_EQ(t.encode(input), ids);
      EXPECT_EQ(t.encode(input, true), c.at("ids_with_special").get<std::vector<int32_t>>());
      const std::string decoded = c.at("decoded").get<std::string>();
      EXPECT_EQ(t.decode(ids), decoded);
      EXPECT_EQ(t.decode(ids, true), c.at("decoded_skip_special").get<std::string>());
      // Streaming gives the same text as one-shot decoding.
      StreamDecoder sd(t);
      std::string streamed;
      for (int32_t id : ids) streamed += sd.push(id);
      streamed += sd.flush();
      EXPECT_EQ(streamed, decoded);
      ++n;
    }
    for (const json& c : fx.at("decode_cases")) {
      const auto ids = c.at("ids").get<std::vector<int32_t>>();
      EXPECT_EQ(t.decode(ids), c.at("text").get<std::string>());
      ++n;
    }
    EXPECT_GT(n, 10) << "fixture has too few cases";
  }
}

}  // namespace
}  // namespace dsv4
