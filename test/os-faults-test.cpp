// Every failure path of the protectedmemory backend and the state machine,
// triggered for real through the lib/os/ hook, plus the real RLIMIT_MEMLOCK
// exhaustion (every backend) in a child without CAP_IPC_LOCK. Each failure must give the
// right errc, leave the source untouched, hold nothing (every mmap matched by
// a munmap) and restore the counters. These tests count the uncached
// system calls, so they pin the page cache off; the cached paths are
// tested in page-cache-test.cpp.
#include "support.hpp"

#include "random.hpp"

#include <algorithm>
#include <sys/resource.h>

using securememory::errc;
using call = securememory::detail::os::call;

namespace {

struct creation_failure {
  call target;
  int err;
  int skip;
  errc expected;
};

}  // namespace

SM_TEST("a failed create leaves the source untouched and holds nothing", "[faults]") {
  const auto c = GENERATE(values<creation_failure>({
      {call::mmap, ENOMEM, 0, errc::out_of_memory},
      {call::mmap, EAGAIN, 0, errc::out_of_memory},
      // ENOMEM: RLIMIT_MEMLOCK, or (when the limit cannot bind: CAP_IPC_LOCK,
      // as in CI) out of memory it can lock.
      {call::mlock, ENOMEM, 0,
       securememory::detail::os::memlock_unbounded() ? errc::out_of_memory : errc::memlock_limit},
      {call::mlock, EPERM, 0, errc::memlock_limit},
      {call::mlock, EAGAIN, 0, errc::memlock_limit},
      {call::madvise, EINVAL, 0, errc::protection_failed},  // MADV_DONTDUMP
      {call::madvise, EINVAL, 1, errc::protection_failed},  // MADV_WIPEONFORK
      {call::mprotect, ENOMEM, 0, errc::protection_failed}, // no-access after filling
  }));
  CAPTURE(securememory::detail::os::call_name(c.target), c.err, c.skip);
  if (c.target == call::madvise && !test::dump_exclusion_here()) {
    WARN("madvise is not made in this build (lib/os/ platform: " << securememory::detail::os::platform_name() << ")");
    return;
  }
  const test::page_cache_limit uncached(0);
  auto factory = securememory::make_factory("protectedmemory");
  const auto expected = test::pattern(100);
  auto source = expected;
  const auto before = securememory::metrics();
  std::string message;
  {
    test::fault_injector fault(c.target, c.err, c.skip);
    try {
      (void)factory.create(source);
      FAIL("create succeeded");
    } catch (const securememory::error& e) {
      CHECK(e.code() == c.expected);
      CHECK(e.sys_errno() == c.err);
      message = e.what();
    }
    CHECK(fault.injected() == 1);
    CHECK(fault.calls(call::mmap) - (c.target == call::mmap ? 1 : 0) == fault.calls(call::munmap));
    CHECK(fault.calls(call::mlock) - (c.target == call::mlock ? 1 : 0) == fault.calls(call::munlock));
  }
  CHECK(source == expected);
  CHECK(message.find(securememory::detail::os::call_name(c.target)) != std::string::npos);
  const auto after = securememory::metrics();
  CHECK(after.failures == before.failures + 1);
  CHECK(after.allocated == before.allocated);
  // The same factory works again once the fault is gone.
  CHECK(factory.create(source).size() == 100);
}

SM_TEST("memlock_limit names RLIMIT_MEMLOCK and how to raise it", "[faults]") {
  const test::page_cache_limit uncached(0);
  test::fault_injector fault(call::mlock, EPERM);
  try {
    (void)securememory::make_factory("protectedmemory").create_random(32);
    FAIL("no exception");
  } catch (const securememory::error& e) {
    const std::string what = e.what();
    CHECK(what.find("RLIMIT_MEMLOCK is") != std::string::npos);
    CHECK(what.find("ulimit -l") != std::string::npos);
    CHECK(what.find(securememory::detail::os::lock_privilege_name()) != std::string::npos);  // CAP_IPC_LOCK on Linux
  }
}

SM_TEST("a failed opening is protection_failed and the secret stays usable", "[faults]") {
  auto secret = securememory::make_factory("protectedmemory").create_random(32);
  {
    test::fault_injector fault(call::mprotect, EACCES);
    bool called = false;
    CHECK(test::error_of([&] { secret.with_bytes([&](std::span<const std::byte>) { called = true; }); }) ==
          errc::protection_failed);
    CHECK_FALSE(called);
  }
  CHECK(secret.with_bytes([](std::span<const std::byte> b) { return b.size(); }) == 32);
}

SM_TEST("a failed re-protection after an access is thrown, and retried by the next access", "[faults]") {
  auto secret = securememory::make_factory("protectedmemory").create_random(32);
  const auto* addr = test::address_of(secret);
  {
    test::fault_injector fault(call::mprotect, ENOMEM, 1);  // call 0 opens, call 1 re-protects
    CHECK(test::error_of([&] { secret.with_bytes([](std::span<const std::byte>) {}); }) == errc::protection_failed);
    CHECK(test::find_mapping(addr)->perms.substr(0, 3) == "r--");  // still readable: reported, not hidden
  }
  secret.with_bytes([](std::span<const std::byte>) {});
  CHECK(test::find_mapping(addr)->perms.substr(0, 3) == "---");
}

SM_TEST("release failures are reported by close, and the secret is closed anyway", "[faults]") {
  const auto c = GENERATE(values<creation_failure>({
      {call::mprotect, ENOMEM, 0, errc::protection_failed},  // cannot make writable: cannot wipe
      {call::munlock, ENOMEM, 0, errc::release_failed},
      {call::munmap, EINVAL, 0, errc::release_failed},
  }));
  CAPTURE(securememory::detail::os::call_name(c.target));
  const test::page_cache_limit uncached(0);
  auto secret = securememory::make_factory("protectedmemory").create_random(32);
  const auto before = securememory::metrics();
  std::string message;
  {
    test::fault_injector fault(c.target, c.err, c.skip);
    try {
      secret.close();
      FAIL("close succeeded");
    } catch (const securememory::error& e) {
      CHECK(e.code() == c.expected);
      message = e.what();
    }
    // Every later step still ran.
    CHECK(fault.calls(call::munmap) == 1);
  }
  if (c.expected == errc::protection_failed) CHECK(message.find("NOT be wiped") != std::string::npos);
  CHECK(secret.is_closed());
  secret.close();  // a second close is a no-op, even after a failed one
  CHECK(securememory::metrics().failures == before.failures + 1);
}

TEST_CASE("without CAP_IPC_LOCK, a real RLIMIT_MEMLOCK exhaustion is memlock_limit", "[faults][kernel]") {
  const auto name = GENERATE(from_range(securememory::backend_names()));
  CAPTURE(name);
  if (!securememory::backend_available(name)) {
    WARN("skipped: backend " << name << " is not available on this host");
    return;
  }
  constexpr rlim_t limit = 64 * 1024;
  const auto r = test::run_in_child([&name] {
    if (!test::drop_cap_ipc_lock()) return 2;
    const rlimit lim{limit, limit};
    if (setrlimit(RLIMIT_MEMLOCK, &lim) != 0) return 3;
    auto factory = securememory::make_factory(name);
    // The random-number generator's page is locked on its first use in this
    // process: before the baseline; it takes one page of the limit.
    (void)factory.create_random(32);
    const std::size_t generator = securememory::detail::csprng::locked_bytes();
    if (generator > 4096) return 15;
    const auto start = securememory::metrics();
    try {
      (void)factory.create_random(1U << 20U);
      return 4;  // a 1 MiB secret cannot fit under 64 KiB
    } catch (const securememory::error& e) {
      if (e.code() != errc::memlock_limit) return 5;
      if (std::string(e.what()).find("RLIMIT_MEMLOCK is 65536 bytes") == std::string::npos) return 6;
    }
    // A backend that locks nothing per secret ("sealed": ciphertext in
    // unlocked arenas) must hold far more small secrets than the limit
    // would allow pages, and lock nothing for them.
    if (test::plaintext_in_scratch(name)) {
      std::vector<securememory::Secret> many;
      for (std::size_t i = 0; i < 4 * limit / 4096; ++i) many.push_back(factory.create_random(32));
      if (securememory::metrics().locked_bytes != start.locked_bytes) return 13;
      for (const auto& s : many) {
        if (s.with_bytes([](std::span<const std::byte> b) { return b.size(); }) != 32) return 14;
      }
      return 0;
    }
    // Small secrets fit until the limit; then the error, and nothing leaks.
    std::vector<securememory::Secret> held;
    try {
      for (int i = 0; i < 64; ++i) held.push_back(factory.create_random(32));
      return 7;
    } catch (const securememory::error& e) {
      if (e.code() != errc::memlock_limit) return 8;
    }
    if (held.empty() || held.size() > (limit - generator) / 4096) return 9;
    // secretmem halves a refused arena down to what fits: every page of the limit is used.
    if (name == "secretmem" && held.size() != (limit - generator) / 4096) return 13;
    const auto locked = securememory::metrics().locked_bytes - start.locked_bytes;
    if (locked < held.size() * 4096 || locked > limit) return 10;
    for (const auto& s : held) {  // the secrets created before the limit still work
      if (s.with_bytes([](std::span<const std::byte> b) { return b.size(); }) != 32) return 12;
    }
    held.clear();
    const auto end = securememory::metrics();
    if (end.locked_bytes != start.locked_bytes || end.in_use != start.in_use) return 11;
    (void)factory.create_random(32);  // space is back
    return 0;
  });
  INFO(r.describe());
  CHECK(r.exited);
  CHECK(r.exit_code == 0);
}
