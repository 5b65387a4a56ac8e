#include "dsv4/runtime/batch.h"

#include <algorithm>

namespace dsv4 {

void BatchBuilder::add(const SequenceChunk& c) { add(c.slot, c.start, c.ids, c.all_logits); }

void BatchBuilder::add(int32_t slot, int32_t start, std::span<const int32_t> ids, bool all_logits) {
  DSV4_CHECK_ARG(!ids.empty(), "batch: a sequence chunk needs at least one token");
  DSV4_CHECK_ARG(slot >= 0 && start >= 0, "batch: negative slot or start");
  const size_t first = ids_.size(), n = ids.size();
  chunk_rows_.push_back(num_logit_rows());
  chunk_sizes_.push_back(static_cast<int64_t>(n));
  if (all_logits) {
    for (size_t i = 0; i < n; ++i) logit_rows_.push_back(static_cast<int32_t>(first + i));
  } else {
    logit_rows_.push_back(static_cast<int32_t>(first + n - 1));
  }
  // Whole-range fills: a prompt chunk is up to max_batch_tokens rows, which per-element push_backs into five
  // arrays made a visible share of a large step's host time.
  const int32_t end = start + static_cast<int32_t>(n);
  ids_.insert(ids_.end(), ids.begin(), ids.end());
  pos_.resize(first + n);
  for (size_t i = 0; i < n; ++i) pos_[first + i] = start + static_cast<int32_t>(i);
  slot_.resize(first + n, slot);
  start_.resize(first + n, start);
  end_.resize(first + n, end);
}

void BatchBuilder::reserve(int64_t tokens) {
  const size_t want = ids_.size() + static_cast<size_t>(std::max<int64_t>(tokens, 0));
  for (auto* v : {&ids_, &pos_, &slot_, &start_, &end_}) v->reserve(want);
}

void BatchBuilder::pad_to(int64_t tokens) {
  DSV4_CHECK_ARG(tokens >= num_tokens(), "batch: cannot pad ", num_tokens(), " tokens down to ", tokens);
  const size_t n = static_cast<size_t>(tokens);  // safe values: token 0, position 0, slot -1, empty range
  ids_.resize(n, 0);
  pos_.resize(n, 0);
  slot_.resize(n, -1);
  start_.resize(n, 0);
  end_.resize(n, 0);
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
