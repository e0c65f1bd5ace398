// securememory: the access state machine shared by every backend.
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
#include <securememory/secret.hpp>

#include "internal.hpp"
#include "os/os.hpp"
#include "random.hpp"
#include "small_mutex.hpp"
#include "scrub.hpp"
#include "state_pool.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <pthread.h>
#include <sys/mman.h>

namespace securememory {
namespace detail {
namespace {

constinit std::atomic<std::uint64_t> fork_counter{0};
void on_fork_child() noexcept {
  fork_counter.fetch_add(1, std::memory_order_relaxed);
  reset_counts_after_fork();
}

// The innermost access this thread is inside (a linked stack of scopes).
constinit thread_local access_scope* innermost = nullptr;

// The secret whose violation this thread is reporting to the handler (its
// lock held), for purge() called from the handler.
constinit thread_local const secret_state* reporting_violation = nullptr;

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

std::uint64_t fork_generation() noexcept { return fork_counter.load(std::memory_order_relaxed); }

// The backend of a factory, shared by the factory's copies and by every
// secret made with it: one pointer per secret keeps the backend alive.
class factory_core final {
 public:
  explicit factory_core(std::shared_ptr<Backend> b) noexcept
      : backend_(std::move(b)), checks_integrity_(backend_->describe().checks_integrity) {}
  factory_core(const factory_core&) = delete;
  factory_core& operator=(const factory_core&) = delete;
  ~factory_core() = default;

  void retain() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void drop() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
  [[nodiscard]] Backend& get() const noexcept { return *backend_; }
  // Asked once, when the factory was made: it is on the path of every access.
  [[nodiscard]] bool checks_integrity() const noexcept { return checks_integrity_; }

 private:
  std::shared_ptr<Backend> backend_;
  bool checks_integrity_;
  std::atomic<std::uint64_t> refs_{1};
};

// One secret: exactly one 64-byte block of lib/state_pool.cpp. The region a
// backend handed out is kept field by field (sizes in 32 bits, see
// max_secret_size) and rebuilt for each backend call.
class alignas(state_pool::block_size) secret_state {
 public:
  using fill_fn = void (*)(std::byte* dst, std::size_t size, void* context);

  // A new state with one reference, in a block of the pool. Throws
  // error(out_of_memory).
  static secret_state* make(factory_core* core) {
    auto* s = new (state_pool::take()) secret_state(core);
    state_pool::publish(s);  // constructed: purge() may see it from now on
    return s;
  }

  secret_state(const secret_state&) = delete;
  secret_state& operator=(const secret_state&) = delete;

  void retain() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  // A reference, unless the state is already on its way out (count 0).
  bool retain_if_alive() noexcept {
    std::uint32_t n = refs_.load(std::memory_order_relaxed);
    while (n != 0) {
      if (refs_.compare_exchange_weak(n, n + 1, std::memory_order_acquire, std::memory_order_relaxed)) return true;
    }
    return false;
  }
  void drop() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    this->~secret_state();
    state_pool::give(this);
  }

  // purge(): closes now without waiting for anyone. New accesses are
  // refused at once; with accesses in flight the last one releases. The
  // secret whose violation this thread is reporting is left to its
  // violation path (which holds its lock). Never throws. True when this
  // call found it open.
  bool purge_now() noexcept {
    if (inherited()) {
      drop_inherited();
      return false;
    }
    if (closing_.exchange(true, std::memory_order_acq_rel) && finished_now_relaxed()) return false;
    if (reporting_violation == this) return false;
    const std::unique_lock lock(mutex_);
    if (finished_) return false;
    if (readers_.load(std::memory_order_relaxed) != 0) {
      if (deferred_ == deferred::nothing) deferred_ = deferred::release;
      return true;
    }
    release_quietly();
    return true;
  }

  // From a signal handler (emergency_wipe): async-signal-safe, no lock. The
  // secret is refused from now on, and its bytes are zeroed where they lie
  // (readable or not). A state being created (no data yet) or released
  // (finished) is skipped: its memory may be going away.
  void wipe_in_signal_handler() noexcept {
    closing_.store(true, std::memory_order_release);
    const volatile bool& finished = finished_;
    std::byte* const volatile& data = data_;
    const std::byte* bytes = data;
    const std::size_t size = size_;
    if (finished || bytes == nullptr || size == 0 || inherited()) return;
    const std::size_t page = os::page_size();
    const auto first = reinterpret_cast<std::uintptr_t>(bytes) / page * page;
    const auto end = (reinterpret_cast<std::uintptr_t>(bytes) + size + page - 1) / page * page;
    if (os::protect(reinterpret_cast<void*>(first), end - first, PROT_READ | PROT_WRITE) != 0) return;  // NOLINT(performance-no-int-to-ptr)
    sodium_memzero(const_cast<std::byte*>(bytes), size);  // NOLINT(*-const-cast): the secret's own memory
  }

  // Allocates, fills (read-write), then makes no-access. On failure nothing
  // is held and the error propagates.
  void populate(std::size_t size, fill_fn fill, void* context) {
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
      count_failure();
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
      count_failure();
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
    count_created(locked_);
  }

  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  [[nodiscard]] region region_now() noexcept {
    const std::lock_guard lock(mutex_);
    return finished_ ? region{} : load();
  }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::string_view backend_name() const noexcept { return provider().name(); }
  [[nodiscard]] bool is_closed() const noexcept { return closing_.load(std::memory_order_acquire) || inherited(); }

  // One more reader: the first opens the pages; each open checks integrity.
  void begin_access(violation_check check = violation_check::on_open) {
    throw_if_inherited();  // before the lock: a parent's thread may have held it at fork
    // Announce this reader before taking the lock: a last reader leaving
    // meanwhile then hands the open pages over instead of re-protecting.
    waiting_.fetch_add(1, std::memory_order_relaxed);
    std::unique_lock lock(mutex_);
    waiting_.fetch_sub(1, std::memory_order_relaxed);
    throw_if_unusable();
    const auto found = open_locked();
    check_integrity_locked(check, found);  // throws (quarantine) or aborts on a violation
    readers_.fetch_add(1, std::memory_order_relaxed);
  }

  // Ends one access; the last one makes the pages no-access again, or runs
  // the action deferred until the secret is idle. When re-protecting fails
  // the pages stay readable (the next access or the close tries again) and
  // the failure is thrown (may_throw) or logged.
  void end_access(bool may_throw) {
    // An access that was in flight when this (child) process was forked:
    // the pages are the parent's, their counters too. Leave them alone.
    if (inherited()) return;
    std::unique_lock lock(mutex_);
    if (readers_.fetch_sub(1, std::memory_order_relaxed) != 1) return;
    // The last reader is gone: whoever waits for that (close()) must hear
    // it, whatever else happens below (a deferred release or quarantine).
    const bool closing = closing_.load(std::memory_order_relaxed);
    if (closing) readers_.notify_all();
    if (deferred_ != deferred::nothing) {
      run_deferred_locked();
      return;
    }
    // Hand-off: a reader is already waiting for the lock, so it will find
    // the pages open instead of paying for mprotect twice. Readers that
    // follow each other back to back thus share one opening, like readers
    // that overlap. (A closing secret is always re-protected or released.)
    if (!closing && waiting_.load(std::memory_order_relaxed) != 0) return;
    try {
      close_pages_locked();
    } catch (const error& e) {
      if (may_throw) throw error(errc::protection_failed, std::string(e.what()) + "; the secret may still be readable", e.sys_errno());
      log_error(std::string("could not make a secret no-access again after an access: ") + e.what());
    }
  }

  // Secret::verify(): an integrity check now, without keeping the secret open.
  void verify_now() {
    throw_if_inherited();
    if (!core_->checks_integrity()) {
      const std::unique_lock lock(mutex_);
      throw_if_unusable();
      return;
    }
    begin_access(ViolationCheck::on_verify);
    end_access(true);
  }

  void close(const access_scope* innermost_scope) {
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

  // For destructors: never throws. Inside the secret's own access the close
  // is deferred to the last reader.
  void close_noexcept(const access_scope* innermost_scope = nullptr) noexcept {
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

 private:
  // What the last reader does instead of re-protecting.
  enum class deferred : unsigned char { nothing, release, quarantine };

  // generation_ of an inherited secret a child has dropped (never a real
  // generation: that would take 2^32 - 1 nested forks).
  static constexpr std::uint32_t dropped_generation = 0xffffffffU;

  explicit secret_state(factory_core* core) noexcept
      : core_(core), generation_(static_cast<std::uint32_t>(fork_generation())) {
    core_->retain();
  }

  ~secret_state() {
    // Reached without a close() only when a Reader outlived a handle whose
    // close failed half-way, or after a deferred action: release quietly.
    close_noexcept();
    core_->drop();
  }

  [[nodiscard]] securememory::backend& provider() const noexcept { return core_->get(); }

  // The region as the backend handed it out (the size is the secret's).
  [[nodiscard]] region load() const noexcept {
    return region{.data = data_, .size = size_, .base = base_, .mapped = mapped_, .locked = locked_, .current = current_};
  }
  // Keeps what a backend call changed. A backend only ever lowers mapped
  // and locked after allocate() (checked there to fit 32 bits).
  void store(const region& r) noexcept {
    data_ = r.data;
    base_ = r.base;
    mapped_ = static_cast<std::uint32_t>(std::min<std::size_t>(r.mapped, std::numeric_limits<std::uint32_t>::max()));
    locked_ = static_cast<std::uint32_t>(std::min<std::size_t>(r.locked, std::numeric_limits<std::uint32_t>::max()));
    current_ = r.current;
  }
  // Runs f on the region rebuilt from the fields and keeps what f changed,
  // also when f throws.
  template <class F>
  void with_region(F&& f) {
    region r = load();
    try {
      f(r);
    } catch (...) {
      store(r);
      throw;
    }
    store(r);
  }
  std::optional<ViolationKind> call_protect(Access a) {
    std::optional<ViolationKind> found;
    with_region([&](Region& r) { found = no_bad_alloc([&] { return provider().protect(r, a); }); });
    return found;
  }

  bool inside_own_access(const access_scope* scope) const noexcept;

  // True in a forked child for a secret its parent created. Everything the
  // child inherited of it is a snapshot of the parent at the fork: the
  // mutex may be held and readers_ may count accesses by threads that do
  // not exist here. So an inherited secret is never locked, counted or
  // waited for: every operation on it returns at once.
  [[nodiscard]] bool inherited() const noexcept {
    return generation_.load(std::memory_order_relaxed) != static_cast<std::uint32_t>(fork_generation());
  }

  void throw_if_inherited() const {
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
  void drop_inherited() noexcept {
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

  bool finished_now() noexcept {
    const std::unique_lock lock(mutex_);
    return finished_;
  }
  // A hint only (no lock): true once the state was released.
  [[nodiscard]] bool finished_now_relaxed() const noexcept {
    return reinterpret_cast<const volatile bool&>(finished_);  // NOLINT(*-reinterpret-cast): racy read, a hint
  }

  void throw_if_unusable() const {
    if (closing_.load(std::memory_order_relaxed)) {
      throw error(errc::closed, "secret is closed: it can no longer be read; create a new one");
    }
  }

  void mark_finished() noexcept {
    finished_ = true;
    readable_ = false;
    closing_.store(true, std::memory_order_release);
  }

  // Makes the pages read-only (a) or no-access; a failure is counted.
  // Returns what an opening found wrong (the pages then stay closed).
  std::optional<ViolationKind> set_pages_locked(Access a) {
    std::optional<ViolationKind> found;
    try {
      found = call_protect(a);
    } catch (...) {
      count_failure();
      throw;
    }
    if (!found) readable_ = a == Access::read;
    return found;
  }
  std::optional<ViolationKind> open_locked() {
    if (readable_) return std::nullopt;
    return set_pages_locked(Access::read);
  }
  void close_pages_locked() { (void)set_pages_locked(Access::none); }

  // After an opening: what the opening found, else (for backends with a
  // check) what verify() finds; on a violation calls the handler (once per
  // secret), then aborts or quarantines and throws.
  void check_integrity_locked(ViolationCheck check, std::optional<ViolationKind> found) {
    if (!found && core_->checks_integrity() && readable_) found = provider().verify(load());
    if (!found) return;
    Violation v;
    v.backend = provider().name();
    v.size = size_;
    v.check = check;
    v.kind = *found;
    reporting_violation = this;  // purge() from the handler leaves this secret to this path
    const ViolationPolicy policy = report_violation(v);
    reporting_violation = nullptr;
    if (policy == ViolationPolicy::abort) {
      log_critical("aborting after an integrity violation (policy abort)");
      std::abort();
    }
    closing_.store(true, std::memory_order_release);
    if (readers_.load(std::memory_order_relaxed) == 0) {
      quarantine_locked();
    } else {
      deferred_ = deferred::quarantine;  // the last reader in flight does it
    }
    const char* cause = v.kind == ViolationKind::authentication_failed
                            ? "its stored ciphertext failed authentication: memory was corrupted or tampered with"
                            : "memory just in front of it was overwritten: look for a buffer underflow or a stray write";
    throw error(errc::integrity_violation,
                fmt::format("integrity violation in a {}-byte {} secret ({}, {}): {}; the secret was wiped and "
                            "quarantined (its memory is never reused)",
                            v.size, quoted(v.backend), to_string(check), to_string(v.kind), cause));
  }

  void quarantine_locked() noexcept {
    const std::size_t locked_before = locked_;
    with_region([&](region& r) { provider().quarantine(r); });
    mark_finished();
    count_released(locked_before - locked_);
  }

  void run_deferred_locked() noexcept {
    if (deferred_ == deferred::quarantine) {
      quarantine_locked();
    } else {
      release_quietly();
    }
    deferred_ = deferred::nothing;
  }

  void release_locked() {
    mark_finished();
    count_released(locked_);
    try {
      with_region([&](region& r) { no_bad_alloc([&] { provider().release(r); }); });
    } catch (...) {
      count_failure();
      throw;
    }
  }

  void release_quietly() noexcept {
    try {
      release_locked();
    } catch (const std::exception& e) {
      log_error(std::string("releasing a secret failed: ") + e.what());
    }
  }

  friend class securememory::detail::access_scope;

  factory_core* core_;  // counted reference: keeps the backend alive
  // The region (lib/backends/*: what the backend handed out), under mutex_.
  std::byte* data_ = nullptr;
  void* base_ = nullptr;
  // The size, fixed before the state is shared: size() and bytes() read it
  // without the lock (backends never change it).
  std::uint32_t size_ = 0;
  std::uint32_t mapped_ = 0;
  std::uint32_t locked_ = 0;
  // Fork generation it was made in (a chain of 2^32 nested forks would
  // wrap); dropped_generation once a forked child has dropped it.
  std::atomic<std::uint32_t> generation_;
  small_mutex mutex_;
  std::atomic<std::uint32_t> readers_{0};  // changed under mutex_; waited on by close()
  std::atomic<std::uint32_t> waiting_{0};  // readers announced but not yet holding mutex_
  std::atomic<std::uint32_t> refs_{1};     // Secret, Reader and in-flight access_scope references
  access current_ = access::read_write;    // region::current
  bool readable_ = false;   // pages are read-only now (else no-access)
  bool finished_ = false;   // released or quarantined: nothing is held
  deferred deferred_ = deferred::nothing;
  std::atomic<bool> closing_{false};  // no new readers
};

static_assert(sizeof(secret_state) == state_pool::block_size, "a secret's state is one pool block (docs/design.md)");
static_assert(alignof(secret_state) == state_pool::block_size);

bool secret_state::inside_own_access(const access_scope* scope) const noexcept {
  for (; scope != nullptr; scope = scope->outer_) {
    if (scope->state_.get() == this) return true;
  }
  return false;
}

// --- access_scope ---------------------------------------------------------

void retain(secret_state* s) noexcept { s->retain(); }
void drop(secret_state* s) noexcept { s->drop(); }

access_scope::access_scope(state_ref state) : state_(std::move(state)) { enter(); }

access_scope::access_scope(state_ref state, std::error_code& ec) noexcept : state_(std::move(state)) {
  try {
    enter();
  } catch (const std::exception& e) {
    set_error_code(ec, e);
    done_ = true;  // nothing to end
  }
}

void access_scope::enter() {
  if (!state_) throw Error(Errc::closed, "secret handle is empty (moved from or default-constructed)");
  state_->begin_access();
  outer_ = innermost;
  innermost = this;
}

access_scope::~access_scope() {
  if (done_) return;
  innermost = outer_;
  try {
    state_->end_access(false);  // logs a failed re-protection itself
  } catch (...) {
    log_error("ending an access to a secret failed");  // only a failing mutex or allocation gets here
  }
}

std::span<const std::byte> access_scope::bytes() const noexcept {
  return done_ ? std::span<const std::byte>{} : state_->bytes();
}

void access_scope::finish() {
  done_ = true;
  innermost = outer_;
  state_->end_access(true);
}

void access_scope::finish(std::error_code& ec) noexcept {
  try {
    finish();
  } catch (const std::exception& e) {
    set_error_code(ec, e);
  }
}

void null_callback(std::error_code& ec) noexcept {
  try {
    throw_null_callback();
  } catch (const std::exception& e) {
    set_error_code(ec, e);
  }
}

namespace {

// Runs f, turning an exception into ec (and the thread's last message);
// returns f's result, or a default one on an error.
template <class F>
auto reporting(std::error_code& ec, F&& f) noexcept -> decltype(f()) {
  ec.clear();
  try {
    return f();
  } catch (const std::exception& e) {
    set_error_code(ec, e);
  }
  if constexpr (!std::is_void_v<decltype(f())>) return {};
}

}  // namespace

// --- purge ----------------------------------------------------------------

std::size_t purge_all() noexcept {
  // Passes over the pool until one finds no open secret: each collects up
  // to a batch of live states (a reference each, taken under the pool's
  // lock), then purges them outside it. No allocation: purge() must work
  // when memory is short.
  constexpr std::size_t batch = 256;
  std::size_t purged = 0;
  for (;;) {
    struct collected {
      std::array<secret_state*, batch> states{};
      std::size_t count = 0;
      bool more = false;
    } c;
    state_pool::for_each_in_use(
        [](void* block, void* context) noexcept {
          auto& col = *static_cast<collected*>(context);
          auto* s = static_cast<secret_state*>(block);
          if (s->is_closed()) return;  // closed, closing, or inherited
          if (col.count == col.states.size()) {
            col.more = true;
            return;
          }
          if (s->retain_if_alive()) col.states[col.count++] = s;
        },
        &c, true);
    for (std::size_t i = 0; i < c.count; ++i) {
      purged += c.states[i]->purge_now() ? 1 : 0;
      c.states[i]->drop();
    }
    if (!c.more) break;
  }
  return purged;
}

void emergency_wipe_all() noexcept {
  state_pool::for_each_in_use(
      [](void* block, void*) noexcept { static_cast<secret_state*>(block)->wipe_in_signal_handler(); }, nullptr, false);
}

}  // namespace detail

// --- Secret ---------------------------------------------------------------

Secret::Secret(detail::state_ref s) noexcept : state_(std::move(s)) {}

region detail::region_of(const Secret& s) noexcept { return s.state_ ? s.state_->region_now() : region{}; }

Secret& Secret::operator=(Secret&& other) noexcept {
  if (this != &other) {
    if (state_) state_->close_noexcept(detail::innermost);
    state_ = std::move(other.state_);
  }
  return *this;
}

Secret::~Secret() {
  if (state_) state_->close_noexcept(detail::innermost);
}

std::size_t Secret::size() const noexcept { return state_ ? state_->size() : 0; }
bool Secret::is_closed() const noexcept { return !state_ || state_->is_closed(); }
std::string_view Secret::backend() const noexcept { return state_ ? state_->backend_name() : std::string_view{}; }

void Secret::close() {
  if (state_) state_->close(detail::innermost);
}

void Secret::close(std::error_code& ec) noexcept {
  detail::reporting(ec, [&] { close(); });
}

void Secret::verify() const {
  if (!state_) throw Error(Errc::closed, "secret handle is empty (moved from or default-constructed)");
  state_->verify_now();
}

void Secret::verify(std::error_code& ec) const noexcept {
  detail::reporting(ec, [&] { verify(); });
}

Reader Secret::reader() const {
  if (!state_ || state_->is_closed()) throw error(errc::closed, "cannot read a closed secret");
  return Reader(state_);
}

std::optional<Reader> Secret::reader(std::error_code& ec) const noexcept {
  return detail::reporting(ec, [&] { return std::optional<Reader>(reader()); });
}

// --- Reader ---------------------------------------------------------------

Reader::Reader(detail::state_ref s) noexcept : state_(std::move(s)) {}

std::size_t Reader::read(std::span<std::byte> out) {
  const detail::scrub_on_exit scrub;  // the memcpy's registers and stack (scrub.hpp)
  if (!state_ || state_->is_closed()) throw error(errc::closed, "cannot read a closed secret");
  if (out.empty() || offset_ >= state_->size()) return 0;
  detail::access_scope scope(state_);
  const auto bytes = scope.bytes();
  const std::size_t n = std::min(out.size(), bytes.size() - offset_);
  std::memcpy(out.data(), bytes.data() + offset_, n);
  scope.finish();
  offset_ += n;
  return n;
}

std::size_t Reader::read(std::span<std::byte> out, std::error_code& ec) noexcept {
  return detail::reporting(ec, [&] { return read(out); });
}

bool equal(const Secret& a, const Secret& b) {
  const detail::scrub_on_exit scrub;  // sodium_memcmp's registers
  if (a.size() != b.size()) {
    a.verify();  // closed, empty or inherited handles still say so
    b.verify();
    return false;
  }
  return a.with_bytes([&](std::span<const std::byte> x) {
    return b.with_bytes([&](std::span<const std::byte> y) { return sodium_memcmp(x.data(), y.data(), x.size()) == 0; });
  });
}

bool equal(const Secret& a, std::span<const std::byte> bytes) {
  const detail::scrub_on_exit scrub;
  return a.with_bytes([&](std::span<const std::byte> x) {
    return x.size() == bytes.size() && sodium_memcmp(x.data(), bytes.data(), x.size()) == 0;
  });
}

// --- SecretFactory --------------------------------------------------------

SecretFactory::SecretFactory(std::shared_ptr<securememory::backend> b) {
  if (!b) throw error(errc::invalid_argument, "SecretFactory needs a backend, got a null pointer");
  core_ = new (std::nothrow) detail::factory_core(std::move(b));
  if (core_ == nullptr) throw error(errc::out_of_memory, "out of memory for a SecretFactory; free memory");
}

SecretFactory::SecretFactory(const SecretFactory& other) noexcept : core_(other.core_) { core_->retain(); }

SecretFactory& SecretFactory::operator=(const SecretFactory& other) noexcept {
  if (this == &other) return *this;
  other.core_->retain();
  core_->drop();
  core_ = other.core_;
  return *this;
}

SecretFactory::~SecretFactory() { core_->drop(); }

std::string_view SecretFactory::backend() const noexcept { return core_->get().name(); }

Guarantees SecretFactory::guarantees() const noexcept { return core_->get().describe().provides; }

std::string_view SecretFactory::key_backend() const noexcept { return core_->get().describe().key_backend; }

backend& detail::backend_of(const SecretFactory& f) noexcept { return f.core_->get(); }

Secret SecretFactory::create(std::span<std::byte> source) const {
  const detail::scrub_on_exit scrub;  // the copy's registers and stack (scrub.hpp)
  detail::ensure_initialised();
  detail::state_ref state(detail::secret_state::make(core_));
  state->populate(
      source.size(),
      [](std::byte* dst, std::size_t size, void* context) {
        std::memcpy(dst, static_cast<const std::byte*>(context), size);
      },
      source.data());
  sodium_memzero(source.data(), source.size());
  return Secret(std::move(state));
}

Secret SecretFactory::create(std::span<std::byte> source, std::error_code& ec) const noexcept {
  return detail::reporting(ec, [&] { return create(source); });
}

Secret SecretFactory::create_random(std::size_t size, std::error_code& ec) const noexcept {
  return detail::reporting(ec, [&] { return create_random(size); });
}

Secret SecretFactory::create_from_fd(int fd, std::size_t size, std::error_code& ec) const noexcept {
  return detail::reporting(ec, [&] { return create_from_fd(fd, size); });
}

Secret SecretFactory::create_with_callback(std::size_t size, fill_callback fill, void* context,
                                           std::error_code& ec) const {
  ec.clear();
  try {
    return create_with_callback(size, fill, context);
  } catch (const Error& e) {  // the library's errors, also from a secret used inside fill; fill's own propagate
    detail::set_error_code(ec, e);
  } catch (const std::bad_alloc& e) {
    detail::set_error_code(ec, e);
  }
  return {};
}

Secret SecretFactory::create_random(std::size_t size) const {
  const detail::scrub_on_exit scrub;  // the generator's registers and stack (scrub.hpp)
  detail::ensure_initialised();
  detail::state_ref state(detail::secret_state::make(core_));
  state->populate(
      size, [](std::byte* dst, std::size_t n, void*) { detail::csprng::fill(dst, n); }, nullptr);
  return Secret(std::move(state));
}

Secret SecretFactory::create_with_callback(std::size_t size, fill_callback fill, void* context) const {
  const detail::scrub_on_exit scrub;  // what fill left in registers and on the stack (scrub.hpp)
  detail::ensure_initialised();
  struct user_fill {
    fill_callback fill;
    void* context;
  } call{fill, context};
  detail::state_ref state(detail::secret_state::make(core_));
  state->populate(
      size,
      [](std::byte* dst, std::size_t n, void* c) {
        const auto* u = static_cast<const user_fill*>(c);
        u->fill(std::span<std::byte>(dst, n), u->context);
      },
      &call);
  return Secret(std::move(state));
}

Secret SecretFactory::create_from_fd(int fd, std::size_t size) const {
  return create_with(size, [fd](std::span<std::byte> out) {
    std::size_t done = 0;
    while (done < out.size()) {
      const long n = detail::os::read_fd(fd, out.data() + done, out.size() - done);
      if (n > 0) {
        done += static_cast<std::size_t>(n);
      } else if (n == 0) {
        throw error(errc::read_failed,
                    fmt::format("create_from_fd: the input ended after {} of the {} bytes asked for; nothing was kept",
                                done, out.size()));
      } else if (errno != EINTR) {
        detail::throw_os_error(errc::read_failed,
                               fmt::format("create_from_fd: reading byte {} of {} failed", done, out.size()).c_str(),
                               "read", errno, "nothing was kept");
      }
    }
  });
}

}  // namespace securememory
