// memguard: guard pages, the canary in front of the data, the violation
// handler and both policies, locking that libsodium would have ignored.
#include "support.hpp"

#include <algorithm>

#include "backends/memguard.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <thread>
#include <fstream>
#include <sys/mman.h>
#include <unistd.h>

using securememory::errc;
using securememory::violation_check;
using securememory::violation_policy;
using call = securememory::detail::os::call;

namespace {

// Overwrites the byte just in front of the secret's data (our canary), as a
// stray write from elsewhere in the process would.
void underflow_by_one(const securememory::Secret& s) { test::corrupt_canary(s, 0xff); }


struct recorded {
  int calls = 0;
  securememory::Violation last;
  std::string backend;  // last.backend outlives nothing: copy it
};

securememory::ViolationHandler recorder(recorded& r) {
  return [&r](const securememory::Violation& v) {
    ++r.calls;
    r.last = v;
    r.backend = std::string(v.backend);
  };
}

// Mappings excluded from dumps: secrets' pages (sanitizer runtimes map and
// unmap other memory at any time, so all mappings would be a noisy count).
std::size_t dontdump_mapping_count() {
  std::ifstream in("/proc/self/smaps");
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmFlags:", 0) == 0 && line.find(" dd") != std::string::npos) ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("memguard is registered and available", "[memguard]") {
  CHECK(securememory::backend_available("memguard"));
  CHECK(securememory::make_factory("memguard").backend() == "memguard");
}

SM_TEST("memguard: one byte past the end of the data faults on the guard page", "[memguard][death]") {
  for (const std::size_t size : {std::size_t{1}, std::size_t{32}, std::size_t{4096}, std::size_t{5000}}) {
    CAPTURE(size);
    const auto past_end = test::run_in_child([size] {
      auto b = securememory::detail::make_memguard();
      auto r = b->allocate(size);  // read-write: the library's write window
      r.data[size - 1] = std::byte{1};
      r.data[size] = std::byte{1};  // first byte of the trailing guard page
      return 0;
    });
    INFO(past_end.describe());
    CHECK(past_end.signaled);
    CHECK(past_end.signal == SIGSEGV);
  }
  const auto control = test::run_in_child([] {
    auto b = securememory::detail::make_memguard();
    auto r = b->allocate(32);
    for (std::size_t i = 0; i < 32; ++i) r.data[i] = std::byte{1};
    b->release(r);
    return 0;
  });
  CHECK(control.exited);
  CHECK(control.exit_code == 0);
}

SM_TEST("memguard: the data pages are Locked and excluded from dumps", "[memguard][smaps]") {
  auto secret = securememory::make_factory("memguard").create_random(100);
  const auto* addr = test::address_of(secret);
  const auto m = test::find_mapping(addr);
  REQUIRE(m);
  CHECK(m->perms.substr(0, 3) == "---");
  // Where lib/os/ has no dump exclusion (posix_only) a Linux libsodium still
  // applies MADV_DONTDUMP by itself: only its presence is checked.
  if (test::dump_exclusion_here()) CHECK(m->has_flag("dd"));
  CHECK(m->has_flag("wf") == test::wipe_on_fork_here());
  CHECK(m->locked_kb * 1024 == (m->end - m->start));
  CHECK(m->locked_kb > 0);
  // Right-aligned: the data ends exactly at the end of the mapping.
  CHECK(reinterpret_cast<std::uintptr_t>(addr) + 100 == m->end);
  // The next page is the guard: mapped, no access, not locked.
  const auto guard = test::find_mapping(reinterpret_cast<const void*>(m->end));
  REQUIRE(guard);
  CHECK(guard->perms.substr(0, 3) == "---");
  CHECK(guard->locked_kb == 0);
}

SM_TEST("memguard: a refused mlock is memlock_limit and frees the allocation", "[memguard][faults]") {
  auto factory = securememory::make_factory("memguard");
  auto source = test::pattern(64);
  const auto expected = source;
  const auto maps_before = dontdump_mapping_count();
  for (const auto& [target, err, expected_errc] :
       {std::tuple{call::mlock, EPERM, errc::memlock_limit}, std::tuple{call::madvise, EINVAL, errc::protection_failed},
        std::tuple{call::mprotect, ENOMEM, errc::protection_failed}}) {
    CAPTURE(securememory::detail::os::call_name(target));
    if (target == call::madvise && !test::dump_exclusion_here()) continue;  // not made in this build
    test::fault_injector fault(target, err);
    CHECK(test::error_of([&] { (void)factory.create(source); }) == expected_errc);
    CHECK(fault.injected() == 1);
    CHECK(source == expected);
  }
  CHECK(dontdump_mapping_count() == maps_before);  // sodium_free'd: no mapping left behind
}

SM_TEST("memguard: a secret that cannot be made writable at close is unmapped unwiped, never left unlocked", "[memguard][faults]") {
  auto secret = securememory::make_factory("memguard").create_random(100);
  const auto* addr = test::address_of(secret);
  const long locked_before = test::proc_status_kb("VmLck");
  // Every range unmapped through lib/os during the close. (The address
  // itself may be mapped again at once by another allocation, e.g. the
  // TSan runtime's, so "nothing is mapped there now" would be flaky.)
  struct unmapped_ranges {
    std::vector<std::pair<std::uintptr_t, std::uintptr_t>> ranges;
  } seen;
  securememory::detail::os::set_unmap_observer(
      [](void* a, std::size_t length, void* context) noexcept {
        auto& r = static_cast<unmapped_ranges*>(context)->ranges;
        if (r.size() < r.capacity()) r.emplace_back(reinterpret_cast<std::uintptr_t>(a), reinterpret_cast<std::uintptr_t>(a) + length);
      },
      &seen);
  seen.ranges.reserve(16);  // the observer must not allocate
  {
    // close(): mprotect 0 opens for the canary check, mprotect 1 would make
    // the pages writable for the wipe.
    test::fault_injector fault(call::mprotect, ENOMEM, 1);
    CHECK(test::error_of([&] { secret.close(); }) == errc::protection_failed);
    CHECK(fault.injected() == 1);
    CHECK(fault.calls(call::munlock) == 0);  // the unwiped pages were never unlocked while mapped
  }
  securememory::detail::os::set_unmap_observer(nullptr, nullptr);
  CHECK(secret.is_closed());
  // The block is gone: no unwiped, unlocked (swappable) copy stays mapped.
  const auto at = reinterpret_cast<std::uintptr_t>(addr);
  const bool covered = std::any_of(seen.ranges.begin(), seen.ranges.end(),
                                   [&](const auto& r) { return r.first <= at && at + 100 <= r.second; });
  CHECK(covered);
  const auto now = test::find_mapping(addr);
  CHECK((!now || !now->has_flag("lo")));  // whatever is mapped there now is not the locked block
  CHECK(test::proc_status_kb("VmLck") < locked_before);
}

TEST_CASE("violation settings: set returns the previous; null restores the default", "[violation]") {
  const test::violation_settings_guard restore;
  recorded r;
  auto previous = securememory::set_violation_handler(recorder(r));
  CHECK_FALSE(previous);  // the default is represented by an empty handler
  auto mine = securememory::set_violation_handler(nullptr);
  CHECK(static_cast<bool>(mine));
  CHECK(securememory::set_violation_policy(violation_policy::quarantine) == violation_policy::abort);
  CHECK(securememory::set_violation_policy(violation_policy::abort) == violation_policy::quarantine);
}

TEST_CASE("underflow into the canary, policy abort: handler once, then SIGABRT", "[violation][death]") {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const auto child = test::run_in_child([&] {
    close(fds[0]);
    auto secret = securememory::make_factory("memguard").create_random(32);
    securememory::set_violation_handler([&](const securememory::Violation& v) {
      const std::string report = std::string(v.backend) + " " + std::to_string(v.size) + " " +
                                 std::string(securememory::to_string(v.check)) + " " +
                                 std::string(securememory::to_string(v.kind)) + "\n";
      (void)!write(fds[1], report.data(), report.size());
    });
    underflow_by_one(secret);
    secret.close();
    return 0;  // not reached: the policy aborts
  });
  close(fds[1]);
  std::string report(256, '\0');
  const auto n = read(fds[0], report.data(), report.size());
  close(fds[0]);
  report.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  INFO(child.describe());
  CHECK(child.signaled);
  CHECK(child.signal == SIGABRT);
  CHECK(report == "memguard 32 on_close canary_overwritten\n");  // exactly one report
}

TEST_CASE("underflow into the canary, policy quarantine: close throws, process goes on", "[violation]") {
  const test::violation_settings_guard restore;
  recorded r;
  securememory::set_violation_handler(recorder(r));
  securememory::set_violation_policy(violation_policy::quarantine);
  const auto before = securememory::metrics();
  auto secret = securememory::make_factory("memguard").create_random(32);
  const auto* addr = test::address_of(secret);
  underflow_by_one(secret);
  CHECK(test::error_of([&] { secret.close(); }) == errc::integrity_violation);
  CHECK(r.calls == 1);
  CHECK(r.backend == "memguard");
  CHECK(r.last.size == 32);
  CHECK(r.last.check == violation_check::on_close);
  CHECK(r.last.kind == securememory::violation_kind::canary_overwritten);
  CHECK(secret.is_closed());
  secret.close();  // no-op now; the handler is not called again
  CHECK(r.calls == 1);
  const auto after = securememory::metrics();
  CHECK(after.violations == before.violations + 1);
  CHECK(after.in_use == before.in_use);
  CHECK(after.locked_bytes == before.locked_bytes);  // wiped and unlocked
  // Quarantined: still mapped, no-access, and wiped.
  const auto m = test::find_mapping(addr);
  REQUIRE(m);
  CHECK(m->perms.substr(0, 3) == "---");
  auto* page = reinterpret_cast<std::byte*>(reinterpret_cast<std::uintptr_t>(addr) & ~std::uintptr_t{4095});
  REQUIRE(mprotect(page, 4096, PROT_READ) == 0);
  bool zero = true;
  for (int i = -16; i < 32; ++i) zero = zero && addr[i] == std::byte{0};
  REQUIRE(mprotect(page, 4096, PROT_NONE) == 0);
  CHECK(zero);
}

TEST_CASE("the canary is checked on open and by verify()", "[violation]") {
  const test::violation_settings_guard restore;
  recorded r;
  securememory::set_violation_handler(recorder(r));
  securememory::set_violation_policy(violation_policy::quarantine);
  auto factory = securememory::make_factory("memguard");

  auto intact = factory.create_random(16);
  intact.verify();  // returns normally
  CHECK(r.calls == 0);

  auto opened = factory.create_random(16);
  underflow_by_one(opened);
  bool called = false;
  CHECK(test::error_of([&] { opened.with_bytes([&](std::span<const std::byte>) { called = true; }); }) ==
        errc::integrity_violation);
  CHECK_FALSE(called);
  CHECK(r.calls == 1);
  CHECK(r.last.check == violation_check::on_open);
  CHECK(test::error_of([&] { opened.with_bytes([](std::span<const std::byte>) {}); }) == errc::closed);

  auto verified = factory.create_random(16);
  underflow_by_one(verified);
  CHECK(test::error_of([&] { verified.verify(); }) == errc::integrity_violation);
  CHECK(r.calls == 2);
  CHECK(r.last.check == violation_check::on_verify);
  CHECK(test::error_of([&] { verified.verify(); }) == errc::closed);
  CHECK(r.calls == 2);  // at most once per secret
}

TEST_CASE("a handler that throws does not stop the policy", "[violation]") {
  const test::violation_settings_guard restore;
  securememory::set_violation_handler([](const securememory::Violation&) { throw std::runtime_error("handler"); });
  securememory::set_violation_policy(violation_policy::quarantine);
  auto secret = securememory::make_factory("memguard").create_random(16);
  underflow_by_one(secret);
  CHECK(test::error_of([&] { secret.verify(); }) == errc::integrity_violation);
  CHECK(secret.is_closed());
}

TEST_CASE("a violation found while a reader is inside is quarantined when the reader leaves", "[violation]") {
  const test::violation_settings_guard restore;
  recorded r;
  securememory::set_violation_handler(recorder(r));
  securememory::set_violation_policy(violation_policy::quarantine);
  auto secret = securememory::make_factory("memguard").create(*std::make_unique<std::vector<std::byte>>(16, std::byte{7}));
  const auto in_use = securememory::metrics().in_use;
  bool still_readable = false;
  std::optional<errc> found;
  secret.with_bytes([&](std::span<const std::byte> b) {
    REQUIRE(test::flip_byte_before(b.data(), PROT_READ));
    found = test::error_of([&] { secret.verify(); });
    still_readable = b[15] == std::byte{7};  // not wiped under this reader's feet
    CHECK(securememory::metrics().in_use == in_use);
  });
  CHECK(found == errc::integrity_violation);
  CHECK(still_readable);
  CHECK(r.calls == 1);
  CHECK(secret.is_closed());
  CHECK(securememory::metrics().in_use == in_use - 1);  // quarantined by the last reader
}

TEST_CASE("a close() waiting for a reader wakes when that reader runs the deferred quarantine", "[violation][concurrency]") {
  // In a child with a timeout: before the fix, close() slept for ever.
  const auto c = securememory::proof::run_child(
      [] {
        securememory::set_violation_handler([](const securememory::Violation&) {});
        securememory::set_violation_policy(violation_policy::quarantine);
        auto secret = securememory::make_factory("memguard").create_random(16);
        std::atomic<bool> corrupted{false};
        std::atomic<bool> release{false};
        std::thread reader([&] {
          secret.with_bytes([&](std::span<const std::byte> b) {
            if (!test::flip_byte_before(b.data(), PROT_READ)) std::abort();
            corrupted = true;
            while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
          });
        });
        while (!corrupted.load()) std::this_thread::yield();
        // Found by another thread while the reader is inside: quarantine deferred.
        if (test::error_of([&] { secret.verify(); }) != errc::integrity_violation) return 2;
        std::thread releaser([&] {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          release = true;
        });
        secret.close();  // waits for the reader, which quarantines on leaving
        releaser.join();
        reader.join();
        return secret.is_closed() ? 0 : 3;
      },
      false, 10);
  INFO(c.describe());
  CHECK_FALSE(c.timed_out);
  CHECK(c.exited);
  CHECK(c.exit_code == 0);
}

TEST_CASE("an underflow into libsodium's own canary goes through the handler and the policy, not a SIGSEGV in sodium_free", "[violation][death]") {
  // 20 bytes before the data: past our 16-byte canary, inside libsodium's.
  auto underflow_20 = [](const securememory::Secret& s) {
    auto* data = const_cast<std::byte*>(test::address_of(s));
    auto* page = reinterpret_cast<std::byte*>(reinterpret_cast<std::uintptr_t>(data - 20) & ~std::uintptr_t{4095});
    REQUIRE(mprotect(page, 8192, PROT_READ | PROT_WRITE) == 0);
    data[-20] ^= std::byte{0x40};
    REQUIRE(mprotect(page, 8192, PROT_NONE) == 0);
  };
  for (const std::size_t size : {std::size_t{32}, std::size_t{4080}}) {  // libsodium's canary on the data's page, or the page before
    CAPTURE(size);
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    const auto child = test::run_in_child([&] {
      close(fds[0]);
      auto secret = securememory::make_factory("memguard").create_random(size);
      securememory::set_violation_handler([&](const securememory::Violation& v) {
        const std::string report = std::string(securememory::to_string(v.check)) + "\n";
        (void)!write(fds[1], report.data(), report.size());
      });
      underflow_20(secret);
      secret.close();
      return 0;  // not reached: the policy aborts
    });
    close(fds[1]);
    std::string report(64, '\0');
    const auto n = read(fds[0], report.data(), report.size());
    close(fds[0]);
    report.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    INFO(child.describe());
    CHECK(child.signaled);
    CHECK(child.signal == SIGABRT);  // before the fix: SIGSEGV inside sodium_free, no handler
    CHECK(report == "on_close\n");
  }
  // Quarantine: verify() sees it, and the process goes on.
  const test::violation_settings_guard restore;
  securememory::set_violation_handler([](const securememory::Violation&) {});
  securememory::set_violation_policy(violation_policy::quarantine);
  auto secret = securememory::make_factory("memguard").create_random(32);
  underflow_20(secret);
  CHECK(test::error_of([&] { secret.verify(); }) == errc::integrity_violation);
  CHECK(secret.is_closed());
}
