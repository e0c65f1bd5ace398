// securememory: the page cache (see lib/page_cache.hpp and the public
// include/securememory/page_cache.hpp).
//
// Theory of operation. Each cache keeps a deque of page runs, oldest first,
// under its own mutex; the mutex is never held across a system call (an
// evicted run is popped, the mutex dropped, then the owner's release hook
// runs). The byte total of all caches is one atomic (`cached_total`), which
// is also metrics().cached_bytes; a put first reserves its bytes in that
// total against the process-wide bound, evicting this cache's oldest runs
// while it does not fit, and refuses when it still does not fit.
//
// When this cache holds no run to evict and the bound is still in the way,
// put() releases the oldest runs of the other caches (each under its own
// lock, never with ours held) and tries once more: the budget follows the
// newest use, whichever backend it comes from.
//
// take() returns the most recently cached run of exactly the requested
// length (LIFO: its pages are the likeliest to be hot in the TLB and cache).
//
// fork(): pthread_atfork handlers take every cache's mutex before fork and
// drop it after, so a child never inherits a held mutex. The child empties
// every cache (its copies of the runs are zeroed by MADV_WIPEONFORK and are
// not locked there) through the owner's forget hook, and stops counting them.
//
// The bound is read from SECUREMEMORY_PAGE_CACHE once, on first use, unless
// set_page_cache_limit() was called before.
#include "page_cache.hpp"

#include "internal.hpp"
#include "metrics.hpp"
#include "os/os.hpp"
#include "small_mutex.hpp"

#include <securememory/page_cache.hpp>

#include <array>
#include <atomic>
#include <mutex>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <limits>
#include <pthread.h>
#include <string>

namespace securememory {
namespace detail {
namespace {

constexpr std::size_t default_limit = std::size_t{1} << 20U;

// The bound: limit_bytes is valid once limit_known is set (by the first
// reader, from the environment, or by set_page_cache_limit()). Writers hold
// limit_mutex (also across fork()); readers only load.
constinit std::atomic<std::size_t> limit_bytes{0};
constinit std::atomic<bool> limit_known{false};
constinit small_mutex limit_mutex;
constinit std::atomic<std::size_t> cached_total{0};
constinit std::atomic<page_cache*> all_caches{nullptr};

constexpr std::size_t max_idle_holders = 4;
constinit std::array<std::atomic<page_cache::idle_release_fn>, max_idle_holders> idle_holders{};

std::size_t release_idle_holders() noexcept {
  std::size_t released = 0;
  for (auto& h : idle_holders) {
    if (const auto fn = h.load(std::memory_order_acquire)) released += fn();
  }
  return released;
}

// Parses "1048576", "512K", "4M", "1G" (case-insensitive); false if malformed.
bool parse_size(const char* text, std::size_t& out) {
  if (text == nullptr || !std::isdigit(static_cast<unsigned char>(*text))) return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text, &end, 10);
  if (errno != 0) return false;
  unsigned shift = 0;
  switch (std::toupper(static_cast<unsigned char>(*end))) {
    case '\0': break;
    case 'K': shift = 10; ++end; break;
    case 'M': shift = 20; ++end; break;
    case 'G': shift = 30; ++end; break;
    default: return false;
  }
  if (*end != '\0') return false;
  if (value > (std::numeric_limits<std::size_t>::max() >> shift)) return false;
  out = static_cast<std::size_t>(value) << shift;
  return true;
}

std::size_t limit_from_environment() noexcept {
  const char* env = std::getenv("SECUREMEMORY_PAGE_CACHE");  // NOLINT(concurrency-mt-unsafe): read once, nobody sets it
  if (env == nullptr || *env == '\0') return default_limit;
  std::size_t parsed = 0;
  if (parse_size(env, parsed)) return parsed;
  log_warning(std::string("SECUREMEMORY_PAGE_CACHE is not a byte count (like 0, 262144, 512K or 4M); using the "
                          "default of 1M"));
  return default_limit;
}

std::size_t current_limit() noexcept {
  if (limit_known.load(std::memory_order_acquire)) return limit_bytes.load(std::memory_order_relaxed);
  const std::size_t from_env = limit_from_environment();  // outside the lock: it may log
  const std::lock_guard lock(limit_mutex);
  if (!limit_known.load(std::memory_order_relaxed)) {
    limit_bytes.store(from_env, std::memory_order_relaxed);
    limit_known.store(true, std::memory_order_release);
  }
  return limit_bytes.load(std::memory_order_relaxed);
}

}  // namespace

std::uint64_t page_cache::cached_bytes_of(std::string_view owner) noexcept {
  if (owner.empty()) return cached_total.load(std::memory_order_relaxed);
  std::uint64_t total = 0;
  for (page_cache* c = all_caches.load(std::memory_order_acquire); c != nullptr; c = c->next_) {
    if (owner == c->owner_) total += c->bytes_.load(std::memory_order_relaxed);
  }
  return total;
}

// NOLINTNEXTLINE(bugprone-easily-swappable-parameters): two callbacks of different roles, named
page_cache::page_cache(const char* owner, release_fn release, forget_fn forget) noexcept
    : owner_(owner), release_(release), forget_(forget) {
  static const bool registered = [] {
    pthread_atfork(&page_cache::before_fork, &page_cache::after_fork_parent, &page_cache::after_fork_child);
    return true;
  }();
  (void)registered;
  page_cache* head = all_caches.load(std::memory_order_acquire);
  do {
    next_ = head;
  } while (!all_caches.compare_exchange_weak(head, this, std::memory_order_acq_rel));
}

bool page_cache::accepts(std::size_t length) noexcept {
  const std::size_t limit = current_limit();
  return limit != 0 && length <= limit;
}

page_cache::run page_cache::take(std::size_t length) noexcept {
  const std::lock_guard lock(mutex_);
  for (auto it = runs_.rbegin(); it != runs_.rend(); ++it) {
    if (it->length != length) continue;
    const run found = *it;
    runs_.erase(std::next(it).base());
    cached_total.fetch_sub(length, std::memory_order_relaxed);
    bytes_.fetch_sub(length, std::memory_order_relaxed);
    return found;
  }
  return {};
}

bool page_cache::put(run r) noexcept {
  std::unique_lock lock(mutex_);
  bool others_trimmed = false;
  for (;;) {
    // The bound is read with this cache's lock held, and again after every
    // time the lock was let go: set_page_cache_limit() stores a new bound
    // before its trim takes this lock, so a run put in under a stale bound
    // would be one the trim cannot have seen.
    const std::size_t limit = current_limit();
    if (limit == 0 || r.length > limit) return false;
    std::size_t total = cached_total.load(std::memory_order_relaxed);
    if (total + r.length <= limit) {
      if (cached_total.compare_exchange_weak(total, total + r.length, std::memory_order_relaxed)) break;
      continue;
    }
    if (runs_.empty()) {
      // The budget is held by other caches: the newest use wins, as within
      // one cache. Their locks are taken one at a time, never with ours.
      if (others_trimmed) return false;
      others_trimmed = true;
      lock.unlock();
      for (page_cache* c = all_caches.load(std::memory_order_acquire); c != nullptr; c = c->next_) {
        if (c != this) c->release_until(limit - r.length);
      }
      lock.lock();
      continue;
    }
    const run victim = runs_.front();
    runs_.pop_front();
    cached_total.fetch_sub(victim.length, std::memory_order_relaxed);
    bytes_.fetch_sub(victim.length, std::memory_order_relaxed);
    lock.unlock();
    release_(victim.base, victim.length);
    lock.lock();
  }
  try {
    runs_.push_back(r);
  } catch (...) {  // no memory for the bookkeeping: do not cache
    cached_total.fetch_sub(r.length, std::memory_order_relaxed);
    return false;
  }
  bytes_.fetch_add(r.length, std::memory_order_relaxed);
  return true;
}

std::size_t page_cache::release_until(std::size_t total_limit) noexcept {
  std::size_t released = 0;
  std::unique_lock lock(mutex_);
  while (!runs_.empty() && cached_total.load(std::memory_order_relaxed) > total_limit) {
    const run victim = runs_.front();
    runs_.pop_front();
    cached_total.fetch_sub(victim.length, std::memory_order_relaxed);
    bytes_.fetch_sub(victim.length, std::memory_order_relaxed);
    lock.unlock();
    release_(victim.base, victim.length);
    released += victim.length;
    lock.lock();
  }
  return released;
}

// Idle holders first: what they give back (sealed's key, in a secretmem
// slot) may land in a cache, which is emptied after.
std::size_t page_cache::release_all_caches() noexcept {
  std::size_t released = release_idle_holders();
  for (page_cache* c = all_caches.load(std::memory_order_acquire); c != nullptr; c = c->next_) {
    released += c->release_until(0);
  }
  return released;
}

void page_cache::trim_all_caches(std::size_t limit) noexcept {
  if (limit == 0) (void)release_idle_holders();
  for (page_cache* c = all_caches.load(std::memory_order_acquire); c != nullptr; c = c->next_) {
    c->release_until(limit);
  }
}

void page_cache::add_idle_holder(idle_release_fn release) noexcept {
  for (auto& h : idle_holders) {
    idle_release_fn expected = nullptr;
    if (h.compare_exchange_strong(expected, release, std::memory_order_acq_rel) || expected == release) return;
  }
}

// Lock order: a cache's lock, then limit_mutex (put() reads the bound with
// its cache locked; set_page_cache_limit() lets limit_mutex go before it
// trims).
void page_cache::before_fork() noexcept {
  for (page_cache* c = all_caches.load(std::memory_order_acquire); c != nullptr; c = c->next_) c->mutex_.lock();
  limit_mutex.lock();
}

void page_cache::after_fork_parent() noexcept {
  limit_mutex.unlock();
  for (page_cache* c = all_caches.load(std::memory_order_acquire); c != nullptr; c = c->next_) c->mutex_.unlock();
}

void page_cache::after_fork_child() noexcept {
  limit_mutex.unlock();
  for (page_cache* c = all_caches.load(std::memory_order_acquire); c != nullptr; c = c->next_) {
    for (const run& r : c->runs_) {
      cached_total.fetch_sub(r.length, std::memory_order_relaxed);
      if (c->forget_ != nullptr) c->forget_(r.base, r.length);
    }
    c->runs_.clear();
    c->bytes_.store(0, std::memory_order_relaxed);
    c->mutex_.unlock();
  }
}

void page_cache::report_release_failure(const char* backend, const char* call, int err) noexcept {
  std::array<char, 128> text{};
  try {
    count_failure(counters_for(backend, 0));  // exists: the backend made the run
    log_warning(std::string(backend) + ": giving back a cached, wiped page run failed: " + call + ": " +
                os::errno_text(err, text.data(), text.size()) +
                " (its pages stay mapped, and locked if munlock failed; nothing of a secret is on them)");
  } catch (...) {  // std::bad_alloc: the count and the line are best effort here
  }
}

}  // namespace detail

std::size_t page_cache_limit() noexcept { return detail::current_limit(); }

std::size_t set_page_cache_limit(std::size_t bytes) noexcept {
  (void)detail::current_limit();  // the environment is read first, once, so that it never overrides this call
  std::size_t previous = 0;
  {
    const std::lock_guard lock(detail::limit_mutex);
    previous = detail::limit_bytes.exchange(bytes, std::memory_order_seq_cst);
  }
  detail::page_cache::trim_all_caches(bytes);
  return previous;
}

}  // namespace securememory
