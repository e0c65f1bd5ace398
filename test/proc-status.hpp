// Test support shared with the fuzz harness (which cannot link Catch2):
// fields of /proc/self/status.
#pragma once

#include <fstream>
#include <string>

namespace test {

/// A "NAME: <n> kB" field of /proc/self/status (e.g. "VmLck"), -1 if absent.
inline long proc_status_kb(const std::string& field) {
  std::ifstream in("/proc/self/status");
  const std::string prefix = field + ":";
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) return std::stol(line.substr(prefix.size()));
  }
  return -1;
}

}  // namespace test
