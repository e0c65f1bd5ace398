// The page cache (lib/page_cache.cpp) as protectedmemory and secretmem use
// it: closed secrets' pages are wiped, no-access, still locked, don't-dump
// and wipe-on-fork (secretmem: not in a child at all) while cached; the
// bound is shared by the caches and follows the newest use; a recycled page never shows an earlier
// secret's bytes; the bound holds and is counted; memlock pressure empties
// the cache before an allocation fails; failures on the cached paths hold
// nothing; a forked child never recycles its parent's (unlocked) pages.
#include "support.hpp"

#include <algorithm>
#include <atomic>
#include <functional>
#include <cstdlib>
#include <thread>
#include <cstring>
#include <sys/mman.h>
#include <sys/resource.h>

using securememory::errc;
using call = securememory::detail::os::call;

namespace {

constexpr std::size_t page = 4096;

using fresh_cache = test::fresh_page_cache;

const std::byte* page_of(const std::byte* p) {
  return reinterpret_cast<const std::byte*>(reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t{page - 1});
}

}  // namespace

TEST_CASE("SECUREMEMORY_PAGE_CACHE sets the bound (default 1M)", "[page-cache]") {
  const char* env = std::getenv("SECUREMEMORY_PAGE_CACHE");
  CAPTURE(env != nullptr ? env : "(unset)");
  if (env == nullptr || *env == '\0') {
    CHECK(securememory::page_cache_limit() == std::size_t{1} << 20U);
  } else if (std::strcmp(env, "0") == 0) {
    CHECK(securememory::page_cache_limit() == 0);
  } else {
    WARN("SECUREMEMORY_PAGE_CACHE=" << env << ": only unset and 0 are checked here");
  }
  const test::page_cache_limit scoped(12345);
  CHECK(securememory::page_cache_limit() == 12345);
}

SM_TEST("a recycled page never shows a previous secret's bytes", "[page-cache]") {
  const std::string name = GENERATE("protectedmemory", "secretmem");
  CAPTURE(name);
  if (!securememory::backend_available(name)) {
    WARN("skipped: backend " << name << " is not available on this host");
    return;
  }
  const fresh_cache cache(1U << 20U);
  auto factory = securememory::make_factory(name);
  auto first_source = test::pattern(page, 1);
  auto first = factory.create(first_source);
  const auto* addr = test::address_of(first);
  const auto before = securememory::metrics();
  first.close();
  REQUIRE(securememory::metrics().cached_bytes == before.cached_bytes + page);
  CHECK(securememory::metrics().locked_bytes == before.locked_bytes - page);

  // While cached: locked, don't-dump, all zeros, and wipe-on-fork
  // (protectedmemory) or not mapped in a child at all (secretmem: shared
  // mappings cannot be wipe-on-fork); read-write, since it holds nothing to
  // protect (a PROT_NONE would only cost a TLB shootdown, and making it
  // writable again another system call). secretmem's slot stays in its
  // arena as a mapping of its own.
  const auto cached = test::find_mapping(addr);
  REQUIRE(cached);
  CHECK(cached->perms.substr(0, 3) == "rw-");
  CHECK(cached->has_flag("lo"));
  CHECK(cached->has_flag("dd") == test::dump_exclusion_here());
  CHECK(cached->locked_kb * 1024 == cached->end - cached->start);
  if (name == "secretmem") {
    CHECK(cached->has_flag("dc"));
    CHECK(cached->end - cached->start == page);
    // /proc/self/mem cannot read secretmem: look from outside the library.
    const auto* p = addr;
    CHECK(std::vector<std::byte>(p, p + page) == std::vector<std::byte>(page));
  } else {
    CHECK(cached->has_flag("wf") == test::wipe_on_fork_here());
    CHECK(test::read_process_memory(addr, page) == std::vector<std::byte>(page));
  }

  // A smaller secret gets the same page: its bytes, then zeros to the page end.
  auto second_source = test::pattern(100, 2);
  const auto second_expected = second_source;
  auto second = factory.create(second_source);
  REQUIRE(test::address_of(second) == addr);
  CHECK(securememory::metrics().cached_bytes == before.cached_bytes);
  second.with_bytes([&](std::span<const std::byte> b) {
    const std::byte* whole = page_of(b.data());
    CHECK(std::equal(b.begin(), b.end(), second_expected.begin(), second_expected.end()));
    for (std::size_t i = b.size(); i < page; ++i) {
      if (whole[i] != std::byte{0}) FAIL("byte " << i << " of a recycled page is not zero");
    }
  });
  // And once more, through create_random.
  second.close();
  auto third = factory.create_random(32);
  REQUIRE(test::address_of(third) == addr);
  third.with_bytes([&](std::span<const std::byte> b) {
    const std::byte* whole = page_of(b.data());
    for (std::size_t i = b.size(); i < page; ++i) {
      if (whole[i] != std::byte{0}) FAIL("byte " << i << " of a recycled page is not zero");
    }
  });
}

SM_TEST("the bound is shared: a cache holding none of it takes it from the others, newest use first", "[page-cache]") {
  if (!securememory::backend_available("secretmem")) {
    WARN("skipped: backend secretmem is not available on this host");
    return;
  }
  const fresh_cache cache(page);
  auto protectedmemory = securememory::make_factory("protectedmemory");
  auto secretmem = securememory::make_factory("secretmem");
  auto a = protectedmemory.create_random(32);
  auto b = secretmem.create_random(32);
  const auto* b_addr = test::address_of(b);
  a.close();
  REQUIRE(securememory::metrics().cached_bytes == page);  // protectedmemory's page holds the whole bound
  b.close();  // secretmem's cache is empty: protectedmemory's page is released for it
  CHECK(securememory::metrics().cached_bytes == page);
  const auto again = secretmem.create_random(32);
  CHECK(test::address_of(again) == b_addr);  // secretmem's slot was the one kept
  CHECK(securememory::metrics().cached_bytes == 0);
}

SM_TEST("the cache is bounded, counted in cached_bytes (not locked_bytes), and 0 disables it", "[page-cache]") {
  auto factory = securememory::make_factory("protectedmemory");
  {
    const fresh_cache cache(2 * page);
    const auto start = securememory::metrics();
    CHECK(start.cached_bytes == 0);
    std::vector<securememory::Secret> held;
    for (int i = 0; i < 4; ++i) held.push_back(factory.create_random(32));
    const auto* last = test::address_of(held.back());
    held.clear();  // 4 pages closed, 2 kept
    const auto now = securememory::metrics();
    CHECK(now.cached_bytes == 2 * page);
    CHECK(now.locked_bytes == start.locked_bytes);
    // A run larger than the bound is never cached.
    (void)factory.create_random(3 * page);
    CHECK(securememory::metrics().cached_bytes == 2 * page);
    // Lowering the bound releases at once.
    securememory::set_page_cache_limit(page);
    CHECK(securememory::metrics().cached_bytes == page);
    securememory::set_page_cache_limit(0);
    CHECK(securememory::metrics().cached_bytes == 0);
    const auto gone = test::find_mapping(last);
    CHECK((!gone || !gone->has_flag(test::secret_page_flag())));
  }
  {
    const fresh_cache cache(0);
    auto s = factory.create_random(32);
    const auto* addr = test::address_of(s);
    s.close();
    CHECK(securememory::metrics().cached_bytes == 0);
    const auto gone = test::find_mapping(addr);
    CHECK((!gone || !gone->has_flag(test::secret_page_flag())));  // unmapped
  }
}

SM_TEST("a cached page: reused with no system call; create, access and close cost 1, 2 and 1 protection changes; a failed no-access after the fill caches it again", "[page-cache][faults]") {
  // docs/performance.md ("Protection changes"): of these only the create's
  // and the access's PROT_NONE remove rights (a TLB shootdown when other
  // threads run); a cached page is left read-write, so neither the close
  // nor the next create pays for a PROT_NONE / PROT_READ|WRITE pair.
  const std::string name = GENERATE("protectedmemory", "secretmem");
  CAPTURE(name);
  if (!securememory::backend_available(name)) {
    WARN("skipped: backend " << name << " is not available on this host");
    return;
  }
  const fresh_cache cache(1U << 20U);
  auto factory = securememory::make_factory(name);
  auto keep = factory.create_random(32);  // secretmem: keeps the arena mapped
  auto closed = factory.create_random(32);
  const auto* addr = test::address_of(closed);
  closed.close();  // one page in the cache
  REQUIRE(securememory::metrics().cached_bytes == page);

  SECTION("protection changes per operation") {
    const auto count = [](const std::function<void()>& op) {
      const test::call_counter calls;
      op();
      return std::pair{calls.calls(call::mprotect), calls.calls(call::munmap) + calls.calls(call::mmap)};
    };
    securememory::Secret secret;
    CHECK(count([&] { secret = factory.create_random(32); }) == std::pair{1, 0});
    CHECK(test::address_of(secret) == addr);
    CHECK(securememory::metrics().cached_bytes == 0);
    CHECK(count([&] { secret.with_bytes([](std::span<const std::byte>) {}); }) == std::pair{2, 0});
    CHECK(count([&] { secret.close(); }) == std::pair{1, 0});
    CHECK(securememory::metrics().cached_bytes == page);
  }

  SECTION("the PROT_NONE after the fill fails") {
    const auto expected = test::pattern(32);
    auto source = expected;
    {
      test::fault_injector fault(call::mprotect, ENOMEM);
      CHECK(test::error_of([&] { (void)factory.create(source); }) == errc::protection_failed);
      CHECK(fault.calls(call::mmap) == 0);  // it was the recycled page, taken as it was (read-write)
      CHECK(fault.injected() == 1);         // the first protection change
      CHECK(fault.calls(call::munmap) == 0);
    }
    CHECK(source == expected);  // a failed creation leaves the source alone
    CHECK(securememory::metrics().cached_bytes == page);  // wiped, and in the cache again
    const auto again = test::find_mapping(addr);
    REQUIRE(again);
    CHECK(again->perms.substr(0, 3) == "rw-");
    CHECK(std::all_of(addr, addr + page, [](std::byte b) { return b == std::byte{0}; }));
  }
}

TEST_CASE("memlock pressure empties the cache before an allocation fails", "[page-cache][kernel]") {
  constexpr rlim_t limit = 64 * 1024;
  const auto r = test::run_in_child([] {
    if (!test::drop_cap_ipc_lock()) return 2;
    const rlimit lim{limit, limit};
    if (setrlimit(RLIMIT_MEMLOCK, &lim) != 0) return 3;
    securememory::set_page_cache_limit(1U << 20U);
    if (securememory::metrics().cached_bytes != 0) return 4;  // the parent's runs were dropped at fork
    auto factory = securememory::make_factory("protectedmemory");
    {
      std::vector<securememory::Secret> held;
      for (int i = 0; i < 12; ++i) held.push_back(factory.create_random(32));
    }
    if (securememory::metrics().cached_bytes != 12 * page) return 5;  // 48 KiB of 64 KiB locked in the cache
    auto big = factory.create_random(8 * page);  // 32 KiB more: fits only once the cache lets go
    if (securememory::metrics().cached_bytes != 0) return 6;
    if (big.size() != 8 * page) return 7;
    return 0;
  });
  INFO(r.describe());
  CHECK(r.exited);
  CHECK(r.exit_code == 0);
}

SM_TEST("a forked child never recycles its parent's cached pages", "[page-cache][kernel][fork]") {
  const fresh_cache cache(1U << 20U);
  auto factory = securememory::make_factory("protectedmemory");
  factory.create_random(32).close();
  REQUIRE(securememory::metrics().cached_bytes == page);
  const auto r = test::run_in_child([&factory] {
    if (securememory::metrics().cached_bytes != 0) return 2;
    auto own = factory.create_random(32);
    const auto m = test::find_mapping(test::address_of(own));
    if (!m || !m->has_flag("lo") || m->locked_kb == 0) return 3;  // a fresh, locked page
    return 0;
  });
  INFO(r.describe());
  CHECK(r.exited);
  CHECK(r.exit_code == 0);
  CHECK(securememory::metrics().cached_bytes == page);  // the parent keeps its own
}

namespace {

// Parks the releasing thread in the middle of a put (while it evicts an
// older run: munlock through lib/os/), so that the bound changes under it.
std::atomic<int> put_phase{0};  // 1: parked, 2: go on
thread_local bool is_releaser = false;
int park_in_eviction(call c, void*) noexcept {
  if (c == call::munlock && is_releaser && put_phase.load() == 0) {
    put_phase.store(1);
    while (put_phase.load() != 2) std::this_thread::yield();
  }
  return 0;
}

}  // namespace

SM_TEST("a bound lowered while a release is putting pages in the cache holds when both are done", "[page-cache][concurrency]") {
  const fresh_cache cache(4 * page);
  auto factory = securememory::make_factory("protectedmemory");
  std::vector<securememory::Secret> secrets;
  for (int i = 0; i < 5; ++i) secrets.push_back(factory.create_random(page));
  for (int i = 0; i < 4; ++i) secrets[static_cast<std::size_t>(i)].close();  // the cache is full
  REQUIRE(securememory::metrics().cached_bytes == 4 * page);
  put_phase = 0;
  securememory::detail::os::set_fault_hook(park_in_eviction, nullptr);
  std::thread releaser([&] {
    is_releaser = true;
    secrets[4].close();  // put: evicts the oldest run to make room, and parks there
  });
  while (put_phase.load() != 1) std::this_thread::yield();
  securememory::set_page_cache_limit(0);  // trims everything it can see
  put_phase = 2;
  releaser.join();
  securememory::detail::os::set_fault_hook(nullptr, nullptr);
  CHECK(securememory::metrics().cached_bytes == 0);  // before the fix: the parked put cached its run under the old bound
}

SM_TEST("set_page_cache_limit(0) racing with releases: nothing stays cached once both are done", "[page-cache][concurrency]") {
  const std::string name = GENERATE("protectedmemory", "secretmem");
  CAPTURE(name);
  if (!securememory::backend_available(name)) return;
  const fresh_cache restore(1U << 20U);
  auto factory = securememory::make_factory(name);
  int left_cached = 0;
  for (int round = 0; round < 1000; ++round) {
    securememory::set_page_cache_limit(1U << 20U);
    std::vector<securememory::Secret> secrets;
    for (int i = 0; i < 4; ++i) secrets.push_back(factory.create_random(32));
    std::atomic<bool> go{false};
    std::thread closer([&] {
      while (!go.load()) {
      }
      secrets.clear();  // releases that cache their pages, racing with the limit below
    });
    go = true;
    securememory::set_page_cache_limit(0);
    closer.join();
    if (securememory::metrics().cached_bytes != 0) ++left_cached;
  }
  CHECK(left_cached == 0);  // 2-11 of 5,000 rounds before the fix, by the review's count
}

SM_TEST("a cached run that cannot be given back at eviction is logged and counted as a failure", "[page-cache][faults]") {
  // The close that evicts another secret's cached run has nothing to throw:
  // its own secret was cached fine. The failure must still be seen.
  const std::string name = GENERATE("protectedmemory", "secretmem");
  CAPTURE(name);
  if (!securememory::backend_available(name)) {
    WARN("skipped: backend " << name << " is not available on this host");
    return;
  }
  const fresh_cache cache(page);  // room for one run
  auto factory = securememory::make_factory(name);
  auto keep = factory.create_random(32);  // secretmem: keeps the arena mapped
  auto first = factory.create_random(32);
  auto second = factory.create_random(32);
  first.close();  // cached
  REQUIRE(securememory::metrics().cached_bytes == page);
  std::vector<std::string> warnings;
  const auto previous = securememory::set_log_sink([&warnings](securememory::LogLevel level, std::string_view message) {
    if (level >= securememory::LogLevel::warn) warnings.emplace_back(message);
  });
  const auto failures_before = securememory::metrics().failures;
  {
    // protectedmemory gives the evicted run back with munlock + munmap;
    // secretmem makes the slot no-access before it returns to its arena
    // (after the close's own mprotect, for the wipe).
    const bool pm = name == "protectedmemory";
    test::fault_injector fault(pm ? call::munmap : call::mprotect, EINVAL, pm ? 0 : 1);
    second.close();  // caches its page, evicting the first run
    CHECK(fault.injected() == 1);
  }
  securememory::set_log_sink(previous);
  CHECK(second.is_closed());
  CHECK(securememory::metrics().failures == failures_before + 1);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find(name) != std::string::npos);
  CHECK(warnings[0].find("EINVAL") != std::string::npos);
}
