// securememory: the interface a memory provider (backend) implements.
//
// A backend only knows how to get, protect and give back memory, and says
// what it guarantees. It knows nothing about threads, reader counts or
// closing: the one access state machine (lib/secret.cpp) drives it, one
// region at a time: it never calls a backend for the same region from two
// threads at once, but does call it for different regions at once. Built-in
// backends live in lib/backends/; an application adds its own with
// register_backend() (docs/backends.md, "Adding a backend").
//
// The rules every backend follows (the state machine relies on them):
//   - allocate() returns a Region with every field set, access read_write;
//     on failure it throws securememory::Error and holds nothing.
//   - protect() may change only `data` and `current` (a backend may move
//     the plaintext, as sealed does into a scratch); `size`, `base`,
//     `mapped` and `locked` stay as allocate() set them.
//   - release() and release_after_fork() may change every field (they
//     usually empty the region); quarantine() may lower `locked` and
//     `mapped` and change `data`, `base` and `current`. No call raises
//     `mapped` or `locked`, and both fit in 32 bits (max_secret_size).
//   - Calls other than allocate(), protect() and release() never throw.
#pragma once

#include <securememory/config.hpp>
#include <securememory/guarantees.hpp>
#include <securememory/violation_kind.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace securememory {

/// What the memory of a region may be used for.
enum class Access : unsigned char {
  none,        ///< No access: any read or write faults.
  read,        ///< Read-only: reads work, writes fault.
  read_write,  ///< Readable and writable (only while the library fills or wipes it).
};

/// "none", "read", "read_write".
[[nodiscard]] SECUREMEMORY_API std::string_view to_string(Access a) noexcept;

/// One secret's memory, as a backend handed it out.
struct Region {
  std::byte* data = nullptr;  ///< First byte of the secret (size bytes follow).
  std::size_t size = 0;       ///< Bytes the user asked for.
  void* base = nullptr;       ///< Backend-private (protectedmemory: start of the mapping; secretmem: the slot's arena).
  std::size_t mapped = 0;     ///< Bytes of address space this region costs.
  std::size_t locked = 0;     ///< Bytes of locked memory this region costs.
  Access current = Access::read_write;  ///< Access now in force (kept by the backend's protect()).
};

/// How a backend describes itself. New fields are added at the end with a
/// default, so a backend written against an older version still compiles
/// and keeps its meaning (describe() is how the interface grows, instead of
/// one more virtual function per feature).
struct BackendDescription {
  /// What it guarantees on this host now (its design, plus what it found
  /// here). The proofs and securememory-audit check exactly these.
  Guarantees provides{};
  /// verify() checks something (a canary): the state machine then calls it
  /// on every open, on close and on Secret::verify().
  bool checks_integrity = false;
  /// Each secret holds locked memory of its own, so RLIMIT_MEMLOCK bounds
  /// how many there can be (false: sealed, which locks a fixed amount).
  bool locks_per_secret = true;
  /// The backend holding this backend's key ("" when it has none).
  std::string_view key_backend{};
};

/// A memory provider. See the rules in the file comment.
class SECUREMEMORY_API Backend {
 public:
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;
  virtual ~Backend();

  /// The name the backend is registered under (e.g. "protectedmemory").
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;

  /// What the backend guarantees and how the state machine must drive it.
  /// Called when a factory is made and whenever guarantees are asked for,
  /// never on the path of an access. The default describes a backend that
  /// guarantees nothing.
  [[nodiscard]] virtual BackendDescription describe() const noexcept;

  /// Returns `size` bytes of locked, dump-excluded memory with access
  /// read_write. Throws securememory::Error (invalid_size, out_of_memory,
  /// memlock_limit, protection_failed) and then holds nothing.
  [[nodiscard]] virtual Region allocate(std::size_t size) = 0;

  /// Changes the access of the region. Throws Error(protection_failed).
  /// When it opens the region (none to read), it reports what it found
  /// wrong with the stored secret (sealed: failed authentication), or
  /// nothing; then the region stays closed (current stays none). Other
  /// changes return nothing.
  virtual std::optional<ViolationKind> protect(Region& r, Access a) = 0;

  /// Wipes, unlocks and gives back the region. Releases everything it can
  /// even when a step fails, then throws the first failure as
  /// Error(protection_failed) (could not wipe) or Error(release_failed).
  virtual void release(Region& r) = 0;

  /// Checks the memory around the secret (checks_integrity backends).
  /// Called only while the region is readable. The default finds nothing.
  [[nodiscard]] virtual std::optional<ViolationKind> verify(const Region& r) const noexcept;

  /// After a violation, with policy quarantine: wipe the secret and leave
  /// its pages mapped and no-access, never returning them to an allocator
  /// whose own metadata may be corrupted. The default makes the region
  /// writable, zeroes the data and makes it no-access again. Never throws.
  virtual void quarantine(Region& r) noexcept;

  /// In a forked child, for a region the parent allocated: drop it without
  /// reading or wiping it (its pages were wiped at fork or not inherited,
  /// and allocator metadata in them may be gone). The default does nothing
  /// (the mapping stays in the child). Never throws.
  virtual void release_after_fork(Region& r) noexcept;

 protected:
  Backend() = default;  ///< Only as the base of a backend.
};

/// The names of earlier versions, kept so that code written against them
/// still compiles (docs/design.md, "Names").
using backend = Backend;
using region = Region;
using access = Access;

}  // namespace securememory
