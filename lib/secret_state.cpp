// securememory: the access state machine shared by every backend (the
// state of one secret: lib/secret_state.hpp).
//
// Theory of operation. A secret_state owns one backend region and guards it
// with a 4-byte mutex (small_mutex.hpp):
//
//   readers_   accesses in flight (with_bytes calls and Reader::read calls)
//   readable_  the pages are currently read-only (else no-access)
//   closing_   close() has started: new accesses are refused
//   finished_  the region has been released (or quarantined)
//   deferred_  a release or quarantine the last reader must run
//
// The first access makes the pages readable, the last one makes them
// no-access again; the callback itself runs with no lock held, so readers
// overlap and share one opening. A last reader that sees another reader
// already queued for the lock (waiting_) leaves the pages open for it
// (hand-off), so back-to-back readers on several threads share one opening
// too. close() waits on readers_ (C++20 atomic wait). close() sets closing_, waits until
// readers_ is 0, then releases. Each thread keeps a stack (linked through
// the access_scope objects on its own stack) of the accesses it is inside,
// so close() from inside the same secret's callback is detected and refused
// with errc::reentrant_close instead of deadlocking. Destroying the handle
// from inside its own callback defers the close to the last reader.
//
// Backends with an integrity check (describe().checks_integrity) are
// verified on every open, on close and on Secret::verify(); an opening may
// also report a violation itself (sealed's authentication). A violation goes to the
// handler once (lib/violation.cpp), then the policy aborts, or quarantines
// the secret (at once, or by the last reader still in flight) and throws
// errc::integrity_violation. A secret inherited through fork() is refused in
// the child, and closing it there only drops the mapping.
//
// Backends are called with the mutex held, one region at a time: they need
// no locking of their own for a region.

#include "secret_state.hpp"

#include "internal.hpp"
#include "metrics.hpp"
#include "os/os.hpp"
#include "state_pool.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <new>
#include <pthread.h>
#include <sys/mman.h>

namespace securememory::detail {
namespace {

constinit std::atomic<std::uint64_t> fork_counter{0};
void on_fork_child() noexcept {
  fork_counter.fetch_add(1, std::memory_order_relaxed);
  reset_counts_after_fork();
}

// Runs a backend call; an allocation failure inside it (the backend's own
// bookkeeping) becomes error(out_of_memory), like every other failure.
// Backends hold nothing after a failed call, whatever threw.
template <class F>
decltype(auto) no_bad_alloc(F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    throw error(errc::out_of_memory, "out of memory for a secret's bookkeeping; free memory");
  }
}

}  // namespace

void ensure_initialised() {
  static const int status = [] {
    if (sodium_init() < 0) return -1;
    // Registered once; the handler only touches a constant-initialised atomic.
    pthread_atfork(nullptr, nullptr, on_fork_child);
    return 0;
  }();
  if (status != 0) {
    throw error(errc::backend_unavailable,
                "libsodium could not be initialised (sodium_init failed); check that /dev/urandom or getrandom() works");
  }
}

namespace {
// sodium_init() too: a child never waits for a parent thread inside it.
// Made while the library loads (detail::made_at_load): a forked child never
// finds it half-made by a thread it does not have.
[[maybe_unused]] const bool sodium_made_at_load = made_at_load(ensure_initialised);
}  // namespace

std::uint64_t fork_generation() noexcept { return fork_counter.load(std::memory_order_relaxed); }

// --- secret_state ---------------------------------------------------------

secret_state* secret_state::make(factory_core* core) {
  auto* s = new (state_pool::take()) secret_state(core);
  state_pool::publish(s);  // constructed: purge() may see it from now on
  return s;
}

secret_state::~secret_state() {
  // Reached without a close() only when a Reader outlived a handle whose
  // close failed half-way, or after a deferred action: release quietly.
  close_noexcept();
  core_->drop();
}

void secret_state::populate(std::size_t size, fill_fn fill, void* context) {
  region r{};
  try {
    if (size == 0) throw error(errc::invalid_size, "secret size must be at least 1 byte");
    if (size > max_secret_size) {
      throw error(errc::invalid_size, fmt::format("a secret of {} bytes is larger than max_secret_size ({} bytes); "
                                                  "keep large data encrypted under a secret key instead",
                                                  size, max_secret_size));
    }
    r = no_bad_alloc([&] { return provider().allocate(size); });
  } catch (...) {
    count_failure(core_->counters());
    mark_finished();
    throw;
  }
  size_ = static_cast<std::uint32_t>(size);
  const bool fits = r.mapped <= std::numeric_limits<std::uint32_t>::max() &&
                    r.locked <= std::numeric_limits<std::uint32_t>::max();
  store(r);
  try {
    if (!fits) {
      throw error(errc::invalid_size,
                  fmt::format("the {} backend needs more than 4 GiB of memory for a {}-byte secret; use a smaller "
                              "secret",
                              quoted(provider().name()), size));
    }
    fill(data_, size, context);
    (void)call_protect(Access::none);
  } catch (...) {
    count_failure(core_->counters());
    mark_finished();
    try {
      region to_release = r;  // the full sizes, even where they did not fit
      to_release.current = current_;
      provider().release(to_release);
    } catch (const std::exception& e) {
      log_error(std::string("releasing a secret after a failed creation failed: ") + e.what());
    }
    throw;
  }
  count_created(core_->counters(), size_, locked_, mapped_);
}

region secret_state::region_now() noexcept {
  const std::lock_guard lock(mutex_);
  return finished_ ? region{} : load();
}

void secret_state::close(const access_scope* innermost_scope) {
  if (inherited()) {
    drop_inherited();
    return;
  }
  if (inside_own_access(innermost_scope)) {  // this thread's own stack: no lock needed
    if (finished_now()) return;
    throw error(errc::reentrant_close,
                "close() called from inside this secret's own with_bytes callback or read; close it after the "
                "callback returns");
  }
  // Refuse new readers before queueing for the lock, so that a stream of
  // readers cannot starve the close.
  closing_.store(true, std::memory_order_release);
  std::unique_lock lock(mutex_);
  if (finished_) return;
  for (std::uint32_t n; (n = readers_.load(std::memory_order_relaxed)) != 0;) {
    lock.unlock();
    readers_.wait(n, std::memory_order_relaxed);  // woken by the last reader
    lock.lock();
  }
  if (finished_) return;  // another thread closed it while we waited
  if (core_->checks_integrity()) {
    bool opened = true;
    std::optional<ViolationKind> found;
    try {
      found = open_locked();
    } catch (const error& e) {
      opened = false;  // cannot check; release all the same
      log_error(std::string("could not open a secret to check it before release: ") + e.what());
    }
    if (opened) check_integrity_locked(ViolationCheck::on_close, found);
  }
  release_locked();
}

void secret_state::close_noexcept(const access_scope* innermost_scope) noexcept {
  try {
    if (inherited()) {
      drop_inherited();
      return;
    }
    {
      std::unique_lock lock(mutex_);
      if (finished_) return;
      if (inside_own_access(innermost_scope)) {
        closing_.store(true, std::memory_order_release);
        if (deferred_ == deferred::nothing) deferred_ = deferred::release;
        return;
      }
    }
    close(innermost_scope);
  } catch (const std::exception& e) {
    log_error(std::string("closing a secret failed: ") + e.what());
  } catch (...) {
    log_error("closing a secret failed");
  }
}

void secret_state::store(const region& r) noexcept {
  data_ = r.data;
  base_ = r.base;
  mapped_ = static_cast<std::uint32_t>(std::min<std::size_t>(r.mapped, std::numeric_limits<std::uint32_t>::max()));
  locked_ = static_cast<std::uint32_t>(std::min<std::size_t>(r.locked, std::numeric_limits<std::uint32_t>::max()));
  current_ = r.current;
}

std::optional<ViolationKind> secret_state::call_protect(Access a) {
  std::optional<ViolationKind> found;
  with_region([&](Region& r) { found = no_bad_alloc([&] { return provider().protect(r, a); }); });
  return found;
}

void secret_state::throw_if_inherited() const {
  if (inherited()) {
    throw error(errc::closed,
                "secret belongs to the parent process: its memory was wiped at fork(); create secrets in the child");
  }
}

// close() or the destructor in a forked child: the first caller (threads
// of the child may race) drops the parent's mapping. Its pages hold no
// secret here (wiped or not inherited at fork) and the allocator's
// metadata in them may be zero, so the backend only forgets the region.
// A region the parent had already begun to release (finished_ was set
// under the parent's lock) is left alone: part of it may be gone.
void secret_state::drop_inherited() noexcept {
  std::uint32_t seen = generation_.load(std::memory_order_relaxed);
  if (seen == dropped_generation ||
      !generation_.compare_exchange_strong(seen, dropped_generation, std::memory_order_acq_rel)) {
    return;
  }
  closing_.store(true, std::memory_order_release);
  if (finished_) return;
  finished_ = true;
  readable_ = false;
  with_region([&](region& r) { provider().release_after_fork(r); });  // not counted: the child's counts start at 0
}

bool secret_state::finished_now() noexcept {
  const std::unique_lock lock(mutex_);
  return finished_;
}

// Makes the pages read-only (a) or no-access; a failure is counted.
// Returns what an opening found wrong (the pages then stay closed).
std::optional<ViolationKind> secret_state::set_pages_locked(Access a) {
  std::optional<ViolationKind> found;
  try {
    found = call_protect(a);
  } catch (...) {
    count_failure(core_->counters());
    throw;
  }
  if (!found) readable_ = a == Access::read;
  return found;
}

void secret_state::release_locked() {
  mark_finished();
  count_released(core_->counters(), size_, locked_, mapped_);
  try {
    with_region([&](region& r) { no_bad_alloc([&] { provider().release(r); }); });
  } catch (...) {
    count_failure(core_->counters());
    throw;
  }
}

void secret_state::release_quietly() noexcept {
  try {
    release_locked();
  } catch (const std::exception& e) {
    log_error(std::string("releasing a secret failed: ") + e.what());
  }
}

}  // namespace securememory::detail
