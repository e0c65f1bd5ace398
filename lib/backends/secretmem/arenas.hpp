// securememory internal: secretmem's slot allocator (arenas of pages, each
// slot followed by a guard page). The layout and the arena sizes are drawn
// in ../secretmem.hpp.
//
// The allocator only keeps the books: which pages of which arena are live,
// cached, free or never to be used again. Arenas come from an injected
// arena_memory, so the allocator runs on plain memory in unit tests; the
// backend (secretmem.cpp) maps the guard pages, protects, wipes and caches
// the slots.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace securememory::detail::secretmem_parts {

/// Where arenas come from.
struct arena_memory {
  /// Maps a fresh arena of `want` pages, halving down to `need` pages while
  /// RLIMIT_MEMLOCK refuses the size, followed by a guard page; sets base and
  /// pages. False when even `need` pages are refused; throws for every other
  /// failure.
  bool (*map)(std::size_t need, std::size_t want, std::byte*& base, std::size_t& pages);
  /// Unmaps an arena with its trailing guard; 0 or the errno.
  int (*unmap)(std::byte* base, std::size_t pages) noexcept;
  /// Empties every page cache (memlock pressure); the bytes released.
  std::size_t (*release_caches)() noexcept;
};

/// One arena: a memfd_secret file mapped once.
struct arena {
  using segments = std::map<std::size_t, std::size_t>;  // first page -> pages

  std::byte* base = nullptr;
  std::size_t pages = 0;
  std::uint64_t generation = 0;  // fork generation it was mapped in
  // Free segments, each zero and PROT_NONE, preceded by a guard or the
  // arena's start and followed by a guard or the arena's end.
  segments free;
  std::size_t live = 0;    // slots of live secrets (their region::base points here)
  std::size_t cached = 0;  // slots held by the page cache
  std::size_t stuck = 0;   // pages never used again (not wiped, or no bookkeeping): locked until the arena goes

  [[nodiscard]] bool empty() const noexcept { return live == 0 && cached == 0; }
};

/// Where a new slot goes.
struct placement {
  arena* a = nullptr;
  std::size_t first = 0;  ///< page index in the arena
  bool guard = false;     ///< the page after the slot must become a guard
};

/// The arenas of one process. Thread-safe; one mutex, held across fork().
class arena_set {
 public:
  arena_set(const arena_memory& memory, std::size_t page) noexcept : memory_(memory), page_(page) {}
  arena_set(const arena_set&) = delete;
  arena_set& operator=(const arena_set&) = delete;
  ~arena_set() = default;

  /// Room for a slot of `pages` pages, taken for a live secret: the first
  /// free segment of exactly that size, else the first longer one, else a
  /// new arena. When RLIMIT_MEMLOCK refuses even an arena of `pages`, the
  /// page caches are emptied and it tries once more, then throws
  /// error(memlock_limit). Throws what arena_memory::map throws.
  [[nodiscard]] placement place(std::size_t pages);

  /// Gives back a live (or, from_cache, a cached) slot: as a free segment
  /// when `reusable`, else its pages are never used again. Unmaps the arena
  /// when nothing holds it any more (only in the process that mapped it;
  /// when that fails, the arena is kept and retried next time). Returns
  /// munmap's errno, or 0.
  int give_back(arena* a, std::size_t first, std::size_t pages, bool reusable, bool from_cache) noexcept;

  /// `pages` more pages of `a` never used again (a guard that could not be
  /// mapped: the page is still locked).
  void add_stuck(arena* a, std::size_t pages) noexcept;

  /// Counts a live slot of `a` as cached (to_cache) or a cached one as live
  /// again (false).
  void move_to_cache(arena* a, bool to_cache) noexcept;

  /// The arena of this process holding p, for a slot the page cache gives
  /// back; nullptr if none. Counts it live again when `take` (a recycle).
  [[nodiscard]] arena* find(const std::byte* p, bool take) noexcept;

  /// Locked pages no secret uses, in this process: free segments and stuck
  /// pages (metrics().internal_locked_bytes).
  [[nodiscard]] std::size_t unused_bytes() noexcept;

  /// fork(): the mutex is held across it; in the child the arenas the parent
  /// had mapped (generation `parent_generation`) lose their guard pages
  /// (the only part mapped there) and those no inherited secret points to
  /// are forgotten.
  void lock_for_fork() noexcept { mutex_.lock(); }
  void unlock_after_fork() noexcept { mutex_.unlock(); }
  void forget_parent_arenas(std::uint64_t parent_generation) noexcept;

 private:
  [[nodiscard]] arena* add_arena_locked(std::size_t need, std::uint64_t generation);

  arena_memory memory_;
  std::size_t page_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<arena>> arenas_;
};

}  // namespace securememory::detail::secretmem_parts
