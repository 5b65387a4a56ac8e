#include "dsv4/runtime/batch.h"

namespace dsv4 {

void BatchBuilder::add(const SequenceChunk& c) {
  DSV4_CHECK_ARG(!c.ids.empty(), "batch: a sequence chunk needs at least one token");
  DSV4_CHECK_ARG(c.slot >= 0 && c.start >= 0, "batch: negative slot or start");
  chunk_rows_.push_back(num_logit_rows());
  chunk_sizes_.push_back(static_cast<int64_t>(c.ids.size()));
  const int32_t end = c.start + static_cast<int32_t>(c.ids.size());
  for (size_t i = 0; i < c.ids.size(); ++i) {
    if (c.all_logits || i + 1 == c.ids.size()) logit_rows_.push_back(static_cast<int32_t>(ids_.size()));
    ids_.push_back(c.ids[i]);
    pos_.push_back(c.start + static_cast<int32_t>(i));
    slot_.push_back(c.slot);
    start_.push_back(c.start);
    end_.push_back(end);
  }
}

void BatchBuilder::pad_to(int64_t tokens) {
  DSV4_CHECK_ARG(tokens >= num_tokens(), "batch: cannot pad ", num_tokens(), " tokens down to ", tokens);
  while (num_tokens() < tokens) {  // safe values: token 0, position 0, slot -1, empty range
    ids_.push_back(0);
    pos_.push_back(0);
    slot_.push_back(-1);
    start_.push_back(0);
    end_.push_back(0);
  }
}

void BatchBuilder::clear() {
  for (auto* v : {&ids_, &pos_, &slot_, &start_, &end_, &logit_rows_}) v->clear();
  chunk_rows_.clear();
  chunk_sizes_.clear();
}

BatchMeta BatchBuilder::meta() {
  const int64_t T = num_tokens();
  auto view = [T](std::vector<int32_t>& v) { return Tensor(v.data(), DType::I32, {T}); };
  return {view(ids_), view(pos_), view(slot_), view(start_), view(end_), T};
}

std::vector<int32_t> BatchBuilder::pack() const {
  std::vector<int32_t> out = {static_cast<int32_t>(num_tokens()), static_cast<int32_t>(num_logit_rows())};
  for (const auto* v : {&ids_, &pos_, &slot_, &start_, &end_, &logit_rows_})
    out.insert(out.end(), v->begin(), v->end());
  return out;
}

BatchBuilder BatchBuilder::unpack(const int32_t* data, size_t count) {
  DSV4_CHECK_ARG(count >= 2 && data[0] >= 0 && data[1] >= 0 &&
                     count == 2 + 5 * static_cast<size_t>(data[0]) + static_cast<size_t>(data[1]),
                 "batch: a packed batch of ", count, " values does not match its header");
  BatchBuilder b;
  const int32_t* p = data + 2;
  for (auto* v : {&b.ids_, &b.pos_, &b.slot_, &b.start_, &b.end_, &b.logit_rows_}) {
    const size_t n = static_cast<size_t>(v == &b.logit_rows_ ? data[1] : data[0]);
    v->assign(p, p + n);
    p += n;
  }
  return b;
}

Tensor BatchBuilder::logit_rows() { return Tensor(logit_rows_.data(), DType::I32, {num_logit_rows()}); }

}  // namespace dsv4
