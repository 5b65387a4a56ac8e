// --cuda-weights quantized, the host side (issue 17): the Weight type never lets a quantised matrix be read as plain
// values, the loader's quantised layout (checked on the CPU: keep_quantized holds the checkpoint's codes and scales
// byte for byte, and they dequantise to exactly the plain load's values), and the option's parsing and refusals
// before any weight is read. The CUDA products on these weights: tests/gpu/cuda_quant_test.cu and
// cuda_model_test.cu (CudaModel.QuantizedWeights*).
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>

#include "dsv4/core/buffer.h"
#include "dsv4/core/weight.h"
#include "dsv4/model/quantize.h"
#include "dsv4/model/random_checkpoint.h"
#include "dsv4/model/weights.h"
#include "dsv4/ops/ops.h"
#include "dsv4/runtime/engine.h"
#include "test_util.h"

namespace dsv4 {
namespace {

namespace fs = std::filesystem;

std::string quantized_fixture(const std::string& name) {
  return test::source_dir() + "/tests/fixtures/quantized/" + name;
}

// Runs fn, which must throw a dsv4::Error of `code` whose message holds every one of `parts`.
void expect_error(const std::function<void()>& fn, StatusCode code, const std::vector<std::string>& parts) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' in: " << msg;
    return;
  }
  ADD_FAILURE() << "expected an error";
}

TEST(QuantizedWeight, IsNeverReadAsPlainValues) {
  std::vector<uint8_t> codes(256 * 64, 0x38), scale(2, 127);  // E4M3 0x38 = 1.0, scale 2^0
  const Weight w =
      Weight::quantized_matrix({WeightFormat::kFp8Block, codes.data(), scale.data(), 1, 256, 64}, Device::kCPU);
  EXPECT_TRUE(w.quantized());
  EXPECT_EQ(w.shape(), (std::vector<int64_t>{256, 64}));
  EXPECT_EQ(w.size(-1), 64);
  EXPECT_EQ(w.nbytes(), 256u * 64u + 2u);
  expect_error([&] { (void)w.plain(); }, StatusCode::kInternal, {"quantised weight", "fp8-e4m3"});
  expect_error(
      [&] {
        const Tensor& t = w;
        (void)t;
      },
      StatusCode::kInternal, {"reads plain values"});
  // Every CPU op refuses it clearly (the CPU loader dequantises, so this is a bug, not bad input).
  ExecContext ctx;
  HostTensor x(DType::F32, {1, 64}), out(DType::F32, {1, 256});
  expect_error([&] { ops::linear(ctx, out.t(), x.t(), w); }, StatusCode::kInternal,
               {"linear", "CPU backend takes plain weights only"});
  expect_error([&] { ops::linears(ctx, x.t(), {{out.t(), w}}); }, StatusCode::kInternal, {"linears"});
  // A plain weight is its tensor; asking it for codes is the bug the other way round.
  const Weight p = out.t();
  EXPECT_FALSE(p.quantized());
  EXPECT_EQ(p.plain().data(), out.t().data());
  EXPECT_EQ(p.shape(), out.t().shape());
  expect_error([&] { (void)p.quant(); }, StatusCode::kInternal, {"plain weight"});
}

TEST(QuantizedWeight, ExpertStacksHoldTheSharedExpertInItsOwnFormat) {
  std::vector<uint8_t> routed(3 * 32 * 32), routed_scale(3 * 32 * 2), shared(32 * 64), shared_scale(1);
  const QuantMatrices r{WeightFormat::kFp4, routed.data(), routed_scale.data(), 3, 32, 64};
  const QuantMatrices s{WeightFormat::kFp8Block, shared.data(), shared_scale.data(), 1, 32, 64};
  const Weight w = Weight::quantized_stack(r, s, Device::kCPU);
  EXPECT_EQ(w.shape(), (std::vector<int64_t>{4, 32, 64}));  // the shared expert is stack index 3
  EXPECT_EQ(w.nbytes(), routed.size() + routed_scale.size() + shared.size() + shared_scale.size());
  EXPECT_EQ(w.shared().format, WeightFormat::kFp8Block);
  EXPECT_EQ(Weight::quantized_stack(r, {}, Device::kCPU).shape(), (std::vector<int64_t>{3, 32, 64}));
  QuantMatrices bad = s;
  bad.cols = 32;
  expect_error([&] { Weight::quantized_stack(r, bad, Device::kCPU); }, StatusCode::kInvalidArgument,
               {"shared expert", "[32, 32]", "[32, 64]"});
  QuantMatrices odd = r;
  odd.cols = 63;
  expect_error([&] { Weight::quantized_stack(odd, {}, Device::kCPU); }, StatusCode::kInvalidArgument,
               {"fp4-e2m1", "[32, 63]"});
}

// The values of matrix `index` of `m` (host memory), by the host dequantiser.
std::vector<float> dequantized(const QuantMatrices& m, int64_t index) {
  std::vector<float> v(static_cast<size_t>(m.rows * m.cols));
  const uint8_t* codes = m.codes + index * quant_matrix_code_bytes(m.format, m.rows, m.cols);
  const uint8_t* scale = m.scale + index * quant_matrix_scale_bytes(m.format, m.rows, m.cols);
  if (m.format == WeightFormat::kFp8Block) {
    dequantize_fp8_block(codes, scale, m.rows, m.cols, v.data(), "test");
  } else {
    dequantize_fp4(codes, scale, m.rows, m.cols, v.data(), "test");
  }
  return v;
}

// One quantised matrix of the loaded layout against the checkpoint (bytes) and the plain load (values).
void expect_matrix(const WeightReader& c, const std::string& name, const QuantMatrices& m, int64_t index,
                   const Tensor& plain) {
  SCOPED_TRACE(name);
  const Tensor codes = c.raw(name), scale = c.raw_scale(name);
  ASSERT_EQ(static_cast<int64_t>(codes.nbytes()), quant_matrix_code_bytes(m.format, m.rows, m.cols));
  ASSERT_EQ(static_cast<int64_t>(scale.nbytes()), quant_matrix_scale_bytes(m.format, m.rows, m.cols));
  EXPECT_EQ(std::memcmp(m.codes + index * codes.nbytes(), codes.data(), codes.nbytes()), 0);
  EXPECT_EQ(std::memcmp(m.scale + index * scale.nbytes(), scale.data(), scale.nbytes()), 0);
  EXPECT_EQ(dequantized(m, index), test::to_vector(plain));
}

// keep_quantized on the CPU (the CUDA loader's layout without a GPU): every FP8 / FP4 matrix as stored, stacks of
// routed experts in the expert format with the FP8 shared expert apart, everything else as the plain load.
TEST(QuantizedWeight, LoaderKeepsTheCheckpointsCodesAndScales) {
  for (const char* fixture : {"qtiny_a", "qtiny_b", "qtiny_c"}) {
    SCOPED_TRACE(fixture);
    const std::string dir = quantized_fixture(fixture);
    const Checkpoint ckpt = Checkpoint::open(dir);
    const ModelConfig cfg = ModelConfig::from_file(dir + "/config.json");
    ASSERT_TRUE(cfg.quantization.quantized);
    const WeightReader c(ckpt, cfg, true);  // the checkpoint's tensors by official name (it saves transformers')
    const ModelWeights plain = load_weights(ckpt, cfg, {Device::kCPU, true});
    LoadOptions o{Device::kCPU, true};
    o.keep_quantized = true;
    const ModelWeights q = load_weights(ckpt, cfg, o);
    EXPECT_TRUE(q.quantized);
    EXPECT_FALSE(plain.quantized);
    EXPECT_LT(q.storage.capacity(), plain.storage.capacity());
    size_t quantized_bytes = 0, plain_bytes = 0;  // of the matrices checked below
    EXPECT_EQ(q.parameter_count, plain.parameter_count);
    auto check_block = [&](const std::string& p, const BlockWeights& qb, const BlockWeights& pb) {
      const std::vector<std::tuple<const char*, const Weight*, const Weight*>> dense = {
          {"attn.wq_a", &qb.attn.wq_a, &pb.attn.wq_a},
          {"attn.wq_b", &qb.attn.wq_b, &pb.attn.wq_b},
          {"attn.wkv", &qb.attn.wkv, &pb.attn.wkv},
          {"attn.wo_a", &qb.attn.wo_a, &pb.attn.wo_a},
          {"attn.wo_b", &qb.attn.wo_b, &pb.attn.wo_b},
          {"attn.indexer.wq_b", &qb.attn.indexer_wq_b, &pb.attn.indexer_wq_b}};
      for (const auto& [n, qw, pw] : dense) {
        if (!pw->defined()) continue;  // the indexer of non-CSA layers
        ASSERT_TRUE(qw->quantized()) << p << n;
        EXPECT_EQ(qw->quant().format, WeightFormat::kFp8Block);
        EXPECT_EQ(qw->shape(), pw->shape());
        quantized_bytes += qw->nbytes();
        plain_bytes += pw->nbytes();
        expect_matrix(c, str_cat(p, n, ".weight"), qw->quant(), 0, *pw);
      }
      const int64_t E = cfg.n_routed_experts;
      const std::vector<std::tuple<const char*, const Weight*, const Weight*, const Weight*>> stacks = {
          {"w1", &qb.ffn.w1, &pb.ffn.w1, &qb.ffn.shared_w1},
          {"w2", &qb.ffn.w2, &pb.ffn.w2, &qb.ffn.shared_w2},
          {"w3", &qb.ffn.w3, &pb.ffn.w3, &qb.ffn.shared_w3}};
      for (const auto& [proj, qw, pw, qs] : stacks) {
        ASSERT_TRUE(qw->quantized()) << p << proj;
        EXPECT_EQ(qw->shape(), pw->shape());  // [E + 1, rows, cols]
        quantized_bytes += qw->nbytes();
        plain_bytes += pw->nbytes();
        EXPECT_EQ(qw->quant().format, cfg.quantization.experts);
        EXPECT_EQ(qw->quant().count, E);
        ASSERT_EQ(qw->shared().count, 1);
        EXPECT_EQ(qw->shared().format, WeightFormat::kFp8Block);
        EXPECT_EQ(qs->quant().codes, qw->shared().codes);  // shared_w* is the stack's shared part
        // FP4 stacks carry the widest row span of their group scales (CUDA's E4M3 MoE products check it).
        const QuantMatrices& r = qw->quant();
        EXPECT_EQ(r.fp4_row_span, r.format == WeightFormat::kFp4 ? fp4_row_scale_span(r.scale, E * r.rows, r.cols) : -1)
            << p << proj;
        EXPECT_EQ(qw->shared().fp4_row_span, -1) << p << proj;  // FP8
        for (int64_t e = 0; e < E; ++e) {
          expect_matrix(c, str_cat(p, "ffn.experts.", e, ".", proj, ".weight"), qw->quant(), e,
                        pw->plain().select(0, e));
        }
        expect_matrix(c, str_cat(p, "ffn.shared_experts.", proj, ".weight"), qw->shared(), 0, pw->plain().select(0, E));
      }
      // Plain tensors are the plain load's.
      EXPECT_EQ(test::to_vector(qb.attn.compressor.wkv.data() ? qb.attn.compressor.wkv : qb.ffn.gate),
                test::to_vector(pb.attn.compressor.wkv.data() ? pb.attn.compressor.wkv : pb.ffn.gate));
    };
    for (size_t l = 0; l < q.layers.size(); ++l) check_block(str_cat("layers.", l, "."), q.layers[l], plain.layers[l]);
    ASSERT_EQ(q.mtp.has_value(), plain.mtp.has_value());
    if (q.mtp) {
      check_block("mtp.0.", q.mtp->block, plain.mtp->block);
      // H = 64: no whole 128-column scale blocks to join, so eh_proj is plain.
      EXPECT_FALSE(q.mtp->eh_proj.quantized());
      EXPECT_EQ(test::to_vector(q.mtp->eh_proj), test::to_vector(plain.mtp->eh_proj));
    }
    EXPECT_EQ(test::to_vector(q.embed), test::to_vector(plain.embed));
    // f32 plain values vs 1-byte (FP8) or half-byte (FP4) codes plus one scale byte per 128² or 32 values.
    EXPECT_LT(quantized_bytes * 3, plain_bytes);
  }
}

// The loader validates what it keeps as the plain load does (here a NaN scale), and refuses keep_quantized for a
// checkpoint that has nothing quantised.
TEST(QuantizedWeight, LoaderRefusals) {
  const std::string tmp = (fs::path(testing::TempDir()) / str_cat("dsv4_qweights_", ::getpid())).string();
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  const std::string src = quantized_fixture("qtiny_a");
  {
    const Checkpoint c = Checkpoint::open(src);
    std::vector<HostTensor> copies;  // reserved: HostTensor views must not move
    copies.reserve(c.names().size());
    std::vector<std::pair<std::string, Tensor>> list;
    const std::vector<std::string> names = c.names();
    for (const std::string& n : names) {
      const Tensor v = c.view(n);
      copies.emplace_back(v.dtype(), v.shape());
      std::memcpy(copies.back().t().data(), v.data(), v.nbytes());
      if (canonical_tensor_name(n) == "layers.1.attn.wq_a.scale") copies.back().t().ptr<uint8_t>()[0] = 0xFF;
    }
    for (size_t i = 0; i < copies.size(); ++i) list.emplace_back(names[i], copies[i].t());
    save_safetensors(tmp + "/model.safetensors", list);
    fs::copy_file(src + "/config.json", tmp + "/config.json");
  }
  LoadOptions o{Device::kCPU, true};
  o.keep_quantized = true;
  expect_error([&] { load_weights(Checkpoint::open(tmp), ModelConfig::from_file(tmp + "/config.json"), o); },
               StatusCode::kInvalidArgument, {"layers.1.attn.wq_a.weight", "0xFF (NaN in E8M0)"});
  fs::remove_all(tmp);
  const std::string plain = test::fixture_dir("tiny_a");
  expect_error([&] { load_weights(Checkpoint::open(plain), ModelConfig::from_file(plain + "/config.json"), o); },
               StatusCode::kInvalidArgument, {"--cuda-weights quantized", "not quantised"});
  expect_error([&] { random_weights(ModelConfig::from_file(plain + "/config.json"), o, 1); },
               StatusCode::kInvalidArgument, {"synthetic weights kept quantised need a quantised config"});
}

// The MTP's eh_proj = [h_proj | e_proj] stays FP8 when H % 128 == 0: codes rows and 128-row scale rows joined side
// by side dequantise to exactly the plain load's joined matrix (a checkpoint with H = 128 from `dsv4 quantize`).
TEST(QuantizedWeight, JoinedMtpProjectionStaysFp8AtWholeScaleBlocks) {
  const std::string tmp = (fs::path(testing::TempDir()) / str_cat("dsv4_qeh_", ::getpid())).string();
  fs::remove_all(tmp);
  ModelConfig cfg = tiny_config();
  cfg.hidden_size = 128;
  write_random_checkpoint(tmp + "/bf16", cfg, 5);
  QuantizeOptions qo;
  quantize_checkpoint(tmp + "/bf16", tmp + "/q", qo);
  const Checkpoint ckpt = Checkpoint::open(tmp + "/q");
  const ModelConfig qcfg = ModelConfig::from_file(tmp + "/q/config.json");
  const ModelWeights plain = load_weights(ckpt, qcfg, {Device::kCPU, true});
  LoadOptions o{Device::kCPU, true};
  o.keep_quantized = true;
  const ModelWeights q = load_weights(ckpt, qcfg, o);
  ASSERT_TRUE(q.mtp.has_value());
  const Weight& eh = q.mtp->eh_proj;
  ASSERT_TRUE(eh.quantized());
  EXPECT_EQ(eh.quant().format, WeightFormat::kFp8Block);
  EXPECT_EQ(eh.shape(), (std::vector<int64_t>{128, 256}));
  EXPECT_EQ(dequantized(eh.quant(), 0), test::to_vector(plain.mtp->eh_proj));
  fs::remove_all(tmp);
}

// The start-up note for --activation-quant fp8 on CUDA: empty while every FP4 stack's rows span at most 14 binades
// (the synthetic stacks), else how many layers keep the bf16 MoE MMAs and the widest span (or that one is
// unmeasured); plain weights never get one.
TEST(QuantizedWeight, Bf16MoeLayersNoteNamesTheLayersPastTheE4m3Span) {
  ModelConfig cfg = tiny_config();
  cfg.quantization = QuantizationConfig::official(WeightFormat::kFp4);
  LoadOptions o{Device::kCPU, true};
  o.keep_quantized = true;
  ModelWeights q = random_weights(cfg, o, 7);
  EXPECT_EQ(bf16_moe_layers_note(q), "");
  EXPECT_EQ(bf16_moe_layers_note(random_weights(cfg, {Device::kCPU, true}, 7)), "");
  const auto with_span = [](const Weight& w, int32_t span) {
    QuantMatrices r = w.quant();
    r.fp4_row_span = span;
    return Weight::quantized_stack(r, w.shared(), Device::kCPU);
  };
  const int64_t layers = static_cast<int64_t>(q.layers.size()) + (q.mtp.has_value() ? 1 : 0);
  q.layers[1].ffn.w2 = with_span(q.layers[1].ffn.w2, 20);
  q.layers[1].ffn.w3 = with_span(q.layers[1].ffn.w3, 17);
  EXPECT_EQ(bf16_moe_layers_note(q), str_cat("--activation-quant fp8: the MoE prefill of 1 of ", layers,
                                             " layers keeps bf16 MMAs (slower than the E4M3 ones): their FP4 rows span "
                                             "up to 20 binades, the E4M3 products take at most 14"));
  q.layers[2].ffn.w1 = with_span(q.layers[2].ffn.w1, -1);
  const std::string note = bf16_moe_layers_note(q);
  EXPECT_NE(note.find("of 2 of "), std::string::npos) << note;
  EXPECT_NE(note.find("an unmeasured number of binades"), std::string::npos) << note;
}

// Synthetic weights kept quantised (bench --synthetic ... --cuda-weights quantized): DeepSeek's official layout, codes
// of unit-scale values made by the host codecs once per format and shape, so every matrix of a shape holds the same
// bytes; plain tensors as the plain synthetic weights.
TEST(QuantizedWeight, SyntheticWeightsInTheOfficialLayout) {
  ModelConfig cfg = tiny_config();
  cfg.quantization = QuantizationConfig::official(WeightFormat::kFp4);
  LoadOptions o{Device::kCPU, true};
  o.keep_quantized = true;
  const ModelWeights q = random_weights(cfg, o, 7);
  const ModelWeights plain = random_weights(cfg, {Device::kCPU, true}, 7);
  ASSERT_TRUE(q.quantized);
  EXPECT_LT(q.storage.capacity(), plain.storage.capacity());
  EXPECT_EQ(q.parameter_count, plain.parameter_count);
  const BlockWeights &a = q.layers[0], &b = q.layers[1];
  ASSERT_TRUE(a.attn.wq_a.quantized() && a.ffn.w1.quantized());
  EXPECT_EQ(a.attn.wq_a.quant().format, WeightFormat::kFp8Block);
  EXPECT_EQ(a.ffn.w1.quant().format, WeightFormat::kFp4);
  EXPECT_EQ(a.ffn.w1.shared().format, WeightFormat::kFp8Block);
  EXPECT_EQ(a.ffn.w1.shape(), plain.layers[0].ffn.w1.shape());
  // Same shape, same codes: layer 0's and layer 1's wq_a, expert 0 and the last expert of a stack.
  const QuantMatrices &m0 = a.attn.wq_a.quant(), &m1 = b.attn.wq_a.quant();
  const size_t code = static_cast<size_t>(quant_matrix_code_bytes(m0.format, m0.rows, m0.cols));
  EXPECT_EQ(std::memcmp(m0.codes, m1.codes, code), 0);
  const QuantMatrices& e = a.ffn.w2.quant();
  const int64_t e_code = quant_matrix_code_bytes(e.format, e.rows, e.cols);
  EXPECT_EQ(std::memcmp(e.codes, e.codes + (e.count - 1) * e_code, static_cast<size_t>(e_code)), 0);
  // Unit-scale values: the dequantised matrix's standard deviation is about 1/sqrt(cols).
  for (const QuantMatrices* m : {&m0, &e}) {
    const std::vector<float> v = dequantized(*m, 0);
    double sq = 0;
    for (float x : v) sq += static_cast<double>(x) * x;
    const double sd = std::sqrt(sq / static_cast<double>(v.size()));
    const double want = 1.0 / std::sqrt(static_cast<double>(m->cols));
    EXPECT_NEAR(sd, want, 0.25 * want) << weight_format_name(m->format);
  }
  // The synthetic stacks' FP4 row spans are measured and within the E4M3 MoE products' bound, so that `bench
  // --synthetic flash --cuda-weights quantized --activation-quant fp8` times those products.
  for (const Weight* w : {&a.ffn.w1, &a.ffn.w2, &a.ffn.w3}) {
    const QuantMatrices& r = w->quant();
    EXPECT_EQ(r.fp4_row_span, fp4_row_scale_span(r.scale, r.count * r.rows, r.cols));
    EXPECT_GE(r.fp4_row_span, 0);
    EXPECT_LE(r.fp4_row_span, 14);
  }
  EXPECT_EQ(test::to_vector(q.embed), test::to_vector(plain.embed));
}

// expert_dtype bf16 next to FP8 dense projections: the routed experts stay plain, and so does the shared expert, a
// slice of their stack; the arena is sized for it plain (counted as FP8, the load ran out of arena).
TEST(QuantizedWeight, SharedExpertNextToPlainRoutedExpertsStaysPlain) {
  ModelConfig cfg = tiny_config();
  cfg.quantization = QuantizationConfig::official(WeightFormat::kPlain);
  LoadOptions o{Device::kCPU, true};
  o.keep_quantized = true;
  const ModelWeights q = random_weights(cfg, o, 7);
  ASSERT_TRUE(q.quantized);
  const BlockWeights& a = q.layers[0];
  EXPECT_TRUE(a.attn.wq_a.quantized());
  EXPECT_FALSE(a.ffn.w1.quantized());
  EXPECT_FALSE(a.ffn.shared_w2.quantized());
  EXPECT_EQ(a.ffn.w1.shape(),
            (std::vector<int64_t>{cfg.n_routed_experts + 1, cfg.moe_intermediate_size, cfg.hidden_size}));
}

// The CUDA dispatch on quantised weights, through its measuring pass (ExecContext::measuring: launches and GEMMs are
// skipped, so this runs without a GPU, on addresses never dereferenced): which path each shape takes shows in the
// scratch it counts — none for quant_gemv (decode, T <= 16) and moe_decode_experts_quant's plan and rows only, the
// dequantised bf16 matrix / stacks for the fallbacks — and what the measuring pass counts is what the forward's
// arena is sized for.
TEST(QuantizedWeight, CudaDispatchPathsAndTheirScratchAreMeasured) {
#ifdef DSV4_NO_CUDA
  GTEST_SKIP() << "CPU-only build: no CUDA dispatch";
#else
  auto at = [](uintptr_t gib) { return reinterpret_cast<uint8_t*>((uintptr_t{1} << 46) + (gib << 30)); };
  auto device = [&](uintptr_t gib, DType dtype, std::vector<int64_t> shape) {
    return Tensor(at(gib), dtype, shape, Device::kCUDA);
  };
  // Scratch high water of one op on a fresh counting arena.
  auto scratch_of = [](const std::function<void(ExecContext&)>& op) {
    Arena counting = Arena::counting("test-scratch", Device::kCUDA);
    ExecContext ctx;
    ctx.device = Device::kCUDA;
    ctx.measuring = true;
    ctx.scratch = &counting;
    op(ctx);
    return counting.high_water();
  };
  const int64_t N = 256, K = 512;
  const Weight w = Weight::quantized_matrix({WeightFormat::kFp8Block, at(1), at(2), 1, N, K}, Device::kCUDA);
  for (int64_t T : {1, 8, 9, 16, 17, 64}) {
    const size_t used = scratch_of([&](ExecContext& ctx) {
      ops::linear(ctx, device(3, DType::BF16, {T, N}), device(4, DType::BF16, {T, K}), w);
    });
    if (T <= 16) {  // kQuantGemvMaxTokens
      EXPECT_EQ(used, 0u) << "T = " << T << ": quant_gemv";
    } else {
      EXPECT_GE(used, static_cast<size_t>(N * K * 2)) << "T = " << T << ": the dequantised bf16 matrix";
    }
  }
  // Under --activation-quant fp8 (ExecContext::fp8_input_rows) past the GEMV: the block-scaled FP8 product's
  // scratch (x's codes and scales at rows padded to 16, the f32 scale grid, the padded product) and the dequantising
  // path's, since the run falls back to it where cuBLASLt has no algorithm; the GEMV's rows take none either way.
  for (int64_t T : {16, 1000}) {
    auto run = [&](bool fp8_rows) {
      return scratch_of([&](ExecContext& ctx) {
        ctx.fp8_input_rows = fp8_rows;
        ops::linear(ctx, device(3, DType::BF16, {T, N}), device(4, DType::BF16, {T, K}), w);
      });
    };
    const size_t used = run(true);
    if (T <= 16) {
      EXPECT_EQ(used, 0u) << "T = " << T << ": quant_gemv";
      continue;
    }
    const size_t Mp = 1008, fp8 = Mp * K + Mp * (K / 128) * 4 + 2 * (K / 128) * 4 + Mp * N * 2;
    EXPECT_GE(used, std::max(fp8, static_cast<size_t>(N * K * 2))) << "T = " << T;
    EXPECT_GT(used, run(false)) << "T = " << T << ": the FP8 product's scratch is counted";
  }
  // linears: quantised and plain projections side by side.
  EXPECT_EQ(scratch_of([&](ExecContext& ctx) {
              ops::linears(ctx, device(4, DType::BF16, {2, K}),
                           {{device(3, DType::BF16, {2, N}), w},
                            {device(5, DType::F32, {2, 64}), device(6, DType::BF16, {64, K})}});
            }),
            0u);
  expect_error(
      [&] {
        scratch_of([&](ExecContext& ctx) {
          ops::linear(ctx, device(3, DType::F32, {1, N}), device(4, DType::F32, {1, K}), w);
        });
      },
      StatusCode::kInvalidArgument, {"linear", "takes bf16 activations"});
  // grouped_linear (wo_a): FP8 groups of whole 128-row scale blocks stay on quant_gemv; others dequantise.
  for (int64_t per_group : {128, 16}) {
    const Weight wo_a =
        Weight::quantized_matrix({WeightFormat::kFp8Block, at(1), at(2), 1, 2 * per_group, K}, Device::kCUDA);
    const size_t used = scratch_of([&](ExecContext& ctx) {
      ops::grouped_linear(ctx, device(3, DType::BF16, {1, 2 * per_group}), device(4, DType::BF16, {1, 2 * K}), wo_a, 2);
    });
    EXPECT_EQ(used == 0, per_group == 128) << per_group << "-row groups: " << used << " bytes";
  }
  // moe_experts: FP4 routed experts + an FP8 shared one. I = 32: the quantised decode kernel (scratch: the plan and
  // the rows' activations); I = 48 (a partial FP4 group in w2's rows): the stacks dequantised to bf16.
  const int64_t E = 4, H = 64, T = 3, k = 2;
  for (int64_t I : {32, 48}) {
    auto stack = [&](int64_t rows, int64_t cols, uintptr_t gib) {
      return Weight::quantized_stack({WeightFormat::kFp4, at(gib), at(gib + 1), E, rows, cols},
                                     {WeightFormat::kFp8Block, at(gib + 2), at(gib + 3), 1, rows, cols}, Device::kCUDA);
    };
    const Weight w1 = stack(I, H, 10), w2 = stack(H, I, 20), w3 = stack(I, H, 30);
    const size_t used = scratch_of([&](ExecContext& ctx) {
      ops::moe_experts(ctx, device(3, DType::BF16, {T, H}), device(4, DType::BF16, {T, H}),
                       device(5, DType::I32, {T, k}), device(6, DType::F32, {T, k}), w1, w2, w3, 10.0f, true);
    });
    const size_t stacks = static_cast<size_t>(3 * (E + 1) * I * H * 2);
    if (I == 32) {
      EXPECT_LT(used, stacks) << "the quantised decode kernel";
    } else {
      EXPECT_GE(used, stacks) << "the dequantised stacks";
    }
  }
#endif
}

// --cuda-weights: parsed and checked before any weight is read.
TEST(QuantizedWeight, OptionParsingAndRefusals) {
  EXPECT_FALSE(parse_cuda_weights("bf16"));
  EXPECT_TRUE(parse_cuda_weights("quantized"));
  expect_error([] { parse_cuda_weights("fp4"); }, StatusCode::kInvalidArgument,
               {"--cuda-weights must be bf16 or quantized", "'fp4'"});
  EngineOptions o;
  o.device = Device::kCUDA;
  o.cuda_quantized_weights = true;
  EXPECT_NO_THROW(check_cuda_weights(o));
  EngineOptions cpu = o;
  cpu.device = Device::kCPU;
  expect_error([&] { check_cuda_weights(cpu); }, StatusCode::kUnsupported,
               {"--cuda-weights quantized", "--device cpu"});
  EngineOptions f32 = o;
  f32.cuda_precision = DType::F32;
  expect_error([&] { check_cuda_weights(f32); }, StatusCode::kInvalidArgument, {"--cuda-precision f32"});
  EngineOptions tp = o;
  tp.parallel.tensor_parallel_size = 2;
  expect_error([&] { check_cuda_weights(tp); }, StatusCode::kUnsupported,
               {"--tensor-parallel-size 2", "128-row / 128-column"});
  const ModelConfig plain = ModelConfig::from_file(test::fixture_dir("tiny_a") + "/config.json");
  const ModelConfig quant = ModelConfig::from_file(quantized_fixture("qtiny_a") + "/config.json");
  expect_error([&] { check_cuda_weights(o, plain); }, StatusCode::kInvalidArgument,
               {"not quantised", "--cuda-weights bf16"});
  EXPECT_NO_THROW(check_cuda_weights(o, quant));
  EngineOptions off;  // bf16 (the default) takes every checkpoint on every device
  EXPECT_NO_THROW(check_cuda_weights(off, plain));
  // The engine refuses before loading anything.
  expect_error([&] { Engine(quantized_fixture("qtiny_a"), cpu); }, StatusCode::kUnsupported, {"--device cpu"});
}

}  // namespace
}  // namespace dsv4
