// securememory: process-wide counters.
#pragma once

#include <securememory/config.hpp>

#include <cstdint>

namespace securememory {

/// A snapshot of the process-wide counters (all backends together).
struct MetricsSnapshot {
  std::uint64_t allocated = 0;     ///< Secrets ever created successfully.
  std::uint64_t in_use = 0;        ///< Secrets created and not yet closed.
  std::uint64_t locked_bytes = 0;  ///< Bytes of locked memory the live secrets hold (page cache not included).
  std::uint64_t failures = 0;      ///< Failed allocations, protections and releases.
  std::uint64_t violations = 0;    ///< Integrity violations found (canaries, authentication).
  /// Bytes of locked, wiped, no-access pages kept by the page cache for
  /// reuse (see page_cache.hpp).
  std::uint64_t cached_bytes = 0;
  /// Bytes of locked memory the library holds for its own use: the sealed
  /// backend's key and plaintext scratch, and secretmem arena pages that no
  /// secret uses. The library's locked memory in total, what counts against
  /// RLIMIT_MEMLOCK (and the kernel's VmLck for this process, when nothing
  /// else in it locks memory), is locked_bytes + cached_bytes +
  /// internal_locked_bytes.
  std::uint64_t internal_locked_bytes = 0;
};

/// The current counters of this process. Thread-safe; each field is read
/// atomically (the fields are not one atomic snapshot while other threads
/// allocate). In a forked child, in_use, locked_bytes, cached_bytes and
/// internal_locked_bytes start again from 0: the parent's secrets are
/// unusable there and no lock is inherited; allocated, failures and
/// violations go on from the parent's values.
[[nodiscard]] SECUREMEMORY_API MetricsSnapshot metrics() noexcept;

/// The name of earlier versions, kept so that code written against it still
/// compiles (docs/design.md, "Names").
using metrics_snapshot = MetricsSnapshot;

}  // namespace securememory
