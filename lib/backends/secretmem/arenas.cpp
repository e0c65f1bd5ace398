// securememory: secretmem's slot allocator (see arenas.hpp).
//
// Theory of operation. One mutex guards the arenas and their free
// segments; an arena is mapped and unmapped through arena_memory with the
// mutex held only for the bookkeeping (an unmap happens after the arena
// left the list). A slot goes to the first free segment of exactly its
// pages, else the first longer one (the page after it then becomes its
// guard: the backend maps it), else a new arena. Arena sizes: the first is
// 4 pages, each next one as large as all live arenas together (doubling
// the capacity), at most 1024 pages, at least the pages of the slot that
// needs it. Freed slots never coalesce (guards stay for the arena's life).
//
// fork(): each arena remembers the fork generation it was mapped in; in a
// child the parent's arenas are never allocated from and never unmapped
// (the address range may by now hold the child's own mappings), and
// releasing a parent's slot only updates the books.
#include "backends/secretmem/arenas.hpp"

#include "internal.hpp"
#include "locked_pages.hpp"

#include <securememory/error.hpp>

#include <algorithm>
#include <cerrno>

namespace securememory::detail::secretmem_parts {
namespace {

constexpr std::size_t min_arena_pages = 4;  // small first: the kernel charges a whole arena to RLIMIT_MEMLOCK at mmap
constexpr std::size_t max_arena_pages = 1024;

// The first free segment of `a` that can hold n pages: of exactly n pages
// (`exact`), or of more (the slot then needs a guard after it).
arena::segments::iterator find_segment(arena& a, std::size_t n, bool exact) noexcept {
  return std::find_if(a.free.begin(), a.free.end(), [&](const auto& s) { return exact ? s.second == n : s.second > n; });
}

// Gives the first n pages of `segment` to a live secret. Returns true when
// the page after them must become a guard (the rest, if any, stays free).
// Never allocates: the segment's node is reused for the rest.
bool take(arena& a, arena::segments::iterator segment, std::size_t n) noexcept {
  ++a.live;
  auto node = a.free.extract(segment);
  if (node.mapped() == n) return false;
  if (node.mapped() > n + 1) {
    node.key() += n + 1;
    node.mapped() -= n + 1;
    a.free.insert(std::move(node));
  }
  return true;
}

}  // namespace

placement arena_set::place(std::size_t pages) {
  for (bool retried = false;; retried = true) {
    {
      const std::lock_guard lock(mutex_);
      const std::uint64_t generation = fork_generation();
      for (const bool exact : {true, false}) {
        for (const auto& a : arenas_) {
          if (a->generation != generation) continue;  // a parent's arena: not mapped here
          if (const auto segment = find_segment(*a, pages, exact); segment != a->free.end()) {
            const std::size_t first = segment->first;
            return {a.get(), first, take(*a, segment, pages)};
          }
        }
      }
      if (arena* fresh = add_arena_locked(pages, generation); fresh != nullptr) {
        return {fresh, 0, take(*fresh, fresh->free.begin(), pages)};
      }
    }
    // RLIMIT_MEMLOCK refused even the slot's own pages: empty the page
    // caches (their hooks take our lock, so not under it) and try once more.
    if (retried || memory_.release_caches() == 0) {
      throw_os_error(errc::memlock_limit,
                     fmt::format("cannot map {} bytes of secretmem memory for a secret", pages * page_).c_str(), "mmap",
                     EAGAIN, "secretmem pages count against RLIMIT_MEMLOCK; " + memlock_hint());
    }
  }
}

// NOLINTNEXTLINE(bugprone-easily-swappable-parameters): pages and a generation, named
arena* arena_set::add_arena_locked(std::size_t need, std::uint64_t generation) {
  std::size_t capacity = 0;
  for (const auto& x : arenas_) {
    if (x->generation == generation) capacity += x->pages;
  }
  const std::size_t want = std::max(need, std::clamp(capacity, min_arena_pages, max_arena_pages));
  auto fresh = std::make_unique<arena>();
  fresh->generation = generation;
  arenas_.reserve(arenas_.size() + 1);  // so that nothing below can throw once the arena is mapped...
  if (!memory_.map(need, want, fresh->base, fresh->pages)) return nullptr;
  try {
    fresh->free.emplace(0, fresh->pages);  // ...except this (bad_alloc)
  } catch (...) {
    (void)memory_.unmap(fresh->base, fresh->pages);  // nothing written yet
    throw error(errc::out_of_memory, "cannot allocate the bookkeeping of a secretmem arena");
  }
  arenas_.push_back(std::move(fresh));
  return arenas_.back().get();
}

// NOLINTNEXTLINE(bugprone-easily-swappable-parameters)
int arena_set::give_back(arena* a, std::size_t first, std::size_t pages, bool reusable, bool from_cache) noexcept {
  std::unique_ptr<arena> empty;
  {
    const std::lock_guard lock(mutex_);
    --(from_cache ? a->cached : a->live);
    if (!reusable) a->stuck += pages;
    if (reusable) {
      try {
        a->free.emplace(first, pages);
      } catch (...) {  // no memory for the bookkeeping: the slot stays unused (zero, no-access) until its arena goes
        a->stuck += pages;
      }
    }
    if (a->empty()) {
      const auto it = std::find_if(arenas_.begin(), arenas_.end(), [a](const auto& x) { return x.get() == a; });
      empty = std::move(*it);
      arenas_.erase(it);
    }
  }
  if (!empty || empty->generation != fork_generation()) return 0;  // a parent's arena is not mapped here
  const int err = memory_.unmap(empty->base, empty->pages);
  if (err == 0) return 0;
  // Still mapped and locked: keep the arena, so its wiped slots are used
  // again and the unmap is retried when it empties next time (forgetting
  // it would leave locked memory nobody can reach). The erase above left
  // the vector's capacity in place, so this push_back does not allocate.
  const std::lock_guard lock(mutex_);
  arenas_.push_back(std::move(empty));
  return err;
}

void arena_set::add_stuck(arena* a, std::size_t pages) noexcept {
  const std::lock_guard lock(mutex_);
  a->stuck += pages;
}

void arena_set::move_to_cache(arena* a, bool to_cache) noexcept {
  const std::lock_guard lock(mutex_);
  if (to_cache) {
    --a->live;
    ++a->cached;
  } else {
    --a->cached;
    ++a->live;
  }
}

arena* arena_set::find(const std::byte* p, bool take) noexcept {
  const std::uint64_t generation = fork_generation();
  const std::lock_guard lock(mutex_);
  for (const auto& a : arenas_) {
    if (a->generation == generation && p >= a->base && p < a->base + a->pages * page_) {
      if (take) {
        --a->cached;
        ++a->live;
      }
      return a.get();
    }
  }
  return nullptr;
}

std::size_t arena_set::unused_bytes() noexcept {
  const std::uint64_t generation = fork_generation();
  std::size_t pages = 0;
  const std::lock_guard lock(mutex_);
  for (const auto& a : arenas_) {
    if (a->generation != generation) continue;  // a parent's: not mapped here
    pages += a->stuck;
    for (const auto& segment : a->free) pages += segment.second;
  }
  return pages * page_;
}

void arena_set::forget_parent_arenas(std::uint64_t parent_generation) noexcept {
  for (const auto& a : arenas_) {
    if (a->generation == parent_generation) (void)memory_.unmap(a->base, a->pages);
  }
  std::erase_if(arenas_, [](const auto& a) { return a->live == 0; });
  for (const auto& a : arenas_) a->cached = 0;
}

}  // namespace securememory::detail::secretmem_parts
