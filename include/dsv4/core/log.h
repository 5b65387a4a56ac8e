// Minimal leveled logging to stderr. Level from env DSV4_LOG_LEVEL (error|warn|info|debug; default info).
#pragma once

#include "dsv4/core/status.h"

namespace dsv4 {

enum class LogLevel : int { kError = 0, kWarn = 1, kInfo = 2, kDebug = 3 };

LogLevel log_level();
void set_log_level(LogLevel level);
void log_message(LogLevel level, const std::string& message);

template <typename... Args>
void log_info(Args&&... args) {
  if (log_level() >= LogLevel::kInfo) log_message(LogLevel::kInfo, str_cat(std::forward<Args>(args)...));
}
template <typename... Args>
void log_warn(Args&&... args) {
  if (log_level() >= LogLevel::kWarn) log_message(LogLevel::kWarn, str_cat(std::forward<Args>(args)...));
}
template <typename... Args>
void log_debug(Args&&... args) {
  if (log_level() >= LogLevel::kDebug) log_message(LogLevel::kDebug, str_cat(std::forward<Args>(args)...));
}

// Environment helpers: returns true and sets *out only when the variable is set.
bool env_string(const char* name, std::string* out);
bool env_bool(const char* name, bool* out);  // accepts 0/1/true/false/on/off; throws on anything else
// The boolean variable as set, else `unset` (env_bool's spellings; throws on anything else).
bool env_bool_or(const char* name, bool unset);

}  // namespace dsv4
