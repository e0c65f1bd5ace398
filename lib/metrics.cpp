// securememory: process-wide counters.
//
// Theory of operation: plain relaxed atomics with constant initialisation,
// so they exist before any static constructor runs and are never destroyed:
// secrets closed during exit still count correctly. Locked memory that
// belongs to no secret is reported by its owners through registered
// functions (sealed's scratch and keys, secretmem's unused arena pages),
// computed when metrics() is called.
#include <securememory/metrics.hpp>

#include "internal.hpp"

#include <array>
#include <atomic>

namespace securememory {
namespace {
constinit std::atomic<std::uint64_t> allocated{0};
constinit std::atomic<std::uint64_t> in_use{0};
constinit std::atomic<std::uint64_t> locked_bytes{0};
constinit std::atomic<std::uint64_t> failures{0};
constinit std::atomic<std::uint64_t> violations{0};

constexpr std::size_t max_sources = 4;
constinit std::array<std::atomic<detail::locked_source>, max_sources> internal_sources{};

}  // namespace

MetricsSnapshot metrics() noexcept {
  std::uint64_t internal = 0;
  for (const auto& source : internal_sources) {
    if (const auto fn = source.load(std::memory_order_acquire)) internal += fn();
  }
  return {allocated.load(std::memory_order_relaxed), in_use.load(std::memory_order_relaxed),
          locked_bytes.load(std::memory_order_relaxed), failures.load(std::memory_order_relaxed),
          violations.load(std::memory_order_relaxed), detail::cached_bytes(), internal};
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
void reset_counts_after_fork() noexcept {
  in_use.store(0, std::memory_order_relaxed);
  locked_bytes.store(0, std::memory_order_relaxed);
}
void add_internal_locked_source(locked_source source) noexcept {
  for (auto& s : internal_sources) {
    locked_source expected = nullptr;
    if (s.compare_exchange_strong(expected, source, std::memory_order_acq_rel) || expected == source) return;
  }
}
}  // namespace detail
}  // namespace securememory
