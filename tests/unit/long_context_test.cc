// Long contexts on the CPU: a random tiny model (every layer type; CSA keeps the top 4 of its rate-4 entries)
// over 1,024 positions — up to 256 CSA entries, so every CSA layer selects 4 of many — with the sequence's
// pages scattered through the pool at the smallest page size the config allows (the rings and the compressor
// windows cross page boundaries, context pages land in any order). Paged vs the unpaged fp32 run: logits within
// 1e-5 and the indexer's selections identical, for one-shot and chunked prefill and single-token decode.
#include <algorithm>
#include <memory>
#include <numeric>
#include <random>

#include "dsv4/model/deepseek_v4.h"
#include "dsv4/model/forward_memory.h"
#include "dsv4/model/random_checkpoint.h"
#include "dsv4/ops/testing.h"
#include "dsv4/runtime/batch.h"
#include "test_util.h"

namespace dsv4 {
namespace {

// Records every indexer selection of the forwards it watches, in call order.
class SelectionRecorder : public ops::ChoiceTap {
 public:
  std::vector<std::vector<int32_t>> calls;
  void after_moe_route(ExecContext&, Tensor, Tensor, Tensor, Tensor, const ops::RouteParams&) override {}
  void after_indexer_topk(ExecContext&, Tensor selected, Tensor, Tensor, const CompressorState&, const BatchMeta& meta,
                          float) override {
    const int32_t* p = selected.ptr<int32_t>();
    calls.emplace_back(p, p + meta.num_tokens * selected.size(1));
  }
};

struct ChunkedRun {
  std::vector<float> logits;                   // last position of every chunk, [chunks, V]
  std::vector<std::vector<int32_t>> selected;  // every indexer call
};

ChunkedRun run_chunks(const ModelConfig& cfg, const ModelWeights& w, const std::vector<int32_t>& ids,
                      const std::vector<int64_t>& chunks, bool scattered) {
  ModelOptions opt;
  opt.max_model_len = static_cast<int64_t>(ids.size());
  if (scattered) {
    opt.page_tokens = std::lcm(cfg.compress_rate_csa, cfg.compress_rate_hca);
    const StateLayout layout = StateLayout::make(cfg, opt, DType::F32, false);
    opt.num_pages = 2 * layout.table_columns() + 3;
  }
  ModelState state(cfg, opt, Device::kCPU, false);
  if (scattered) {  // a random permutation of the pool's pages, the first table_columns of them to slot 0
    EXPECT_GT(state.layout().ring_pages, 1);
    EXPECT_GT(state.layout().context_columns, 8);
    std::vector<int32_t> pages(static_cast<size_t>(state.num_pages()));
    std::iota(pages.begin(), pages.end(), 0);
    std::mt19937 rng(11);
    std::shuffle(pages.begin(), pages.end(), rng);
    std::copy_n(pages.begin(), state.layout().table_columns(), state.table_row(0));
    state.mark_dirty(0);
  }
  const int64_t longest = *std::max_element(chunks.begin(), chunks.end());
  Arena scratch("scratch", measure_forward_scratch(cfg, w, opt, Device::kCPU, {longest, 1, false}), Device::kCPU);
  ExecContext ctx;
  ctx.scratch = &scratch;
  SelectionRecorder rec;
  ops::ChoiceTap* before = ops::set_choice_tap(&rec);
  const int64_t V = cfg.vocab_size;
  ChunkedRun out;
  int64_t done = 0;
  for (int64_t n : chunks) {
    BatchBuilder b;
    b.add({0, static_cast<int32_t>(done), std::vector<int32_t>(ids.begin() + done, ids.begin() + done + n), false});
    std::vector<float> logits(static_cast<size_t>(V));
    scratch.reset();
    target_forward(ctx, cfg, w, state, b.meta(), b.logit_rows(), Tensor(logits.data(), DType::F32, {1, V}), Tensor());
    out.logits.insert(out.logits.end(), logits.begin(), logits.end());
    done += n;
  }
  ops::set_choice_tap(before);
  out.selected = std::move(rec.calls);
  return out;
}

TEST(LongContext, ScatteredPagesSelectAsUnpaged) {
  ModelConfig cfg = tiny_config();
  const int64_t L = 1024;
  ASSERT_LT(cfg.index_topk * 16, L / cfg.compress_rate_csa);  // entries >> top-k
  const ModelWeights w = random_weights(cfg, LoadOptions{Device::kCPU, false}, 5);
  std::mt19937 rng(3);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(cfg.vocab_size) - 1);
  std::vector<int32_t> ids(L);
  for (int32_t& t : ids) t = tok(rng);
  std::vector<int64_t> decode = {L - 6};
  while (static_cast<int64_t>(decode.size()) < 7) decode.push_back(1);
  for (const std::vector<int64_t>& chunks :
       {std::vector<int64_t>{L}, std::vector<int64_t>{333, 500, L - 833}, decode}) {
    const ChunkedRun dense = run_chunks(cfg, w, ids, chunks, false), paged = run_chunks(cfg, w, ids, chunks, true);
    ASSERT_EQ(dense.selected.size(), paged.selected.size());
    ASSERT_FALSE(dense.selected.empty());
    for (size_t i = 0; i < dense.selected.size(); ++i) {
      EXPECT_EQ(dense.selected[i], paged.selected[i]) << "indexer call " << i << ", " << chunks.size() << " chunks";
    }
    // The last query of the sequence selects a full top-k out of its 256 entries.
    const std::vector<int32_t>& last = dense.selected.back();
    EXPECT_EQ(std::count(last.end() - cfg.index_topk, last.end(), -1), 0);
    const double err = test::max_rel_error(paged.logits.data(), dense.logits.data(), dense.logits.size());
    EXPECT_LE(err, 1e-5) << chunks.size() << " chunks";
  }
}

}  // namespace
}  // namespace dsv4
