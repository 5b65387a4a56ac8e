#include "dsv4/model/deepseek_v4.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "dsv4/backend/cuda_device.h"
#include "dsv4/ops/indexer_workspace.h"
#include "dsv4/ops/rope_table.h"
#include "dsv4/parallel/partition.h"

namespace dsv4 {

Tensor quantized_input(ExecContext& ctx, const ModelState& ms, Tensor x, int64_t row) {
  if (ms.options().activation_quant != ActivationQuant::kFp8) return x;
  Tensor q = ctx.scratch->alloc(x.dtype(), x.shape());
  ops::activation_round_trip(ctx, q.view({q.numel() / row, row}), x.view({x.numel() / row, row}));
  return q;
}

void quantized_linears(ExecContext& ctx, const ModelState& ms, Tensor x, int64_t row,
                       const std::vector<ops::Projection>& projections) {
  // Products that read only x's FP8 codes take x itself: its per-128 codes give the round trip's values (rows of
  // `row` values must then make the same 128-value blocks as the products' rows, and x's rows must be contiguous, as
  // the round trip's copy is). The round trip's scratch is taken either way, so that the measuring pass and the run
  // agree.
  const bool act_quant = ms.options().activation_quant == ActivationQuant::kFp8;
  const bool codes_only = act_quant && row % 128 == 0 && x.is_contiguous() &&
                          std::all_of(projections.begin(), projections.end(), [&](const ops::Projection& p) {
                            return ops::linear_reads_fp8_codes(ctx, x, p.w, p.out.dtype());
                          });
  if (codes_only) ctx.scratch->alloc(x.dtype(), x.shape());
  const Tensor q = codes_only ? x : quantized_input(ctx, ms, x, row);
  auto run = [&] {
    if (projections.size() == 1) return ops::linear(ctx, projections[0].out, q, projections[0].w);
    ops::linears(ctx, q, projections);
  };
  if (!act_quant) return run();
  struct Fp8Rows {  // the flag for this call only, also when a product throws
    ExecContext& ctx;
    explicit Fp8Rows(ExecContext& c) : ctx(c) { ctx.fp8_input_rows = true; }
    ~Fp8Rows() { ctx.fp8_input_rows = false; }
  } scope(ctx);
  run();
}

void attention_block(ExecContext& ctx, const ModelConfig& c, const BlockWeights& w, LayerState& st,
                     const ModelState& ms, const BatchMeta& meta, Tensor h, Tensor y) {
  Arena& A = *ctx.scratch;
  ArenaScope scope(A);
  const int64_t T = meta.num_tokens, D = c.head_dim, Nh = c.num_attention_heads;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const AttentionWeights& aw = w.attn;
  const RopeTable& rope = w.attention_type == AttentionType::kSliding ? ms.rope_main : ms.rope_compress;
  const DType act = h.dtype();

  // Buffers of the metadata-dependent core, allocated here: the core runs again at every replay of a
  // breakable graph and must not allocate.
  struct CompressorIo {
    Tensor kv, gate;
  };
  auto compressor_io = [&](const CompressorState& cs) {
    const int64_t width = (cs.overlap ? 2 : 1) * cs.dim;
    return CompressorIo{A.alloc(DType::F32, {T, width}), A.alloc(DType::F32, {T, width})};
  };
  const bool compressed = w.compress_rate > 0, sparse = w.attention_type == AttentionType::kCompressedSparse;
  const int64_t Hi = c.index_n_heads, Di = c.index_head_dim;
  CompressorIo cio, iio;
  Tensor iq, iw, selected, iws;
  if (compressed) cio = compressor_io(st.compressor);
  if (sparse) {
    iio = compressor_io(st.indexer);
    iq = A.alloc(DType::F32, {T, Hi, Di});
    iw = A.alloc(DType::F32, {T, Hi});
    selected = A.alloc(DType::I32, {T, c.index_topk});
    // Lets the CUDA indexer split long contexts over many blocks at decode (0 bytes elsewhere).
    const int64_t ws = ops::indexer_workspace_bytes(ctx, T, c.index_topk);
    if (ws > 0) iws = A.alloc(DType::I32, {(ws + 3) / 4});
  }

  // Every projection of h (query down, kv, the compressors' kv/gate, the indexer's head weights) in one op:
  // at decode they share one weight-streaming launch. With --activation-quant fp8 the query and kv projections
  // (FP8 in DeepSeek's checkpoints) read h through the FP8 round trip, in their own call.
  Tensor qr = A.alloc(act, {T, c.q_lora_rank});
  Tensor kv = A.alloc(act, {T, D});
  const bool act_quant = ms.options().activation_quant == ActivationQuant::kFp8;
  std::vector<ops::Projection> from_h;
  if (act_quant) {
    quantized_linears(ctx, ms, h, h.size(-1), {{qr, aw.wq_a}, {kv, aw.wkv}});
  } else {
    from_h = {{qr, aw.wq_a}, {kv, aw.wkv}};
  }
  if (compressed) {
    from_h.push_back({cio.kv, aw.compressor.wkv});
    from_h.push_back({cio.gate, aw.compressor.wgate});
  }
  if (sparse) {
    from_h.push_back({iio.kv, aw.indexer_compressor.wkv});
    from_h.push_back({iio.gate, aw.indexer_compressor.wgate});
    from_h.push_back({iw, aw.indexer_weights_proj});
  }
  if (!from_h.empty()) ops::linears(ctx, h, from_h);
  ops::rms_norm(ctx, qr, qr, aw.q_norm, eps);
  Tensor q = A.alloc(act, {T, Nh, D});
  std::vector<ops::Projection> from_qr = {{q.view({T, Nh * D}), aw.wq_b}};
  if (sparse) from_qr.push_back({iq.view({T, Hi * Di}), aw.indexer_wq_b});
  quantized_linears(ctx, ms, qr, qr.size(-1), from_qr);
  // The query's weightless per-head norm and the kv row's norm, one launch on CUDA.
  const NormRopeHeads qkv[] = {{q, Tensor()}, {kv.view({T, 1, D}), aw.kv_norm}};
  ops::rms_norm_rope(ctx, qkv, eps, meta.pos, rope);
  // The cache's format (--kv-cache-dtype): attention reads these rows now and from the ring later, the same values.
  if (st.kv_format != KvRoundTrip::kNone) ops::kv_round_trip(ctx, kv, rope.rope_dim, st.kv_format);

  Tensor o = A.alloc(act, {T, Nh, D});

  // The attention core: compressors, indexer, attention over window + compressed entries, ring stores.
  // Everything that reads positions, slots and lengths runs here (an eager region of a breakable graph).
  eager_region(ctx, "attention", [=, &ctx, &c, &aw, &st, &ms] {
    // The raw kv/gate rows and the kv rows go to their rings after every read of this step, together (one
    // launch on CUDA).
    std::vector<ops::RingStore> stores;
    auto run_compressor = [&](CompressorState& cs, const CompressorWeights& cw, const CompressorIo& io) {
      ops::compressor_emit(ctx, cs, io.kv, io.gate, cw.ape, cw.norm, ms.rope_compress, meta, eps);
      stores.push_back({cs.raw_kv, io.kv});
      stores.push_back({cs.raw_gate, io.gate});
    };
    if (compressed) run_compressor(st.compressor, aw.compressor, cio);
    if (sparse) {
      run_compressor(st.indexer, aw.indexer_compressor, iio);
      ops::rope(ctx, iq, meta.pos, ms.rope_compress, false);
      // Keys held rotated and in FP4 (DeepSeek's reference): the query goes through the same rotation and round trip.
      if (st.indexer.entry_format == KvRoundTrip::kFp4Rotated) ops::kv_round_trip(ctx, iq, 0, KvRoundTrip::kFp4Rotated);
      const float scale =
          static_cast<float>(1.0 / std::sqrt(static_cast<double>(Di)) / std::sqrt(static_cast<double>(Hi)));
      ops::indexer_topk(ctx, selected, iq, iw, st.indexer, meta, scale, iws);
    }
    ops::attention(ctx, o, q, kv, st.kv_ring, compressed ? &st.compressor : nullptr, selected, aw.sink, meta,
                   c.sliding_window, static_cast<float>(1.0 / std::sqrt(static_cast<double>(D))));
    stores.push_back({st.kv_ring, kv});
    ops::ring_stores(ctx, stores, meta);
  });
  ops::rope(ctx, o, meta.pos, rope, true);  // K = V carried rope: undo it at the query position
  Tensor oa = A.alloc(act, {T, c.o_groups * c.o_lora_rank});
  ops::grouped_linear(ctx, oa, o.view({T, Nh * D}), aw.wo_a, c.o_groups);
  // wo_a stays unquantised under --activation-quant fp8 (DeepSeek's conversion makes it bf16); wo_b does not.
  quantized_linears(ctx, ms, oa, oa.size(-1), {{y, aw.wo_b}});
  if (aw.partial_output) sum_over_ranks(ctx, y);
}

void moe_block(ExecContext& ctx, const ModelConfig& c, const BlockWeights& w, const BatchMeta& meta, Tensor h, Tensor y,
               bool activation_quant) {
  Arena& A = *ctx.scratch;
  ArenaScope scope(A);
  const int64_t T = meta.num_tokens, k = c.num_experts_per_tok;
  const MoeWeights& f = w.ffn;
  Tensor logits = A.alloc(DType::F32, {T, c.n_routed_experts});
  ops::linear(ctx, logits, h, f.gate);
  Tensor weights = A.alloc(DType::F32, {T, k});
  Tensor indices = A.alloc(DType::I32, {T, k});
  ops::moe_route(ctx, weights, indices, logits, f.bias, f.tid2eid, meta.ids, ops::route_params(c));
  if (f.expert_ranks > 1) keep_rank_experts(ctx, weights, indices, f.expert_rank, f.expert_ranks);
  // The shared expert is the last stacked expert (weights.h): one call runs it with the routed ones, in the
  // same weight-streaming / grouped kernels, and adds it in fp32 before the single rounding to y's dtype.
  ops::moe_experts(ctx, y, h, indices, weights, f.w1, f.w2, f.w3, static_cast<float>(c.swiglu_limit),
                   /*shared_expert=*/f.shared_expert_here, activation_quant);
  if (f.expert_ranks > 1) sum_over_ranks(ctx, y);
}

void decoder_block(ExecContext& ctx, const ModelConfig& c, const BlockWeights& w, LayerState& state,
                   const ModelState& ms, const BatchMeta& meta, Tensor x, Tensor out) {
  Arena& A = *ctx.scratch;
  ArenaScope scope(A);
  const int64_t T = meta.num_tokens, n = c.hc_mult, H = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  Tensor post = A.alloc(DType::F32, {T, n});
  Tensor comb = A.alloc(DType::F32, {T, n, n});
  Tensor h = A.alloc(x.dtype(), {T, H});
  Tensor y = A.alloc(x.dtype(), {T, H});
  Tensor mid = A.alloc(x.dtype(), {T, n, H});
  // h = attn_norm(collapse(x)): the norm rides on hc_pre (one launch at decode on CUDA).
  ops::hc_pre(ctx, h, post, comb, x, w.hc_attn.fn, w.hc_attn.base, w.hc_attn.scale, ops::mhc_params(c),
              {w.attn_norm, eps});
  attention_block(ctx, c, w, state, ms, meta, h, y);
  ops::hc_post(ctx, mid, y, x, post, comb);
  ops::hc_pre(ctx, h, post, comb, mid, w.hc_ffn.fn, w.hc_ffn.base, w.hc_ffn.scale, ops::mhc_params(c),
              {w.ffn_norm, eps});
  moe_block(ctx, c, w, meta, h, y, ms.options().activation_quant == ActivationQuant::kFp8);
  ops::hc_post(ctx, out, y, mid, post, comb);
}

void target_forward(ExecContext& ctx, const ModelConfig& c, const ModelWeights& w, ModelState& state,
                    const BatchMeta& meta, Tensor logit_rows, Tensor logits, Tensor residual_out) {
  Arena& A = *ctx.scratch;
  ArenaScope scope(A);
  const int64_t T = meta.num_tokens, n = c.hc_mult, H = c.hidden_size, R = logit_rows.numel();
  const DType act = state.activation_dtype();
  Tensor emb = A.alloc(act, {T, H});
  ops::embedding(ctx, emb, w.embed, meta.ids);
  Tensor x = A.alloc(act, {T, n, H});
  Tensor x_next = A.alloc(act, {T, n, H});
  ops::broadcast_streams(ctx, x, emb);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    decoder_block(ctx, c, w.layers[l], state.layers[l], state, meta, x, x_next);
    std::swap(x, x_next);
  }
  if (residual_out.data() != nullptr) ops::copy(ctx, residual_out, x);
  if (R == 0) return;
  Tensor xr = A.alloc(act, {R, n, H});
  ops::gather_rows(ctx, xr, x, logit_rows);
  Tensor hr = A.alloc(act, {R, H});
  ops::hc_head(ctx, hr, xr, w.hc_head.fn, w.hc_head.base, w.hc_head.scale, ops::mhc_params(c),
               {w.norm, static_cast<float>(c.rms_norm_eps)});
  ops::linear(ctx, logits, hr, w.head);
}

}  // namespace dsv4
