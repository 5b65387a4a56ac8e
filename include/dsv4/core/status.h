// Errors and status codes shared by every layer of dsv4.
//
// The rule: exceptions inside the engine, Status at the C API's edge.
//  - Every engine function reports a failure by throwing dsv4::Error (a std::runtime_error carrying a
//    StatusCode), ops, model, runtime and CLI alike.
//  - The C API (include/dsv4/dsv4.h) returns int codes: it converts whatever is thrown below it, and no
//    exception ever crosses it (ctypes callers).
//  - Status as a return value is kept to two low-level spots that sit right under that edge: launch_kernel
//    (backend/cuda/launch.h; the engine wraps it in check_launch, which throws) and the RMSNorm row launchers
//    the C API calls directly (backend/cuda/rms_norm.h; the engine's ops call throw_if_error on them).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace dsv4 {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,  // wrong shapes, dtypes, flags, out-of-range ids
  kNotFound = 2,         // missing file or tensor
  kParseError = 3,       // malformed config.json / safetensors header / tokenizer.json
  kIoError = 4,          // open/mmap/read/write failures
  kUnsupported = 5,      // valid input that this build cannot run (e.g. no CUDA device)
  kOutOfMemory = 6,      // arena or device allocation exhausted
  kCudaError = 7,        // a CUDA runtime / cuBLASLt call failed
  kInternal = 8,         // a broken invariant inside dsv4 (a bug)
  kAborted = 9,          // a collective timed out or a peer rank failed (multi-rank runs)
};

const char* status_code_name(StatusCode code);

// Concatenates its arguments with operator<< (GCC 12 has no <format>).
template <typename... Args>
std::string str_cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status ok() { return {}; }

  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

class Error : public std::runtime_error {
 public:
  Error(StatusCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  StatusCode code() const { return code_; }
  Status status() const { return {code_, what()}; }

 private:
  StatusCode code_;
};

template <typename... Args>
[[noreturn]] void fail(StatusCode code, Args&&... args) {
  throw Error(code, str_cat(std::forward<Args>(args)...));
}

// Throws if a Status is not ok (used where a launcher's Status meets exception-based code).
inline void throw_if_error(const Status& s) {
  if (!s.is_ok()) throw Error(s.code(), s.message());
}

}  // namespace dsv4

// DSV4_CHECK(cond, code, message parts...): throw dsv4::Error when cond is false.
#define DSV4_CHECK(cond, code, ...)                                    \
  do {                                                                 \
    if (!(cond)) ::dsv4::fail(::dsv4::StatusCode::code, __VA_ARGS__); \
  } while (0)

#define DSV4_CHECK_ARG(cond, ...) DSV4_CHECK(cond, kInvalidArgument, __VA_ARGS__)
#define DSV4_INTERNAL_CHECK(cond, ...) \
  DSV4_CHECK(cond, kInternal, "internal error at ", __FILE__, ":", __LINE__, ": ", __VA_ARGS__)
