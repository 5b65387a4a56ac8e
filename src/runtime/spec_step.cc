#include "runtime/spec_step.h"

#include <algorithm>
#include <cstring>

#include "backend/philox.h"
#include "dsv4/model/mtp.h"

namespace dsv4 {
namespace {

constexpr int kMetaFields = 5;  // ids, pos, slot, start, end

size_t align16(size_t n) { return (n + 15) / 16 * 16; }

// One row of a BatchMeta block of T rows starting at `base`.
void set_row(int32_t* base, int64_t T, int64_t t, int32_t id, int32_t pos, int32_t slot, int32_t start, int32_t end) {
  base[0 * T + t] = id;
  base[1 * T + t] = pos;
  base[2 * T + t] = slot;
  base[3 * T + t] = start;
  base[4 * T + t] = end;
}
void set_padding_row(int32_t* base, int64_t T, int64_t t) { set_row(base, T, t, 0, 0, -1, 0, 0); }

BatchMeta meta_at(int32_t* p, int64_t T, Device d) {
  auto field = [&](int f) { return Tensor(p + f * T, DType::I32, {T}, d); };
  return {field(0), field(1), field(2), field(3), field(4), T};
}

ops::TokenSamplingParams with_counter(ops::TokenSamplingParams p, uint64_t counter, int word) {
  p.counter = philox_word_counter(counter, word);
  return p;
}

}  // namespace

SpecLayout SpecLayout::make(const SpecShape& s) {
  DSV4_CHECK_ARG(s.b > 0 && s.K > 0 && s.T0 > 0, "speculative step: b ", s.b, ", K ", s.K, ", T0 ", s.T0);
  SpecLayout l;
  l.shape = s;
  const int64_t Tv = s.verify_tokens();
  size_t off = 0;
  l.meta0 = off;
  off += kMetaFields * s.T0;
  l.gather0 = off;
  off += s.T0;
  l.rows0 = off;
  off += s.b;
  l.metaj = off;
  off += kMetaFields * s.b * (s.K - 1);
  l.metav = off;
  off += kMetaFields * Tv;
  l.scatter = off;
  off += Tv;
  l.rowsv = off;
  off += Tv;
  size_t bytes = align16(off * sizeof(int32_t));
  const size_t prm = sizeof(ops::TokenSamplingParams);
  l.params_draft = bytes;
  bytes += static_cast<size_t>(s.K * s.b) * prm;
  l.params_target = bytes;
  bytes += static_cast<size_t>(Tv) * prm;
  l.params_accept = bytes;
  bytes += static_cast<size_t>(s.b) * prm;
  l.bytes = bytes;
  return l;
}

int64_t spec_step0_rows(const std::vector<SpecSeq>& seqs, int64_t K, bool compact) {
  if (!compact) return static_cast<int64_t>(seqs.size()) * (K + 1);
  int64_t T0 = 0;
  for (const SpecSeq& s : seqs) T0 += static_cast<int64_t>(s.carry_ids.size());
  return T0;
}

void fill_spec_block(const std::vector<SpecSeq>& seqs, const SpecLayout& l, bool compact, int64_t carry_stride,
                     char* block) {
  const int64_t b = l.shape.b, K = l.shape.K, T0 = l.shape.T0, Tv = l.shape.verify_tokens();
  DSV4_CHECK_ARG(static_cast<int64_t>(seqs.size()) <= b && (!compact || static_cast<int64_t>(seqs.size()) == b),
                 "speculative step: ", seqs.size(), " sequences for a block of ", b);
  DSV4_CHECK_ARG(K + 1 <= carry_stride, "speculative step: K = ", K, " needs ", K + 1,
                 " carry rows per slot, the "
                 "executor keeps ",
                 carry_stride);
  std::memset(block, 0, l.bytes);
  auto* ints = reinterpret_cast<int32_t*>(block);
  int32_t* meta0 = ints + l.meta0;
  int32_t* gather0 = ints + l.gather0;
  int32_t* rows0 = ints + l.rows0;
  int32_t* metav = ints + l.metav;
  int32_t* scatter = ints + l.scatter;
  int32_t* rowsv = ints + l.rowsv;
  auto* pd = reinterpret_cast<ops::TokenSamplingParams*>(block + l.params_draft);
  auto* pt = reinterpret_cast<ops::TokenSamplingParams*>(block + l.params_target);
  auto* pa = reinterpret_cast<ops::TokenSamplingParams*>(block + l.params_accept);
  int64_t base0 = 0;  // first step-0 row of the sequence
  for (int64_t i = 0; i < b; ++i) {
    const bool real = i < static_cast<int64_t>(seqs.size());
    const int64_t rows = compact ? (real ? static_cast<int64_t>(seqs[i].carry_ids.size()) : 0) : K + 1;
    if (!real) {
      for (int64_t r = 0; r < rows; ++r) set_padding_row(meta0, T0, base0 + r);
      rows0[i] = static_cast<int32_t>(base0);
      for (int64_t j = 1; j < K; ++j) set_padding_row(ints + l.metaj + kMetaFields * b * (j - 1), b, i);
      for (int64_t r = 0; r <= K; ++r) {
        const int64_t t = i * (K + 1) + r;
        set_padding_row(metav, Tv, t);
        scatter[t] = -1;
        rowsv[t] = static_cast<int32_t>(t);
      }
      base0 += rows;
      continue;
    }
    const SpecSeq& s = seqs[i];
    const int64_t n = static_cast<int64_t>(s.carry_ids.size()), c = s.computed;
    DSV4_CHECK_ARG(n >= 1 && n <= K + 1 && c >= n && s.slot >= 0, "speculative step: sequence ", i, " carries ", n,
                   " rows at ", c, " computed positions (K = ", K, ")");
    const int32_t slot = s.slot, first = static_cast<int32_t>(c - n);
    // Drafter step 0: position c - n + r with the target's residual row and the token after it.
    for (int64_t r = 0; r < rows; ++r) {
      set_row(meta0, T0, base0 + r, r < n ? s.carry_ids[r] : s.last, first + static_cast<int32_t>(r), slot, first,
              first + static_cast<int32_t>(rows));
      gather0[base0 + r] = static_cast<int32_t>(slot * carry_stride + r);
    }
    rows0[i] = static_cast<int32_t>(base0 + n - 1);
    base0 += rows;
    // Drafter step j (1 .. K - 1): d_j at position c - 1 + j (its id is the previous step's draft, on the device).
    for (int64_t j = 1; j < K; ++j) {
      const int32_t pos = static_cast<int32_t>(c - 1 + j);
      set_row(ints + l.metaj + kMetaFields * b * (j - 1), b, i, 0, pos, slot, pos, pos + 1);
    }
    // Verification: [last, d_1 .. d_K] at positions c .. c + K.
    for (int64_t r = 0; r <= K; ++r) {
      const int64_t t = i * (K + 1) + r;
      set_row(metav, Tv, t, r == 0 ? s.last : 0, static_cast<int32_t>(c + r), slot, static_cast<int32_t>(c),
              static_cast<int32_t>(c + K + 1));
      scatter[t] = static_cast<int32_t>(slot * carry_stride + r);
      rowsv[t] = static_cast<int32_t>(t);
      pt[t] = with_counter(s.sampling, s.sampling.counter + r, 3);
    }
    for (int64_t j = 0; j < K; ++j) pd[j * b + i] = with_counter(s.sampling, s.sampling.counter + j, 1);
    pa[i] = s.sampling;
  }
  DSV4_INTERNAL_CHECK(base0 == T0, "speculative step: ", base0, " step-0 rows for a layout of ", T0);
}

void fill_spec_padding(const SpecLayout& l, char* block) { fill_spec_block({}, l, false, l.shape.K + 1, block); }

SpecTensors spec_tensors(const SpecLayout& l, char* block, Device d, const SpecBuffers& buf) {
  const int64_t b = l.shape.b, K = l.shape.K, T0 = l.shape.T0, Tv = l.shape.verify_tokens();
  const int64_t prm = sizeof(ops::TokenSamplingParams), info = sizeof(ops::NucleusInfo);
  auto* ints = reinterpret_cast<int32_t*>(block);
  auto i32 = [&](size_t off, int64_t n) { return Tensor(ints + off, DType::I32, {n}, d); };
  auto params = [&](size_t off, int64_t n) { return Tensor(block + off, DType::U8, {n, prm}, d); };
  SpecTensors t;
  t.shape = l.shape;
  t.meta0 = meta_at(ints + l.meta0, T0, d);
  t.gather0 = i32(l.gather0, T0);
  t.rows0 = i32(l.rows0, b);
  for (int64_t j = 1; j < K; ++j) t.metaj.push_back(meta_at(ints + l.metaj + kMetaFields * b * (j - 1), b, d));
  t.metav = meta_at(ints + l.metav, Tv, d);
  t.scatter = i32(l.scatter, Tv);
  t.rowsv = i32(l.rowsv, Tv);
  t.params_draft = params(l.params_draft, K * b);
  t.params_target = params(l.params_target, Tv);
  t.params_accept = params(l.params_accept, b);
  t.carry = buf.carry;
  DSV4_CHECK_ARG(buf.hidden.size(0) >= std::max(T0, Tv) && buf.residual.size(0) >= std::max(T0, Tv) &&
                     buf.draft_logits.size(0) >= K * b && buf.target_logits.size(0) >= Tv &&
                     buf.ints.numel() >= 5 * Tv && buf.info.numel() >= 2 * Tv * info,
                 "speculative step of ", b, " sequences, K = ", K, " exceeds the executor's buffers");
  t.hidden = buf.hidden;
  t.residual = buf.residual;
  t.draft_logits = buf.draft_logits.rows(0, K * b);
  t.target_logits = buf.target_logits.rows(0, Tv);
  int32_t* out = buf.ints.ptr<int32_t>();
  uint8_t* nuclei = buf.info.ptr<uint8_t>();
  t.draft_tokens = Tensor(out, DType::I32, {K * b}, d);
  t.target_tokens = Tensor(out + Tv, DType::I32, {Tv}, d);
  t.out_tokens = Tensor(out + 2 * Tv, DType::I32, {Tv}, d);
  t.counts = Tensor(out + 3 * Tv, DType::I32, {b}, d);
  t.target_nonfinite = Tensor(out + 3 * Tv + b, DType::I32, {Tv}, d);
  t.draft_info = Tensor(nuclei, DType::U8, {K * b, info}, d);
  t.target_info = Tensor(nuclei + Tv * info, DType::U8, {Tv, info}, d);
  return t;
}

void spec_draft_forward(ExecContext& ctx, const ModelConfig& c, const ModelWeights& w, ModelState& state,
                        const SpecTensors& t) {
  const int64_t b = t.shape.b, K = t.shape.K, T0 = t.shape.T0;
  // Step 0: every carried position (the previous verification's accepted rows, or a prompt's last row).
  const Tensor h0 = t.hidden.rows(0, T0), o0 = t.residual.rows(0, T0);
  ops::gather_rows(ctx, h0, t.carry, t.gather0);
  mtp_forward(ctx, c, w, state, t.meta0, h0, o0);
  // Each sequence's last carried row continues; hidden and residual alternate as input and output.
  Tensor h = t.hidden.rows(0, b), other = t.residual.rows(0, b);
  ops::gather_rows(ctx, h, o0, t.rows0);
  for (int64_t j = 0; j < K; ++j) {
    if (j > 0) {
      const BatchMeta& m = t.metaj[static_cast<size_t>(j - 1)];
      ops::copy(ctx, m.ids, t.draft_tokens.slice(0, (j - 1) * b, j * b));
      mtp_forward(ctx, c, w, state, m, h, other);
      std::swap(h, other);
    }
    const Tensor logits = t.draft_logits.rows(j * b, (j + 1) * b);
    mtp_logits(ctx, c, w, h, logits);
    ops::sample_tokens(ctx, t.draft_tokens.slice(0, j * b, (j + 1) * b), logits,
                       t.params_draft.rows(j * b, (j + 1) * b), t.draft_info.rows(j * b, (j + 1) * b));
  }
}

void spec_verify_forward(ExecContext& ctx, const ModelConfig& c, const ModelWeights& w, ModelState& state,
                         const SpecTensors& t) {
  const int64_t K = t.shape.K, Tv = t.shape.verify_tokens();
  ops::speculative_verify_ids(ctx, t.metav.ids, t.draft_tokens, K);
  const Tensor residual = t.residual.rows(0, Tv);
  target_forward(ctx, c, w, state, t.metav, t.rowsv, t.target_logits, residual);
  ops::scatter_rows(ctx, t.carry, residual, t.scatter);
  ops::sample_tokens(ctx, t.target_tokens, t.target_logits, t.params_target, t.target_info, t.target_nonfinite);
  ops::speculative_accept(ctx, t.out_tokens, t.counts, t.target_logits, t.target_info, t.target_tokens, t.draft_logits,
                          t.draft_info, t.draft_tokens, t.params_accept);
}

void mark_nonfinite_sequences(const int32_t* flags, int64_t b, int64_t K, std::vector<int32_t>* counts) {
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t r = 0; r < K + 1; ++r) {
      if (flags[i * (K + 1) + r] != 0) (*counts)[static_cast<size_t>(i)] = -1;
    }
  }
}

}  // namespace dsv4
