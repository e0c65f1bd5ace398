// securememory: process-wide counters.
//
// Theory of operation: plain relaxed atomics with constant initialisation,
// so they exist before any static constructor runs and are never destroyed:
// secrets closed during exit still count correctly.
#include <securememory/metrics.hpp>

#include "internal.hpp"

#include <atomic>

namespace securememory {
namespace {
constinit std::atomic<std::uint64_t> allocated{0};
constinit std::atomic<std::uint64_t> in_use{0};
constinit std::atomic<std::uint64_t> locked_bytes{0};
constinit std::atomic<std::uint64_t> failures{0};
constinit std::atomic<std::uint64_t> violations{0};
}  // namespace

metrics_snapshot metrics() noexcept {
  return {allocated.load(std::memory_order_relaxed), in_use.load(std::memory_order_relaxed),
          locked_bytes.load(std::memory_order_relaxed), failures.load(std::memory_order_relaxed),
          violations.load(std::memory_order_relaxed), detail::cached_bytes()};
}

namespace detail {
void count_created(std::size_t locked) noexcept {
  allocated.fetch_add(1, std::memory_order_relaxed);
  in_use.fetch_add(1, std::memory_order_relaxed);
  locked_bytes.fetch_add(locked, std::memory_order_relaxed);
}
void count_released(std::size_t locked) noexcept {
  in_use.fetch_sub(1, std::memory_order_relaxed);
  locked_bytes.fetch_sub(locked, std::memory_order_relaxed);
}
void count_failure() noexcept { failures.fetch_add(1, std::memory_order_relaxed); }
void count_violation() noexcept { violations.fetch_add(1, std::memory_order_relaxed); }
}  // namespace detail
}  // namespace securememory
