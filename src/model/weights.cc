#include "dsv4/model/weights.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <regex>
#include <set>
#include <tuple>

#include "dsv4/backend/cuda_device.h"
#include "dsv4/core/hash_random.h"
#include "dsv4/core/log.h"
#include "dsv4/ops/ops.h"

namespace dsv4 {
namespace {

std::string block_prefix(int64_t layer) { return str_cat("layers.", layer, "."); }
const char* kMtpPrefix = "mtp.0.";

void add_block(std::vector<TensorSpec>& out, const ModelConfig& c, const std::string& p, AttentionType type,
               MlpType mlp) {
  const int64_t H = c.hidden_size, n = c.hc_mult, mix = c.hc_mix_dim(), D = c.head_dim, Nh = c.num_attention_heads;
  const int64_t I = c.moe_intermediate_size, E = c.n_routed_experts;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, WeightKind kind,
                 QuantGroup group = QuantGroup::kNone) {
    out.push_back({p + name, std::move(shape), kind, group});
  };
  constexpr QuantGroup kDense = QuantGroup::kDense;
  add("attn_norm.weight", {H}, WeightKind::kNorm);
  add("ffn_norm.weight", {H}, WeightKind::kNorm);
  for (const char* part : {"attn", "ffn"}) {
    add(str_cat("hc_", part, "_fn"), {mix, n * H}, WeightKind::kPrecision);
    add(str_cat("hc_", part, "_base"), {mix}, WeightKind::kPrecision);
    add(str_cat("hc_", part, "_scale"), {3}, WeightKind::kPrecision);
  }
  add("attn.wq_a.weight", {c.q_lora_rank, H}, WeightKind::kMatrix, kDense);
  add("attn.q_norm.weight", {c.q_lora_rank}, WeightKind::kNorm);
  add("attn.wq_b.weight", {Nh * D, c.q_lora_rank}, WeightKind::kMatrix, kDense);
  add("attn.wkv.weight", {D, H}, WeightKind::kMatrix, kDense);
  add("attn.kv_norm.weight", {D}, WeightKind::kNorm);
  add("attn.wo_a.weight", {c.o_groups * c.o_lora_rank, Nh * D / c.o_groups}, WeightKind::kMatrix, kDense);
  add("attn.wo_b.weight", {H, c.o_groups * c.o_lora_rank}, WeightKind::kMatrix, kDense);
  add("attn.attn_sink", {Nh}, WeightKind::kPrecision);
  const int64_t rate = c.compress_rate(type);
  if (rate > 0) {
    const int64_t width = (type == AttentionType::kCompressedSparse ? 2 : 1) * D;
    add("attn.compressor.wkv.weight", {width, H}, WeightKind::kMatrix);
    add("attn.compressor.wgate.weight", {width, H}, WeightKind::kMatrix);
    add("attn.compressor.ape", {rate, width}, WeightKind::kPrecision);
    add("attn.compressor.norm.weight", {D}, WeightKind::kNorm);
  }
  if (type == AttentionType::kCompressedSparse) {
    const int64_t Di = c.index_head_dim;
    add("attn.indexer.wq_b.weight", {c.index_n_heads * Di, c.q_lora_rank}, WeightKind::kMatrix, kDense);
    add("attn.indexer.weights_proj.weight", {c.index_n_heads, H}, WeightKind::kMatrix);
    add("attn.indexer.compressor.wkv.weight", {2 * Di, H}, WeightKind::kMatrix);
    add("attn.indexer.compressor.wgate.weight", {2 * Di, H}, WeightKind::kMatrix);
    add("attn.indexer.compressor.ape", {rate, 2 * Di}, WeightKind::kPrecision);
    add("attn.indexer.compressor.norm.weight", {Di}, WeightKind::kNorm);
  }
  add("ffn.gate.weight", {E, H}, WeightKind::kMatrix);
  if (mlp == MlpType::kHashMoe) {
    add("ffn.gate.tid2eid", {c.vocab_size, c.num_experts_per_tok}, WeightKind::kIndex);
  } else {
    add("ffn.gate.bias", {E}, WeightKind::kPrecision);
  }
  for (int64_t e = 0; e < E; ++e) {
    add(str_cat("ffn.experts.", e, ".w1.weight"), {I, H}, WeightKind::kMatrix, QuantGroup::kRoutedExpert);
    add(str_cat("ffn.experts.", e, ".w2.weight"), {H, I}, WeightKind::kMatrix, QuantGroup::kRoutedExpert);
    add(str_cat("ffn.experts.", e, ".w3.weight"), {I, H}, WeightKind::kMatrix, QuantGroup::kRoutedExpert);
  }
  add("ffn.shared_experts.w1.weight", {I, H}, WeightKind::kMatrix, kDense);
  add("ffn.shared_experts.w2.weight", {H, I}, WeightKind::kMatrix, kDense);
  add("ffn.shared_experts.w3.weight", {I, H}, WeightKind::kMatrix, kDense);
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

size_t align_up(size_t n) { return (n + Arena::kAlignment - 1) / Arena::kAlignment * Arena::kAlignment; }

// Where tensor values come from: a checkpoint (Loader) or a generator (synthetic benchmarks). `dst` is
// already allocated in its storage dtype on the target device.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual void fill(const std::string& name, Tensor dst) = 0;
  // [rows, a] and [rows, b] side by side into dst [rows, a + b] (the MTP's h_proj | e_proj).
  virtual void fill_concat_columns(const std::string& left, const std::string& right, Tensor dst) = 0;
  // How `name` is stored: a quantised format, or kPlain (filled as a plain tensor by fill).
  virtual WeightFormat stored_format(const std::string& name) const = 0;
  // The stored codes and E8M0 scale bytes of a quantised `name` in host memory, validated
  // (quant_matrix_code_bytes / quant_matrix_scale_bytes of its spec shape; valid while the source lives).
  struct HostCodes {
    const uint8_t* codes;
    const uint8_t* scale;
  };
  virtual HostCodes quantized_bytes(const std::string& name) = 0;
  // Completes what fill may have left pending; called once, after the last fill.
  virtual void finish_fills() {}
};

// Loads a validated checkpoint (WeightReader): plain tensors are converted, quantised ones dequantised exactly on
// the host, into the storage dtype, then copied to the device — or, under keep_quantized, copied as stored
// (quantized_bytes).
class Loader : public WeightSource {
 public:
  Loader(const WeightReader& reader, const ModelConfig& cfg) : reader_(reader), cfg_(cfg) {}

  void fill(const std::string& name, Tensor dst) override { load_into(name, dst); }
  void fill_concat_columns(const std::string& left, const std::string& right, Tensor dst) override {
    load_concat_columns(left, right, dst);
  }
  WeightFormat stored_format(const std::string& name) const override { return reader_.format(name); }

  // The codes and scales as stored (the mapped checkpoint), validated by the host dequantiser first (the plain
  // load's checks: NaN codes or scales, scales that overflow f32), which costs the time of a plain load, not memory.
  HostCodes quantized_bytes(const std::string& name) override {
    reader_.read_f32(name, &float_buf_);
    const Tensor c = reader_.raw(name), sc = reader_.raw_scale(name);
    const TensorSpec& spec = reader_.spec(name);
    const WeightFormat f = reader_.format(name);
    const size_t code_bytes = static_cast<size_t>(quant_matrix_code_bytes(f, spec.shape[0], spec.shape[1]));
    const size_t scale_bytes = static_cast<size_t>(quant_matrix_scale_bytes(f, spec.shape[0], spec.shape[1]));
    DSV4_INTERNAL_CHECK(c.nbytes() == code_bytes && sc.nbytes() == scale_bytes, "'", name, "': stored ", c.describe(),
                        " + ", sc.describe(), " vs the layout's ", code_bytes, " + ", scale_bytes, " bytes");
    loaded_bytes_ += code_bytes + scale_bytes;
    report_progress();
    return {static_cast<const uint8_t*>(c.data()), static_cast<const uint8_t*>(sc.data())};
  }

  // Loads [rows, a] and [rows, b] tensors side by side into dst [rows, a + b].
  void load_concat_columns(const std::string& left, const std::string& right, Tensor dst) {
    std::vector<float> lf, rf;
    reader_.read_f32(left, &lf);
    reader_.read_f32(right, &rf);
    const int64_t rows = dst.size(0), a = reader_.spec(left).shape[1], b = reader_.spec(right).shape[1];
    float_buf_.resize(static_cast<size_t>(rows * (a + b)));
    for (int64_t i = 0; i < rows; ++i) {
      std::copy(lf.begin() + i * a, lf.begin() + (i + 1) * a, float_buf_.begin() + i * (a + b));
      std::copy(rf.begin() + i * b, rf.begin() + (i + 1) * b, float_buf_.begin() + i * (a + b) + a);
    }
    const bool on_host = dst.device() == Device::kCPU;
    if (!on_host) staging_.resize(dst.nbytes());
    convert_from_f32(float_buf_.data(), dst.dtype(), on_host ? dst.data() : staging_.data(), float_buf_.size());
    finish(dst);
  }

  // Converts one checkpoint tensor into dst (storage dtype): on the host straight into dst, for a device through a
  // host staging buffer.
  void load_into(const std::string& canon, Tensor dst) {
    const Tensor src = reader_.raw(canon);
    const bool on_host = dst.device() == Device::kCPU;
    if (!on_host) staging_.resize(dst.nbytes());
    void* out = on_host ? dst.data() : staging_.data();
    if (dst.dtype() == DType::I32) {
      const size_t n = static_cast<size_t>(src.numel());
      int32_t* ids = static_cast<int32_t*>(out);
      // The mmap'd table may sit at any byte offset (safetensors does not align tensors): memcpy each id.
      const auto* bytes = static_cast<const unsigned char*>(src.data());
      for (size_t i = 0; i < n; ++i) {
        int64_t v = 0;
        if (src.dtype() == DType::I64) {
          std::memcpy(&v, bytes + 8 * i, 8);
        } else {
          int32_t v32 = 0;
          std::memcpy(&v32, bytes + 4 * i, 4);
          v = v32;
        }
        DSV4_CHECK_ARG(v >= 0 && v < cfg_.n_routed_experts, "tensor '", canon, "' holds expert id ", v, " outside [0, ",
                       cfg_.n_routed_experts, ")");
        ids[i] = static_cast<int32_t>(v);
      }
    } else if (reader_.format(canon) == WeightFormat::kPlain && src.dtype() == dst.dtype()) {
      std::memcpy(out, src.data(), dst.nbytes());
    } else if (on_host && dst.dtype() == DType::F32 && reader_.format(canon) == WeightFormat::kPlain) {
      // Converted by finish_fills, all tensors at once over the OpenMP threads: most of a small model's CPU
      // start-up is the kernel clearing the fresh pages these conversions touch first, and that runs on the core
      // that touches them.
      DSV4_CHECK_ARG(src.dtype() == DType::F32 || src.dtype() == DType::BF16 || src.dtype() == DType::F16, "tensor '",
                     canon, "' has dtype ", dtype_name(src.dtype()), ", not a plain float");  // WeightReader checked
      DSV4_CHECK_ARG(src.numel() == dst.numel(), "tensor '", canon, "' has ", src.numel(), " values, expected ",
                     dst.numel());
      pending_.push_back({src.dtype(), src.data(), static_cast<float*>(out), static_cast<size_t>(dst.numel())});
      loaded_bytes_ += dst.nbytes();
      return;
    } else if (dst.dtype() == DType::F32) {
      reader_.read_f32(canon, static_cast<float*>(out), static_cast<size_t>(dst.numel()));
    } else {
      reader_.read_f32(canon, &float_buf_);
      convert_from_f32(float_buf_.data(), dst.dtype(), out, float_buf_.size());
    }
    finish(dst);
  }

  // Copies the staging buffer to a device destination; counts the bytes either way.
  void finish(Tensor dst) {
    if (dst.device() != Device::kCPU) cuda::copy_to_device(dst.data(), staging_.data(), dst.nbytes());
    loaded_bytes_ += dst.nbytes();
    report_progress();
  }

  void finish_fills() override {
    std::sort(pending_.begin(), pending_.end(), [](const Pending& a, const Pending& b) { return a.n > b.n; });
    const int64_t jobs = static_cast<int64_t>(pending_.size());
#pragma omp parallel for schedule(dynamic)
    for (int64_t i = 0; i < jobs; ++i) {
      const Pending& p = pending_[static_cast<size_t>(i)];
      convert_to_f32(p.src_dtype, p.src, p.dst, p.n);  // cannot throw: a plain dtype, sizes checked when queued
    }
    pending_.clear();
  }

  size_t loaded_bytes() const { return loaded_bytes_; }
  // Large checkpoints log a progress line every 10% of `total` bytes (loading one can take minutes).
  void set_total(size_t total, Device device) {
    total_ = total;
    device_ = device;
  }

 private:
  const WeightReader& reader_;
  const ModelConfig& cfg_;
  std::vector<char> staging_;
  std::vector<float> float_buf_;
  struct Pending {  // a host f32 destination converted by finish_fills
    DType src_dtype;
    const void* src;
    float* dst;
    size_t n;
  };
  std::vector<Pending> pending_;
  void report_progress() {
    if (total_ < (size_t{1} << 30)) return;
    const size_t tenth = std::min<size_t>(10, loaded_bytes_ * 10 / total_);
    if (tenth <= reported_tenth_) return;
    reported_tenth_ = tenth;
    log_info("loading weights to ", device_name(device_), ": ", tenth * 10, "% (",
             static_cast<double>(loaded_bytes_) / (1 << 30), " of ", static_cast<double>(total_) / (1 << 30), " GiB)");
  }

  size_t loaded_bytes_ = 0;
  size_t total_ = 0;
  size_t reported_tenth_ = 0;
  Device device_ = Device::kCPU;
};

}  // namespace

std::vector<TensorSpec> checkpoint_inventory(const ModelConfig& c, bool with_mtp) {
  std::vector<TensorSpec> out;
  const int64_t H = c.hidden_size, n = c.hc_mult;
  out.push_back({"embed.weight", {c.vocab_size, H}, WeightKind::kMatrix});
  out.push_back({"head.weight", {c.vocab_size, H}, WeightKind::kMatrix});
  out.push_back({"norm.weight", {H}, WeightKind::kNorm});
  out.push_back({"hc_head_fn", {n, n * H}, WeightKind::kPrecision});
  out.push_back({"hc_head_base", {n}, WeightKind::kPrecision});
  out.push_back({"hc_head_scale", {1}, WeightKind::kPrecision});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    add_block(out, c, block_prefix(l), c.layer_types[l], c.mlp_layer_types[l]);
  }
  if (with_mtp) {
    const std::string p = kMtpPrefix;
    out.push_back({p + "enorm.weight", {H}, WeightKind::kNorm});
    out.push_back({p + "hnorm.weight", {H}, WeightKind::kNorm});
    out.push_back({p + "norm.weight", {H}, WeightKind::kNorm});
    out.push_back({p + "e_proj.weight", {H, H}, WeightKind::kMatrix, QuantGroup::kDense});
    out.push_back({p + "h_proj.weight", {H, H}, WeightKind::kMatrix, QuantGroup::kDense});
    out.push_back({p + "hc_head_fn", {n, n * H}, WeightKind::kPrecision});
    out.push_back({p + "hc_head_base", {n}, WeightKind::kPrecision});
    out.push_back({p + "hc_head_scale", {1}, WeightKind::kPrecision});
    // The MTP block: sliding-window attention only (compress ratio 1 at layer id >= num_hidden_layers)
    // and a routed (non-hash) MoE.
    add_block(out, c, p, AttentionType::kSliding, MlpType::kMoe);
  }
  return out;
}

std::string canonical_tensor_name(const std::string& name) {
  std::string s = name;
  if (s.rfind("model.", 0) == 0) s = s.substr(6);
  if (s == "embed_tokens.weight") return "embed.weight";
  if (s == "lm_head.weight") return "head.weight";
  if (s == "hc_head.hc_fn") return "hc_head_fn";
  if (s == "hc_head.hc_base") return "hc_head_base";
  if (s == "hc_head.hc_scale") return "hc_head_scale";
  // transformers saves the attention's kv_norm as "attn.norm" (its `.norm.` <-> `.kv_norm.` rename).
  static const std::regex kAttnNorm(R"(^((?:layers\.\d+|mtp\.\d+)\.attn)\.norm\.weight$)");
  std::smatch m;
  if (std::regex_match(s, m, kAttnNorm)) return m[1].str() + ".kv_norm.weight";
  return s;
}

DType storage_dtype(WeightKind kind, Device device) {
  switch (kind) {
    case WeightKind::kIndex:
      return DType::I32;
    case WeightKind::kMatrix:
      return device == Device::kCUDA ? DType::BF16 : DType::F32;
    case WeightKind::kNorm:
    case WeightKind::kPrecision:
      return DType::F32;
  }
  return DType::F32;
}

namespace {
// Storage dtype under the load options (CUDA matrices may be kept in f32 for full-precision runs).
DType matrix_or(WeightKind kind, const LoadOptions& opt) {
  if (kind == WeightKind::kMatrix && opt.device == Device::kCUDA) return opt.cuda_matrix_dtype;
  return storage_dtype(kind, opt.device);
}

// The MTP's h_proj / e_proj are joined side by side into eh_proj [H, 2H] (weights.h).
bool joined_mtp_projection(const std::string& name) {
  return name == std::string(kMtpPrefix) + "h_proj.weight" || name == std::string(kMtpPrefix) + "e_proj.weight";
}

// The format a tensor keeps in memory: its stored format under keep_quantized, kPlain otherwise. The joined MTP
// projections stay quantised only as FP8 with H % 128 == 0, where the two matrices' scale blocks sit side by side.
// A shared expert is a slice of its routed experts' stack (load_stacked): kept quantised only when they are (an
// FP8 shared expert next to bf16 routed experts, expert_dtype bf16, is stored plain in the stack and counted so).
WeightFormat kept_format(const TensorSpec& s, const WeightSource& source, const LoadOptions& opt) {
  if (!opt.keep_quantized) return WeightFormat::kPlain;
  const WeightFormat stored = source.stored_format(s.name);
  if (joined_mtp_projection(s.name) && (stored != WeightFormat::kFp8Block || s.shape[1] % kFp8Block != 0)) {
    return WeightFormat::kPlain;
  }
  const std::string shared = "ffn.shared_experts.";
  const size_t at = s.name.find(shared);
  if (stored != WeightFormat::kPlain && at != std::string::npos &&
      source.stored_format(str_cat(s.name.substr(0, at), "ffn.experts.0.", s.name.substr(at + shared.size()))) ==
          WeightFormat::kPlain) {
    return WeightFormat::kPlain;
  }
  return stored;
}

// Copies host bytes into weight storage on `device`.
void to_storage(void* dst, const void* src, size_t bytes, Device device) {
  if (device == Device::kCPU) {
    std::memcpy(dst, src, bytes);
  } else {
    cuda::copy_to_device(dst, src, bytes);
  }
}

// Arena bytes of one tensor: codes and scale (each aligned) when kept quantised, else its storage dtype's. Routed
// experts share their stack's two allocations (codes, scales): unaligned, plus the stack's alignment on expert 0.
size_t tensor_bytes(const TensorSpec& s, WeightFormat kept, const LoadOptions& opt) {
  if (kept != WeightFormat::kPlain) {
    const size_t code = static_cast<size_t>(quant_matrix_code_bytes(kept, s.shape[0], s.shape[1]));
    const size_t scale = static_cast<size_t>(quant_matrix_scale_bytes(kept, s.shape[0], s.shape[1]));
    if (s.group == QuantGroup::kRoutedExpert) {
      const bool first = s.name.find("ffn.experts.0.") != std::string::npos;
      return code + scale + (first ? 2 * Arena::kAlignment : 0);
    }
    return align_up(code) + align_up(scale);
  }
  int64_t numel = 1;
  for (int64_t d : s.shape) numel *= d;
  return align_up(static_cast<size_t>(numel) * dtype_size(matrix_or(s.kind, opt)));
}
}  // namespace

namespace {

// Allocates every tensor of `specs` in one arena on the device and fills it from `source`, in the layout the
// model uses (stacked experts, concatenated MTP projections, MTP norms in the activation dtype).
ModelWeights assemble_weights(const ModelConfig& cfg, const std::vector<TensorSpec>& specs, const LoadOptions& opt,
                              bool with_mtp, WeightSource& source, size_t* total_bytes) {
  std::map<std::string, const TensorSpec*> spec_by_name;
  size_t bytes = 0;
  bool any_quantized = false;
  for (const TensorSpec& s : specs) {
    spec_by_name[s.name] = &s;
    const WeightFormat kept = kept_format(s, source, opt);
    any_quantized = any_quantized || kept != WeightFormat::kPlain;
    bytes += tensor_bytes(s, kept, opt);
  }
  DSV4_CHECK_ARG(!opt.keep_quantized || any_quantized,
                 "--cuda-weights quantized: the checkpoint is not quantised (no FP8 / FP4 weights; its config.json "
                 "has no quantization_config): use --cuda-weights bf16");
  DSV4_CHECK_ARG(!opt.keep_quantized || opt.device == Device::kCPU || opt.cuda_matrix_dtype == DType::BF16,
                 "--cuda-weights quantized runs with bf16 activations: use --cuda-precision bf16");
  ModelWeights w;
  w.storage = Arena("weights", bytes + Arena::kAlignment, opt.device);
  w.storage.advise_huge_pages();
  w.quantized = any_quantized;
  *total_bytes = bytes;
  auto load = [&](const std::string& name) {
    const TensorSpec& s = *spec_by_name.at(name);
    Tensor t = w.storage.alloc(matrix_or(s.kind, opt), s.shape);
    source.fill(name, t);
    return t;
  };
  // A matrix DeepSeek may store quantised: kept so under keep_quantized, else plain as `load`.
  auto load_weight = [&](const std::string& name) -> Weight {
    const TensorSpec& s = *spec_by_name.at(name);
    const WeightFormat kept = kept_format(s, source, opt);
    if (kept == WeightFormat::kPlain) return load(name);
    QuantMatrices m{kept, nullptr, nullptr, 1, s.shape[0], s.shape[1]};
    const size_t code_bytes = static_cast<size_t>(quant_matrix_code_bytes(kept, m.rows, m.cols));
    const size_t scale_bytes = static_cast<size_t>(quant_matrix_scale_bytes(kept, m.rows, m.cols));
    void* codes = w.storage.alloc_bytes(code_bytes);
    void* scale = w.storage.alloc_bytes(scale_bytes);
    const WeightSource::HostCodes host = source.quantized_bytes(name);
    to_storage(codes, host.codes, code_bytes, opt.device);
    to_storage(scale, host.scale, scale_bytes, opt.device);
    m.codes = static_cast<const uint8_t*>(codes);
    m.scale = static_cast<const uint8_t*>(scale);
    if (kept == WeightFormat::kFp4) m.fp4_row_span = fp4_row_scale_span(host.scale, m.rows, m.cols);
    return Weight::quantized_matrix(m, opt.device);
  };
  // Experts are stacked [E + 1, rows, cols] so kernels index them by expert id: the routed experts, then the
  // shared expert at index E, which moe_experts runs as one more expert of the same kernels. The shared
  // expert's own tensor is a view of that slice (no second copy).
  auto load_stacked = [&](const std::string& prefix, const char* proj, Weight* shared) -> Weight {
    const TensorSpec& first = *spec_by_name.at(str_cat(prefix, "ffn.experts.0.", proj, ".weight"));
    const std::string shared_name = str_cat(prefix, "ffn.shared_experts.", proj, ".weight");
    const TensorSpec& shared_spec = *spec_by_name.at(shared_name);
    DSV4_CHECK_ARG(shared_spec.shape == first.shape && shared_spec.kind == first.kind, "weights: the shared expert's ",
                   shared_name, " ", shape_str(shared_spec.shape), " must have the routed experts' shape ",
                   shape_str(first.shape), " (it is stacked with them)");
    const int64_t E = cfg.n_routed_experts;
    const WeightFormat routed_kept = kept_format(first, source, opt);
    if (routed_kept != WeightFormat::kPlain) {
      // Quantised: the routed experts back to back in their format (QuantMatrices), the shared expert in its own
      // allocation and format (the checkpoint's validation made every routed expert's format the same).
      const WeightFormat shared_kept = kept_format(shared_spec, source, opt);
      DSV4_CHECK_ARG(shared_kept != WeightFormat::kPlain, "weights: ", shared_name,
                     " is stored plain next to quantised routed experts; a quantised stack needs a quantised shared "
                     "expert");
      const int64_t rows = first.shape[0], cols = first.shape[1];
      const size_t code = static_cast<size_t>(quant_matrix_code_bytes(routed_kept, rows, cols));
      const size_t scale = static_cast<size_t>(quant_matrix_scale_bytes(routed_kept, rows, cols));
      auto* codes = static_cast<uint8_t*>(w.storage.alloc_bytes(code * static_cast<size_t>(E)));
      auto* scales = static_cast<uint8_t*>(w.storage.alloc_bytes(scale * static_cast<size_t>(E)));
      int32_t span = 0;
      for (int64_t e = 0; e < E; ++e) {
        const WeightSource::HostCodes host =
            source.quantized_bytes(str_cat(prefix, "ffn.experts.", e, ".", proj, ".weight"));
        to_storage(codes + e * code, host.codes, code, opt.device);
        to_storage(scales + e * scale, host.scale, scale, opt.device);
        if (routed_kept == WeightFormat::kFp4) span = std::max(span, fp4_row_scale_span(host.scale, rows, cols));
      }
      const Weight s = load_weight(shared_name);
      *shared = s;
      QuantMatrices routed{routed_kept, codes, scales, E, rows, cols};
      if (routed_kept == WeightFormat::kFp4) routed.fp4_row_span = span;
      return Weight::quantized_stack(routed, s.quant(), opt.device);
    }
    Tensor t = w.storage.alloc(matrix_or(first.kind, opt), {E + 1, first.shape[0], first.shape[1]});
    for (int64_t e = 0; e < E; ++e) {
      source.fill(str_cat(prefix, "ffn.experts.", e, ".", proj, ".weight"), t.select(0, e));
    }
    const Tensor shared_slice = t.select(0, E);
    source.fill(shared_name, shared_slice);
    *shared = shared_slice;
    return t;
  };
  auto load_block = [&](const std::string& p, AttentionType type, MlpType mlp) {
    BlockWeights b;
    b.attention_type = type;
    b.mlp_type = mlp;
    b.compress_rate = cfg.compress_rate(type);
    b.attn_norm = load(p + "attn_norm.weight");
    b.ffn_norm = load(p + "ffn_norm.weight");
    b.hc_attn = {load(p + "hc_attn_fn"), load(p + "hc_attn_base"), load(p + "hc_attn_scale")};
    b.hc_ffn = {load(p + "hc_ffn_fn"), load(p + "hc_ffn_base"), load(p + "hc_ffn_scale")};
    AttentionWeights& a = b.attn;
    a.wq_a = load_weight(p + "attn.wq_a.weight");
    a.q_norm = load(p + "attn.q_norm.weight");
    a.wq_b = load_weight(p + "attn.wq_b.weight");
    a.wkv = load_weight(p + "attn.wkv.weight");
    a.kv_norm = load(p + "attn.kv_norm.weight");
    a.wo_a = load_weight(p + "attn.wo_a.weight");
    a.wo_b = load_weight(p + "attn.wo_b.weight");
    a.sink = load(p + "attn.attn_sink");
    if (b.compress_rate > 0) {
      a.compressor = {load(p + "attn.compressor.wkv.weight"), load(p + "attn.compressor.wgate.weight"),
                      load(p + "attn.compressor.ape"), load(p + "attn.compressor.norm.weight")};
    }
    if (type == AttentionType::kCompressedSparse) {
      a.indexer_wq_b = load_weight(p + "attn.indexer.wq_b.weight");
      a.indexer_weights_proj = load(p + "attn.indexer.weights_proj.weight");
      a.indexer_compressor = {load(p + "attn.indexer.compressor.wkv.weight"),
                              load(p + "attn.indexer.compressor.wgate.weight"), load(p + "attn.indexer.compressor.ape"),
                              load(p + "attn.indexer.compressor.norm.weight")};
    }
    MoeWeights& f = b.ffn;
    f.gate = load(p + "ffn.gate.weight");
    if (mlp == MlpType::kHashMoe) {
      f.tid2eid = load(p + "ffn.gate.tid2eid");
    } else {
      f.bias = load(p + "ffn.gate.bias");
    }
    f.w1 = load_stacked(p, "w1", &f.shared_w1);
    f.w2 = load_stacked(p, "w2", &f.shared_w2);
    f.w3 = load_stacked(p, "w3", &f.shared_w3);
    return b;
  };

  w.embed = load("embed.weight");
  w.head = load("head.weight");
  w.norm = load("norm.weight");
  w.hc_head = {load("hc_head_fn"), load("hc_head_base"), load("hc_head_scale")};
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    w.layers.push_back(load_block(block_prefix(l), cfg.layer_types[l], cfg.mlp_layer_types[l]));
  }
  if (with_mtp) {
    const std::string p = kMtpPrefix;
    MtpWeights m;
    // The fused MTP norms take their weights in the activation dtype: on CUDA that of the matrices.
    auto load_norm = [&](const std::string& name) {
      const TensorSpec& s = *spec_by_name.at(name);
      Tensor t = w.storage.alloc(opt.device == Device::kCUDA ? opt.cuda_matrix_dtype : DType::F32, s.shape);
      source.fill(name, t);
      return t;
    };
    m.enorm = load_norm(p + "enorm.weight");
    m.hnorm = load_norm(p + "hnorm.weight");
    m.norm = load_norm(p + "norm.weight");
    const int64_t H = cfg.hidden_size;
    const std::string h_name = p + "h_proj.weight", e_name = p + "e_proj.weight";
    const WeightFormat h_kept = kept_format(*spec_by_name.at(h_name), source, opt);
    const WeightFormat e_kept = kept_format(*spec_by_name.at(e_name), source, opt);
    if (h_kept == WeightFormat::kFp8Block && e_kept == WeightFormat::kFp8Block) {
      // [h_proj | e_proj] in FP8: each codes row is h's row then e's, each scale row (one per 128 rows) h's scale
      // blocks then e's (H % 128 == 0: no block straddles the join).
      const int64_t blocks = H / kFp8Block;
      std::vector<uint8_t> codes(static_cast<size_t>(H * 2 * H)), scale(static_cast<size_t>(blocks * 2 * blocks));
      const WeightSource::HostCodes hc = source.quantized_bytes(h_name), ec = source.quantized_bytes(e_name);
      for (int64_t r = 0; r < H; ++r) {
        std::memcpy(codes.data() + r * 2 * H, hc.codes + r * H, static_cast<size_t>(H));
        std::memcpy(codes.data() + r * 2 * H + H, ec.codes + r * H, static_cast<size_t>(H));
      }
      for (int64_t b = 0; b < blocks; ++b) {
        std::memcpy(scale.data() + b * 2 * blocks, hc.scale + b * blocks, static_cast<size_t>(blocks));
        std::memcpy(scale.data() + b * 2 * blocks + blocks, ec.scale + b * blocks, static_cast<size_t>(blocks));
      }
      void* dc = w.storage.alloc_bytes(codes.size());
      void* ds = w.storage.alloc_bytes(scale.size());
      to_storage(dc, codes.data(), codes.size(), opt.device);
      to_storage(ds, scale.data(), scale.size(), opt.device);
      m.eh_proj = Weight::quantized_matrix(
          {WeightFormat::kFp8Block, static_cast<const uint8_t*>(dc), static_cast<const uint8_t*>(ds), 1, H, 2 * H},
          opt.device);
    } else {
      const Tensor t = w.storage.alloc(matrix_or(WeightKind::kMatrix, opt), {H, 2 * H});
      source.fill_concat_columns(h_name, e_name, t);
      m.eh_proj = t;
    }
    m.hc_head = {load(p + "hc_head_fn"), load(p + "hc_head_base"), load(p + "hc_head_scale")};
    m.block = load_block(p, AttentionType::kSliding, MlpType::kMoe);
    w.mtp = std::move(m);
  }
  source.finish_fills();
  for (const TensorSpec& s : specs) {
    if (s.kind == WeightKind::kIndex) continue;  // tid2eid is a lookup table, not parameters
    int64_t numel = 1;
    for (int64_t d : s.shape) numel *= d;
    (s.name.rfind(kMtpPrefix, 0) == 0 ? w.mtp_parameter_count : w.parameter_count) += static_cast<size_t>(numel);
  }
  return w;
}

}  // namespace

ModelWeights load_weights(const Checkpoint& ckpt, const ModelConfig& cfg, const LoadOptions& opt) {
  const WeightReader reader(ckpt, cfg, opt.load_mtp);
  if (opt.load_mtp && cfg.has_mtp() && !reader.with_mtp()) {
    log_info("checkpoint has no mtp.0.* tensors: speculative decoding with the MTP drafter is unavailable");
  }
  Loader loader(reader, cfg);
  const std::vector<TensorSpec>& specs = reader.specs();
  size_t bytes = 0;
  for (const TensorSpec& s : specs) bytes += tensor_bytes(s, kept_format(s, loader, opt), opt);
  loader.set_total(bytes, opt.device);
  size_t assembled = 0;
  return assemble_weights(cfg, specs, opt, reader.with_mtp(), loader, &assembled);
}

namespace {

// Synthetic weights, generated on the device with make-tiny's unit-scale rules (random_checkpoint.cc).
class RandomSource : public WeightSource {
 public:
  RandomSource(const ModelConfig& cfg, const std::vector<TensorSpec>& specs, Device device, uint64_t seed,
               bool keep_quantized)
      : cfg_(cfg), seed_(seed), keep_quantized_(keep_quantized) {
    ctx_.device = device;
    for (const TensorSpec& s : specs) specs_[s.name] = &s;
  }
  void fill(const std::string& name, Tensor dst) override {
    const TensorSpec& s = *specs_.at(name);
    const uint64_t seed = seed_ ^ std::hash<std::string>{}(name);
    if (s.kind == WeightKind::kIndex) {
      ops::fill_expert_table(ctx_, dst, seed, cfg_.n_routed_experts);
      return;
    }
    float mean = 0.0f, std = 1.0f;
    const std::string leaf = name.substr(name.rfind('.') + 1);
    if (s.kind == WeightKind::kMatrix) {
      std = 1.0f / std::sqrt(static_cast<float>(s.shape.back()));
      if (name.find("ffn.gate.weight") != std::string::npos) std *= 2.0f;
    } else if (s.kind == WeightKind::kNorm) {
      mean = 1.0f;
      std = 0.1f;
    } else if (name.find("_fn") != std::string::npos) {
      std = 1.0f / std::sqrt(static_cast<float>(s.shape.back()));
    } else if (name.find("_scale") != std::string::npos) {
      mean = 1.0f;
      std = 0.3f;
    } else if (leaf == "bias") {
      std = 0.5f;
    }
    ops::fill_random(ctx_, dst, seed, mean, std);
  }
  void fill_concat_columns(const std::string& left, const std::string&, Tensor dst) override {
    ops::fill_random(ctx_, dst, seed_ ^ std::hash<std::string>{}(left), 0.0f,
                     1.0f / std::sqrt(static_cast<float>(dst.size(1) / 2)));
  }
  // Kept quantised: the format the config's quantization gives the tensor (DeepSeek's official layout for a
  // synthetic slice, set by the caller); plain otherwise.
  WeightFormat stored_format(const std::string& name) const override {
    return keep_quantized_ ? checkpoint_format(cfg_.quantization, *specs_.at(name)) : WeightFormat::kPlain;
  }
  // make-tiny's unit-scale values (std 1/sqrt(cols)) quantised by the host codecs once per format and shape; every
  // matrix of that shape gets the same codes and scales. A benchmark's time depends on the bytes, not the values,
  // and drawing a Flash model's values one by one on the host would take hours.
  HostCodes quantized_bytes(const std::string& name) override {
    const TensorSpec& s = *specs_.at(name);
    const WeightFormat f = stored_format(name);
    const int64_t rows = s.shape[0], cols = s.shape[1];
    const auto key = std::make_tuple(f, rows, cols);
    auto it = quantized_.find(key);
    if (it == quantized_.end()) {
      std::vector<float> values(static_cast<size_t>(rows * cols));
      const uint64_t seed = seed_ ^ splitmix64(static_cast<uint64_t>(f) * 0x10001u +
                                               static_cast<uint64_t>(rows) * static_cast<uint64_t>(cols));
      const float std = 1.0f / std::sqrt(static_cast<float>(cols));
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < rows * cols; ++i) values[static_cast<size_t>(i)] = std * hash_normal(seed, i);
      Codes q;
      q.codes.resize(static_cast<size_t>(quant_matrix_code_bytes(f, rows, cols)));
      q.scale.resize(static_cast<size_t>(quant_matrix_scale_bytes(f, rows, cols)));
      if (f == WeightFormat::kFp8Block) {
        quantize_fp8_block(values.data(), rows, cols, q.codes.data(), q.scale.data(), name);
      } else {
        quantize_fp4(values.data(), rows, cols, q.codes.data(), q.scale.data(), name);
      }
      it = quantized_.emplace(key, std::move(q)).first;
    }
    return {it->second.codes.data(), it->second.scale.data()};
  }

 private:
  const ModelConfig& cfg_;
  uint64_t seed_;
  ExecContext ctx_;
  std::map<std::string, const TensorSpec*> specs_;
  bool keep_quantized_ = false;
  struct Codes {
    std::vector<uint8_t> codes, scale;
  };
  std::map<std::tuple<WeightFormat, int64_t, int64_t>, Codes> quantized_;  // by format and shape
};

}  // namespace

std::string bf16_moe_layers_note(const ModelWeights& w) {
  std::vector<const MoeWeights*> ffns;
  for (const BlockWeights& b : w.layers) ffns.push_back(&b.ffn);
  if (w.mtp.has_value()) ffns.push_back(&w.mtp->block.ffn);
  int64_t kept = 0;
  int32_t widest = -1;
  bool unmeasured = false;
  for (const MoeWeights* f : ffns) {
    bool keeps = false;
    for (const Weight* m : {&f->w1, &f->w2, &f->w3}) {
      if (!m->quantized() || m->quant().format != WeightFormat::kFp4) continue;
      const int32_t span = m->quant().fp4_row_span;
      unmeasured = unmeasured || span < 0;
      widest = std::max(widest, span);
      keeps = keeps || span < 0 || span > kE4m3MoeMaxFp4RowSpan;
    }
    kept += keeps ? 1 : 0;
  }
  if (kept == 0) return "";
  return str_cat("--activation-quant fp8: the MoE prefill of ", kept, " of ", ffns.size(),
                 " layers keeps bf16 MMAs (slower than the E4M3 ones): their FP4 rows span ",
                 unmeasured ? std::string("an unmeasured number of") : str_cat("up to ", widest),
                 " binades, the E4M3 products take at most ", kE4m3MoeMaxFp4RowSpan);
}

ModelWeights random_weights(const ModelConfig& cfg, const LoadOptions& opt, uint64_t seed) {
  DSV4_CHECK_ARG(!opt.keep_quantized || cfg.quantization.quantized,
                 "synthetic weights kept quantised need a quantised config (DeepSeek's official layout: "
                 "QuantizationConfig::official)");
  const bool with_mtp = opt.load_mtp && cfg.has_mtp();
  const std::vector<TensorSpec> specs = checkpoint_inventory(cfg, with_mtp);
  RandomSource source(cfg, specs, opt.device, seed, opt.keep_quantized);
  size_t bytes = 0;
  ModelWeights w = assemble_weights(cfg, specs, opt, with_mtp, source, &bytes);
  if (opt.device == Device::kCUDA) cuda::synchronize_device();
  return w;
}
}  // namespace dsv4
