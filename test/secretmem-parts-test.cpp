// secretmem's slot allocator on plain memory, without the kernel (its arena
// source is injected): exact segments first, a guard page after a slot cut
// from a longer segment, arenas doubling, an empty arena unmapped (and kept
// when that fails), the page caches emptied once before memlock_limit, and
// the unused pages counted.
#include "support.hpp"

#include "backends/secretmem/arenas.hpp"

#include <cstdlib>

using securememory::detail::secretmem_parts::arena_memory;
using securememory::detail::secretmem_parts::arena_set;

namespace {

constexpr std::size_t page = 4096;

struct fake {
  static inline int maps = 0;
  static inline int unmaps = 0;
  static inline int cache_releases = 0;
  static inline std::size_t refuse_above = 1U << 30U;  // "RLIMIT_MEMLOCK" in pages
  static inline int unmap_errno = 0;
  static inline std::size_t released_by_caches = 0;

  static void reset() {
    maps = unmaps = cache_releases = 0;
    refuse_above = 1U << 30U;
    unmap_errno = 0;
    released_by_caches = 0;
  }
  static bool map(std::size_t need, std::size_t want, std::byte*& base, std::size_t& pages) {
    std::size_t n = want;
    while (n > refuse_above && n > need) n = std::max(need, n / 2);
    if (n > refuse_above) return false;
    ++maps;
    base = static_cast<std::byte*>(std::aligned_alloc(page, (n + 1) * page));
    pages = n;
    return true;
  }
  static int unmap(std::byte* base, std::size_t) noexcept {
    if (unmap_errno != 0) return unmap_errno;
    ++unmaps;
    std::free(base);
    return 0;
  }
  static std::size_t release_caches() noexcept {
    ++cache_releases;
    return released_by_caches;
  }
  static arena_memory memory() { return {map, unmap, release_caches}; }
};

}  // namespace

TEST_CASE("secretmem arenas: slots, guards, doubling arenas, empty arenas unmapped", "[secretmem-parts]") {
  fake::reset();
  arena_set set(fake::memory(), page);
  const auto a = set.place(1);  // first arena: 4 pages
  CHECK(fake::maps == 1);
  CHECK(a.a->pages == 4);
  CHECK(a.first == 0);
  CHECK(a.guard);  // cut from a longer segment: page 1 becomes its guard
  const auto b = set.place(2);  // pages 2-3: exactly the rest, ends the arena, no guard of its own
  CHECK(b.a == a.a);
  CHECK(b.first == 2);
  CHECK_FALSE(b.guard);
  const auto c = set.place(1);  // a second arena, as large as all before (4 pages)
  CHECK(fake::maps == 2);
  CHECK(c.a != a.a);
  CHECK(set.unused_bytes() == 2 * page);  // pages 2-3 of the second arena
  // An exact free segment is preferred over cutting a longer one.
  CHECK(set.give_back(b.a, b.first, 2, true, false) == 0);
  const auto d = set.place(2);
  CHECK(d.a == a.a);
  CHECK(d.first == 2);
  CHECK_FALSE(d.guard);
  // Emptied arenas are unmapped at once.
  CHECK(set.give_back(c.a, c.first, 1, true, false) == 0);
  CHECK(fake::unmaps == 1);
  CHECK(set.give_back(a.a, a.first, 1, true, false) == 0);
  CHECK(set.give_back(d.a, d.first, 2, true, false) == 0);
  CHECK(fake::unmaps == 2);
  CHECK(set.unused_bytes() == 0);
}

TEST_CASE("secretmem arenas: a slot not reusable is never handed out again and counted until its arena goes", "[secretmem-parts]") {
  fake::reset();
  arena_set set(fake::memory(), page);
  const auto keep = set.place(1);
  const auto bad = set.place(2);
  CHECK(set.give_back(bad.a, bad.first, 2, false, false) == 0);
  CHECK(set.unused_bytes() == 2 * page);  // stuck, still locked
  const auto next = set.place(2);
  CHECK((next.a != bad.a || next.first != bad.first));
  (void)set.give_back(next.a, next.first, 2, true, false);
  (void)set.give_back(keep.a, keep.first, 1, true, false);
}

TEST_CASE("secretmem arenas: an arena whose unmap fails is kept, reused and unmapped when it empties again", "[secretmem-parts]") {
  fake::reset();
  arena_set set(fake::memory(), page);
  const auto a = set.place(1);
  fake::unmap_errno = ENOMEM;
  CHECK(set.give_back(a.a, a.first, 1, true, false) == ENOMEM);
  fake::unmap_errno = 0;
  const auto again = set.place(1);
  CHECK(again.a == a.a);  // the kept arena, used again
  CHECK(fake::maps == 1);
  CHECK(set.give_back(again.a, again.first, 1, true, false) == 0);
  CHECK(fake::unmaps == 1);
}

TEST_CASE("secretmem arenas: refused arenas halve down, then the caches are emptied once, then memlock_limit", "[secretmem-parts]") {
  fake::reset();
  arena_set set(fake::memory(), page);
  fake::refuse_above = 2;  // arenas of up to 2 pages
  const auto a = set.place(1);
  CHECK(a.a->pages == 2);  // 4 wanted, halved
  fake::refuse_above = 0;
  fake::released_by_caches = 0;
  const auto refused = test::caught([&] { (void)set.place(4); });
  REQUIRE(refused);
  CHECK(refused->code == securememory::errc::memlock_limit);
  CHECK(fake::cache_releases == 1);
  // When the caches had something to give, the placement is tried again.
  fake::cache_releases = 0;
  fake::released_by_caches = page;
  CHECK(test::caught([&] { (void)set.place(4); }).has_value());
  CHECK(fake::cache_releases == 1);  // tried twice, emptied once
  (void)set.give_back(a.a, a.first, 1, true, false);
}
