// securememory internal: a bounded cache of wiped, locked pages (left
// read-write by their owners: they hold nothing to protect).
//
// Reusable by any backend that hands out whole page runs (protectedmemory's
// mappings, secretmem's slots). The cache makes no system call of
// its own: a run it evicts goes back through the owner's `release` hook,
// which calls lib/os/. Every instance is created once and never destroyed.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <deque>
#include <mutex>

namespace securememory::detail {

class page_cache {
 public:
  /// Gives back a run for good (unlock + unmap, or return it to an arena).
  /// Called with no cache lock held. Must not throw.
  using release_fn = void (*)(void* base, std::size_t length) noexcept;
  /// In a forked child, drops a run inherited from the parent (it is
  /// wiped there by MADV_WIPEONFORK and not locked). May be null: the
  /// mapping then stays, unused. Called from the pthread_atfork child
  /// handler (single-threaded).
  using forget_fn = void (*)(void* base, std::size_t length) noexcept;

  /// For a release hook: a call that failed while a cached run was given
  /// back (no caller to throw to: the close that caused the eviction cached
  /// its own secret fine). Logs a warning naming the call and errno, and
  /// counts a failure for `backend` in the metrics.
  static void report_release_failure(const char* backend, const char* call, int err) noexcept;

  struct run {
    void* base = nullptr;
    std::size_t length = 0;
  };

  /// Creates a cache and registers it for fork handling and for
  /// release_all_caches(). Create instances as never-destroyed statics.
  page_cache(const char* owner, release_fn release, forget_fn forget) noexcept;
  page_cache(const page_cache&) = delete;
  page_cache& operator=(const page_cache&) = delete;
  ~page_cache() = delete;  // never destroyed: see the file comment

  /// True when a run of `length` bytes could be kept (the cache is on and
  /// the run is not larger than the bound). Lets the owner skip the work of
  /// preparing a run the cache would refuse.
  [[nodiscard]] static bool accepts(std::size_t length) noexcept;

  /// A cached run of exactly `length` bytes (most recently cached first),
  /// or {nullptr, 0}. The run is locked and all zeros, with the protection
  /// its owner left it with (read-write for the built-in backends).
  [[nodiscard]] run take(std::size_t length) noexcept;

  /// Offers a run that the caller has wiped and that is still locked. Evicts this cache's oldest runs to make room, then, when
  /// this cache is empty and the bound is still in the way, the other
  /// caches' oldest runs. Returns false when it does not fit: the caller
  /// then releases it itself. Call it with none of the owner's locks that
  /// its release hook takes.
  [[nodiscard]] bool put(run r) noexcept;

  /// Bytes the caches of backend `owner` hold now (all caches for "").
  [[nodiscard]] static std::uint64_t cached_bytes_of(std::string_view owner) noexcept;

  /// Releases every run of every cache, and the idle memory of every idle
  /// holder (memlock pressure). Returns the number of bytes released.
  static std::size_t release_all_caches() noexcept;

  /// Releases runs of every cache until the total is within `limit`; at 0,
  /// also the idle holders' memory.
  static void trim_all_caches(std::size_t limit) noexcept;

  /// Memory a component keeps locked while nothing uses it, only to reuse
  /// it (sealed's key while no sealed secret is alive) follows the caches'
  /// rule: it goes when they are emptied. The function releases it if it is
  /// idle and returns the bytes released. At most 4 holders; never removed.
  using idle_release_fn = std::size_t (*)() noexcept;
  static void add_idle_holder(idle_release_fn release) noexcept;

 private:
  std::size_t release_until(std::size_t total_limit) noexcept;
  static void before_fork() noexcept;
  static void after_fork_parent() noexcept;
  static void after_fork_child() noexcept;

  const char* owner_;
  release_fn release_;
  forget_fn forget_;
  std::atomic<std::size_t> bytes_{0};  // this cache's share of the total
  std::mutex mutex_;
  std::deque<run> runs_;  // oldest first
  page_cache* next_ = nullptr;  // registry of all caches (never shrinks)
};

}  // namespace securememory::detail
