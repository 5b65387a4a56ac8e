#include "dsv4/io/limits.h"
#include "tokenizer/bpe.h"

#include <cstdio>
#include <queue>

#include "dsv4/core/status.h"
#include "tokenizer/utf8.h"

namespace dsv4 {

namespace {

using json = nlohmann::json;

std::string opt_string(const json& j, const char* key, const char* where) {
  if (!j.contains(key) || j[key].is_null()) return {};
  if (!j[key].is_string()) fail(StatusCode::kParseError, where, ".", key, ": expected a string or null");
  return j[key].get<std::string>();
}

bool opt_bool(const json& j, const char* key, const char* where) {
  if (!j.contains(key) || j[key].is_null()) return false;
  if (!j[key].is_boolean()) fail(StatusCode::kParseError, where, ".", key, ": expected a boolean");
  return j[key].get<bool>();
}

}  // namespace

BpeModel::BpeModel(const json& model) {
  if (!model.is_object()) fail(StatusCode::kParseError, "model: expected an object");
  if (model.contains("type") && !model["type"].is_null()) {
    if (!model["type"].is_string()) fail(StatusCode::kParseError, "model.type: expected a string");
    const std::string type = model["type"].get<std::string>();
    if (type != "BPE") {
      fail(StatusCode::kParseError, "model.type: unsupported model type \"", type,
           "\" (only BPE is supported)");
    }
  }
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"].get<double>() > 0.0) {
    // Dropout makes encoding random; inference never wants it.
    fail(StatusCode::kParseError, "model.dropout: BPE dropout is not supported for inference");
  }
  if (!model.contains("vocab") || !model["vocab"].is_object()) {
    fail(StatusCode::kParseError, "model.vocab: missing or not an object of token -> id");
  }
  int32_t max_id = -1;
  for (const auto& [tok, id] : model["vocab"].items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > kMaxTokenId) {
      fail(StatusCode::kParseError, "model.vocab[\"", tok, "\"]: expected an integer id in [0, ", kMaxTokenId,
           "], got ", id.dump());
    }
    const auto v = static_cast<int32_t>(id.get<int64_t>());
    vocab_.emplace(tok, v);
    max_id = std::max(max_id, v);
  }
  id_to_token_.resize(static_cast<std::size_t>(max_id + 1));
  has_token_.assign(static_cast<std::size_t>(max_id + 1), false);
  for (const auto& [tok, id] : vocab_) {
    id_to_token_[static_cast<std::size_t>(id)] = tok;
    has_token_[static_cast<std::size_t>(id)] = true;
  }

  continuing_subword_prefix_ = opt_string(model, "continuing_subword_prefix", "model");
  end_of_word_suffix_ = opt_string(model, "end_of_word_suffix", "model");
  fuse_unk_ = opt_bool(model, "fuse_unk", "model");
  byte_fallback_ = opt_bool(model, "byte_fallback", "model");
  ignore_merges_ = opt_bool(model, "ignore_merges", "model");
  const std::string unk = opt_string(model, "unk_token", "model");
  if (!unk.empty()) {
    auto it = vocab_.find(unk);
    if (it == vocab_.end())
      fail(StatusCode::kParseError, "model.unk_token: \"", unk, "\" is not in model.vocab");
    unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    auto it = vocab_.find(std::string_view(name));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }

  if (!model.contains("merges") || !model["merges"].is_array()) {
    fail(StatusCode::kParseError, "model.merges: missing or not an array");
  }
  const auto& merges = model["merges"];
  merges_.reserve(merges.size());
  const std::size_t prefix_len = continuing_subword_prefix_.size();
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& m = merges[rank];
    std::string a, b;
    if (m.is_string()) {
      // The legacy "a b" form: exactly one space (tokens never contain a raw space in this form).
      const std::string s = m.get<std::string>();
      const auto sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        fail(StatusCode::kParseError, "model.merges[", rank, "]: expected \"left right\", got \"", s, "\"");
      }
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      fail(StatusCode::kParseError, "model.merges[", rank,
           "]: expected \"left right\" or [\"left\", \"right\"]");
    }
    const auto ia = vocab_.find(a), ib = vocab_.find(b);
    if (ia == vocab_.end() || ib == vocab_.end()) {
      fail(StatusCode::kParseError, "model.merges[", rank, "]: token \"", ia == vocab_.end() ? a : b,
           "\" is not in model.vocab");
    }
    // With a continuing-subword prefix the right part carries it, the merged token does not repeat it.
    const std::string merged =
        a + (prefix_len > 0 && b.compare(0, prefix_len, continuing_subword_prefix_) == 0
                 ? b.substr(prefix_len)
                 : b);
    const auto im = vocab_.find(merged);
    if (im == vocab_.end()) {
      fail(StatusCode::kParseError, "model.merges[", rank, "]: merged token \"", merged,
           "\" is not in model.vocab");
    }
    // A repeated pair takes its last rank, as `tokenizers` builds its merge map.
    merges_[pair_key(ia->second, ib->second)] = Merge{static_cast<int32_t>(rank), im->second};
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= id_to_token_.size() ||
      !has_token_[static_cast<std::size_t>(id)]) {
    return nullptr;
  }
  return &id_to_token_[static_cast<std::size_t>(id)];
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto it = vocab_.find(word); it != vocab_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kCacheMaxWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (auto it = cache_.find(word); it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids;
  merge_word(word, &ids);
  out->insert(out->end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu_);
    if (cache_.size() < kCacheCapacity) cache_.emplace(std::string(word), std::move(ids));
  }
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>* out) const {
  // Symbols form a doubly linked list over a vector; a merged-away symbol gets alive = false.
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Symbol> sym;
  sym.reserve(word.size());
  const auto add = [&](int32_t id) {
    const auto n = static_cast<int32_t>(sym.size());
    sym.push_back(Symbol{id, n - 1, n + 1, true});
  };
  bool last_was_unk = false;
  std::string piece;
  for (std::size_t i = 0; i < word.size();) {
    std::size_t len = utf8::sequence_length(word, i);
    if (len == 0) len = 1;  // cannot happen for validated input; never loop forever
    const bool first = i == 0, last = i + len == word.size();
    piece.clear();
    if (!first) piece += continuing_subword_prefix_;
    piece.append(word.substr(i, len));
    if (last) piece += end_of_word_suffix_;
    if (auto it = vocab_.find(piece); it != vocab_.end()) {
      add(it->second);
      last_was_unk = false;
    } else {
      bool done = false;
      if (byte_fallback_) {
        bool all = true;
        for (std::size_t k = 0; k < len; ++k)
          all = all && byte_ids_[static_cast<unsigned char>(word[i + k])] >= 0;
        if (all) {
          for (std::size_t k = 0; k < len; ++k) add(byte_ids_[static_cast<unsigned char>(word[i + k])]);
          last_was_unk = false;
          done = true;
        }
      }
      if (!done && unk_id_) {
        // fuse_unk: a run of unknown characters becomes a single unk token.
        if (!(fuse_unk_ && last_was_unk)) add(*unk_id_);
        last_was_unk = true;
      }
      // Without byte fallback or an unk token the character is dropped, as in `tokenizers`.
    }
    i += len;
  }
  if (sym.empty()) return;
  sym.back().next = -1;

  // Lowest rank first; among equal ranks the leftmost. Entries go stale when a neighbour merges:
  // they are re-validated when popped, with the same check `tokenizers` uses (the pair at `pos`
  // must still map to the same merged id).
  struct Cand {
    int32_t rank, pos, new_id;
    bool operator<(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand> queue;
  const auto lookup = [&](int32_t a, int32_t b) -> const Merge* {
    auto it = merges_.find(pair_key(a, b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (std::size_t p = 0; p + 1 < sym.size(); ++p) {
    if (const Merge* m = lookup(sym[p].id, sym[p + 1].id))
      queue.push({m->rank, static_cast<int32_t>(p), m->new_id});
  }
  while (!queue.empty()) {
    const Cand top = queue.top();
    queue.pop();
    Symbol& cur = sym[static_cast<std::size_t>(top.pos)];
    if (!cur.alive || cur.next < 0) continue;
    Symbol& right = sym[static_cast<std::size_t>(cur.next)];
    const Merge* m = lookup(cur.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;
    cur.id = top.new_id;
    right.alive = false;
    cur.next = right.next;
    if (cur.next >= 0) sym[static_cast<std::size_t>(cur.next)].prev = top.pos;
    if (cur.prev >= 0) {
      if (const Merge* pm = lookup(sym[static_cast<std::size_t>(cur.prev)].id, cur.id)) {
        queue.push({pm->rank, cur.prev, pm->new_id});
      }
    }
    if (cur.next >= 0) {
      if (const Merge* nm = lookup(cur.id, sym[static_cast<std::size_t>(cur.next)].id)) {
        queue.push({nm->rank, top.pos, nm->new_id});
      }
    }
  }
  for (const Symbol& s : sym) {
    if (s.alive) out->push_back(s.id);
  }
}

}  // namespace dsv4
