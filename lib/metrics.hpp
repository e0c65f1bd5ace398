// securememory internal: the counters behind metrics(), backend_metrics()
// and metrics_text().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace securememory::detail {

/// The counters of one backend (by name), created when the first factory
/// of that name is made and never destroyed. Updated with relaxed atomics
/// on the paths of creation and release only.
struct backend_counters {
  std::string name;
  std::size_t mappings_per_secret = 0;  // from the backend's description (an estimate for the metric)
  std::atomic<std::uint64_t> allocated{0};
  std::atomic<std::uint64_t> in_use{0};
  std::atomic<std::uint64_t> bytes{0};   // sizes of the secrets in use
  std::atomic<std::uint64_t> locked{0};  // locked bytes of the secrets in use
  std::atomic<std::uint64_t> mapped{0};  // address space of the secrets in use
  std::atomic<std::uint64_t> failures{0};
  std::atomic<std::uint64_t> violations{0};
  backend_counters* next = nullptr;
};

/// The counters of the backend named `name` (made on first use). Throws
/// std::bad_alloc.
backend_counters& counters_for(std::string_view name, std::size_t mappings_per_secret);

void count_created(backend_counters& c, std::size_t size, std::size_t locked, std::size_t mapped) noexcept;
void count_released(backend_counters& c, std::size_t size, std::size_t locked, std::size_t mapped) noexcept;
/// Locked bytes given back without the secret being released (a quarantine
/// that unlocked its pages).
void count_unlocked(backend_counters& c, std::size_t locked) noexcept;
void count_failure(backend_counters& c) noexcept;
void count_violation(backend_counters& c) noexcept;

/// The owner of what the library holds for every backend (the random
/// generator's page) in backend_metrics(); no registered backend.
inline constexpr const char* library_metrics_name = "(library)";

/// Locked bytes an owner holds for itself now, in this process.
using locked_source = std::size_t (*)() noexcept;
/// Adds a source of internal_locked_bytes owned by `backend` (at most 4;
/// never removed).
void add_internal_locked_source(const char* backend, locked_source source) noexcept;

/// In a forked child: the parent's secrets, caches and locks are not this
/// process's.
void reset_counts_after_fork() noexcept;

}  // namespace securememory::detail
