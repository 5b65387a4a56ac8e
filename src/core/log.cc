#include "dsv4/core/log.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace dsv4 {
namespace {

LogLevel initial_level() {
  const char* v = std::getenv("DSV4_LOG_LEVEL");
  if (v == nullptr) return LogLevel::kInfo;
  if (!std::strcmp(v, "error")) return LogLevel::kError;
  if (!std::strcmp(v, "warn")) return LogLevel::kWarn;
  if (!std::strcmp(v, "debug")) return LogLevel::kDebug;
  return LogLevel::kInfo;
}

std::atomic<int>& level_storage() {
  static std::atomic<int> level{static_cast<int>(initial_level())};
  return level;
}

}  // namespace

LogLevel log_level() { return static_cast<LogLevel>(level_storage().load()); }
void set_log_level(LogLevel level) { level_storage().store(static_cast<int>(level)); }

void log_message(LogLevel level, const std::string& message) {
  static const char* kNames[] = {"error", "warn", "info", "debug"};
  std::fprintf(stderr, "[dsv4 %s] %s\n", kNames[static_cast<int>(level)], message.c_str());
}

bool env_string(const char* name, std::string* out) {
  const char* v = std::getenv(name);
  if (v == nullptr) return false;
  *out = v;
  return true;
}

bool env_bool(const char* name, bool* out) {
  std::string v;
  if (!env_string(name, &v)) return false;
  if (v == "1" || v == "true" || v == "on" || v == "yes") {
    *out = true;
  } else if (v == "0" || v == "false" || v == "off" || v == "no") {
    *out = false;
  } else {
    fail(StatusCode::kInvalidArgument, "environment variable ", name, "='", v, "' is not a boolean (use 0 or 1)");
  }
  return true;
}

bool env_bool_or(const char* name, bool unset) {
  bool v = unset;
  env_bool(name, &v);
  return v;
}

}  // namespace dsv4
