// Test support: a forked child that reports 32 bytes (a hash, or yes/no
// flags: never secret or random bytes themselves) through a pipe.
#pragma once

#include "support.hpp"

#include <array>
#include <functional>
#include <unistd.h>

namespace test {

using digest32 = std::array<unsigned char, 32>;

/// Runs fn in a forked child (run_in_child) and returns the 32 bytes it
/// returned; the child must exit 0 (fn's `ok` false makes it exit 1).
inline digest32 digest_from_child(const std::function<digest32(bool& ok)>& fn) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const auto child = run_in_child([&] {
    close(fds[0]);
    bool ok = true;
    const digest32 d = fn(ok);
    const bool sent = write(fds[1], d.data(), d.size()) == static_cast<ssize_t>(d.size());
    close(fds[1]);
    return sent && ok ? 0 : 1;
  });
  close(fds[1]);
  digest32 d{};
  const bool got = read(fds[0], d.data(), d.size()) == static_cast<ssize_t>(d.size());
  close(fds[0]);
  INFO(child.describe());
  REQUIRE(child.exited);
  REQUIRE(child.exit_code == 0);
  REQUIRE(got);
  return d;
}

}  // namespace test
