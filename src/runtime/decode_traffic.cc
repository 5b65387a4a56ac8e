#include "dsv4/runtime/decode_traffic.h"

#include <algorithm>
#include <cmath>

#include "dsv4/ops/kv_fp8.h"

namespace dsv4 {

double DecodeTraffic::total() const {
  double t = 0;
  for (const auto& [name, b] : bytes) t += b;
  return t;
}

double expected_distinct_experts(int64_t E, int64_t k, int64_t tokens) {
  if (tokens <= 1) return static_cast<double>(std::min(k, E));
  return static_cast<double>(E) *
         (1.0 - std::pow(1.0 - static_cast<double>(k) / static_cast<double>(E), static_cast<double>(tokens)));
}

KeyRowBytes key_row_bytes(const ModelConfig& c, DType state_dtype, bool packed_fp8) {
  if (packed_fp8) {
    return {static_cast<double>(kvfp8::row_bytes(KvStorage::kFp8Blocks, c.head_dim, c.rope_head_dim)),
            static_cast<double>(kvfp8::row_bytes(KvStorage::kFp4Rotated, c.index_head_dim, 0))};
  }
  const double es = static_cast<double>(dtype_size(state_dtype));
  return {es * static_cast<double>(c.head_dim), es * static_cast<double>(c.index_head_dim)};
}

DecodeTraffic decode_step_traffic(const ModelConfig& c, const ModelWeights& w, int64_t B, int64_t p, DType state_dtype,
                                  const std::vector<double>& experts_touched) {
  return decode_step_traffic(c, w, B, p, key_row_bytes(c, state_dtype, false), experts_touched);
}

DecodeTraffic decode_step_traffic(const ModelConfig& c, const ModelWeights& w, int64_t B, int64_t p,
                                  const KeyRowBytes& rows, const std::vector<double>& experts_touched) {
  DecodeTraffic t;
  auto add = [&](const char* part, double b) { t.bytes[part] += b; };
  auto bytes = [](const Tensor& x) { return x.data() ? static_cast<double>(x.nbytes()) : 0.0; };
  // The matrices DeepSeek may keep quantised: their bytes in memory (codes and scales when quantised).
  auto weight_bytes = [](const Weight& x) { return static_cast<double>(x.nbytes()); };
  const double D = static_cast<double>(c.head_dim);
  add("embedding rows", static_cast<double>(B) * bytes(w.embed) / static_cast<double>(c.vocab_size));
  add("lm_head", bytes(w.head));
  add("mhc", bytes(w.hc_head.fn) + bytes(w.hc_head.base) + bytes(w.hc_head.scale));
  add("norms", bytes(w.norm));
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const BlockWeights& b = w.layers[l];
    const AttentionWeights& a = b.attn;
    add("attention", weight_bytes(a.wq_a) + weight_bytes(a.wq_b) + weight_bytes(a.wkv) + weight_bytes(a.wo_a) +
                         weight_bytes(a.wo_b) + bytes(a.sink) + bytes(a.q_norm) + bytes(a.kv_norm));
    add("compressor",
        bytes(a.compressor.wkv) + bytes(a.compressor.wgate) + bytes(a.compressor.ape) + bytes(a.compressor.norm));
    add("indexer", weight_bytes(a.indexer_wq_b) + bytes(a.indexer_weights_proj) + bytes(a.indexer_compressor.wkv) +
                       bytes(a.indexer_compressor.wgate) + bytes(a.indexer_compressor.ape) +
                       bytes(a.indexer_compressor.norm));
    add("mhc", bytes(b.hc_attn.fn) + bytes(b.hc_attn.base) + bytes(b.hc_attn.scale) + bytes(b.hc_ffn.fn) +
                   bytes(b.hc_ffn.base) + bytes(b.hc_ffn.scale));
    add("norms", bytes(b.attn_norm) + bytes(b.ffn_norm));
    const MoeWeights& f = b.ffn;
    add("router",
        bytes(f.gate) + bytes(f.bias) + (f.tid2eid.data() ? static_cast<double>(B * c.num_experts_per_tok * 4) : 0.0));
    add("shared expert", weight_bytes(f.shared_w1) + weight_bytes(f.shared_w2) + weight_bytes(f.shared_w3));
    // w1/w2/w3 stack the routed experts and the shared one (weights.h).
    const double per_expert =
        (weight_bytes(f.w1) + weight_bytes(f.w2) + weight_bytes(f.w3)) / static_cast<double>(f.w1.size(0));
    const double touched = l < experts_touched.size()
                               ? experts_touched[l]
                               : expected_distinct_experts(c.n_routed_experts, c.num_experts_per_tok, B);
    add("routed experts", touched * per_expert);
    // Per-sequence state: the window's KV (read) plus the new row (written).
    const double window = static_cast<double>(std::min<int64_t>(p + 1, c.sliding_window));
    add("kv window", static_cast<double>(B) * (window + 1) * rows.kv);
    const AttentionType type = c.layer_types[l];
    const int64_t rate = c.compress_rate(type);
    if (rate > 0) {
      const double visible = static_cast<double>((p + 1) / rate);
      const double attended = type == AttentionType::kCompressedSparse
                                  ? std::min<double>(visible, static_cast<double>(c.index_topk))
                                  : visible;
      add("compressed entries", static_cast<double>(B) * attended * rows.kv);
      const double width = (type == AttentionType::kCompressedSparse ? 2.0 : 1.0) * D;
      add("compressor rings", static_cast<double>(B) * 2.0 * width * 4.0);  // kv + gate row written
      if (type == AttentionType::kCompressedSparse) {
        const double Di = static_cast<double>(c.index_head_dim);
        add("indexer keys", static_cast<double>(B) * visible * rows.indexer);
        add("compressor rings", static_cast<double>(B) * 2.0 * 2.0 * Di * 4.0);
      }
    }
  }
  return t;
}

}  // namespace dsv4
