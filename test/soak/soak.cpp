// securememory-soak: a long, opt-in soak run (not part of `meson test` or CI;
// see docs/testing.md, "Soak run").
//
//   build/test/soak/securememory-soak [--seconds N] [--threads N]
//       [--checkpoint N] [--seed N] [--fork-timeout-ms N]
//
// Theory of operation. N worker threads (default 4) run a random mix of
// operations on every available backend for --seconds (default 600): create
// and create_random (private secrets, and secrets shared by all threads
// through 16 slots), with_bytes (checked against the bytes stored; nested:
// a second secret of another backend opened inside the first's callback),
// whole reads through a Reader in random chunk sizes, verify, close (of a
// shared secret other threads may be reading), replacement of shared
// secrets, set_page_cache_limit changes, and fork. A forked child checks
// that the inherited secrets are refused (with_bytes and verify throw
// closed, the callback never runs) and that close() returns, creates and
// reads a secret of its own, then calls exit(), which destroys a static
// Secret inherited from the parent. The parent waits at most
// --fork-timeout-ms (2000) for it; a child still running then hung (it is
// killed and reported with the stage it was in).
//
// Every --checkpoint seconds (default 60) the workers stop at a barrier with
// every private secret closed; the main thread closes the shared ones, sets
// the page cache limit to 0 and reads the counters, VmLck and VmRSS
// (/proc/self/status) and the mapping count (/proc/self/maps). The first
// checkpoint is the baseline (every pool warm: sealed's slot blocks for the
// sizes used, the state pool, the threads' malloc arenas); the last one, at
// the end, must come back to it:
//   - at every checkpoint: in_use 1 and locked_bytes the static secret's,
//     cached_bytes 0, and VmLck exactly locked_bytes + cached_bytes +
//     internal_locked_bytes (the library's own: sealed's key and scratch,
//     which go with the cache's bound at 0, and unused secretmem arena
//     pages);
//   - VmLck: exactly the baseline;
//   - mappings: at most the baseline plus one per new sealed slot block
//     (256 KiB each, kept for reuse: at most one per 256 KiB of new slots,
//     plus one per size class);
//   - RSS: at most the baseline plus --rss-slack-kb (default 2048; see
//     docs/testing.md for the measured growth and why it is not zero).
// It prints the numbers of every checkpoint and exits 1 on any violation
// (a wrong byte, an unexpected error, a hung child, a counter that did not
// come back), 0 otherwise. No secret byte is ever printed.
#include <securememory/securememory.hpp>

#include "backends/sealed.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using securememory::errc;
using securememory::Secret;

struct options {
  int seconds = 600;
  int threads = 4;
  int checkpoint = 60;
  std::uint64_t seed = 1;
  int fork_timeout_ms = 2000;
  long rss_slack_kb = 2048;
};
options opt;

// ---- violations ----------------------------------------------------------------

std::atomic<std::uint64_t> violations{0};
std::atomic<std::uint64_t> hung_children{0};
std::mutex print_mutex;

void violation(const std::string& what) {
  const auto n = violations.fetch_add(1) + 1;
  if (n <= 20) {
    const std::lock_guard lock(print_mutex);
    std::fprintf(stderr, "securememory-soak: VIOLATION: %s\n", what.c_str());
  }
}

// ---- /proc ----------------------------------------------------------------------

long status_kb(const char* field) {
  std::ifstream in("/proc/self/status");
  const std::string prefix = std::string(field) + ":";
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) return std::stol(line.substr(prefix.size()));
  }
  return -1;
}

long mapping_count() {
  std::ifstream in("/proc/self/maps");
  std::string line;
  long n = 0;
  while (std::getline(in, line)) ++n;
  return n;
}

// ---- secrets --------------------------------------------------------------------

std::vector<std::string> backends;                 // available ones
std::vector<securememory::SecretFactory> factories;  // one per backend

// Sizes: small ones (sealed's size classes, one page for the page
// backends), around a page, several pages (sealed's own mapping per access).
constexpr std::array<std::size_t, 9> sizes{1, 16, 32, 64, 200, 1000, 4095, 4097, 12000};

struct entry {
  Secret secret;
  std::vector<std::byte> bytes;  // what it must hold (test data)
  std::size_t backend = 0;
};

struct shared_slot {
  std::mutex mutex;
  std::shared_ptr<entry> e;
};
constexpr std::size_t shared_count = 16;
// Never destroyed: a forked child that exits must not run the destructors of
// mutexes another thread of the parent may have held at the fork.
auto* shared = new std::array<shared_slot, shared_count>();

std::shared_ptr<entry> get_shared(std::size_t i) {
  const std::lock_guard lock((*shared)[i].mutex);
  return (*shared)[i].e;
}

// A static Secret, created before the workers: a forked child's exit()
// destroys its inherited copy. It is the one secret open at checkpoints.
Secret& static_secret() {
  static Secret s = factories.front().create_random(32);
  return s;
}
std::uint64_t static_locked = 0;  // its locked_bytes

bool same(std::span<const std::byte> got, const std::vector<std::byte>& want) {
  return got.size() == want.size() && std::equal(got.begin(), got.end(), want.begin());
}

// ---- counters -------------------------------------------------------------------

struct counters {
  std::atomic<std::uint64_t> ops{0};
  std::atomic<std::uint64_t> creates{0};
  std::atomic<std::uint64_t> accesses{0};
  std::atomic<std::uint64_t> nested{0};
  std::atomic<std::uint64_t> reads{0};
  std::atomic<std::uint64_t> verifies{0};
  std::atomic<std::uint64_t> closes{0};
  std::atomic<std::uint64_t> closed_under_reader{0};  // errc::closed on a shared secret: the race happened
  std::atomic<std::uint64_t> forks{0};
  std::atomic<std::uint64_t> cache_changes{0};
};
counters count;

// ---- checkpoints ----------------------------------------------------------------

std::atomic<bool> pause_requested{false};
std::atomic<bool> stop{false};
std::unique_ptr<std::barrier<>> arrive;   // workers (private secrets closed) and main
std::unique_ptr<std::barrier<>> resume;   // main done measuring
std::atomic<std::size_t> cache_limit_in_force{std::size_t{1} << 20U};

// One page per worker shared with its forked children: the stage a child is
// in, for the report when it hangs.
struct child_stage_page {
  char stage[128];
};
std::vector<child_stage_page*> stage_pages;

// ---- the worker -----------------------------------------------------------------

class worker {
 public:
  worker(int index, std::uint64_t seed) : index_(index), rng_(seed) {}

  void run() {
    while (!stop.load()) {
      if (pause_requested.load()) {
        mine_.clear();
        arrive->arrive_and_wait();
        resume->arrive_and_wait();
        continue;
      }
      step();
      count.ops.fetch_add(1, std::memory_order_relaxed);
    }
    mine_.clear();
  }

 private:
  std::uint64_t pick(std::uint64_t n) { return std::uniform_int_distribution<std::uint64_t>(0, n - 1)(rng_); }

  std::vector<std::byte> make_bytes(std::size_t n) {
    std::vector<std::byte> v(n);
    for (auto& b : v) b = static_cast<std::byte>(pick(256));
    return v;
  }

  // A new secret (with_bytes learns create_random's bytes while it is
  // still private); nullptr after a reported violation.
  std::shared_ptr<entry> make() {
    auto e = std::make_shared<entry>();
    e->backend = pick(backends.size());
    const std::size_t size = sizes[pick(sizes.size())];
    try {
      if (pick(2) == 0) {
        e->bytes = make_bytes(size);
        auto source = e->bytes;
        e->secret = factories[e->backend].create(source);
        if (std::any_of(source.begin(), source.end(), [](std::byte b) { return b != std::byte{0}; })) {
          violation("create() did not wipe its source");
        }
      } else {
        e->secret = factories[e->backend].create_random(size);
        e->secret.with_bytes([&](std::span<const std::byte> b) { e->bytes.assign(b.begin(), b.end()); });
        if (e->bytes.size() != size) violation("create_random() made a secret of the wrong size");
      }
    } catch (const std::exception& x) {
      violation(std::string("creating a ") + backends[e->backend] + " secret failed: " + x.what());
      return nullptr;
    }
    count.creates.fetch_add(1, std::memory_order_relaxed);
    return e;
  }

  // A secret to use: private (closed only by this thread) or shared.
  std::shared_ptr<entry> any(bool& is_shared) {
    is_shared = mine_.empty() || pick(2) == 0;
    if (is_shared) return get_shared(pick(shared_count));
    return mine_[pick(mine_.size())];
  }

  // Runs f; errc::closed is expected only of a shared secret (another
  // thread may close it at any time), anything else is a violation.
  template <class F>
  void guarded(const char* what, const entry& e, bool is_shared, F&& f) {
    try {
      f();
    } catch (const securememory::error& x) {
      if (is_shared && x.code_value() == errc::closed) {
        count.closed_under_reader.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      violation(std::string(what) + " on a " + (is_shared ? "shared " : "private ") + backends[e.backend] +
                " secret failed: " + x.what());
    } catch (const std::exception& x) {
      violation(std::string(what) + " threw a non-securememory exception: " + x.what());
    }
  }

  void step() {
    const std::uint64_t r = pick(1000);
    if (r < 150) {  // create a private secret
      if (mine_.size() >= 8) mine_.erase(mine_.begin() + static_cast<std::ptrdiff_t>(pick(mine_.size())));
      if (auto e = make()) mine_.push_back(std::move(e));
    } else if (r < 220) {  // create or replace a shared secret
      if (auto e = make()) {
        std::shared_ptr<entry> old;
        {
          const std::size_t i = pick(shared_count);
          const std::lock_guard lock((*shared)[i].mutex);
          old = std::exchange((*shared)[i].e, std::move(e));
        }
        // old's last reference here closes it (waiting for its readers)
      }
    } else if (r < 520) {  // with_bytes
      bool is_shared = false;
      auto e = any(is_shared);
      if (!e) return;
      guarded("with_bytes", *e, is_shared, [&] {
        e->secret.with_bytes([&](std::span<const std::byte> b) {
          if (!same(b, e->bytes)) violation("with_bytes gave bytes other than those stored");
        });
      });
      count.accesses.fetch_add(1, std::memory_order_relaxed);
    } else if (r < 600) {  // nested: another secret inside the callback
      bool outer_shared = false;
      bool inner_shared = false;
      auto outer = any(outer_shared);
      auto inner = any(inner_shared);
      if (!outer || !inner) return;
      guarded("with_bytes (outer of a nested access)", *outer, outer_shared, [&] {
        outer->secret.with_bytes([&](std::span<const std::byte> a) {
          guarded("with_bytes (nested)", *inner, inner_shared, [&] {
            inner->secret.with_bytes([&](std::span<const std::byte> b) {
              if (!same(b, inner->bytes)) violation("a nested with_bytes gave the wrong bytes");
            });
          });
          if (!same(a, outer->bytes)) violation("with_bytes gave the wrong bytes around a nested access");
        });
      });
      count.nested.fetch_add(1, std::memory_order_relaxed);
    } else if (r < 680) {  // a whole read through a Reader
      bool is_shared = false;
      auto e = any(is_shared);
      if (!e) return;
      guarded("Reader::read", *e, is_shared, [&] {
        auto reader = e->secret.reader();
        std::vector<std::byte> got;
        std::vector<std::byte> chunk(1 + pick(5000));
        for (;;) {
          const std::size_t n = reader.read(std::span(chunk).first(pick(chunk.size() + 1)));
          if (n == 0 && got.size() == e->bytes.size()) break;
          got.insert(got.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(n));
          if (got.size() > e->bytes.size()) break;
        }
        if (got != e->bytes) violation("a Reader read bytes other than those stored");
      });
      count.reads.fetch_add(1, std::memory_order_relaxed);
    } else if (r < 730) {  // verify
      bool is_shared = false;
      auto e = any(is_shared);
      if (!e) return;
      guarded("verify", *e, is_shared, [&] { e->secret.verify(); });
      count.verifies.fetch_add(1, std::memory_order_relaxed);
    } else if (r < 900) {  // close (a shared one may be under other threads' readers)
      bool is_shared = false;
      auto e = any(is_shared);
      if (!e) return;
      guarded("close", *e, false, [&] { e->secret.close(); });
      if (!is_shared) std::erase(mine_, e);
      count.closes.fetch_add(1, std::memory_order_relaxed);
    } else if (r < 910) {  // the page cache's bound
      static constexpr std::array<std::size_t, 4> limits{0, std::size_t{16} << 10U, std::size_t{256} << 10U,
                                                         std::size_t{1} << 20U};
      const std::size_t limit = limits[pick(limits.size())];
      cache_limit_in_force.store(limit);
      securememory::set_page_cache_limit(limit);
      count.cache_changes.fetch_add(1, std::memory_order_relaxed);
    } else if (r < 914) {
      fork_and_check();
    }
    // else: nothing (the others keep going)
  }

  // ---- fork ----

  void stage(const char* what) {
    std::snprintf(stage_pages[static_cast<std::size_t>(index_)]->stage, sizeof(child_stage_page::stage), "%s", what);
  }

  [[noreturn]] void child(const std::shared_ptr<entry>& mine, const std::shared_ptr<entry>& theirs) {
    int failures = 0;
    const auto refused = [&](const Secret& s, const char* what) {
      stage(what);
      bool called = false;
      try {
        s.with_bytes([&](std::span<const std::byte>) { called = true; });
        ++failures;
      } catch (const securememory::error& x) {
        if (x.code_value() != errc::closed) ++failures;
      }
      if (called) ++failures;
      try {
        s.verify();
        ++failures;
      } catch (const securememory::error& x) {
        if (x.code_value() != errc::closed) ++failures;
      }
    };
    if (mine) refused(mine->secret, "with_bytes on an inherited private secret");
    if (theirs) refused(theirs->secret, "with_bytes on an inherited shared secret");
    refused(static_secret(), "with_bytes on the inherited static secret");
    try {
      stage("close() of an inherited private secret");
      if (mine) mine->secret.close();
      stage("close() of an inherited shared secret");
      if (theirs) theirs->secret.close();
      stage("a new secret in the child");
      const std::size_t b = pick(backends.size());
      auto bytes = make_bytes(sizes[pick(sizes.size())]);
      auto source = bytes;
      Secret fresh = factories[b].create(source);
      fresh.with_bytes([&](std::span<const std::byte> got) {
        if (!same(got, bytes)) ++failures;
      });
      fresh.close();
    } catch (const std::exception&) {
      ++failures;
    }
    stage("exit() (static destructors: the inherited static secret)");
    std::exit(failures == 0 ? 0 : 3);  // NOLINT(concurrency-mt-unsafe): the child has one thread
  }

  void fork_and_check() {
    // Inherited secrets: one of this thread's and one shared (held here, so
    // that the child can close them while other threads go on).
    const std::shared_ptr<entry> mine = mine_.empty() ? nullptr : mine_[pick(mine_.size())];
    const std::shared_ptr<entry> theirs = get_shared(pick(shared_count));
    stage("fork");
    const pid_t pid = fork();
    if (pid < 0) {
      violation("fork() failed");
      return;
    }
    if (pid == 0) child(mine, theirs);
    count.forks.fetch_add(1, std::memory_order_relaxed);
    const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    bool exited = false;
    int status = 0;
    if (fd >= 0) {
      pollfd p{fd, POLLIN, 0};
      exited = poll(&p, 1, opt.fork_timeout_ms) > 0;
      close(fd);
      if (exited) waitpid(pid, &status, 0);
    } else {
      for (int waited = 0; waited < opt.fork_timeout_ms && !exited; ++waited) {
        exited = waitpid(pid, &status, WNOHANG) == pid;
        if (!exited) usleep(1000);
      }
    }
    if (!exited) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      hung_children.fetch_add(1);
      violation(std::string("a forked child hung for ") + std::to_string(opt.fork_timeout_ms) +
                " ms in: " + stage_pages[static_cast<std::size_t>(index_)]->stage);
      return;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      violation(std::string("a forked child failed (") +
                (WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                   : "signal " + std::to_string(WTERMSIG(status))) +
                ") after: " + stage_pages[static_cast<std::size_t>(index_)]->stage);
    }
  }

  int index_;
  std::mt19937_64 rng_;
  std::vector<std::shared_ptr<entry>> mine_;
};

// ---- main -----------------------------------------------------------------------

struct sample {
  double at = 0;
  long vmlck_kb = 0;
  long rss_kb = 0;
  long mappings = 0;
  std::uint64_t internal = 0;
  std::size_t arena_bytes = 0;
  std::uint64_t ops = 0;
  std::uint64_t forks = 0;
};

// With the workers at the barrier: everything closed, the cache emptied.
sample checkpoint(double at) {
  for (auto& slot : *shared) {
    const std::lock_guard lock(slot.mutex);
    slot.e.reset();
  }
  securememory::set_page_cache_limit(0);
  const auto m = securememory::metrics();
  if (m.in_use != 1) violation("in_use is " + std::to_string(m.in_use) + " with every secret but the static one closed");
  if (m.locked_bytes != static_locked) {
    violation("locked_bytes is " + std::to_string(m.locked_bytes) + " with every secret but the static one closed");
  }
  if (m.cached_bytes != 0) violation("cached_bytes is " + std::to_string(m.cached_bytes) + " after set_page_cache_limit(0)");
  const auto usage = securememory::detail::sealed_stats();
  sample s;
  s.at = at;
  s.vmlck_kb = status_kb("VmLck");
  s.rss_kb = status_kb("VmRSS");
  s.mappings = mapping_count();
  s.internal = m.internal_locked_bytes;
  s.arena_bytes = usage.arena_bytes;
  const std::uint64_t held = m.locked_bytes + m.cached_bytes + m.internal_locked_bytes;
  if (static_cast<std::uint64_t>(s.vmlck_kb) * 1024 != held) {
    violation("VmLck is " + std::to_string(s.vmlck_kb) + " kB, the library holds " + std::to_string(held) + " bytes");
  }
  s.ops = count.ops.load();
  s.forks = count.forks.load();
  securememory::set_page_cache_limit(cache_limit_in_force.load());
  return s;
}

bool parse(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&](auto& out) {
      if (i + 1 >= argc) return false;
      out = static_cast<std::remove_reference_t<decltype(out)>>(std::strtoll(argv[++i], nullptr, 10));
      return true;
    };
    bool ok = false;
    if (a == "--seconds") ok = value(opt.seconds);
    if (a == "--threads") ok = value(opt.threads);
    if (a == "--checkpoint") ok = value(opt.checkpoint);
    if (a == "--seed") ok = value(opt.seed);
    if (a == "--fork-timeout-ms") ok = value(opt.fork_timeout_ms);
    if (a == "--rss-slack-kb") ok = value(opt.rss_slack_kb);
    if (!ok) {
      std::fprintf(stderr,
                   "usage: securememory-soak [--seconds N (600)] [--threads N (4)] [--checkpoint N (60)] [--seed N] "
                   "[--fork-timeout-ms N (2000)] [--rss-slack-kb N (2048)]\n");
      return false;
    }
  }
  opt.seconds = std::max(1, opt.seconds);
  opt.threads = std::max(1, opt.threads);
  opt.checkpoint = std::clamp(opt.checkpoint, 1, opt.seconds);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (!parse(argc, argv)) return 2;
  for (const auto& name : securememory::backend_names()) {
    if (!securememory::backend_available(name)) continue;
    backends.push_back(name);
    factories.push_back(securememory::make_factory(name));
  }
  if (backends.empty()) {
    std::fprintf(stderr, "securememory-soak: no backend is available on this host\n");
    return 2;
  }
  securememory::set_page_cache_limit(0);
  const auto before = securememory::metrics().locked_bytes;
  (void)static_secret();
  static_locked = securememory::metrics().locked_bytes - before;
  securememory::set_page_cache_limit(cache_limit_in_force.load());
  for (int i = 0; i < opt.threads; ++i) {
    void* p = mmap(nullptr, sizeof(child_stage_page), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 2;
    stage_pages.push_back(static_cast<child_stage_page*>(p));
  }
  std::string names;
  for (const auto& b : backends) names += " " + b;
  std::printf("securememory-soak: %d threads for %d s, checkpoint every %d s, seed %llu, backends:%s\n", opt.threads,
              opt.seconds, opt.checkpoint, static_cast<unsigned long long>(opt.seed), names.c_str());
  std::fflush(stdout);

  arrive = std::make_unique<std::barrier<>>(opt.threads + 1);
  resume = std::make_unique<std::barrier<>>(opt.threads + 1);
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<worker>> workers;
  for (int i = 0; i < opt.threads; ++i) {
    workers.push_back(std::make_unique<worker>(i, opt.seed * 1000003U + static_cast<std::uint64_t>(i)));
    threads.emplace_back([w = workers.back().get()] { w->run(); });
  }

  const auto begin = std::chrono::steady_clock::now();
  const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count(); };
  std::vector<sample> samples;
  for (int next = opt.checkpoint;; next = std::min(next + opt.checkpoint, opt.seconds)) {
    std::this_thread::sleep_until(begin + std::chrono::seconds(next));
    pause_requested.store(true);
    arrive->arrive_and_wait();
    const bool last = next >= opt.seconds;
    samples.push_back(checkpoint(elapsed()));
    const sample& s = samples.back();
    const sample& base = samples.front();
    std::printf("checkpoint %zu at %.0f s: %llu ops, %llu forks; VmLck %ld kB (internal %llu B), VmRSS %ld kB, %ld "
                "mappings, %zu sealed slot bytes",
                samples.size(), s.at, static_cast<unsigned long long>(s.ops), static_cast<unsigned long long>(s.forks),
                s.vmlck_kb, static_cast<unsigned long long>(s.internal), s.rss_kb, s.mappings, s.arena_bytes);
    if (samples.size() == 1) {
      std::printf(" (baseline)\n");
    } else {
      std::printf(" (%+ld kB VmLck, %+ld kB RSS, %+ld mappings)\n", s.vmlck_kb - base.vmlck_kb, s.rss_kb - base.rss_kb,
                  s.mappings - base.mappings);
    }
    std::fflush(stdout);
    if (last) stop.store(true);
    pause_requested.store(false);
    resume->arrive_and_wait();
    if (last) break;
  }
  for (auto& t : threads) t.join();

  const sample& base = samples.front();
  const sample& end = samples.back();
  const long lck_allowed = 0;
  const std::size_t block = std::size_t{256} << 10U;
  const long arena_growth = static_cast<long>(end.arena_bytes - base.arena_bytes);
  const long blocks_allowed = arena_growth > 0 ? static_cast<long>((static_cast<std::size_t>(arena_growth) + block - 1) / block) +
                                                     static_cast<long>(sizes.size())
                                               : 0;
  const long maps_allowed = blocks_allowed;
  if (samples.size() > 1) {
    if (end.vmlck_kb - base.vmlck_kb != lck_allowed) {
      violation("VmLck changed by " + std::to_string(end.vmlck_kb - base.vmlck_kb) + " kB since the baseline");
    }
    if (end.mappings - base.mappings > maps_allowed) {
      violation("the mapping count grew by " + std::to_string(end.mappings - base.mappings) + " since the baseline (" +
                std::to_string(maps_allowed) + " allowed)");
    }
    if (end.rss_kb - base.rss_kb > opt.rss_slack_kb) {
      violation("RSS grew by " + std::to_string(end.rss_kb - base.rss_kb) + " kB since the baseline (" +
                std::to_string(opt.rss_slack_kb) + " kB allowed)");
    }
  }
  std::printf("operations: %llu (%llu creates, %llu with_bytes, %llu nested, %llu reads, %llu verifies, %llu closes, "
              "%llu closed under a reader, %llu forks, %llu cache limit changes)\n",
              static_cast<unsigned long long>(count.ops.load()), static_cast<unsigned long long>(count.creates.load()),
              static_cast<unsigned long long>(count.accesses.load()), static_cast<unsigned long long>(count.nested.load()),
              static_cast<unsigned long long>(count.reads.load()), static_cast<unsigned long long>(count.verifies.load()),
              static_cast<unsigned long long>(count.closes.load()),
              static_cast<unsigned long long>(count.closed_under_reader.load()),
              static_cast<unsigned long long>(count.forks.load()),
              static_cast<unsigned long long>(count.cache_changes.load()));
  std::printf("end vs baseline: VmLck %+ld kB (allowed %+ld), RSS %+ld kB (allowed %+ld), "
              "mappings %+ld (allowed %+ld); %llu violations, %llu hung children: %s\n",
              end.vmlck_kb - base.vmlck_kb, lck_allowed, end.rss_kb - base.rss_kb, opt.rss_slack_kb,
              end.mappings - base.mappings, maps_allowed, static_cast<unsigned long long>(violations.load()),
              static_cast<unsigned long long>(hung_children.load()), violations.load() == 0 ? "PASS" : "FAIL");
  return violations.load() == 0 ? 0 : 1;
}
