// The kernel's limits, for real, in forked children: RLIMIT_MEMLOCK without
// CAP_IPC_LOCK, and vm.max_map_count. A request that cannot be locked fails
// before its memory is touched; a refused lock empties the page cache and
// tries again on every backend; an exhausted map count is named as such;
// sealed works in a many-threaded process under a container's 64 KiB limit
// with a bounded amount of locked memory.
#include "support.hpp"

#include "backends/sealed.hpp"
#include "proof/support.hpp"

#include <atomic>
#include <chrono>
#include <fstream>
#include <sstream>
#include <sys/mman.h>
#include <sys/resource.h>
#include <thread>
#include <unistd.h>

using securememory::errc;
using securememory::Secret;

namespace {

std::string any_backend() { return GENERATE(from_range(securememory::backend_names())); }

// In a child: drops CAP_IPC_LOCK and sets RLIMIT_MEMLOCK (soft and hard).
bool limit_memlock(std::size_t bytes) {
  if (!test::drop_cap_ipc_lock()) return false;
  const rlimit lim{bytes, bytes};
  return setrlimit(RLIMIT_MEMLOCK, &lim) == 0;
}

long vm_lck_bytes() { return test::proc_status_kb("VmLck") * 1024; }

// Resets the peak resident set size (VmHWM) to the current one.
bool reset_peak_rss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  return static_cast<bool>(out);
}

constexpr int child_timeout = 60;

}  // namespace

SM_TEST("a request over the memlock limit fails before its memory is touched", "[limits][memlock]") {
  const auto name = any_backend();
  CAPTURE(name);
  if (!securememory::backend_available(name)) return;
  // sodium_malloc writes the block before it can be locked: only the mlock2
  // (MLOCK_ONFAULT) probe refuses it untouched.
  if (name == "memguard") SM_SKIP_UNLESS(test::lock_probe_here(), "memguard's probe before sodium_malloc needs mlock2");
  const auto c = securememory::proof::run_child(
      [&] {
        if (!limit_memlock(std::size_t{8} << 20U)) return 2;
        auto factory = securememory::make_factory(name);
        (void)factory.create_random(32);  // the backend's own set-up (sealed's key) happens before the baseline
        // A first refusal warms the error path (the unwinder reads its tables
        // in, which counts as resident memory) before the baseline.
        if (test::error_of([&] { (void)factory.create_random(std::size_t{16} << 20U); }) != errc::memlock_limit) return 7;
        if (!reset_peak_rss()) return 3;
        const long peak_before = test::proc_status_kb("VmHWM");
        const auto t0 = std::chrono::steady_clock::now();
        const auto e = test::error_of([&] { (void)factory.create_random(securememory::max_secret_size); });
        const auto elapsed = std::chrono::steady_clock::now() - t0;
        const long growth_kb = test::proc_status_kb("VmHWM") - peak_before;
        if (e != errc::memlock_limit) return 4;
        if (growth_kb >= 1024) return 10 + static_cast<int>(std::min<long>(growth_kb / 1024, 80));  // MiB touched (4 GiB before the fix)
        if (elapsed > std::chrono::seconds(1)) return 6;  // 5-12 s before the fix
        return 0;
      },
      false, child_timeout);
  INFO(c.describe() << " (2, 3, 7: setup, 4: not memlock_limit, 1x: x MiB touched, 6: slow)");
  CHECK(c.exited);
  CHECK(c.exit_code == 0);
}

SM_TEST("a refused lock empties the page cache and tries again, on every backend", "[limits][memlock][page-cache]") {
  const auto name = any_backend();
  CAPTURE(name);
  if (!securememory::backend_available(name)) return;
  const auto c = securememory::proof::run_child(
      [&] {
        if (!test::drop_cap_ipc_lock()) return 2;
        securememory::set_page_cache_limit(std::size_t{1} << 20U);
        auto factory = securememory::make_factory(name);
        (void)factory.create_random(32);  // the backend's own set-up before the limit
        {
          // 1 MiB of closed protectedmemory pages in the cache, still locked.
          auto filler = securememory::make_factory("protectedmemory");
          std::vector<Secret> held;
          for (int i = 0; i < 256; ++i) held.push_back(filler.create_random(4096));
        }
        if (securememory::metrics().cached_bytes != std::size_t{1} << 20U) return 3;
        // The limit just above what is locked: 256 KiB more do not fit
        // unless the cache lets go of its pages.
        const auto limit = static_cast<rlim_t>(vm_lck_bytes() + 128 * 1024);
        const rlimit lim{limit, limit};
        if (setrlimit(RLIMIT_MEMLOCK, &lim) != 0) return 4;
        auto big = factory.create_random(256 * 1024);
        const bool ok = big.with_bytes([](std::span<const std::byte> b) { return b.size() == 256 * 1024; });
        if (!ok) return 5;
        return securememory::metrics().cached_bytes < std::size_t{1} << 20U ? 0 : 6;
      },
      false, child_timeout);
  INFO(c.describe() << " (100 + errc: the creation failed)");
  CHECK(c.exited);
  CHECK(c.exit_code == 0);
}

SM_TEST("memlock_limit errors name the limit, the cache retry and what to do", "[limits][memlock]") {
  const auto name = any_backend();
  CAPTURE(name);
  if (!securememory::backend_available(name)) return;
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const auto c = securememory::proof::run_child(
      [&] {
        close(fds[0]);
        if (!limit_memlock(64 * 1024)) return 2;
        auto factory = securememory::make_factory(name);
        const auto e = test::caught([&] { (void)factory.create_random(1U << 20U); });
        if (!e) return 3;
        const std::string report = std::to_string(static_cast<int>(e->code)) + " " + e->what;
        (void)!write(fds[1], report.data(), report.size());
        return 0;
      },
      false, child_timeout);
  close(fds[1]);
  std::string report(4096, '\0');
  const auto n = read(fds[0], report.data(), report.size());
  close(fds[0]);
  report.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  INFO(c.describe() << ": " << report);
  REQUIRE(c.exit_code == 0);
  CHECK(report.rfind(std::to_string(static_cast<int>(errc::memlock_limit)) + " ", 0) == 0);
  CHECK(report.find("RLIMIT_MEMLOCK is 65536 bytes") != std::string::npos);
  CHECK(report.find("page caches were already emptied") != std::string::npos);
  CHECK(report.find(securememory::detail::os::lock_privilege_name()) != std::string::npos);  // CAP_IPC_LOCK on Linux
}

SM_TEST("at vm.max_map_count, every backend that needs a mapping says so: out_of_memory naming the map count", "[limits][map-count]") {
  SM_SKIP_UNDER_SANITIZER("the sanitizer runtimes need mappings of their own at any time");
  SM_SKIP_UNLESS(test::map_count_here(), "the map count is read from /proc on Linux only");
  const auto name = any_backend();
  CAPTURE(name);
  if (!securememory::backend_available(name)) return;
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const auto c = securememory::proof::run_child(
      [&] {
        close(fds[0]);
        auto factory = securememory::make_factory(name);
        std::vector<Secret> held;
        held.push_back(factory.create_random(32));  // the backend's own set-up, before the count runs out
        // Use up the map count: one-page mappings that cannot merge
        // (alternating protections).
        const long page = sysconf(_SC_PAGESIZE);
        std::vector<void*> fillers;
        fillers.reserve(70000);
        for (int i = 0;; ++i) {
          void* p = mmap(nullptr, static_cast<std::size_t>(page), (i % 2) != 0 ? PROT_READ : PROT_NONE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
          if (p == MAP_FAILED) break;
          fillers.push_back(p);
        }
        // Room for a few mappings, not for hundreds of secrets.
        for (int i = 0; i < 6 && !fillers.empty(); ++i) {
          munmap(fillers.back(), static_cast<std::size_t>(page));
          fillers.pop_back();
        }
        std::optional<test::caught_error> failure;
        for (int i = 0; i < 2000 && !failure; ++i) {
          failure = test::caught([&] { held.push_back(factory.create_random(32)); });
        }
        const std::string report = failure ? std::to_string(static_cast<int>(failure->code)) + " " + failure->what
                                           : "none " + std::to_string(held.size());
        (void)!write(fds[1], report.data(), report.size());
        return 0;
      },
      false, child_timeout);
  close(fds[1]);
  std::string report(4096, '\0');
  const auto n = read(fds[0], report.data(), report.size());
  close(fds[0]);
  report.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  INFO(c.describe() << ": " << report);
  REQUIRE(c.exit_code == 0);
  if (name == "sealed") {
    // Secrets share their slot blocks: 2,000 more need no new mapping.
    CHECK(report.rfind("none", 0) == 0);
    return;
  }
  CHECK(report.rfind(std::to_string(static_cast<int>(errc::out_of_memory)) + " ", 0) == 0);
  CHECK(report.find("vm.max_map_count") != std::string::npos);
  CHECK(report.find("the process has") != std::string::npos);
  CHECK(report.find("mapping") != std::string::npos);
  CHECK(report.find("RLIMIT_MEMLOCK") == std::string::npos);  // not the memlock limit
}

SM_TEST("sealed under a 64 KiB memlock limit: 64 threads read and create secrets at once", "[limits][sealed][concurrency]") {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const auto c = securememory::proof::run_child(
      [&] {
        close(fds[0]);
        if (!limit_memlock(64 * 1024)) return 2;
        auto factory = securememory::make_factory("sealed");
        std::vector<Secret> secrets;
        for (int i = 0; i < 100; ++i) secrets.push_back(factory.create_random(32));
        std::atomic<int> failures{0};
        std::atomic<int> wrong{0};
        std::atomic<int> ready{0};
        std::vector<std::thread> threads;
        for (int t = 0; t < 64; ++t) {
          threads.emplace_back([&] {
            ready.fetch_add(1);
            while (ready.load() < 64) std::this_thread::yield();  // all at once
            try {
              for (int round = 0; round < 20; ++round) {
                for (const auto& s : secrets) {
                  if (s.with_bytes([](std::span<const std::byte> b) { return b.size(); }) != 32) wrong.fetch_add(1);
                }
                auto own = factory.create_random(32);
                // Nested: one open inside another.
                own.with_bytes([&](std::span<const std::byte>) {
                  secrets[static_cast<std::size_t>(round)].with_bytes([](std::span<const std::byte>) {});
                });
              }
            } catch (const securememory::error&) {
              failures.fetch_add(1);
            }
          });
        }
        for (auto& t : threads) t.join();
        const auto usage = securememory::detail::sealed_stats();
        const std::string report = std::to_string(failures.load()) + " " + std::to_string(wrong.load()) + " " +
                                   std::to_string(usage.scratch_slabs) + " " + std::to_string(usage.scratch_slab_count) +
                                   " " + std::to_string(securememory::detail::sealed_locked_bytes()) + " " +
                                   std::to_string(vm_lck_bytes());
        (void)!write(fds[1], report.data(), report.size());
        return 0;
      },
      false, child_timeout);
  close(fds[1]);
  std::string report(256, '\0');
  const auto n = read(fds[0], report.data(), report.size());
  close(fds[0]);
  report.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  INFO(c.describe() << ": failures wrong slabs slab_count sealed_locked VmLck = " << report);
  REQUIRE(c.exited);
  REQUIRE(c.exit_code == 0);
  int failures = -1;
  int wrong = -1;
  std::size_t slabs = 0;
  std::size_t slab_count = 0;
  std::size_t sealed_locked = 0;
  long locked = -1;
  std::istringstream(report) >> failures >> wrong >> slabs >> slab_count >> sealed_locked >> locked;
  CHECK(failures == 0);  // every thread could read (before the fix: every first access of a thread failed)
  CHECK(wrong == 0);
  CHECK(slabs >= 1);
  CHECK(slabs <= slab_count);  // bounded whatever the number of threads
  CHECK(locked <= 64 * 1024);
  CHECK(sealed_locked <= static_cast<std::size_t>(locked));
}
