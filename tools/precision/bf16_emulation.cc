// bf16 rounding study (CPU only): the target model with bf16 rounding inserted wherever a CUDA variant stores
// a bf16 value, run on the HF fixtures; prints the max relative logit error against the fixtures, free and
// with the exact run's router/indexer choices forced (ops::ChoiceTap), for several rounding-site sets.
// It reproduced the CUDA backend's BF16 figures (docs/cuda-backend.md) and shows that rounding a single
// activation site (e.g. only the GEMM input h) already moves these fixtures' logits by 1-2%.
//
// Build and run from the repository root after building libdsv4:
//   g++ -std=c++20 -O2 -fopenmp -Iinclude -Isrc -I/usr/local/cuda/include tools/precision/bf16_emulation.cc
//       -Lbuild -ldsv4 -Wl,-rpath,$PWD/build -o build/bf16_emulation    (one line)
//   build/bf16_emulation tests/fixtures/hf        (reference: transformers' logits)
//   build/bf16_emulation models/dsv4-tiny-kjv     (a trained model; reference: its own exact fp32 run)
// The model code below mirrors src/model/deepseek_v4.cc (attention_block, moe_block, decoder_block,
// target_forward) with the rounding calls added; keep it in step when the model changes.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "backend/cpu/cpu_ops.h"
#include "dsv4/model/deepseek_v4.h"
#include "dsv4/ops/testing.h"
#include "dsv4/runtime/batch.h"

using namespace dsv4;

static unsigned g_mask = 0;
enum Site : unsigned {
  kStream = 1,        // x, mid, out (mHC residual stream)
  kH = 2,             // collapsed, h (normed sublayer input) -- GEMM input
  kLinOut = 4,        // raw linear outputs before norm (qr, q, kv) -- fused away if off
  kNormOut = 8,       // qr/q/kv after norm (qr is a GEMM input)
  kRopeOut = 16,      // q, kv after rope (attention inputs)
  kAttnOut = 32,      // o after attention
  kORope = 64,        // o after inverse rope (GEMM input)
  kOa = 128,          // oa (GEMM input)
  kY = 256,           // sublayer outputs y (attn wo_b out, moe add result)
  kMoeInner = 512,    // (none since the shared expert runs inside moe_experts; kept for the variant masks)
  kExpertAct = 1024,  // expert act inside moe_experts (GEMM input of w2)
  kEntries = 2048,    // compressed entries, kv ring (bf16 state)
  kHead = 4096,       // hr after hc_head and after norm
  kCollapsed = 8192,  // hc_pre collapsed output (before norm)
};
static void R(Tensor t, unsigned site) {
  if (!(g_mask & site)) return;
  float* p = t.ptr<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = round_to_bf16(p[i]);
}

// The same rounding on every allocated row of a paged state array (f32 on the CPU) of `sequences` table rows.
static void R(const PagedRows& rows, int64_t sequences, unsigned site) {
  if (!(g_mask & site)) return;
  for (int64_t s = 0; s < sequences; ++s) {
    for (int64_t r = 0; r < rows.rows; ++r) {
      float* p = rows.row<float>(s, r);
      if (p == nullptr) continue;
      for (int64_t i = 0; i < rows.width; ++i) p[i] = round_to_bf16(p[i]);
    }
  }
}

// --- choice forcing on the CPU ---
struct Rec : ops::ChoiceTap {
  bool record = true;
  std::vector<std::vector<int32_t>> ch;
  std::vector<std::vector<float>> wt;
  size_t next = 0;
  int flips = 0;
  void after_moe_route(ExecContext&, Tensor weights, Tensor indices, Tensor, Tensor, const ops::RouteParams&) override {
    handle(indices, weights);
  }
  void after_indexer_topk(ExecContext&, Tensor selected, Tensor, Tensor, const CompressorState&, const BatchMeta&,
                          float) override {
    handle(selected, Tensor());
  }
  void handle(Tensor c, Tensor w) {
    if (record) {
      ch.emplace_back(c.ptr<int32_t>(), c.ptr<int32_t>() + c.numel());
      wt.emplace_back(w.data() ? std::vector<float>(w.ptr<float>(), w.ptr<float>() + w.numel()) : std::vector<float>());
      return;
    }
    const size_t i = next++;
    const int64_t T = c.size(0), k = c.size(1);
    for (int64_t t = 0; t < T; ++t) {
      std::set<int32_t> a(c.ptr<int32_t>() + t * k, c.ptr<int32_t>() + (t + 1) * k),
          b(ch[i].begin() + t * k, ch[i].begin() + (t + 1) * k);
      if (a != b) ++flips;
    }
    if (force) {
      std::memcpy(c.data(), ch[i].data(), ch[i].size() * 4);
      if (w.data()) std::memcpy(w.data(), wt[i].data(), wt[i].size() * 4);
    }
  }
  bool force = true;
};

// As the CUDA moe_experts with shared_expert: the k routed experts, then the shared one (the last stacked expert,
// weight 1), summed in fp32 and rounded once by the caller.
static void moe_experts_emu(Tensor out, Tensor x, Tensor indices, Tensor weights, Tensor w1, Tensor w2, Tensor w3,
                            float limit) {
  const int64_t T = x.size(0), H = x.size(1), k = indices.size(1), I = w1.size(1), shared = w1.size(0) - 1;
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x.ptr<float>() + t * H;
    float* o = out.ptr<float>() + t * H;
    std::vector<float> acc(H, 0.0f), act(I);
    for (int64_t i = 0; i <= k; ++i) {
      const int64_t e = i < k ? indices.ptr<int32_t>()[t * k + i] : shared;
      const float wt = i < k ? weights.ptr<float>()[t * k + i] : 1.0f;
      const float* W1 = w1.ptr<float>() + e * I * H;
      const float* W3 = w3.ptr<float>() + e * I * H;
      const float* W2 = w2.ptr<float>() + e * H * I;
      for (int64_t j = 0; j < I; ++j) {
        const float g = std::min(cpu::dot(W1 + j * H, xt, H), limit);
        const float u = std::min(std::max(cpu::dot(W3 + j * H, xt, H), -limit), limit);
        act[j] = cpu::silu(g) * u;
        if (g_mask & kExpertAct) act[j] = round_to_bf16(act[j]);
      }
      for (int64_t h = 0; h < H; ++h) acc[h] += wt * cpu::dot(W2 + h * I, act.data(), I);
    }
    for (int64_t h = 0; h < H; ++h) o[h] = acc[h];
  }
}

static void attention_block_emu(ExecContext& ctx, const ModelConfig& c, const BlockWeights& w, LayerState& st,
                                const ModelState& ms, const BatchMeta& meta, Tensor h, Tensor y) {
  Arena& A = *ctx.scratch;
  ArenaScope scope(A);
  const int64_t T = meta.num_tokens, D = c.head_dim, Nh = c.num_attention_heads;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const AttentionWeights& aw = w.attn;
  const RopeTable& rope = w.attention_type == AttentionType::kSliding ? ms.rope_main : ms.rope_compress;
  const DType act = h.dtype();
  Tensor qr = A.alloc(act, {T, c.q_lora_rank});
  ops::linear(ctx, qr, h, aw.wq_a);
  R(qr, kLinOut);
  ops::rms_norm(ctx, qr, qr, aw.q_norm, eps);
  R(qr, kNormOut);
  Tensor q = A.alloc(act, {T, Nh, D});
  ops::linear(ctx, q.view({T, Nh * D}), qr, aw.wq_b);
  R(q, kLinOut);
  ops::rms_norm(ctx, q, q, Tensor(), eps);
  R(q, kNormOut);
  ops::rope(ctx, q, meta.pos, rope, false);
  R(q, kRopeOut);
  Tensor kv = A.alloc(act, {T, D});
  ops::linear(ctx, kv, h, aw.wkv);
  R(kv, kLinOut);
  ops::rms_norm(ctx, kv, kv, aw.kv_norm, eps);
  R(kv, kNormOut);
  ops::rope(ctx, kv.view({T, 1, D}), meta.pos, rope, false);
  R(kv, kRopeOut | kEntries);
  auto run_compressor = [&](CompressorState& cs, const CompressorWeights& cw) {
    const int64_t width = (cs.overlap ? 2 : 1) * cs.dim;
    Tensor ckv = A.alloc(DType::F32, {T, width});
    Tensor cgate = A.alloc(DType::F32, {T, width});
    ops::linear(ctx, ckv, h, cw.wkv);
    ops::linear(ctx, cgate, h, cw.wgate);
    ops::compressor_emit(ctx, cs, ckv, cgate, cw.ape, cw.norm, ms.rope_compress, meta, eps);
    R(cs.entries, ms.options().max_seqs, kEntries);
    ops::compressor_store(ctx, cs, ckv, cgate, meta);
  };
  Tensor selected;
  if (w.compress_rate > 0) run_compressor(st.compressor, aw.compressor);
  if (w.attention_type == AttentionType::kCompressedSparse) {
    const int64_t Hi = c.index_n_heads, Di = c.index_head_dim;
    run_compressor(st.indexer, aw.indexer_compressor);
    Tensor iq = A.alloc(DType::F32, {T, Hi, Di});
    ops::linear(ctx, iq.view({T, Hi * Di}), qr, aw.indexer_wq_b);
    ops::rope(ctx, iq, meta.pos, ms.rope_compress, false);
    Tensor iw = A.alloc(DType::F32, {T, Hi});
    ops::linear(ctx, iw, h, aw.indexer_weights_proj);
    selected = A.alloc(DType::I32, {T, c.index_topk});
    const float scale =
        static_cast<float>(1.0 / std::sqrt(static_cast<double>(Di)) / std::sqrt(static_cast<double>(Hi)));
    ops::indexer_topk(ctx, selected, iq, iw, st.indexer, meta, scale);
  }
  Tensor o = A.alloc(act, {T, Nh, D});
  ops::attention(ctx, o, q, kv, st.kv_ring, w.compress_rate > 0 ? &st.compressor : nullptr, selected, aw.sink, meta,
                 c.sliding_window, static_cast<float>(1.0 / std::sqrt(static_cast<double>(D))));
  R(o, kAttnOut);
  ops::kv_ring_store(ctx, st.kv_ring, kv, meta);
  ops::rope(ctx, o, meta.pos, rope, true);
  R(o, kORope);
  Tensor oa = A.alloc(act, {T, c.o_groups * c.o_lora_rank});
  ops::grouped_linear(ctx, oa, o.view({T, Nh * D}), aw.wo_a, c.o_groups);
  R(oa, kOa);
  ops::linear(ctx, y, oa, aw.wo_b);
  R(y, kY);
}

static void moe_block_emu(ExecContext& ctx, const ModelConfig& c, const BlockWeights& w, const BatchMeta& meta,
                          Tensor h, Tensor y) {
  Arena& A = *ctx.scratch;
  ArenaScope scope(A);
  const int64_t T = meta.num_tokens, k = c.num_experts_per_tok;
  const float limit = static_cast<float>(c.swiglu_limit);
  const MoeWeights& f = w.ffn;
  Tensor logits = A.alloc(DType::F32, {T, c.n_routed_experts});
  ops::linear(ctx, logits, h, f.gate);
  Tensor weights = A.alloc(DType::F32, {T, k});
  Tensor indices = A.alloc(DType::I32, {T, k});
  ops::moe_route(ctx, weights, indices, logits, f.bias, f.tid2eid, meta.ids, ops::route_params(c));
  moe_experts_emu(y, h, indices, weights, f.w1, f.w2, f.w3, limit);  // routed + shared, as moe_block
  R(y, kY);
}

static void decoder_block_emu(ExecContext& ctx, const ModelConfig& c, const BlockWeights& w, LayerState& state,
                              const ModelState& ms, const BatchMeta& meta, Tensor x, Tensor out) {
  Arena& A = *ctx.scratch;
  ArenaScope scope(A);
  const int64_t T = meta.num_tokens, n = c.hc_mult, H = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  Tensor post = A.alloc(DType::F32, {T, n});
  Tensor comb = A.alloc(DType::F32, {T, n, n});
  Tensor collapsed = A.alloc(x.dtype(), {T, H});
  Tensor h = A.alloc(x.dtype(), {T, H});
  Tensor y = A.alloc(x.dtype(), {T, H});
  Tensor mid = A.alloc(x.dtype(), {T, n, H});
  ops::hc_pre(ctx, collapsed, post, comb, x, w.hc_attn.fn, w.hc_attn.base, w.hc_attn.scale, ops::mhc_params(c));
  R(collapsed, kCollapsed);
  ops::rms_norm(ctx, h, collapsed, w.attn_norm, eps);
  R(h, kH);
  attention_block_emu(ctx, c, w, state, ms, meta, h, y);
  ops::hc_post(ctx, mid, y, x, post, comb);
  R(mid, kStream);
  ops::hc_pre(ctx, collapsed, post, comb, mid, w.hc_ffn.fn, w.hc_ffn.base, w.hc_ffn.scale, ops::mhc_params(c));
  R(collapsed, kCollapsed);
  ops::rms_norm(ctx, h, collapsed, w.ffn_norm, eps);
  R(h, kH);
  moe_block_emu(ctx, c, w, meta, h, y);
  ops::hc_post(ctx, out, y, mid, post, comb);
  R(out, kStream);
}

static void target_forward_emu(ExecContext& ctx, const ModelConfig& c, const ModelWeights& w, ModelState& state,
                               const BatchMeta& meta, Tensor logit_rows, Tensor logits) {
  Arena& A = *ctx.scratch;
  ArenaScope scope(A);
  const int64_t T = meta.num_tokens, n = c.hc_mult, H = c.hidden_size, Rr = logit_rows.numel();
  const DType act = DType::F32;
  Tensor emb = A.alloc(act, {T, H});
  ops::embedding(ctx, emb, w.embed, meta.ids);
  Tensor x = A.alloc(act, {T, n, H});
  Tensor x_next = A.alloc(act, {T, n, H});
  ops::broadcast_streams(ctx, x, emb);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    decoder_block_emu(ctx, c, w.layers[l], state.layers[l], state, meta, x, x_next);
    std::swap(x, x_next);
  }
  Tensor xr = A.alloc(act, {Rr, n, H});
  ops::gather_rows(ctx, xr, x, logit_rows);
  Tensor hr = A.alloc(act, {Rr, H});
  ops::hc_head(ctx, hr, xr, w.hc_head.fn, w.hc_head.base, w.hc_head.scale, ops::mhc_params(c));
  R(hr, kHead);
  ops::rms_norm(ctx, hr, hr, w.norm, static_cast<float>(c.rms_norm_eps));
  R(hr, kHead);
  ops::linear(ctx, logits, hr, w.head);
}

int main(int argc, char** argv) {
  std::string root = argc > 1 ? argv[1] : "tests/fixtures/hf";
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  root += "/";
  struct Variant {
    const char* name;
    unsigned mask;
  };
  const unsigned all = 0xffffffffu;
  std::vector<Variant> variants = {
      {"exact", 0},
      {"V0 all bf16 (the CUDA BF16 mode)", all},
      {"V1 f32 stream", all & ~kStream},
      {"V2 gemm inputs + state only", kH | kNormOut | kORope | kOa | kExpertAct | kEntries | kHead | kRopeOut},
      {"V3 f32 stream + fused lin/norm + f32 collapsed", all & ~(kStream | kLinOut | kCollapsed)},
      {"V4 = V3 + f32 y, moe inner", all & ~(kStream | kLinOut | kCollapsed | kY | kMoeInner)},
      {"V5 = V4 - attn out/rope out", all & ~(kStream | kLinOut | kCollapsed | kY | kMoeInner | kAttnOut)},
      {"only stream", kStream},
      {"only entries/kv", kEntries | kRopeOut},
      {"only H", kH},
  };
  // A fixture folder (tests/fixtures/hf: reference = transformers' logits), or one model directory
  // (e.g. models/dsv4-tiny-kjv: reference = this program's own exact fp32 run on a token sequence).
  const bool single_model = std::ifstream(root + "config.json").good();
  std::vector<std::string> dirs;
  if (single_model) {
    dirs.push_back(root.substr(0, root.size() - 1));
  } else {
    for (const char* fx : {"tiny_a", "tiny_b", "tiny_c"}) dirs.push_back(root + fx);
  }
  for (const std::string& dir : dirs) {
    const std::string fx = dir.substr(dir.find_last_of('/') + 1);
    ModelConfig cfg = ModelConfig::from_file(dir + "/config.json");
    Checkpoint ck = Checkpoint::open(dir);
    ModelWeights w = load_weights(ck, cfg, {Device::kCPU, false});
    std::vector<int32_t> ids;
    std::vector<float> want;
    if (!single_model) {
      auto exp = SafetensorsFile::open(dir + "/expected.safetensors");
      const Tensor idt = exp->view(*exp->find("input_ids"));
      for (int64_t i = 0; i < idt.numel(); ++i) ids.push_back(static_cast<int32_t>(idt.ptr<int64_t>()[i]));
      const Tensor lt = exp->view(*exp->find("logits"));
      want.assign(lt.ptr<float>(), lt.ptr<float>() + lt.numel());
    } else {  // 96 tokens: ids spread over the vocabulary; the reference is the exact variant below
      for (int i = 0; i < 96; ++i) ids.push_back(static_cast<int32_t>(3 + (i * 2654435761u) % (cfg.vocab_size - 3)));
    }
    const int64_t T = ids.size(), V = cfg.vocab_size;
    Rec rec;
    for (size_t vi = 0; vi < variants.size(); ++vi) {
      for (int force = 0; force < 2; ++force) {
        if (vi == 0 && force) continue;
        g_mask = variants[vi].mask;
        ModelOptions o;
        o.max_model_len = 256;
        ModelState st(cfg, o, Device::kCPU, false);
        Arena scratch("s", forward_scratch_bytes(cfg, T, T), Device::kCPU);
        ExecContext ctx;
        ctx.scratch = &scratch;
        rec.record = vi == 0;
        rec.force = force;
        rec.next = 0;
        rec.flips = 0;
        ops::set_choice_tap(&rec);
        BatchBuilder b;
        b.add({0, 0, ids, true});
        std::vector<float> got(T * V);
        target_forward_emu(ctx, cfg, w, st, b.meta(), b.logit_rows(), Tensor(got.data(), DType::F32, {T, V}));
        ops::set_choice_tap(nullptr);
        if (single_model && vi == 0) want = got;
        double diff = 0, ref = 0;
        for (size_t i = 0; i < got.size(); ++i) {
          diff = std::max(diff, std::fabs((double)got[i] - want[i]));
          ref = std::max(ref, std::fabs((double)want[i]));
        }
        std::printf("%s %-50s %s err %.4f flips %d\n", fx.c_str(), variants[vi].name, force ? "forced" : "free  ",
                    diff / ref, rec.flips);
      }
    }
  }
}
