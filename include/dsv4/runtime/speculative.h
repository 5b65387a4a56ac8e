// Verification of MTP drafts against the target (reference §5): greedy acceptance, and standard
// speculative rejection sampling, which keeps the target's sampling distribution exactly.
#pragma once

#include <vector>

#include "dsv4/runtime/sampler.h"

namespace dsv4 {

struct DraftVerdict {
  int64_t accepted = 0;    // drafts d_1..d_accepted are kept
  int32_t next_token = 0;  // the recovered token (first rejection) or the bonus token (all accepted)
};

// target_logits: K+1 rows [K+1, V]; row i is the target's prediction after the verified prefix
// [last, d_1..d_i]. drafts: d_1..d_K. draft_probs: the K distributions the drafts were sampled from
// (ignored for greedy sampling, where a draft is accepted while it equals the target's argmax).
// Sampled: accept d_i with probability min(1, p_i(d_i) / q_i(d_i)); on rejection draw from
// normalise(max(0, p_i - q_i)); after K acceptances draw the bonus token from p_K.
DraftVerdict verify_drafts(const float* target_logits, int64_t vocab, const std::vector<int32_t>& drafts,
                           const std::vector<std::vector<float>>& draft_probs, Sampler& sampler);

}  // namespace dsv4
