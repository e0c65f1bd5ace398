// What each secret costs, measured on the kernel, and the ceilings those
// costs imply (README's "Choosing a backend", docs/backends.md): mappings
// (vm.max_map_count), pages mapped, pages locked (RLIMIT_MEMLOCK). Each
// figure the docs give is asserted exactly, in a forked child so that the
// test process's own mappings and limits stay as they were.
#include "support.hpp"

#include "proof/support.hpp"

#include <fstream>
#include <string>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include <vector>

using securememory::errc;
using securememory::Secret;

namespace {

long mapping_count() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  long n = 0;
  while (std::getline(maps, line)) ++n;
  return n;
}

const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));

// Runs body in a forked child, which reports a line of numbers; returns it.
std::string child_report(const std::function<std::string()>& body) {
  securememory::proof::child_report report;
  const auto c = securememory::proof::run_child(
      [&] {
        const std::string text = body();
        return securememory::proof::write_all(report.report_fd(), text.data(), text.size()) ? 0 : 2;
      },
      false, 120);
  INFO(c.describe());
  REQUIRE(c.exit_code == 0);
  return report.text();
}

std::vector<std::byte> high_bytes(std::size_t n) { return std::vector<std::byte>(n, std::byte{0xA5}); }

// child_report(), with the page cache off and one secret of `backend`
// already made (the backend's and the generator's own set-up), so that
// body counts only what each further secret costs.
std::string after_set_up(const char* backend,
                         const std::function<std::string(securememory::SecretFactory&, std::vector<Secret>&)>& body) {
  return child_report([&] {
    securememory::set_page_cache_limit(0);
    auto factory = securememory::make_factory(backend);
    std::vector<Secret> held;
    held.reserve(1024);
    held.push_back(factory.create_random(32));
    return body(factory, held);
  });
}

}  // namespace

SM_TEST("per secret: protectedmemory 1 mapping and 1 page; memguard 4 mappings and 3 pages more than it locks", "[costs][map-count]") {
  SM_SKIP_UNDER_SANITIZER("the sanitizer runtimes map and unmap memory of their own at any time");
  SM_SKIP_UNLESS(test::map_count_here(), "the mappings are read from /proc on Linux only");
  constexpr long n = 64;
  for (const char* name : {"protectedmemory", "memguard"}) {
    CAPTURE(name);
    const auto text = after_set_up(name, [&](securememory::SecretFactory& factory, std::vector<Secret>& held) {
      const long maps = mapping_count();
      const long vm = test::proc_status_kb("VmSize");
      const long locked = test::proc_status_kb("VmLck");
      for (long i = 0; i < n; ++i) held.push_back(factory.create_random(32));
      return std::to_string(mapping_count() - maps) + " " + std::to_string((test::proc_status_kb("VmSize") - vm) * 1024) +
             " " + std::to_string((test::proc_status_kb("VmLck") - locked) * 1024);
    });
    long maps = 0;
    long mapped = 0;
    long locked = 0;
    REQUIRE(std::sscanf(text.c_str(), "%ld %ld %ld", &maps, &mapped, &locked) == 3);
    const long p = static_cast<long>(page);
    if (std::string(name) == "protectedmemory") {
      CHECK(maps == n);          // 1 mapping per secret
      CHECK(mapped == n * p);    // ceil(32/page) = 1 page mapped
      CHECK(locked == n * p);    // and locked
    } else {
      CHECK(maps == 4 * n);      // 4 mappings per secret
      CHECK(mapped == 4 * n * p);  // ceil((32+32)/page) = 1 page locked, 3 more mapped
      CHECK(locked == n * p);
    }
  }
}

SM_TEST("vm.max_map_count bounds protectedmemory at one secret per free mapping, memguard at one per four", "[costs][map-count][limits]") {
  SM_SKIP_UNDER_SANITIZER("the sanitizer runtimes need mappings of their own at any time");
  SM_SKIP_UNLESS(test::map_count_here(), "the map count is read from /proc on Linux only");
  constexpr int free_mappings = 400;
  for (const char* name : {"protectedmemory", "memguard"}) {
    CAPTURE(name);
    const auto text = after_set_up(name, [&](securememory::SecretFactory& factory, std::vector<Secret>& held) {
      // Use up the map count with one-page mappings that cannot merge
      // (alternating protections), then give back exactly free_mappings.
      std::vector<void*> fillers;
      fillers.reserve(70000);
      for (int i = 0;; ++i) {
        void* p = mmap(nullptr, page, (i % 2) != 0 ? PROT_READ : PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) break;
        fillers.push_back(p);
      }
      for (int i = 0; i < free_mappings; ++i) {
        munmap(fillers.back(), page);
        fillers.pop_back();
      }
      std::optional<test::caught_error> failure;
      std::size_t made = 0;
      while (!failure && made < 2 * free_mappings) {
        failure = test::caught([&] { held.push_back(factory.create_random(32)); });
        if (!failure) ++made;
      }
      return std::to_string(made) + " " + (failure ? std::to_string(static_cast<int>(failure->code)) : "none");
    });
    unsigned long made = 0;
    int code = -1;
    REQUIRE(std::sscanf(text.c_str(), "%lu %d", &made, &code) == 2);
    CHECK(code == static_cast<int>(errc::out_of_memory));
    if (std::string(name) == "protectedmemory") {
      CHECK(made == free_mappings);
    } else {
      // 65,530 (the default vm.max_map_count) / 4: memguard stops near 16,000 live secrets.
      CHECK(made == free_mappings / 4);
    }
  }
}

SM_TEST("under a 64 KiB RLIMIT_MEMLOCK exactly 16 one-page secrets fit; the generator's page, once used, takes one", "[costs][memlock][limits]") {
  for (const auto& name : securememory::backend_names()) {
    if (name == "sealed" || !securememory::backend_available(name)) continue;  // sealed locks nothing per secret
    CAPTURE(name);
    for (const bool generator : {false, true}) {
      CAPTURE(generator);
      const auto text = child_report([&] {
        if (!test::drop_cap_ipc_lock()) return std::string("no-capability");
        const rlimit lim{64 * 1024, 64 * 1024};
        if (setrlimit(RLIMIT_MEMLOCK, &lim) != 0) return std::string("no-setrlimit");
        securememory::set_page_cache_limit(0);
        auto factory = securememory::make_factory(name);
        std::vector<Secret> held;
        std::optional<test::caught_error> failure;
        while (!failure && held.size() < 64) {
          failure = test::caught([&] {
            if (generator) {
              held.push_back(factory.create_random(32));
            } else {
              auto bytes = high_bytes(32);
              held.push_back(factory.create(bytes));
            }
          });
        }
        return std::to_string(held.size()) + " " + (failure ? std::to_string(static_cast<int>(failure->code)) : "none");
      });
      INFO(text);
      unsigned long made = 0;
      int code = -1;
      REQUIRE(std::sscanf(text.c_str(), "%lu %d", &made, &code) == 2);
      CHECK(code == static_cast<int>(errc::memlock_limit));
      CHECK(made == (generator ? 15U : 16U));
    }
  }
}
