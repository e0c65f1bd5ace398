// Promises of the headers and docs that had no test that would fail
// (docs/testing.md, "Promises and their tests"): each case below pins one.
#include "support.hpp"

#include "backends/sealed.hpp"
#include "backends/sealed/scratch.hpp"

#include <securememory/purge.hpp>

#include <sodium.h>

#include <algorithm>
#include <thread>
#include <type_traits>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

using securememory::Secret;

// secret.hpp: "an 8-byte handle"; error.hpp: copying an Error never throws;
// a factory is copyable (moving one copies it, so it is never empty).
static_assert(sizeof(securememory::Secret) == sizeof(void*));
static_assert(std::is_nothrow_copy_constructible_v<securememory::Error>);
static_assert(std::is_nothrow_copy_assignable_v<securememory::Error>);

TEST_CASE("a factory moved from still makes secrets of its backend", "[promise]") {
  auto factory = securememory::make_factory("protectedmemory");
  auto other = std::move(factory);
  // NOLINTNEXTLINE(bugprone-use-after-move): the promise is exactly that it stays usable
  auto s = factory.create_random(16);
  CHECK(factory.backend() == "protectedmemory");
  CHECK(other.backend() == "protectedmemory");
  CHECK(s.size() == 16);
}

SM_TEST("purge() returns exactly how many live secrets it closed, and drops sealed's idle key", "[promise][purge]") {
  (void)securememory::purge();  // nothing of earlier cases left
  const auto before = securememory::metrics();
  REQUIRE(before.in_use == 0);
  std::vector<Secret> held;
  for (const auto& name : securememory::backend_names()) {
    if (!securememory::backend_available(name)) continue;
    auto f = securememory::make_factory(name);
    for (int i = 0; i < 3; ++i) held.push_back(f.create_random(32));
  }
  CHECK(securememory::purge() == held.size());
  CHECK(securememory::metrics().in_use == 0);
  // The sealed backend's key and scratch are locked only while it has a use.
  CHECK(securememory::detail::sealed_locked_bytes() == 0);
  CHECK(securememory::purge() == 0);
  for (const auto& s : held) CHECK(s.is_closed());
}

SM_TEST("in a forked child, the counters of what is held start at 0; allocated and failures go on", "[promise][fork][metrics]") {
  auto f = securememory::make_factory("protectedmemory");
  const auto s = f.create_random(32);
  const auto parent = securememory::metrics();
  REQUIRE(parent.in_use >= 1);
  REQUIRE(parent.allocated >= 1);
  const auto c = test::run_in_child([&] {
    const auto m = securememory::metrics();
    if (m.in_use != 0 || m.locked_bytes != 0 || m.cached_bytes != 0) return 2;
    if (m.allocated != parent.allocated || m.failures != parent.failures) return 3;
    return 0;
  });
  INFO(c.describe());
  CHECK(c.exited);
  CHECK(c.exit_code == 0);
}

SM_TEST("sealed's scratch holds 2 pages per CPU, between 4 and 32", "[promise][sealed]") {
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  const auto expected = static_cast<std::size_t>(std::clamp<long>(2 * std::max(cpus, 1L), 4, 32));
  CHECK(securememory::detail::sealed_parts::scratch::default_slab_count() == expected);
  (void)securememory::make_factory("sealed").create_random(8);
  CHECK(securememory::detail::sealed_stats().scratch_slab_count == expected);
}

SM_TEST("a sealed read never writes the stored ciphertext", "[promise][sealed]") {
  auto f = securememory::make_factory("sealed");
  const auto s = f.create_random(32);
  const auto stored = securememory::detail::sealed_ciphertext_of(securememory::detail::region_of(s));
  REQUIRE(!stored.empty());
  const std::vector<std::byte> before(stored.begin(), stored.end());
  for (int i = 0; i < 3; ++i) s.with_bytes([](std::span<const std::byte> b) { return b.size(); });
  CHECK(std::equal(stored.begin(), stored.end(), before.begin(), before.end()));
}

SM_TEST("sealed: with_bytes makes no system call; create and close none once warm", "[promise][sealed]") {
  auto f = securememory::make_factory("sealed");
  {
    auto warm = f.create_random(32);  // key, scratch, slot block, generator: made once
    warm.with_bytes([](std::span<const std::byte> b) { return b.size(); });
  }
  auto s = f.create_random(32);
  const test::call_counter calls;
  s.with_bytes([](std::span<const std::byte> b) { return b.size(); });
  auto t = f.create_random(32);
  t.close();
  int total = 0;
  for (int c = 0; c < static_cast<int>(securememory::detail::os::call::count_); ++c) {
    total += calls.calls(static_cast<securememory::detail::os::call>(c));
  }
  CHECK(total == 0);
}

SM_TEST("a callback runs with no library lock held: other threads create, read and close meanwhile", "[promise][concurrency]") {
  for (const auto& name : securememory::backend_names()) {
    if (!securememory::backend_available(name)) continue;
    CAPTURE(name);
    auto f = securememory::make_factory(name);
    const auto held = f.create_random(32);
    auto other = f.create_random(32);
    bool others_done = false;
    held.with_bytes([&](std::span<const std::byte>) {
      // Another thread does everything the library offers while this one
      // is inside a callback; a lock held across callbacks would hang it.
      std::thread t([&] {
        auto fresh = f.create_random(32);
        (void)other.with_bytes([](std::span<const std::byte> b) { return b.size(); });
        (void)held.with_bytes([](std::span<const std::byte> b) { return b.size(); });  // shares the opening
        other.close();
        fresh.close();
        (void)securememory::metrics();
        (void)securememory::backend_names();
        others_done = true;
      });
      t.join();
      return 0;
    });
    CHECK(others_done);
  }
}

SM_TEST("a null violation handler restores the default, which logs the violation (never the bytes)", "[promise][violation]") {
  const test::violation_settings_guard restore;
  (void)securememory::set_violation_handler([](const securememory::Violation&) {});
  (void)securememory::set_violation_handler(nullptr);  // back to the default
  securememory::set_violation_policy(securememory::violation_policy::quarantine);
  std::vector<std::pair<securememory::LogLevel, std::string>> lines;
  const auto previous = securememory::set_log_sink([&lines](securememory::LogLevel level, std::string_view message) {
    lines.emplace_back(level, std::string(message));
  });
  auto secret = securememory::make_factory("memguard").create_random(16);
  auto* data = const_cast<std::byte*>(test::address_of(secret));
  auto* page = reinterpret_cast<std::byte*>(reinterpret_cast<std::uintptr_t>(data - 1) & ~std::uintptr_t{4095});
  REQUIRE(mprotect(page, 4096, PROT_READ | PROT_WRITE) == 0);
  data[-1] ^= std::byte{1};  // the canary's last byte
  REQUIRE(mprotect(page, 4096, PROT_NONE) == 0);
  CHECK(test::error_of([&] { secret.verify(); }) == securememory::errc::integrity_violation);
  securememory::set_log_sink(previous);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].first == securememory::LogLevel::critical);
  CHECK(lines[0].second.find("memguard") != std::string::npos);
}
