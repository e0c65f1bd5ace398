// The shared access state machine under threads: overlapping readers share
// one opening, close waits for readers, and many readers racing a close
// either see the exact bytes or get errc::closed.
#include "support.hpp"

#include <atomic>
#include <barrier>
#include <chrono>
#include <thread>

using securememory::errc;
using call = securememory::detail::os::call;

SM_TEST("8 threads x 10,000 with_bytes racing a close: exact bytes or closed, nothing else", "[concurrency]") {
  const auto name = GENERATE(from_range(securememory::backend_names()));
  CAPTURE(name);
  constexpr int threads = 8;
  constexpr int calls = 10000;
  const auto expected = test::pattern(48, 3);
  auto source = expected;
  auto secret = securememory::make_factory(name).create(source);
  std::atomic<int> ok{0};
  std::atomic<int> closed{0};
  std::atomic<int> wrong{0};
  std::atomic<int> other_error{0};
  std::atomic<int> started{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      started.fetch_add(1);
      for (int i = 0; i < calls; ++i) {
        // Halfway, wait for the close to start, so that a fast backend
        // cannot finish every call before the closer gets the lock.
        if (i == calls / 2) {
          while (!secret.is_closed()) std::this_thread::yield();
        }
        try {
          const bool same = secret.with_bytes([&](std::span<const std::byte> b) {
            return std::equal(b.begin(), b.end(), expected.begin(), expected.end());
          });
          (same ? ok : wrong).fetch_add(1);
        } catch (const securememory::error& e) {
          (e.code() == errc::closed ? closed : other_error).fetch_add(1);
        }
      }
    });
  }
  std::thread closer([&] {
    while (started.load() < threads) std::this_thread::yield();
    while (ok.load() < threads * calls / 4) std::this_thread::yield();  // close mid-run
    secret.close();
  });
  for (auto& t : pool) t.join();
  closer.join();
  CHECK(wrong.load() == 0);
  CHECK(other_error.load() == 0);
  CHECK(ok.load() + closed.load() == threads * calls);
  CHECK(ok.load() >= threads * calls / 4);
  CHECK(closed.load() > 0);
  CHECK(secret.is_closed());
}

SM_TEST("overlapping readers share one opening: one mprotect to open, one to close", "[concurrency]") {
  constexpr int threads = 4;
  auto secret = securememory::make_factory("protectedmemory").create_random(32);
  test::call_counter counter;
  std::barrier all_inside(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      secret.with_bytes([&](std::span<const std::byte>) { all_inside.arrive_and_wait(); });
    });
  }
  for (auto& t : pool) t.join();
  CHECK(counter.calls(call::mprotect) == 2);
}

SM_TEST("close waits for a reader in flight, then wipes", "[concurrency][close]") {
  auto secret = securememory::make_factory("protectedmemory").create_random(32);
  std::atomic<bool> inside{false};
  std::atomic<bool> release_reader{false};
  std::atomic<bool> closed{false};
  std::atomic<bool> bytes_intact{false};
  std::thread reader([&] {
    secret.with_bytes([&](std::span<const std::byte> b) {
      std::vector<std::byte> first(b.begin(), b.end());
      inside = true;
      while (!release_reader) std::this_thread::yield();
      bytes_intact = !closed && std::equal(b.begin(), b.end(), first.begin());
    });
  });
  while (!inside) std::this_thread::yield();
  std::thread closer([&] {
    secret.close();
    closed = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK_FALSE(closed.load());  // still waiting for the reader
  CHECK(secret.is_closed());   // but already refusing new readers
  CHECK(test::error_of([&] { secret.with_bytes([](std::span<const std::byte>) {}); }) == errc::closed);
  release_reader = true;
  reader.join();
  closer.join();
  CHECK(closed.load());
  CHECK(bytes_intact.load());
}

namespace {
// Blocks the first mprotect until `release` is set: holds the opener inside
// the secret's lock so that a second reader queues for it.
struct gate {
  std::atomic<bool> release{false};
  std::atomic<int> mprotects{0};
  static int hook(call c, void* context) noexcept {
    auto* g = static_cast<gate*>(context);
    if (c != call::mprotect) return 0;
    if (g->mprotects.fetch_add(1) == 0) {
      while (!g->release.load()) std::this_thread::yield();
    }
    return 0;
  }
};
}  // namespace

SM_TEST("a reader queued behind the last one is handed the open pages: 2 mprotects for 2 readers", "[concurrency]") {
  const auto name = GENERATE(from_range(securememory::backend_names()));
  CAPTURE(name);
  auto secret = securememory::make_factory(name).create_random(32);
  gate g;
  securememory::detail::os::set_fault_hook(&gate::hook, &g);
  std::thread first([&] { secret.with_bytes([](std::span<const std::byte>) {}); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (g.mprotects.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  if (g.mprotects.load() == 0) {  // first holds the lock, opening (if this backend opens with mprotect)
    g.release = true;
    first.join();
    securememory::detail::os::set_fault_hook(nullptr, nullptr);
    WARN("skipped for " << name << ": its open makes no mprotect call, so there is nothing to hand off");
    return;
  }
  std::thread second([&] { secret.with_bytes([](std::span<const std::byte>) {}); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // second announces itself and queues
  g.release = true;
  first.join();
  second.join();
  securememory::detail::os::set_fault_hook(nullptr, nullptr);
  CHECK(g.mprotects.load() == 2);  // open once, close once
  CHECK(test::find_mapping(test::address_of(secret))->perms.substr(0, 3) == "---");
}
