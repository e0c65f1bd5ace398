// Stress: 4 threads for a bounded time (SECUREMEMORY_STRESS_SECONDS, default
// 3) doing random mixes of create, access, read and close on every backend,
// on shared and private secrets, while one thread keeps closing and
// replacing the shared secrets the others are reading. Every result is
// checked: an access or a read either sees exactly the stored bytes or
// fails with errc::closed (only possible for shared secrets, which another
// thread closes); any other outcome fails the test. Secrets also move
// between threads through a hand-off queue. Runs under TSan in CI.
#include "support.hpp"

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>

using securememory::errc;
using securememory::Secret;

namespace {

struct stored {
  Secret secret;
  std::vector<std::byte> expected;
};

// A shared secret as one published object: readers copy the pointer under
// the slot's mutex and use the Secret without it; the closer closes it
// (thread-safe) and publishes a new one. Nobody moves or destroys a Secret
// another thread is using: the last pointer's owner destroys it.
struct shared_slot {
  std::mutex mutex;
  std::shared_ptr<stored> current;

  std::shared_ptr<stored> get() {
    const std::lock_guard lock(mutex);
    return current;
  }
  std::shared_ptr<stored> replace(std::shared_ptr<stored> next) {
    const std::lock_guard lock(mutex);
    std::swap(current, next);
    return next;
  }
};

struct tallies {
  std::atomic<long> accesses{0};
  std::atomic<long> reads{0};
  std::atomic<long> closed_seen{0};  // an access or read refused because another thread closed the secret
  std::atomic<long> creates{0};
  std::atomic<long> closes{0};
  std::atomic<long> handoffs{0};
  std::atomic<long> wrong_bytes{0};
  std::atomic<long> wrong_errors{0};
};

double stress_seconds() {
  const char* env = std::getenv("SECUREMEMORY_STRESS_SECONDS");  // NOLINT(concurrency-mt-unsafe): read before threads start
  const double s = env != nullptr ? std::atof(env) : 3.0;
  return s > 0 ? s : 3.0;
}

class stress {
 public:
  explicit stress(std::vector<std::string> backends) : backends_(std::move(backends)) {
    auto rng = rng_for(1000);
    for (auto& slot : shared_) slot.current = make(rng);
  }

  void run(double seconds) {
    deadline_ = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                         std::chrono::duration<double>(seconds));
    std::barrier start(4);
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t) {
      threads.emplace_back([this, t, &start] {
        start.arrive_and_wait();
        worker(t);
      });
    }
    threads.emplace_back([this, &start] {
      start.arrive_and_wait();
      closer();
    });
    for (auto& t : threads) t.join();
    for (auto& slot : shared_) slot.replace(nullptr);
    const std::lock_guard lock(queue_mutex_);
    queue_.clear();
  }

  tallies counts;

 private:
  static std::mt19937 rng_for(int seed) { return std::mt19937(static_cast<std::mt19937::result_type>(seed)); }
  [[nodiscard]] bool running() const { return std::chrono::steady_clock::now() < deadline_; }

  std::shared_ptr<stored> make(std::mt19937& rng) {
    auto factory = securememory::make_factory(backends_[rng() % backends_.size()]);
    const std::size_t size = rng() % 4 == 0 ? 4096 + rng() % 8192 : 1 + rng() % 200;
    auto s = std::make_shared<stored>();
    if (rng() % 2 == 0) {
      s->expected = test::pattern(size, static_cast<unsigned>(rng()));
      auto source = s->expected;
      s->secret = factory.create(source);
    } else {
      s->secret = factory.create_random(size);
      s->expected.resize(size);
      s->secret.with_bytes([&](std::span<const std::byte> b) { std::copy(b.begin(), b.end(), s->expected.begin()); });
    }
    counts.creates.fetch_add(1);
    return s;
  }

  // One access; `may_be_closed` for shared secrets only.
  void access(const stored& s, bool may_be_closed) {
    try {
      const bool same = s.secret.with_bytes([&](std::span<const std::byte> b) {
        return b.size() == s.expected.size() && std::equal(b.begin(), b.end(), s.expected.begin());
      });
      (same ? counts.accesses : counts.wrong_bytes).fetch_add(1);
    } catch (const securememory::error& e) {
      if (may_be_closed && e.code() == errc::closed) {
        counts.closed_seen.fetch_add(1);
      } else {
        counts.wrong_errors.fetch_add(1);
      }
    }
  }

  // Reads the whole secret in random chunks; every chunk must match.
  void read_all(const stored& s, bool may_be_closed, std::mt19937& rng) {
    try {
      auto reader = s.secret.reader();
      std::vector<std::byte> chunk(1 + rng() % 300);
      std::size_t offset = 0;
      for (;;) {
        const std::size_t want = rng() % (chunk.size() + 1);  // sometimes 0: a no-op read
        const std::size_t n = reader.read(std::span(chunk).first(want));
        if (n == 0 && want == 0) continue;
        if (n == 0) break;  // the end
        if (offset + n > s.expected.size() ||
            !std::equal(chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(n),
                        s.expected.begin() + static_cast<std::ptrdiff_t>(offset))) {
          counts.wrong_bytes.fetch_add(1);
          return;
        }
        offset += n;
      }
      (offset == s.expected.size() ? counts.reads : counts.wrong_bytes).fetch_add(1);
    } catch (const securememory::error& e) {
      if (may_be_closed && e.code() == errc::closed) {
        counts.closed_seen.fetch_add(1);
      } else {
        counts.wrong_errors.fetch_add(1);
      }
    }
  }

  void worker(int index) {
    auto rng = rng_for(index + 1);
    std::vector<std::shared_ptr<stored>> mine;
    while (running()) {
      switch (rng() % 6) {
        case 0:
        case 1: {  // a shared secret, held for a few operations while the closer works
          auto s = shared_[rng() % shared_.size()].get();
          for (unsigned i = 0, n = 1 + rng() % 8; i < n; ++i) {
            if (rng() % 3 == 0) {
              read_all(*s, true, rng);
            } else {
              access(*s, true);
            }
          }
          break;
        }
        case 2:  // a private secret: created, used, closed here
          if (mine.size() < 8) mine.push_back(make(rng));
          break;
        case 3:
          if (!mine.empty()) {
            auto& s = *mine[rng() % mine.size()];
            access(s, false);
            read_all(s, false, rng);
          }
          break;
        case 4:
          if (!mine.empty()) {
            const std::size_t i = rng() % mine.size();
            close_private(*mine[i]);
            mine.erase(mine.begin() + static_cast<std::ptrdiff_t>(i));
          }
          break;
        default:  // hand a private secret to another thread, or take one
          if (!mine.empty() && rng() % 2 == 0) {
            const std::lock_guard lock(queue_mutex_);
            queue_.push_back(std::move(mine.back()));
            mine.pop_back();
          } else {
            std::shared_ptr<stored> taken;
            {
              const std::lock_guard lock(queue_mutex_);
              if (!queue_.empty()) {
                taken = std::move(queue_.front());
                queue_.pop_front();
              }
            }
            if (taken) {
              access(*taken, false);
              counts.handoffs.fetch_add(1);
              mine.push_back(std::move(taken));
            }
          }
          break;
      }
    }
    for (auto& s : mine) close_private(*s);
  }

  void close_private(stored& s) {
    try {
      s.secret.close();
      s.secret.close();  // a second close is a no-op
      counts.closes.fetch_add(1);
    } catch (const securememory::error&) {
      counts.wrong_errors.fetch_add(1);
    }
    if (!s.secret.is_closed() ||
        test::error_of([&] { s.secret.with_bytes([](std::span<const std::byte>) {}); }) != errc::closed) {
      counts.wrong_errors.fetch_add(1);
    }
  }

  // Closes shared secrets that the workers are reading, then replaces them.
  void closer() {
    auto rng = rng_for(99);
    while (running()) {
      auto& slot = shared_[rng() % shared_.size()];
      const auto victim = slot.get();
      access(*victim, true);
      try {
        victim->secret.close();  // concurrent with readers of the same secret
        counts.closes.fetch_add(1);
      } catch (const securememory::error&) {
        counts.wrong_errors.fetch_add(1);
      }
      slot.replace(make(rng));
      std::this_thread::yield();
    }
  }

  std::vector<std::string> backends_;
  std::array<shared_slot, 4> shared_;
  std::mutex queue_mutex_;
  std::deque<std::shared_ptr<stored>> queue_;
  std::chrono::steady_clock::time_point deadline_;
};

}  // namespace

SM_TEST("stress: 4 threads of create/access/read/close on shared and private secrets, every result checked",
        "[stress][concurrency]") {
  std::vector<std::string> backends;
  for (const auto& name : securememory::backend_names()) {
    if (securememory::backend_available(name)) backends.push_back(name);
  }
  REQUIRE_FALSE(backends.empty());
  const double seconds = stress_seconds();
  stress s(backends);
  s.run(seconds);
  const auto& c = s.counts;
  INFO("backends " << backends.size() << ", " << seconds << " s: " << c.accesses << " accesses, " << c.reads
                   << " whole reads, " << c.closed_seen << " refused as closed, " << c.creates << " creates, "
                   << c.closes << " closes, " << c.handoffs << " hand-offs");
  CHECK(c.wrong_bytes.load() == 0);
  CHECK(c.wrong_errors.load() == 0);
  // The mix really happened: every kind of operation ran, and readers did
  // meet secrets closed under them.
  CHECK(c.accesses.load() > 0);
  CHECK(c.reads.load() > 0);
  CHECK(c.creates.load() > 0);
  CHECK(c.closes.load() > 0);
  CHECK(c.handoffs.load() > 0);
  CHECK(c.closed_seen.load() > 0);
  std::cout << "# stress: " << c.accesses << " accesses, " << c.reads << " whole reads, " << c.closed_seen
                  << " refused as closed, " << c.creates << " creates, " << c.closes << " closes, " << c.handoffs
                  << " hand-offs in " << seconds << " s on " << backends.size() << " backends\n";
}

SM_TEST("size, is_closed and backend race a close without a data race; size stays the creation size",
        "[stress][concurrency]") {
  const auto name = GENERATE(from_range(securememory::backend_names()));
  if (!securememory::backend_available(name)) {
    WARN("skipped: backend " << name << " is not available on this host");
    return;
  }
  for (int round = 0; round < 50; ++round) {
    Secret secret = securememory::make_factory(name).create_random(100);
    std::atomic<bool> go{false};
    std::atomic<long> wrong{0};
    std::thread querier([&] {
      while (!go.load()) std::this_thread::yield();
      for (int i = 0; i < 200; ++i) {
        if (secret.size() != 100 || secret.backend() != name) wrong.fetch_add(1);
        (void)secret.is_closed();
      }
    });
    go = true;
    secret.close();
    querier.join();
    CHECK(wrong.load() == 0);
    CHECK(secret.size() == 100);  // also after close
  }
}
