// Number formatting for the graph library's log lines.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace dsv4::graph {

inline std::string format_ms(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f ms", ms);
  return buf;
}

// "0 B", "512 B", "3.5 KiB", "4.0 MiB", "1.2 GiB".
inline std::string format_bytes(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  double v = static_cast<double>(bytes);
  int unit = 0;
  while ((v >= 1024.0 || v <= -1024.0) && unit < 3) {
    v /= 1024.0;
    ++unit;
  }
  char buf[32];
  if (unit == 0) {
    std::snprintf(buf, sizeof(buf), "%lld B", static_cast<long long>(bytes));
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f %s", v, units[unit]);
  }
  return buf;
}

}  // namespace dsv4::graph
