// securememory: the interface a memory provider (backend) implements.
//
// A backend only knows how to get, protect and give back memory. It knows
// nothing about threads, reader counts or closing: the one access state
// machine in lib/secret.cpp drives it. Built-in backends live in
// lib/backends/; an application can add its own with register_backend().
#pragma once

#include <securememory/config.hpp>
#include <securememory/violation.hpp>

#include <cstddef>
#include <string_view>

namespace securememory {

/// What the memory of a region may be used for.
enum class access : unsigned char {
  none,        ///< No access: any read or write faults.
  read,        ///< Read-only: reads work, writes fault.
  read_write,  ///< Readable and writable (only while the library fills or wipes it).
};

/// The result of a backend's integrity check.
enum class integrity : unsigned char {
  intact,             ///< Nothing found.
  canary_corrupted,   ///< The canary in front of the data was overwritten.
  authentication_failed,  ///< Sealed data failed authentication (its ciphertext was altered).
};

/// One secret's memory, as a backend handed it out.
struct region {
  std::byte* data = nullptr;  ///< First byte of the secret (size bytes follow).
  std::size_t size = 0;       ///< Bytes the user asked for.
  void* base = nullptr;       ///< Backend-private (protectedmemory: start of the mapping; secretmem: the slot's arena).
  std::size_t mapped = 0;     ///< Bytes of address space this region costs.
  std::size_t locked = 0;     ///< Bytes of locked memory this region costs.
  access current = access::read_write;  ///< Access now in force (kept by the backend's protect()).
};

/// A memory provider. Implementations must be safe to call from several
/// threads for *different* regions at once; the state machine never calls a
/// backend for the same region from two threads at once.
class SECUREMEMORY_API backend {
 public:
  backend() = default;
  backend(const backend&) = delete;
  backend& operator=(const backend&) = delete;
  virtual ~backend();

  /// The name the backend is registered under (e.g. "protectedmemory").
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;

  /// Returns `size` bytes of locked, dump-excluded memory with access
  /// read_write. Throws securememory::error (invalid_size, out_of_memory,
  /// memlock_limit, protection_failed) and then holds nothing.
  [[nodiscard]] virtual region allocate(std::size_t size) = 0;

  /// Changes the access of the region. Throws error(protection_failed).
  virtual void protect(region& r, access a) = 0;

  /// Wipes, unlocks and gives back the region. Releases everything it can
  /// even when a step fails, then throws the first failure as
  /// error(protection_failed) (could not wipe) or error(release_failed).
  virtual void release(region& r) = 0;

  /// True when verify() checks something (canaries, authentication). The
  /// state machine then calls verify() on every open, on close and on
  /// Secret::verify(); otherwise it skips the calls (and their mprotect).
  [[nodiscard]] virtual bool has_integrity_check() const noexcept;

  /// Checks the memory around the secret. Called only while the region is
  /// readable. The default reports intact.
  [[nodiscard]] virtual integrity verify(const region& r) const noexcept;

  /// After a violation, with policy quarantine: wipe the secret and leave
  /// its pages mapped and no-access, never returning them to an allocator
  /// whose own metadata may be corrupted. The default makes the region
  /// writable, zeroes the data and makes it no-access again. Never throws.
  virtual void quarantine(region& r) noexcept;

  /// In a forked child, for a region the parent allocated: drop it without
  /// reading or wiping it (its pages were wiped at fork or not inherited,
  /// and allocator metadata in them may be gone). The default does nothing
  /// (the mapping stays in the child). Never throws.
  virtual void release_after_fork(region& r) noexcept;
};

}  // namespace securememory
