// metrics(): what the counters say is what the kernel sees. Users size
// RLIMIT_MEMLOCK from locked_bytes + cached_bytes + internal_locked_bytes,
// so that sum must be the process's VmLck, for every backend, with secrets
// of several sizes, opened by several threads, some closed into the cache.
#include "support.hpp"

#include "proof/support.hpp"

#include <sstream>
#include <thread>
#include <unistd.h>

using securememory::Secret;

namespace {

std::string any_backend() { return GENERATE(from_range(securememory::backend_names())); }

std::uint64_t counted() {
  const auto m = securememory::metrics();
  return m.locked_bytes + m.cached_bytes + m.internal_locked_bytes;
}

long vm_lck() { return test::proc_status_kb("VmLck") * 1024; }

}  // namespace

SM_TEST("metrics account for every byte the library locks (VmLck), on every backend", "[metrics]") {
  const auto name = any_backend();
  CAPTURE(name);
  if (!securememory::backend_available(name)) return;
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  const auto c = securememory::proof::run_child(
      [&] {
        close(fds[0]);
        std::ostringstream report;
        // A fresh process: nothing locked, nothing counted.
        report << vm_lck() << "=" << counted() << " ";
        securememory::set_page_cache_limit(std::size_t{1} << 20U);
        auto factory = securememory::make_factory(name);
        std::vector<Secret> held;
        for (const std::size_t size : {32, 32, 100, 4096, 5000, 70000}) held.push_back(factory.create_random(size));
        report << vm_lck() << "=" << counted() << " ";
        // Three threads open secrets at once (sealed: scratch of their own).
        std::vector<std::thread> readers;
        std::atomic<int> inside{0};
        std::atomic<bool> leave{false};
        std::string during;
        for (int t = 0; t < 3; ++t) {
          readers.emplace_back([&, t] {
            held[static_cast<std::size_t>(t)].with_bytes([&](std::span<const std::byte>) {
              if (inside.fetch_add(1) == 2) {
                std::ostringstream now;
                now << vm_lck() << "=" << counted() << " ";
                during = now.str();
                leave = true;
              }
              while (!leave.load()) std::this_thread::yield();
            });
          });
        }
        for (auto& t : readers) t.join();
        report << during;
        held.erase(held.begin() + 2, held.begin() + 5);  // some go to the page cache
        report << vm_lck() << "=" << counted() << " ";
        held.clear();
        report << vm_lck() << "=" << counted() << " ";
        securememory::set_page_cache_limit(0);  // nothing idle kept: caches and sealed's key go
        report << vm_lck() << "=" << counted();
        const std::string text = report.str();
        (void)!write(fds[1], text.data(), text.size());
        return 0;
      },
      false, 60);
  close(fds[1]);
  std::string text(1024, '\0');
  const auto n = read(fds[0], text.data(), text.size());
  close(fds[0]);
  text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  INFO(c.describe() << "; VmLck=counted at: start, created, 3 readers inside, 3 closed, all closed, cache 0: " << text);
  REQUIRE(c.exit_code == 0);
  std::istringstream in(text);
  int checkpoints = 0;
  for (std::string pair; in >> pair; ++checkpoints) {
    const auto eq = pair.find('=');
    CHECK(pair.substr(0, eq) == pair.substr(eq + 1));
  }
  CHECK(checkpoints == 6);
  WARN(name << ": " << text);
}
