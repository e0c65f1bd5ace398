// securememory: process-wide counters.
#pragma once

#include <securememory/config.hpp>

#include <cstdint>

namespace securememory {

/// A snapshot of the process-wide counters (all backends together).
struct metrics_snapshot {
  std::uint64_t allocated = 0;     ///< Secrets ever created successfully.
  std::uint64_t in_use = 0;        ///< Secrets created and not yet closed.
  std::uint64_t locked_bytes = 0;  ///< Bytes of locked memory the live secrets hold (page cache not included).
  std::uint64_t failures = 0;      ///< Failed allocations, protections and releases.
  std::uint64_t violations = 0;    ///< Integrity violations found (canaries, authentication).
  /// Bytes of locked, wiped, no-access pages kept by the page cache for
  /// reuse (see page_cache.hpp). The library's locked memory in total is
  /// locked_bytes + cached_bytes.
  std::uint64_t cached_bytes = 0;
};

/// The current counters. Thread-safe; each field is read atomically (the
/// fields are not one atomic snapshot while other threads allocate).
SECUREMEMORY_API metrics_snapshot metrics() noexcept;

}  // namespace securememory
