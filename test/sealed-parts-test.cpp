// sealed's allocators on plain memory, without the kernel (their memory
// source is injected, as Botan tests mem_pool apart from os_utils): the
// scratch (chunks, home slabs, sharing when a slab is full or refused,
// mappings of their own as the last resort, the bound, idle release, fork
// reset) and the ciphertext slots (size classes, reuse, wiping only what was
// written, quarantine).
#include "support.hpp"

#include "backends/sealed/scratch.hpp"
#include "backends/sealed/slots.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <set>
#include <thread>
#include <vector>

using securememory::detail::sealed_parts::scratch;
using securememory::detail::sealed_parts::scratch_memory;
using securememory::detail::sealed_parts::slot_arena;
using securememory::detail::sealed_parts::slot_memory;

namespace {

constexpr std::size_t page = 4096;

// A memory source on the heap that records what it was asked for.
struct plain_source {
  static inline std::atomic<int> locks{0};
  static inline std::atomic<int> unlocks{0};
  static inline std::atomic<int> refuse_after{1000};  // locks granted before RLIMIT_MEMLOCK "refuses"
  static inline std::atomic<int> dedicated{0};
  static inline std::atomic<bool> refuse_dedicated{false};
  static inline std::atomic<int> reserves{0};

  static void reset() {
    reserves = 0;
    locks = 0;
    unlocks = 0;
    refuse_after = 1000;
    dedicated = 0;
    refuse_dedicated = false;
    refuse_unlock = false;
  }
  // Reachable until the very end (never destroyed, so LeakSanitizer, which
  // runs after static destructors, still sees them): a scratch lives as long
  // as the process.
  static inline std::vector<void*>& kept = *new std::vector<void*>();
  static std::byte* reserve(std::size_t bytes) {
    reserves.fetch_add(1);
    auto* p = static_cast<std::byte*>(std::aligned_alloc(page, bytes));
    std::fill(p, p + bytes, std::byte{0});
    kept.push_back(p);
    return p;
  }
  static bool lock(std::byte*, std::size_t) {
    if (locks.load() >= refuse_after.load()) return false;
    locks.fetch_add(1);
    return true;
  }
  static std::byte* map_dedicated(std::size_t bytes) {
    if (refuse_dedicated.load()) throw securememory::error(securememory::errc::memlock_limit, "refused (test)");
    dedicated.fetch_add(1);
    return static_cast<std::byte*>(std::calloc(1, bytes));
  }
  static void unmap_dedicated(std::byte* p, std::size_t) noexcept {
    dedicated.fetch_sub(1);
    std::free(p);
  }
  static inline std::atomic<bool> refuse_unlock{false};
  static bool unlock(std::byte*, std::size_t) noexcept {
    if (refuse_unlock.load()) return false;
    unlocks.fetch_add(1);
    return true;
  }
  static scratch_memory memory() { return {reserve, lock, map_dedicated, unmap_dedicated, unlock}; }
};

scratch& make_scratch(std::size_t slabs) {
  plain_source::reset();
  auto* made = new scratch(plain_source::memory(), page, slabs);  // never destroyed, like the real one
  plain_source::kept.push_back(made);
  return *made;
}

bool all_zero(const std::byte* p, std::size_t n) {
  return std::all_of(p, p + n, [](std::byte b) { return b == std::byte{0}; });
}

}  // namespace

TEST_CASE("scratch: chunks are zero, distinct, wiped on give, and reused", "[sealed-parts][scratch]") {
  scratch& s = make_scratch(4);
  std::byte* a = s.take(32);
  std::byte* b = s.take(100);  // 2 chunks of 64
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  CHECK(all_zero(a, 32));
  CHECK(all_zero(b, 100));
  CHECK((b >= a + 64 || a >= b + 128));  // no overlap
  std::fill(a, a + 32, std::byte{0xaa});
  s.give(a, 32);
  CHECK(all_zero(a, 32));  // wiped before it is free
  CHECK(s.take(32) == a);  // the first free chunk again
  CHECK(s.slabs_locked() == 1);
  CHECK(plain_source::locks == 1);
}

TEST_CASE("scratch: a full slab sends the thread to another; a whole page fits one slab; larger gets its own", "[sealed-parts][scratch]") {
  scratch& s = make_scratch(4);
  std::byte* whole = s.take(page);  // all 64 chunks of the home slab
  std::byte* next = s.take(1);
  CHECK(next != nullptr);
  CHECK((next < whole || next >= whole + page));
  CHECK(s.slabs_locked() == 2);
  std::byte* big = s.take(page + 1);
  CHECK(plain_source::dedicated == 1);
  s.give(big, page + 1);
  CHECK(plain_source::dedicated == 0);
  s.give(whole, page);
  s.give(next, 1);
}

TEST_CASE("scratch: when locking is refused, threads share the slabs they have", "[sealed-parts][scratch]") {
  scratch& s = make_scratch(4);
  plain_source::refuse_after = 1;  // one slab, then RLIMIT_MEMLOCK refuses
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  std::atomic<int> ready{0};
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&] {
      ready.fetch_add(1);
      while (ready.load() < 16) std::this_thread::yield();
      for (int i = 0; i < 200; ++i) {
        try {
          std::byte* p = s.take(32);
          if (!all_zero(p, 32)) failures.fetch_add(1);
          std::fill(p, p + 32, std::byte{1});
          s.give(p, 32);
        } catch (const securememory::error&) {
          failures.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  CHECK(s.slabs_locked() == 1);  // every thread shared the one slab it could have
  CHECK(plain_source::dedicated == 0);
}

TEST_CASE("scratch: the bound holds whatever the number of threads", "[sealed-parts][scratch]") {
  scratch& s = make_scratch(4);
  std::vector<std::thread> threads;
  std::atomic<int> ready{0};
  for (int t = 0; t < 32; ++t) {
    threads.emplace_back([&] {
      ready.fetch_add(1);
      while (ready.load() < 32) std::this_thread::yield();
      std::byte* p = s.take(32);
      s.give(p, 32);
    });
  }
  for (auto& t : threads) t.join();
  CHECK(s.slabs_locked() <= 4);
  CHECK(plain_source::locks <= 4);
}

TEST_CASE("scratch: when every slab is full or refused, a mapping of its own; when that is refused too, memlock_limit", "[sealed-parts][scratch]") {
  scratch& s = make_scratch(2);
  plain_source::refuse_after = 2;
  std::vector<std::pair<std::byte*, std::size_t>> held;
  held.emplace_back(s.take(page), page);
  held.emplace_back(s.take(page), page);  // both slabs full
  std::byte* overflow = s.take(32);
  CHECK(plain_source::dedicated == 1);
  plain_source::refuse_dedicated = true;
  CHECK(test::error_of([&] { (void)s.take(32); }) == securememory::errc::memlock_limit);
  s.give(overflow, 32);
  for (auto [p, n] : held) s.give(p, n);
  CHECK(s.take(32) != nullptr);  // room again in a slab
}

TEST_CASE("scratch: idle slabs are unlocked on request, busy ones stay", "[sealed-parts][scratch]") {
  scratch& s = make_scratch(4);
  std::byte* busy = s.take(32);
  std::thread other([&] { s.give(s.take(32), 32); });  // locks a second slab, leaves it idle
  other.join();
  REQUIRE(s.slabs_locked() == 2);
  CHECK(s.release_idle() == page);
  CHECK(plain_source::unlocks == 1);
  CHECK(s.slabs_locked() == 1);
  s.give(busy, 32);
  CHECK(s.release_idle() == page);
  CHECK(s.slabs_locked() == 0);
  std::byte* again = s.take(32);  // locked again on demand
  CHECK(s.slabs_locked() == 1);
  s.give(again, 32);
}

TEST_CASE("scratch: an idle slab the kernel refuses to unlock stays locked, counted and usable", "[sealed-parts][scratch]") {
  scratch& s = make_scratch(2);
  s.give(s.take(32), 32);
  REQUIRE(s.slabs_locked() == 1);
  plain_source::refuse_unlock = true;
  CHECK(s.release_idle() == 0);  // nothing was given back to the kernel
  CHECK(s.slabs_locked() == 1);  // so it is still counted (metrics, VmLck)
  const auto locks = plain_source::locks.load();
  std::byte* again = s.take(32);  // and used without locking it again
  CHECK(plain_source::locks.load() == locks);
  s.give(again, 32);
  plain_source::refuse_unlock = false;
  CHECK(s.release_idle() == page);
  CHECK(s.slabs_locked() == 0);
}

TEST_CASE("scratch: after fork every chunk is free again", "[sealed-parts][scratch]") {
  scratch& s = make_scratch(1);
  std::byte* parents = s.take(page);  // the whole slab, held by a "parent thread"
  s.reset_in_child(true);
  std::byte* childs = s.take(32);
  CHECK(childs == parents);
  CHECK(plain_source::reserves == 1);
  s.give(childs, 32);
}

TEST_CASE("scratch: after fork on a platform that drops its pages, it is reserved anew", "[sealed-parts][scratch]") {
  scratch& s = make_scratch(1);
  std::byte* parents = s.take(page);
  REQUIRE(plain_source::reserves == 1);
  s.reset_in_child(false);  // macOS: nothing of the reservation is mapped in the child
  std::byte* childs = s.take(32);
  CHECK(plain_source::reserves == 2);
  CHECK(childs != parents);
  s.give(childs, 32);
}

namespace {

struct plain_slots {
  static inline std::atomic<int> blocks{0};
  static inline std::atomic<int> large{0};
  static inline std::atomic<int> large_freed{0};
  static inline std::atomic<int> freed_unwiped{0};  // large blocks freed with their bytes as written
  static inline std::vector<std::size_t> block_sizes;  // in the order asked (one thread)
  static std::byte* map_block(std::size_t bytes) {
    blocks.fetch_add(1);
    block_sizes.push_back(bytes);
    void* p = std::calloc(1, bytes);  // never freed, like the real blocks
    plain_source::kept.push_back(p);
    return static_cast<std::byte*>(p);
  }
  static std::byte* allocate_large(std::size_t bytes) noexcept {
    large.fetch_add(1);
    return static_cast<std::byte*>(std::malloc(bytes));
  }
  static void free_large(std::byte* p, std::size_t bytes) noexcept {
    large_freed.fetch_add(1);
    if (std::all_of(p, p + bytes, [](std::byte b) { return b == std::byte{0x33}; })) freed_unwiped.fetch_add(1);
    std::free(p);
  }
};

slot_arena& make_slots() {
  plain_slots::blocks = 0;
  plain_slots::block_sizes.clear();
  plain_slots::large = 0;
  plain_slots::large_freed = 0;
  plain_slots::freed_unwiped = 0;
  auto* made = new slot_arena(slot_memory{plain_slots::map_block, plain_slots::allocate_large, plain_slots::free_large});
  plain_source::kept.push_back(made);
  return *made;
}

}  // namespace

TEST_CASE("slots: one block per size class, freed slots reused and wiped", "[sealed-parts][slots]") {
  slot_arena& a = make_slots();
  std::set<std::byte*> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(a.take(56));
  CHECK(seen.size() == 1000);
  CHECK(plain_slots::blocks == 1);  // 1000 x 56 bytes fit one 256 KiB block
  std::byte* other_class = a.take(64);
  CHECK(plain_slots::blocks == 2);
  std::byte* s = *seen.begin();
  std::fill(s, s + 56, std::byte{0x77});
  a.give(s, 56, true, true);
  std::byte* again = a.take(56);
  CHECK(again == s);
  CHECK(all_zero(again, 56));  // wiped on give, link wiped on take
  const auto u = a.usage();
  CHECK(u.live_slots == 1001);
  a.give(other_class, 64, true, true);
}

TEST_CASE("slots: a class's first 32 blocks are 256 KiB, the next ones 2 MiB (huge pages)", "[sealed-parts][slots]") {
  slot_arena& a = make_slots();
  constexpr std::size_t per_small = slot_arena::small_block_bytes / 56;
  constexpr std::size_t small = slot_arena::small_blocks;
  STATIC_REQUIRE(small == 32);
  std::vector<std::byte*> held;
  for (std::size_t i = 0; i < small * per_small + 1; ++i) held.push_back(a.take(56));
  REQUIRE(plain_slots::block_sizes.size() == small + 1);
  for (std::size_t i = 0; i < small; ++i) CHECK(plain_slots::block_sizes[i] == slot_arena::small_block_bytes);
  CHECK(plain_slots::block_sizes[small] == slot_arena::huge_block_bytes);
  (void)a.take(64);  // another class starts small again
  CHECK(plain_slots::block_sizes.back() == slot_arena::small_block_bytes);
  for (std::byte* p : held) a.give(p, 56, false, true);
}

TEST_CASE("slots: a quarantined slot is never handed out again", "[sealed-parts][slots]") {
  slot_arena& a = make_slots();
  std::byte* bad = a.take(56);
  std::fill(bad, bad + 56, std::byte{0x55});
  a.give(bad, 56, true, false);
  CHECK(all_zero(bad, 56));
  for (int i = 0; i < 100; ++i) CHECK(a.take(56) != bad);
}

TEST_CASE("slots: a large slot is a block of its own, untouched unless written", "[sealed-parts][slots]") {
  slot_arena& a = make_slots();
  std::byte* big = a.take(5000);
  CHECK(plain_slots::large == 1);
  std::fill(big, big + 5000, std::byte{0x33});
  // Never sealed into (the creation failed): not wiped, only freed. (The
  // real source's block is untouched then; here the pattern shows it.)
  a.give(big, 5000, false, true);
  CHECK(plain_slots::large_freed == 1);
  CHECK(plain_slots::freed_unwiped == 1);
  // Written (sealed into): wiped before it is freed.
  std::byte* sealed_into = a.take(5000);
  std::fill(sealed_into, sealed_into + 5000, std::byte{0x33});
  a.give(sealed_into, 5000, true, true);
  CHECK(plain_slots::large_freed == 2);
  CHECK(plain_slots::freed_unwiped == 1);
}
