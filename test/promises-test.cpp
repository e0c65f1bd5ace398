// Promises of the headers and docs that had no test that would fail
// (docs/testing.md, "Promises and their tests"): each case below pins one.
#include "support.hpp"

#include "backends/sealed.hpp"
#include "backends/sealed/scratch.hpp"

#include "internal.hpp"

#include <securememory/harden.hpp>
#include <securememory/purge.hpp>

#include <sodium.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <future>
#include <map>
#include <thread>
#include <type_traits>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
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
  test::corrupt_canary(secret);  // the canary's last byte
  CHECK(test::error_of([&] { secret.verify(); }) == securememory::errc::integrity_violation);
  securememory::set_log_sink(previous);
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].first == securememory::LogLevel::critical);
  CHECK(lines[0].second.find("memguard") != std::string::npos);
}

SM_TEST("equal() does not stop at the first differing byte: it reads the last one even when the first differs", "[promise][equal]") {
  // The timing leak of memcmp is its early exit. Put the caller's last byte
  // on a no-access page: a comparison that stops at the first difference
  // never touches it; one that reads every byte faults there.
  const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  for (const bool last_byte_readable : {true, false}) {
    CAPTURE(last_byte_readable);
    const auto c = test::run_in_child([&] {
      // (A parent's secret is closed in a child: this one is the child's.)
      const auto secret = securememory::make_factory("protectedmemory").create_random(64);
      auto* p = static_cast<std::byte*>(mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
      if (p == MAP_FAILED) return 2;
      std::byte* bytes = p + page - 63;  // 63 bytes on the first page, the 64th on the second
      secret.with_bytes([&](std::span<const std::byte> b) { std::copy(b.begin(), b.end(), bytes); });
      bytes[0] ^= std::byte{1};  // differs at once
      if (!last_byte_readable && mprotect(p + page, page, PROT_NONE) != 0) return 3;
      return securememory::equal(secret, std::span<const std::byte>(bytes, 64)) ? 4 : 0;
    });
    INFO(c.describe());
    if (last_byte_readable) {
      CHECK(c.exited);
      CHECK(c.exit_code == 0);  // unequal, and no fault
    } else {
      CHECK(c.signaled);
      CHECK(c.signal == SIGSEGV);
    }
  }
}

namespace {

// Every byte of a secret in the test below has its high bit set: text that
// is pure ASCII holds none of them.
bool ascii(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x80U; });
}

}  // namespace

SM_TEST("Error::what() never holds a secret byte, for every errc the library throws", "[promise][errors]") {
  using securememory::errc;
  using call = securememory::detail::os::call;
  const test::page_cache_limit no_cache(0);
  const test::violation_settings_guard restore;
  std::map<errc, std::string> seen;
  const auto note = [&seen](const std::function<void()>& fn) {
    try {
      fn();
    } catch (const securememory::Error& e) {
      seen[e.code_value()] = e.what();
    }
  };
  auto f = securememory::make_factory("protectedmemory");
  const auto secret_bytes = [] { return std::vector<std::byte>(48, std::byte{0xC3}); };
  auto make = [&] {
    auto bytes = secret_bytes();
    return f.create(bytes);
  };
  note([&] {
    auto s = make();
    s.close();
    s.with_bytes([](std::span<const std::byte>) {});
  });
  note([&] { (void)f.create_random(0); });
  note([&] { (void)securememory::make_factory("\xC3\xC3-no-such-backend"); });
  note([&] {
    securememory::Registry r;
    r.add("\xC3-twice", [] { return std::shared_ptr<securememory::Backend>(); });
    r.add("\xC3-twice", [] { return std::shared_ptr<securememory::Backend>(); });
  });
  note([&] {
    securememory::Registry r;
    r.add("", [] { return std::shared_ptr<securememory::Backend>(); });
  });
  note([&] {
    securememory::Guarantees g;
    g.outside_direct_map = true;
    (void)securememory::make_factory("protectedmemory", g);
  });
  note([&] {
    auto s = make();
    s.with_bytes([&](std::span<const std::byte>) { s.close(); });
  });
  note([&] {
    auto bytes = secret_bytes();
    const test::fault_injector fail(call::mlock, EAGAIN);
    (void)f.create(bytes);
  });
  note([&] {
    auto bytes = secret_bytes();
    const test::fault_injector fail(call::mmap, ENOMEM);
    (void)f.create(bytes);
  });
  note([&] {
    auto bytes = secret_bytes();
    const test::fault_injector fail(call::mprotect, EACCES);  // (madvise is not called where dumps cannot be excluded)
    (void)f.create(bytes);
  });
  note([&] {
    auto s = make();
    const test::fault_injector fail(call::munmap, EINVAL);
    s.close();
  });
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const auto written = secret_bytes();
  REQUIRE(write(fds[1], written.data(), 16) == 16);
  close(fds[1]);
  note([&] { (void)f.create_from_fd(fds[0], 48); });  // the input ends after 16 of 48 bytes
  close(fds[0]);
  note([&] {
    securememory::set_violation_handler([](const securememory::Violation&) {});
    securememory::set_violation_policy(securememory::violation_policy::quarantine);
    auto bytes = secret_bytes();
    auto s = securememory::make_factory("memguard").create(bytes);
    test::corrupt_canary(s);
    s.verify();
  });
  for (const errc expected : {errc::closed, errc::invalid_size, errc::unknown_backend, errc::duplicate_backend,
                              errc::invalid_argument, errc::backend_unavailable, errc::reentrant_close,
                              errc::memlock_limit, errc::out_of_memory, errc::protection_failed,
                              errc::release_failed, errc::read_failed, errc::integrity_violation}) {
    CAPTURE(static_cast<int>(expected));
    REQUIRE(seen.count(expected) == 1);
    const auto& what = seen[expected];
    CHECK(!what.empty());
    CHECK(ascii(what));
  }
}

SM_TEST("a log sink replaced while another thread is inside it finishes that call; the replacement gets the next", "[promise][log]") {
  static std::atomic<bool> old_sink_destroyed{false};
  struct lifetime {
    lifetime() = default;
    lifetime(const lifetime&) = delete;
    lifetime& operator=(const lifetime&) = delete;
    ~lifetime() { old_sink_destroyed = true; }
  };
  old_sink_destroyed = false;
  std::atomic<bool> inside{false};
  std::atomic<bool> release{false};
  std::atomic<bool> alive_to_the_end{false};
  std::atomic<int> old_calls{0};
  std::atomic<int> new_calls{0};
  auto state = std::make_shared<lifetime>();
  const auto before = securememory::set_log_sink([&, state](securememory::LogLevel, std::string_view) {
    ++old_calls;
    inside = true;
    while (!release.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    alive_to_the_end = !old_sink_destroyed.load();
  });
  state.reset();  // the sink holds the only reference now
  std::thread logging([] { securememory::detail::log_error("a message the old sink keeps"); });
  while (!inside.load()) std::this_thread::yield();
  // set_log_sink returns at once: it does not wait for the call in flight.
  auto task = std::async(std::launch::async, [&] {
    return securememory::set_log_sink([&](securememory::LogLevel, std::string_view) { ++new_calls; });
  });
  const bool returned = task.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
  if (!returned) release = true;  // unblock, then fail
  REQUIRE(returned);
  {
    auto old = task.get();  // the old sink, handed back; dropped here
  }
  CHECK_FALSE(old_sink_destroyed.load());  // the thread inside still holds it
  securememory::detail::log_error("a message for the new sink");
  CHECK(new_calls.load() == 1);
  release = true;
  logging.join();
  CHECK(alive_to_the_end.load());
  CHECK(old_sink_destroyed.load());  // gone with the last call
  CHECK(old_calls.load() == 1);
  (void)securememory::set_log_sink(before);
}

SM_TEST("ordinary use changes no process-wide setting; harden_process from 8 threads at once", "[promise][harden]") {
  const auto c = test::run_in_child([] {
    rlimit core_before{};
    getrlimit(RLIMIT_CORE, &core_before);
    const int dumpable_before = prctl(PR_GET_DUMPABLE);
    std::vector<struct sigaction> actions_before(NSIG);
    for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, nullptr, &actions_before[static_cast<std::size_t>(sig)]);
    for (const auto& name : securememory::backend_names()) {
      if (!securememory::backend_available(name)) continue;
      auto f = securememory::make_factory(name);
      auto s = f.create_random(64);
      (void)s.with_bytes([](std::span<const std::byte> b) { return b.size(); });
      s.verify();
      std::array<std::byte, 8> out{};
      (void)s.reader().read(out);
      s.close();
    }
    (void)securememory::purge();
    rlimit core_after{};
    getrlimit(RLIMIT_CORE, &core_after);
    if (core_after.rlim_cur != core_before.rlim_cur || core_after.rlim_max != core_before.rlim_max) return 2;
    if (prctl(PR_GET_DUMPABLE) != dumpable_before) return 3;
    for (int sig = 1; sig < NSIG; ++sig) {
      struct sigaction now {};
      sigaction(sig, nullptr, &now);
      if (now.sa_handler != actions_before[static_cast<std::size_t>(sig)].sa_handler) return 4;
    }
    // Eight threads harden at once: each returns, the process ends hardened.
    // (Without a tracing control, as with -Dposix_only=true, only the core limit.)
    securememory::HardenOptions options;
    options.disable_ptrace = test::tracing_control_here();
    std::atomic<int> done{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&] {
        (void)securememory::harden_process(options);
        ++done;
      });
    }
    for (auto& t : threads) t.join();
    if (done.load() != 8) return 5;
    rlimit core{};
    getrlimit(RLIMIT_CORE, &core);
    if (core.rlim_cur != 0 || core.rlim_max != 0) return 6;
    if (options.disable_ptrace && prctl(PR_GET_DUMPABLE) != 0) return 7;
    return 0;
  });
  INFO(c.describe());
  CHECK(c.exited);
  CHECK(c.exit_code == 0);
}
