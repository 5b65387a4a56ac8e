// BatchBuilder: lays out the tokens of several sequences' chunks as one forward batch — the per-token
// metadata (BatchMeta) and the rows whose logits are wanted — in host memory, ready to run on the CPU or
// to be copied into a device's persistent input buffers.
#pragma once

#include <span>
#include <vector>

#include "dsv4/ops/ops.h"

namespace dsv4 {

struct SequenceChunk {
  int32_t slot = 0;          // state slot of the sequence
  int32_t start = 0;         // position of ids[0] (= tokens already in the slot's state)
  std::vector<int32_t> ids;  // this forward's tokens of the sequence
  bool all_logits = false;   // logits for every token (verification, scoring) or only the last
};

class BatchBuilder {
 public:
  void add(const SequenceChunk& chunk);
  // add() of the chunk {slot, start, ids, all_logits} straight from a view of the sequence's tokens: the
  // scheduler's prompt chunks are thousands of tokens a step, not worth a copy into a SequenceChunk first.
  void add(int32_t slot, int32_t start, std::span<const int32_t> ids, bool all_logits);
  // Capacity for `tokens` more tokens, so a large batch's per-token arrays grow once (optional).
  void reserve(int64_t tokens);
  // Pads with rows of slot -1 up to `tokens` (graph buckets); padding rows never produce logits.
  void pad_to(int64_t tokens);
  void clear();

  int64_t num_tokens() const { return static_cast<int64_t>(ids_.size()); }
  int64_t num_logit_rows() const { return static_cast<int64_t>(logit_rows_.size()); }
  // First logit row of each added chunk, in order (a chunk's rows are consecutive).
  const std::vector<int64_t>& chunk_first_logit_row() const { return chunk_rows_; }
  // Tokens of each added chunk, in order (a chunk's rows are consecutive in the batch).
  int64_t chunk_token_count(size_t chunk) const { return chunk_sizes_.at(chunk); }
  const std::vector<int32_t>& ids() const { return ids_; }
  const std::vector<int32_t>& positions() const { return pos_; }

  // Views of the host arrays (valid while the builder is unchanged).
  BatchMeta meta();
  Tensor logit_rows();

  // The per-token arrays and the logit rows as one flat list, and the batch rebuilt from it (the step plans a
  // multi-rank run's leader sends its followers): the same meta() and logit_rows(), no chunk records.
  std::vector<int32_t> pack() const;
  static BatchBuilder unpack(const int32_t* data, size_t count);

 private:
  std::vector<int32_t> ids_, pos_, slot_, start_, end_, logit_rows_;
  std::vector<int64_t> chunk_rows_, chunk_sizes_;
};

}  // namespace dsv4
