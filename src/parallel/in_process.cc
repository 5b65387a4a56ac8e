#include "dsv4/parallel/in_process.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <thread>

#include "backend/cpu/blas.h"
#include "dsv4/core/dtype.h"
#include "dsv4/core/status.h"

namespace dsv4 {

std::chrono::milliseconds default_collective_timeout() {
  if (const char* env = std::getenv("DSV4_COLLECTIVE_TIMEOUT_S"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const double s = std::strtod(env, &end);
    DSV4_CHECK_ARG(end != env && *end == '\0' && s > 0 && s < 1e7,
                   "DSV4_COLLECTIVE_TIMEOUT_S must be a positive number of seconds, got '", env, "'");
    return std::chrono::milliseconds(static_cast<int64_t>(s * 1000.0));
  }
  return std::chrono::seconds(300);
}

class InProcessGroup::Rank final : public Communicator {
 public:
  Rank(InProcessGroup& group, int rank) : g_(group), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return g_.size_; }

  void all_reduce_sum(Tensor t) override {
    DSV4_CHECK_ARG(t.device() == Device::kCPU && (t.dtype() == DType::F32 || t.dtype() == DType::BF16),
                   "all_reduce_sum: an F32 or BF16 host tensor, got ", dtype_name(t.dtype()));
    const int64_t n = t.numel();
    const int ph = g_.arrive(rank_, "all_reduce_sum", t.data(), t.nbytes());
    check_sizes(ph, "all_reduce_sum", t.nbytes());
    // Every rank sums in rank order from zero: the same bits everywhere.
    sum_.assign(static_cast<size_t>(n), 0.0f);
    for (int r = 0; r < g_.size_; ++r) {
      if (t.dtype() == DType::F32) {
        const float* p = static_cast<const float*>(g_.posted_[ph][r]);
        for (int64_t i = 0; i < n; ++i) sum_[i] += p[i];
      } else {
        const uint16_t* p = static_cast<const uint16_t*>(g_.posted_[ph][r]);
        for (int64_t i = 0; i < n; ++i) sum_[i] += bf16_to_float(p[i]);
      }
    }
    g_.leave(rank_, "all_reduce_sum");  // nobody reads t any more: overwrite it
    if (t.dtype() == DType::F32) {
      std::memcpy(t.data(), sum_.data(), t.nbytes());
    } else {
      uint16_t* p = t.ptr<uint16_t>();
      for (int64_t i = 0; i < n; ++i) p[i] = float_to_bf16(sum_[i]);
    }
  }

  void all_gather(Tensor in, Tensor out) override {
    DSV4_CHECK_ARG(in.device() == Device::kCPU && out.device() == Device::kCPU && in.dtype() == out.dtype() &&
                       out.numel() == in.numel() * g_.size_,
                   "all_gather: out must hold ", g_.size_, " x ", in.numel(), " elements of ", dtype_name(in.dtype()),
                   ", got ", out.numel(), " of ", dtype_name(out.dtype()));
    const int ph = g_.arrive(rank_, "all_gather", in.data(), in.nbytes());
    check_sizes(ph, "all_gather", in.nbytes());
    for (int r = 0; r < g_.size_; ++r) {
      std::memcpy(static_cast<char*>(out.data()) + r * in.nbytes(), g_.posted_[ph][r], in.nbytes());
    }
    g_.leave(rank_, "all_gather");
  }

  void broadcast_bytes(std::vector<uint8_t>* bytes, int root, Wait wait) override {
    DSV4_CHECK_ARG(root >= 0 && root < g_.size_, "broadcast_bytes: root ", root, " outside [0, ", g_.size_, ")");
    const int ph =
        g_.arrive(rank_, "broadcast_bytes", bytes->data(), bytes->size(), rank_ != root && wait == Wait::kUntilAborted);
    if (rank_ != root) {
      const uint8_t* src = static_cast<const uint8_t*>(g_.posted_[ph][root]);
      bytes->assign(src, src + g_.posted_bytes_[ph][root]);
    }
    g_.leave(rank_, "broadcast_bytes");
  }

  void barrier() override { g_.arrive(rank_, "barrier", nullptr, 0); }

  void abort(const std::string& reason) override {
    {
      std::lock_guard<std::mutex> lock(g_.mu_);
      if (!g_.aborted_) {
        g_.aborted_ = true;
        g_.abort_reason_ = str_cat("rank ", rank_, " failed: ", reason);
      }
    }
    g_.cv_.notify_all();
  }

 private:
  // Mismatched collectives (a bug in the caller) must not read past a peer's buffer.
  void check_sizes(int ph, const char* what, size_t bytes) {
    for (int r = 0; r < g_.size_; ++r) {
      if (g_.posted_bytes_[ph][r] != bytes) {
        const std::string why =
            str_cat(what, ": rank ", rank_, " has ", bytes, " bytes, rank ", r, " ", g_.posted_bytes_[ph][r]);
        abort(why);
        fail(StatusCode::kInternal, why);
      }
    }
  }

  InProcessGroup& g_;
  const int rank_;
  std::vector<float> sum_;
};

InProcessGroup::InProcessGroup(int size, std::chrono::milliseconds timeout) : size_(size), timeout_(timeout) {
  DSV4_CHECK_ARG(size >= 1 && size <= 1024, "in-process group: size must be in [1, 1024], got ", size);
  DSV4_CHECK_ARG(timeout.count() > 0, "in-process group: the collective timeout must be positive");
  for (int ph = 0; ph < 2; ++ph) {
    posted_[ph].assign(static_cast<size_t>(size), nullptr);
    posted_bytes_[ph].assign(static_cast<size_t>(size), 0);
  }
  present_.assign(static_cast<size_t>(size), 0);
  for (int r = 0; r < size; ++r) ranks_.push_back(std::make_unique<Rank>(*this, r));
}

InProcessGroup::~InProcessGroup() = default;

Communicator& InProcessGroup::rank(int rank) {
  DSV4_CHECK_ARG(rank >= 0 && rank < size_, "in-process group: rank ", rank, " outside [0, ", size_, ")");
  return *ranks_[static_cast<size_t>(rank)];
}

void InProcessGroup::throw_aborted(const char* what) {
  fail(StatusCode::kAborted, what, " abandoned: ", abort_reason_);
}

void InProcessGroup::wait_for_all(std::unique_lock<std::mutex>& lock, int64_t generation, const char* what,
                                  bool untimed) {
  const auto ready = [&] { return aborted_ || generation_ != generation; };
  bool done = true;
  if (untimed) {
    cv_.wait(lock, ready);
  } else {
    done = cv_.wait_for(lock, timeout_, ready);
  }
  // A phase that completed stays completed even if a peer aborts right after it (its own failure shows at the next
  // collective).
  if (generation_ != generation) return;
  if (aborted_) throw_aborted(what);
  if (!done) {
    std::string missing;
    for (int r = 0; r < size_; ++r) {
      if (!present_[static_cast<size_t>(r)]) missing += str_cat(missing.empty() ? "" : ", ", r);
    }
    aborted_ = true;
    abort_reason_ = str_cat(what, " timed out after ", timeout_.count(), " ms waiting for rank(s) ", missing);
    cv_.notify_all();
    throw_aborted(what);
  }
}

int InProcessGroup::arrive(int rank, const char* what, const void* data, size_t bytes, bool untimed) {
  std::unique_lock<std::mutex> lock(mu_);
  if (aborted_) throw_aborted(what);
  const int ph = static_cast<int>(generation_ & 1);
  posted_[ph][static_cast<size_t>(rank)] = data;
  posted_bytes_[ph][static_cast<size_t>(rank)] = bytes;
  present_[static_cast<size_t>(rank)] = 1;
  const int64_t generation = generation_;
  if (++arrived_ == size_) {
    arrived_ = 0;
    ++generation_;
    std::fill(present_.begin(), present_.end(), 0);
    cv_.notify_all();
    return ph;
  }
  wait_for_all(lock, generation, what, untimed);
  return ph;
}

void InProcessGroup::leave(int rank, const char* what) { arrive(rank, what, nullptr, 0); }

void InProcessGroup::run(const std::function<void(Communicator&)>& fn) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(size_));
  std::vector<char> origin(static_cast<size_t>(size_), 0);  // ranks that failed on their own, not by a peer's abort
  const int threads_per_rank = std::max(1, omp_get_max_threads() / size_);
  auto body = [&](int r) {
    try {
      const cpu::BlasOffScope same_bits(size_ > 1);        // backend/cpu/blas.h
      const cpu::OmpThreadsScope share(threads_per_rank);  // the ranks share the cores
      fn(*ranks_[static_cast<size_t>(r)]);
    } catch (const Error& e) {
      errors[r] = std::current_exception();
      origin[r] = e.code() != StatusCode::kAborted;
      ranks_[r]->abort(e.what());
    } catch (const std::exception& e) {
      errors[r] = std::current_exception();
      origin[r] = 1;
      ranks_[r]->abort(e.what());
    }
  };
  std::vector<std::thread> threads;
  for (int r = 1; r < size_; ++r) threads.emplace_back(body, r);
  body(0);
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < size_; ++r) {
    if (origin[r]) std::rethrow_exception(errors[r]);
  }
  for (int r = 0; r < size_; ++r) {
    if (errors[r]) std::rethrow_exception(errors[r]);
  }
}

}  // namespace dsv4
