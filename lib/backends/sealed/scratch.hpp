// securememory internal: sealed's plaintext scratch (where a secret is
// decrypted for the length of an access).
//
// Layout (P = page size, C = P / 64 bytes per chunk, N = slabs):
//
//   one reservation of N pages, excluded from core dumps, wiped in forked
//   children; a page is locked the first time a thread needs it ("slab")
//   | slab 0 (P) | slab 1 (P) | ... | slab N-1 (P) |
//   each slab: 64 chunks of C bytes, one 64-bit word of "taken" bits
//
// A plaintext of n <= P bytes takes ceil(n / C) contiguous chunks of one
// slab; a larger one gets a locked mapping of its own for the access.
//
// Bounded: at most N pages are locked, whatever the number of threads
// (N = 2 per CPU, between 4 and 32). Each thread has a home slab (threads
// are numbered in order of first use, home = number mod N), so threads
// that read different secrets touch different slabs and different cache
// lines. When the home slab is full, or the kernel refuses to lock it
// (RLIMIT_MEMLOCK), the thread shares another slab; only when every slab
// is full or refused does an access get a mapping of its own, and only
// when that is refused too does it fail (errc::memlock_limit).
//
// Memory comes from an injected scratch_memory, so the allocator runs on
// plain memory in unit tests (as Botan's mem_pool is tested apart from
// os_utils). Taking and giving chunks is lock-free (a CAS on the slab's
// word); locking a slab takes a mutex.
#pragma once

#include "small_mutex.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

namespace securememory::detail::sealed_parts {

/// Where the scratch gets its memory.
struct scratch_memory {
  /// Address space for `bytes` (whole pages), read-write, not locked,
  /// excluded from core dumps, wiped in a forked child. Throws.
  std::byte* (*reserve)(std::size_t bytes);
  /// Locks `bytes` at p (pages of the reservation; again in a forked child,
  /// where locks are not inherited). False when RLIMIT_MEMLOCK refuses
  /// (after the page caches were emptied); throws for other failures.
  bool (*lock)(std::byte* p, std::size_t bytes);
  /// A zeroed, locked, dump-excluded, wiped-on-fork mapping of `bytes` for
  /// one access. Throws (memlock_limit, out_of_memory, ...).
  std::byte* (*map_dedicated)(std::size_t bytes);
  /// Gives back a map_dedicated() mapping (wiped by the caller).
  void (*unmap_dedicated)(std::byte* p, std::size_t bytes) noexcept;
  /// Unlocks `bytes` at p (an idle slab, all zero); false when the kernel
  /// refused (the slab then stays locked, and counted).
  bool (*unlock)(std::byte* p, std::size_t bytes) noexcept;
};

/// The scratch of one process (one instance, never destroyed).
class scratch {
 public:
  /// `page`: the page size; `slabs`: N (see the file comment). The
  /// reservation is made on first use.
  scratch(const scratch_memory& memory, std::size_t page, std::size_t slabs);
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  ~scratch() = delete;  // lives as long as the process

  /// `n` zero bytes of locked plaintext memory (1 <= n). Throws
  /// error(memlock_limit) when nothing can be had (see the file comment).
  [[nodiscard]] std::byte* take(std::size_t n);

  /// Wipes the n bytes at p and gives them back. Any thread.
  void give(std::byte* p, std::size_t n) noexcept;

  /// Unlocks every slab no access uses now (the page cache's idle-holder
  /// hook: memlock pressure, or a bound of 0) and returns the bytes freed.
  /// Skips the work when another thread is locking a slab right now (that
  /// thread may be the caller, short of memlock). Never throws.
  std::size_t release_idle() noexcept;

  /// From a signal handler: zeroes every slab locked in this process
  /// (plaintext open at that moment included). Async-signal-safe.
  void wipe_in_signal_handler() noexcept;

  /// Bytes locked now: slabs locked in this process, and mappings of their
  /// own in use.
  [[nodiscard]] std::size_t locked_bytes() const noexcept;
  /// Slabs locked in this process now.
  [[nodiscard]] std::size_t slabs_locked() const noexcept;
  [[nodiscard]] std::size_t slab_count() const noexcept { return count_; }

  /// fork(): the mutex is held across the fork; in the child every chunk
  /// is free (the parent's accesses are not the child's; the pages are
  /// zero there) and every slab must be locked again before use. Without
  /// pages_inherited (a platform that leaves them out of the child) the
  /// reservation is forgotten and made anew when first needed.
  void lock_for_fork() noexcept { mutex_.lock(); }
  void unlock_after_fork() noexcept { mutex_.unlock(); }
  void reset_in_child(bool pages_inherited) noexcept;

  /// The slab count for this machine: 2 per CPU, between 4 and 32.
  static std::size_t default_slab_count() noexcept;

 private:
  struct alignas(64) slab {
    std::atomic<std::uint64_t> taken{0};     // bit i: chunk i is in use
    std::atomic<std::uint64_t> ready{0};     // fork generation + 1 in which the page is locked; 0: never
    std::atomic<std::uint64_t> refused{0};   // fork generation + 1 in which locking it was refused
  };

  [[nodiscard]] std::byte* chunk_of(std::size_t s, unsigned first) const noexcept;
  [[nodiscard]] std::byte* try_take(std::size_t s, unsigned k) noexcept;
  // Under the mutex: the first of `tries` slabs from `home` on with room,
  // locking those not locked yet.
  [[nodiscard]] std::byte* activate_and_take(std::size_t home, std::size_t tries, unsigned k, std::uint64_t generation);
  [[nodiscard]] std::byte* take_dedicated(std::size_t n);
  [[nodiscard]] std::size_t home() noexcept;
  void ensure_reserved();

  scratch_memory memory_;
  std::size_t page_;
  std::size_t chunk_;
  std::size_t count_;
  std::atomic<std::byte*> base_{nullptr};
  std::unique_ptr<slab[]> slabs_;  // NOLINT(*-avoid-c-arrays): fixed at construction
  std::atomic<std::size_t> dedicated_bytes_{0};
  std::atomic<std::size_t> threads_{0};
  small_mutex mutex_;  // reservation and slab locking
};

}  // namespace securememory::detail::sealed_parts
