// securememory: process-wide counters.
#pragma once

#include <securememory/config.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace securememory {

/// A snapshot of the process-wide counters (all backends together).
struct MetricsSnapshot {
  std::uint64_t allocated = 0;     ///< Secrets ever created successfully.
  std::uint64_t in_use = 0;        ///< Secrets created and not yet closed.
  std::uint64_t locked_bytes = 0;  ///< Bytes of locked memory the live secrets hold (page cache not included).
  std::uint64_t failures = 0;      ///< Failed allocations, protections and releases.
  std::uint64_t violations = 0;    ///< Integrity violations found (canaries, authentication).
  /// Bytes of locked, wiped (read-write) pages kept by the page cache for
  /// reuse (see page_cache.hpp).
  std::uint64_t cached_bytes = 0;
  /// Bytes of locked memory the library holds for its own use: the sealed
  /// backend's key and plaintext scratch, secretmem arena pages that no
  /// secret uses, and the random generator's page. The library's locked memory in total, what counts against
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

/// The counters of one backend (backend_metrics()).
struct BackendMetrics {
  std::string_view backend;            ///< Its name (valid for the life of the process).
  std::uint64_t allocated = 0;         ///< Secrets ever created successfully.
  std::uint64_t in_use = 0;            ///< Secrets created and not yet closed.
  std::uint64_t bytes_in_use = 0;      ///< Their sizes, added up.
  std::uint64_t locked_bytes = 0;      ///< Locked memory they hold.
  std::uint64_t mapped_bytes = 0;      ///< Address space they hold (sealed: their ciphertext slots).
  std::uint64_t mappings = 0;          ///< Mappings they cost, estimated from the backend's per-secret cost (shared arenas not counted).
  std::uint64_t failures = 0;          ///< Failed creations, protections and releases.
  std::uint64_t violations = 0;        ///< Integrity violations found.
  std::uint64_t cached_bytes = 0;      ///< Locked, wiped pages its page cache keeps for reuse.
  std::uint64_t internal_locked_bytes = 0;  ///< Locked memory it holds for itself (sealed: key and scratch; secretmem: unused arena pages).
};

/// One entry per backend that has had a factory in this process, sorted by
/// name, and one named "(library)" once `create_random` has run: the locked
/// page of the library's random generator, which serves every backend (its
/// internal_locked_bytes; its other fields stay 0). The sums of the fields
/// are metrics(). Thread-safe. Throws
/// std::bad_alloc.
[[nodiscard]] SECUREMEMORY_API std::vector<BackendMetrics> backend_metrics();

/// The counters in the Prometheus text exposition format (version 0.0.4),
/// for a service's /metrics endpoint. One family per counter, with a
/// `backend` label:
///   securememory_secrets_created_total     counter  secrets ever created
///   securememory_secrets_in_use            gauge    secrets not yet closed
///   securememory_secret_bytes              gauge    their sizes, added up
///   securememory_locked_bytes{kind=...}    gauge    locked memory: kind "secrets", "cache" or "internal"
///   securememory_mapped_bytes              gauge    address space of the secrets in use
///   securememory_mappings                  gauge    mappings of the secrets in use (estimate)
///   securememory_failures_total            counter  failed creations, protections and releases
///   securememory_violations_total          counter  integrity violations found
/// Backend names are escaped as the format requires. Thread-safe. Throws
/// std::bad_alloc.
[[nodiscard]] SECUREMEMORY_API std::string metrics_text();

/// The name of earlier versions, kept so that code written against it still
/// compiles (docs/design.md, "Names").
using metrics_snapshot = MetricsSnapshot;

}  // namespace securememory
