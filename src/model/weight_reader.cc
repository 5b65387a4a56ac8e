// WeightReader: validation of a checkpoint against a config's inventory, plain and quantised formats, and the
// exact f32 read of each weight.
#include <algorithm>
#include <regex>
#include <set>

#include "dsv4/model/weights.h"

namespace dsv4 {
namespace {

const char* kMtpPrefix = "mtp.0.";

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

bool is_plain_float(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

// Why a format was expected, for error messages.
std::string format_reason(const QuantizationConfig& q, const TensorSpec& s) {
  if (s.group == QuantGroup::kRoutedExpert) {
    return q.expert_dtype.empty() ? std::string(
                                        "routed experts of a quantization_config checkpoint without "
                                        "expert_dtype follow the dense FP8 format")
                                  : str_cat("config.json expert_dtype is '", q.expert_dtype, "'");
  }
  return "config.json has a quantization_config (dense projections are FP8)";
}

}  // namespace

WeightFormat checkpoint_format(const QuantizationConfig& q, const TensorSpec& spec) {
  switch (spec.group) {
    case QuantGroup::kNone:
      return WeightFormat::kPlain;
    case QuantGroup::kDense:
      return q.dense;
    case QuantGroup::kRoutedExpert:
      return q.experts;
  }
  return WeightFormat::kPlain;
}

std::string scale_tensor_name(const std::string& weight_name) {
  const std::string suffix = ".weight";
  if (weight_name.size() > suffix.size() &&
      weight_name.compare(weight_name.size() - suffix.size(), suffix.size(), suffix) == 0) {
    return weight_name.substr(0, weight_name.size() - suffix.size()) + ".scale";
  }
  return weight_name + ".scale";
}

WeightReader::WeightReader(const Checkpoint& ckpt, const ModelConfig& cfg, bool load_mtp) : ckpt_(ckpt) {
  std::vector<std::string> errors;
  for (const std::string& raw : ckpt.names()) {
    const std::string canon = canonical_tensor_name(raw);
    if (!by_canonical_.emplace(canon, raw).second) {
      errors.push_back(
          str_cat("tensors '", by_canonical_[canon], "' and '", raw, "' name the same weight '", canon, "'"));
    }
  }
  bool has_mtp_tensors = false;
  for (const auto& [canon, raw] : by_canonical_) has_mtp_tensors |= canon.rfind(kMtpPrefix, 0) == 0;
  with_mtp_ = load_mtp && cfg.has_mtp() && has_mtp_tensors;
  specs_ = checkpoint_inventory(cfg, with_mtp_);
  const bool mtp_ignored = !with_mtp_;
  const QuantizationConfig& q = cfg.quantization;

  std::set<std::string> expected;
  for (size_t i = 0; i < specs_.size(); ++i) {
    const TensorSpec& s = specs_[i];
    spec_index_[s.name] = i;
    expected.insert(s.name);
    const WeightFormat fmt = checkpoint_format(q, s);
    formats_[s.name] = fmt;
    auto it = by_canonical_.find(s.name);
    if (it == by_canonical_.end()) {
      errors.push_back(str_cat("missing tensor '", s.name, "' (expected shape ", shape_str(s.shape),
                               fmt == WeightFormat::kPlain ? "" : str_cat(", ", weight_format_name(fmt)), ")"));
      continue;
    }
    const TensorInfo* info = ckpt.find(it->second);
    if (s.kind == WeightKind::kIndex) {
      if (info->shape != s.shape) {
        errors.push_back(
            str_cat("tensor '", it->second, "' has shape ", info->shape_string(), ", expected ", shape_str(s.shape)));
      }
      if (info->dtype != DType::I64 && info->dtype != DType::I32) {
        errors.push_back(
            str_cat("tensor '", it->second, "' has dtype ", dtype_name(info->dtype), ", expected I64 or I32"));
      }
      continue;
    }
    if (fmt == WeightFormat::kPlain) {
      if (info->shape != s.shape) {
        errors.push_back(
            str_cat("tensor '", it->second, "' has shape ", info->shape_string(), ", expected ", shape_str(s.shape)));
      }
      if (!is_plain_float(info->dtype)) {
        const bool quantised = info->dtype == DType::F8_E4M3 || info->dtype == DType::I8 || info->dtype == DType::U8;
        std::string hint;
        if (quantised && s.group == QuantGroup::kNone) {
          hint = " (an FP8/FP4 storage dtype, but DeepSeek's checkpoints keep this tensor unquantised)";
        } else if (quantised && !q.quantized) {
          hint = " (an FP8/FP4-quantised weight, but config.json has no quantization_config)";
        } else if (quantised) {
          hint = str_cat(" (an FP8/FP4-quantised expert, but config.json expert_dtype is '", q.expert_dtype, "')");
        }
        errors.push_back(str_cat("tensor '", it->second, "' has dtype ", dtype_name(info->dtype),
                                 ", expected F32, BF16 or F16", hint));
      }
      continue;
    }
    // Quantised: the weight in its storage dtype and shape, then its `.scale` sibling.
    const int64_t out = s.shape[0], in = s.shape[1];
    if (fmt == WeightFormat::kFp4 && in % 2 != 0) {
      errors.push_back(str_cat("tensor '", it->second, "' has an odd input dimension ", in, " (spec ",
                               shape_str(s.shape), "): packed FP4 holds two values a byte, so it needs an even one"));
      continue;
    }
    const std::vector<int64_t> want_shape = quantized_weight_shape(fmt, out, in);
    const bool dtype_ok = fmt == WeightFormat::kFp8Block ? info->dtype == DType::F8_E4M3
                                                         : (info->dtype == DType::I8 || info->dtype == DType::U8);
    if (!dtype_ok) {
      errors.push_back(str_cat("tensor '", it->second, "' has dtype ", dtype_name(info->dtype), ", expected ",
                               fmt == WeightFormat::kFp8Block ? "F8_E4M3" : "I8 (packed FP4)", " since ",
                               format_reason(q, s)));
    }
    if (info->shape != want_shape) {
      errors.push_back(str_cat("tensor '", it->second, "' has shape ", info->shape_string(), ", expected ",
                               shape_str(want_shape), " (", weight_format_name(fmt), " of ", shape_str(s.shape), ")"));
    }
    const std::string scale = scale_tensor_name(s.name);
    expected.insert(scale);
    auto sit = by_canonical_.find(scale);
    if (sit == by_canonical_.end()) {
      errors.push_back(str_cat("missing scale tensor '", scale, "' of the quantised weight '", it->second,
                               "' (F8_E8M0 ", shape_str(quantized_scale_shape(fmt, out, in)), ")"));
      continue;
    }
    const TensorInfo* sinfo = ckpt.find(sit->second);
    if (sinfo->dtype != DType::F8_E8M0) {
      errors.push_back(str_cat("scale tensor '", sit->second, "' has dtype ", dtype_name(sinfo->dtype),
                               ", expected F8_E8M0 (quantization_config scale_fmt ue8m0)"));
    }
    const std::vector<int64_t> want_scale = quantized_scale_shape(fmt, out, in);
    if (sinfo->shape != want_scale) {
      errors.push_back(str_cat("scale tensor '", sit->second, "' has shape ", sinfo->shape_string(), ", expected ",
                               shape_str(want_scale), " (", weight_format_name(fmt), " of ", shape_str(s.shape), ")"));
    }
  }
  // DeepSeek's checkpoints may carry the MTP layer's own copies of the embedding and head (`mtp.0.emb.tok_emb.weight`,
  // `mtp.0.head.weight`); its convert.py drops them, and the drafter shares the target's (checked for shape only).
  static const std::regex kMtpCopies(R"(^mtp\.\d+\.(emb\.tok_emb|head)\.weight$)");
  for (const auto& [canon, raw] : by_canonical_) {
    if (expected.count(canon)) continue;
    if (mtp_ignored && canon.rfind(kMtpPrefix, 0) == 0) continue;
    if (std::regex_match(canon, kMtpCopies)) {
      const TensorInfo* info = ckpt.find(raw);
      const std::vector<int64_t> want = {cfg.vocab_size, cfg.hidden_size};
      if (info->shape != want) {
        errors.push_back(str_cat("tensor '", raw, "' (the MTP's copy of the embedding/head, unused) has shape ",
                                 info->shape_string(), ", expected ", shape_str(want)));
      }
      continue;
    }
    const bool is_scale = canon.size() > 6 && canon.compare(canon.size() - 6, 6, ".scale") == 0;
    const std::string weight = is_scale ? canon.substr(0, canon.size() - 6) + ".weight" : std::string();
    if (is_scale && spec_index_.count(weight)) {
      errors.push_back(str_cat("unexpected scale tensor '", raw, "': '", weight,
                               "' is not stored quantised under this config.json (quantization_config / "
                               "expert_dtype)"));
    } else {
      errors.push_back(str_cat("unexpected tensor '", raw, "'"));
    }
  }
  if (!errors.empty()) {
    std::string msg = str_cat("checkpoint '", ckpt.dir(), "' does not match its config (", errors.size(), " problem",
                              errors.size() > 1 ? "s" : "", "):");
    const size_t shown = std::min<size_t>(errors.size(), 25);
    for (size_t i = 0; i < shown; ++i) msg += "\n  " + errors[i];
    if (shown < errors.size()) msg += str_cat("\n  ... and ", errors.size() - shown, " more");
    fail(StatusCode::kInvalidArgument, msg);
  }
}

const TensorSpec& WeightReader::spec(const std::string& name) const {
  auto it = spec_index_.find(name);
  DSV4_CHECK(it != spec_index_.end(), kNotFound, "weights: no tensor '", name, "' in the inventory");
  return specs_[it->second];
}

WeightFormat WeightReader::format(const std::string& name) const {
  spec(name);
  return formats_.at(name);
}

const std::string& WeightReader::raw_name(const std::string& name) const {
  auto it = by_canonical_.find(name);
  DSV4_CHECK(it != by_canonical_.end(), kNotFound, "checkpoint '", ckpt_.dir(), "' has no tensor '", name, "'");
  return it->second;
}

Tensor WeightReader::raw(const std::string& name) const { return ckpt_.view(raw_name(name)); }

Tensor WeightReader::raw_scale(const std::string& name) const {
  DSV4_CHECK_ARG(format(name) != WeightFormat::kPlain, "weights: '", name, "' is not quantised (no scale)");
  return ckpt_.view(raw_name(scale_tensor_name(name)));
}

size_t WeightReader::stored_bytes(const std::string& name) const {
  size_t n = raw(name).nbytes();
  if (format(name) != WeightFormat::kPlain) n += raw_scale(name).nbytes();
  return n;
}

void WeightReader::read_f32(const std::string& name, std::vector<float>* out) const {
  int64_t numel = 1;
  for (int64_t d : spec(name).shape) numel *= d;
  out->resize(static_cast<size_t>(numel));
  read_f32(name, out->data(), out->size());
}

void WeightReader::read_f32(const std::string& name, float* out, size_t n) const {
  const TensorSpec& s = spec(name);
  DSV4_CHECK_ARG(s.kind != WeightKind::kIndex, "weights: '", name, "' is an integer table, not a float weight");
  const Tensor t = raw(name);
  int64_t numel = 1;
  for (int64_t d : s.shape) numel *= d;
  DSV4_CHECK_ARG(static_cast<size_t>(numel) == n, "weights: '", name, "' has ", numel, " values, the destination ", n);
  const std::string what = str_cat("tensor '", raw_name(name), "'");
  switch (format(name)) {
    case WeightFormat::kPlain:
      convert_to_f32(t.dtype(), t.data(), out, n);
      return;
    case WeightFormat::kFp8Block:
      dequantize_fp8_block(t.ptr<uint8_t>(), raw_scale(name).ptr<uint8_t>(), s.shape[0], s.shape[1], out, what);
      return;
    case WeightFormat::kFp4:
      dequantize_fp4(t.ptr<uint8_t>(), raw_scale(name).ptr<uint8_t>(), s.shape[0], s.shape[1], out, what);
      return;
  }
}

}  // namespace dsv4
