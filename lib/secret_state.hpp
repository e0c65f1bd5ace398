// securememory internal: the state of one secret, shared by every backend
// (the access state machine; its theory of operation is at the top of
// lib/secret_state.cpp). The public handles (lib/secret.cpp) only forward
// to it.
#pragma once

#include "internal.hpp"
#include "metrics.hpp"
#include "small_mutex.hpp"
#include "state_pool.hpp"

#include <securememory/backend.hpp>
#include <securememory/secret.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

namespace securememory::detail {

/// The innermost access this thread is inside (a linked stack of the
/// access_scope objects on its stack), or nullptr.
access_scope* innermost_access() noexcept;

// The backend of a factory, shared by the factory's copies and by every
// secret made with it: one pointer per secret keeps the backend alive.
class factory_core final {
 public:
  // Throws std::bad_alloc (the backend's counters, made on first use).
  explicit factory_core(std::shared_ptr<Backend> b) : backend_(std::move(b)) {
    const BackendDescription d = backend_->describe();
    checks_integrity_ = d.checks_integrity;
    counters_ = &counters_for(backend_->name(), d.mappings_per_secret);
  }
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
  [[nodiscard]] backend_counters& counters() const noexcept { return *counters_; }

 private:
  std::shared_ptr<Backend> backend_;
  bool checks_integrity_ = false;
  backend_counters* counters_ = nullptr;
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
  static secret_state* make(factory_core* core);

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

  // Allocates, fills (read-write), then makes no-access. On failure nothing
  // is held and the error propagates.
  void populate(std::size_t size, fill_fn fill, void* context);

  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  [[nodiscard]] region region_now() noexcept;
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::string_view backend_name() const noexcept { return provider().name(); }
  [[nodiscard]] bool is_closed() const noexcept { return closing_.load(std::memory_order_acquire) || inherited(); }

  // One more reader: the first opens the pages; each open checks integrity.
  void begin_access(violation_check check = violation_check::on_open);
  // Ends one access; the last one makes the pages no-access again, or runs
  // the action deferred until the secret is idle. When re-protecting fails
  // the pages stay readable (the next access or the close tries again) and
  // the failure is thrown (may_throw) or logged.
  void end_access(bool may_throw);
  // Secret::verify(): an integrity check now, without keeping the secret open.
  void verify_now();
  void close(const access_scope* innermost_scope);
  // For destructors: never throws. Inside the secret's own access the close
  // is deferred to the last reader.
  void close_noexcept(const access_scope* innermost_scope = nullptr) noexcept;

  // purge(): closes now without waiting for anyone. New accesses are
  // refused at once; with accesses in flight the last one releases. The
  // secret whose violation this thread is reporting is left to its
  // violation path (which holds its lock). Never throws. True when this
  // call found it open.
  bool purge_now() noexcept;
  // From a signal handler (emergency_wipe): async-signal-safe, no lock. The
  // secret is refused from now on, and its bytes are zeroed where they lie
  // (readable or not). A state being created (no data yet) or released
  // (finished) is skipped: its memory may be going away.
  void wipe_in_signal_handler() noexcept;

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
  ~secret_state();

  [[nodiscard]] Backend& provider() const noexcept { return core_->get(); }

  // The region as the backend handed it out (the size is the secret's).
  [[nodiscard]] region load() const noexcept {
    return region{.data = data_, .size = size_, .base = base_, .mapped = mapped_, .locked = locked_, .current = current_};
  }
  // Keeps what a backend call changed. A backend only ever lowers mapped
  // and locked after allocate() (checked there to fit 32 bits).
  void store(const region& r) noexcept;
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
  std::optional<ViolationKind> call_protect(Access a);

  [[nodiscard]] bool inside_own_access(const access_scope* scope) const noexcept;

  // True in a forked child for a secret its parent created. Everything the
  // child inherited of it is a snapshot of the parent at the fork: the
  // mutex may be held and readers_ may count accesses by threads that do
  // not exist here. So an inherited secret is never locked, counted or
  // waited for: every operation on it returns at once.
  [[nodiscard]] bool inherited() const noexcept {
    return generation_.load(std::memory_order_relaxed) != static_cast<std::uint32_t>(fork_generation());
  }
  void throw_if_inherited() const;
  void drop_inherited() noexcept;

  bool finished_now() noexcept;
  // A hint only (no lock): true once the state was released.
  [[nodiscard]] bool finished_now_relaxed() const noexcept {
    return reinterpret_cast<const volatile bool&>(finished_);  // NOLINT(*-reinterpret-cast): racy read, a hint
  }
  void throw_if_unusable() const;
  void mark_finished() noexcept {
    finished_ = true;
    readable_ = false;
    closing_.store(true, std::memory_order_release);
  }

  std::optional<ViolationKind> set_pages_locked(Access a);
  std::optional<ViolationKind> open_locked() {
    if (readable_) return std::nullopt;
    return set_pages_locked(Access::read);
  }
  void close_pages_locked() { (void)set_pages_locked(Access::none); }
  void check_integrity_locked(ViolationCheck check, std::optional<ViolationKind> found);
  void quarantine_locked() noexcept;
  void run_deferred_locked() noexcept;
  void release_locked();
  void release_quietly() noexcept;

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

}  // namespace securememory::detail
