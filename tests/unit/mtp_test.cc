// The MTP drafter against the PyTorch reference built from transformers' modules
// (tools/reference/make_mtp_fixtures.py): target logits and residual, step-0 draft logits over a whole
// sequence, and greedy draft steps that continue from the drafter's own output.
#include "dsv4/runtime/engine.h"
#include "test_util.h"

namespace dsv4 {
namespace {

struct MtpFixture {
  std::unique_ptr<SafetensorsFile> expected;
  std::vector<int32_t> ids(const char* name) const {
    const Tensor t = expected->view(*expected->find(name));
    std::vector<int32_t> v;
    for (int64_t i = 0; i < t.numel(); ++i) v.push_back(static_cast<int32_t>(t.ptr<int64_t>()[i]));
    return v;
  }
  std::vector<float> floats(const char* name) const { return test::to_vector(expected->view(*expected->find(name))); }
};

const std::string kDir = test::source_dir() + "/tests/fixtures/mtp/mtp_tiny";

TEST(MtpDrafter, MatchesPyTorchReference) {
  MtpFixture f{SafetensorsFile::open(kDir + "/expected.safetensors")};
  EngineOptions eo;
  eo.max_seqs = 1;
  Engine engine(kDir, eo);  // official DeepSeek naming, with mtp.0.*
  ASSERT_TRUE(engine.has_mtp());
  const std::vector<int32_t> ids = f.ids("input_ids"), next = f.ids("next_ids");
  const int64_t T = static_cast<int64_t>(ids.size()), V = engine.config().vocab_size;

  // Target prefill: logits and the pre-hc_head residual the drafter starts from.
  BatchBuilder b;
  b.add({0, 0, ids, true});
  std::vector<float> logits, residual;
  engine.forward(b, &logits, &residual);
  const std::vector<float> ref_logits = f.floats("target_logits"), ref_residual = f.floats("target_residual");
  EXPECT_LE(test::max_rel_error(logits.data(), ref_logits.data(), logits.size()), 1e-4);
  EXPECT_LE(test::max_rel_error(residual.data(), ref_residual.data(), residual.size()), 1e-4);

  // Step 0 over every position: (residual at p, token at p + 1) -> token after next.
  BatchBuilder m;
  m.add({0, 0, next, true});
  std::vector<float> draft_logits, draft_hidden;
  engine.mtp_forward(m, residual, &draft_logits, &draft_hidden);
  const std::vector<float> ref_mtp = f.floats("mtp_logits");
  const double err0 = test::max_rel_error(draft_logits.data(), ref_mtp.data(), draft_logits.size());
  std::printf("MTP step 0: max rel error %.3g\n", err0);
  EXPECT_LE(err0, 1e-4);

  // Greedy draft steps continuing from the drafter's own output.
  const std::vector<int32_t> drafts = f.ids("draft_ids");
  const std::vector<float> ref_steps = f.floats("draft_logits");
  const int64_t W = engine.config().hc_dim();
  std::vector<float> prev(draft_hidden.end() - W, draft_hidden.end());
  int32_t d = argmax_token(draft_logits.data() + (T - 1) * V, V);
  for (size_t j = 0; j < drafts.size(); ++j) {
    ASSERT_EQ(d, drafts[j]) << "draft " << j + 1;
    BatchBuilder s;
    s.add({0, static_cast<int32_t>(T + j), {d}, true});
    std::vector<float> step_logits, step_hidden;
    engine.mtp_forward(s, prev, &step_logits, &step_hidden);
    const double err = test::max_rel_error(step_logits.data(), ref_steps.data() + j * V, V);
    std::printf("MTP draft step %zu: max rel error %.3g\n", j + 1, err);
    EXPECT_LE(err, 1e-4);
    prev = step_hidden;
    d = argmax_token(step_logits.data(), V);
  }
}

}  // namespace
}  // namespace dsv4
