// securememory: the access state machine shared by every backend.
//
// Theory of operation. A secret_state owns one backend region and guards it
// with a mutex and a condition variable:
//
//   readers_   accesses in flight (with_bytes calls and Reader::read calls)
//   readable_  the pages are currently read-only (else no-access)
//   closing_   close() has started: new accesses are refused
//   released_  the region has been wiped and given back
//
// The first access makes the pages readable, the last one makes them
// no-access again; the callback itself runs with no lock held, so readers
// overlap and share one opening. close() sets closing_, waits until
// readers_ is 0, then releases. Each thread keeps a stack (linked through
// the access_scope objects on its own stack) of the accesses it is inside,
// so close() from inside the same secret's callback is detected and refused
// with errc::reentrant_close instead of deadlocking. Destroying the handle
// from inside its own callback defers the close to the last reader.
//
// Backends are called with the mutex held, one region at a time: they need
// no locking of their own for a region.
#include <securememory/secret.hpp>

#include "internal.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <pthread.h>

namespace securememory {
namespace detail {
namespace {

constinit std::atomic<std::uint64_t> fork_counter{0};
void on_fork_child() noexcept { fork_counter.fetch_add(1, std::memory_order_relaxed); }

// The innermost access this thread is inside (a linked stack of scopes).
constinit thread_local access_scope* innermost = nullptr;

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

class secret_state {
 public:
  using fill_fn = void (*)(std::byte* dst, std::size_t size, void* context);

  explicit secret_state(std::shared_ptr<backend> b) noexcept
      : backend_(std::move(b)), generation_(fork_generation()) {}
  secret_state(const secret_state&) = delete;
  secret_state& operator=(const secret_state&) = delete;

  ~secret_state() {
    // Only reached without a close() when a deferred close was pending or a
    // Reader outlived a handle that was never closed: release quietly.
    close_noexcept();
  }

  // Allocates, fills (read-write), then makes no-access. On failure nothing
  // is held and the error propagates.
  void populate(std::size_t size, fill_fn fill, void* context) {
    try {
      if (size == 0) throw error(errc::invalid_size, "secret size must be at least 1 byte");
      region_ = backend_->allocate(size);
    } catch (...) {
      count_failure();
      released_ = true;
      closing_.store(true, std::memory_order_relaxed);
      throw;
    }
    try {
      fill(region_.data, size, context);
      backend_->protect(region_, access::none);
    } catch (...) {
      count_failure();
      released_ = true;
      closing_.store(true, std::memory_order_relaxed);
      try {
        backend_->release(region_);
      } catch (const std::exception& e) {
        log_error(std::string("releasing a secret after a failed creation failed: ") + e.what());
      }
      throw;
    }
    size_ = size;
    count_created(region_.locked);
  }

  [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {region_.data, region_.size}; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::string_view backend_name() const noexcept { return backend_->name(); }
  [[nodiscard]] bool is_closed() const noexcept { return closing_.load(std::memory_order_acquire); }

  void begin_access() {
    std::unique_lock lock(mutex_);
    if (closing_.load(std::memory_order_relaxed)) {
      throw error(errc::closed, "secret is closed: it can no longer be read; create a new one");
    }
    if (generation_ != fork_generation()) {
      throw error(errc::closed,
                  "secret belongs to the parent process: its memory was wiped at fork(); create secrets in the child");
    }
    if (readers_ == 0 && !readable_) {
      try {
        backend_->protect(region_, access::read);
      } catch (...) {
        count_failure();
        throw;
      }
      readable_ = true;
    }
    ++readers_;
  }

  // Ends one access; the last one makes the pages no-access again. When
  // that fails the pages stay readable (the next access or close tries
  // again) and the failure is thrown (may_throw) or logged.
  void end_access(bool may_throw) {
    std::unique_lock lock(mutex_);
    --readers_;
    if (readers_ != 0) return;
    bool ok = true;
    int err = 0;
    std::string what;
    try {
      backend_->protect(region_, access::none);
      readable_ = false;
    } catch (const error& e) {
      ok = false;
      err = e.sys_errno();
      what = e.what();
      count_failure();
    }
    if (closing_.load(std::memory_order_relaxed)) {
      if (close_when_idle_) {
        release_quietly();
      } else {
        idle_.notify_all();
      }
    }
    if (!ok) {
      if (may_throw) throw error(errc::protection_failed, what + "; the secret may still be readable", err);
      log_error("could not make a secret no-access again after an access: " + what);
    }
  }

  void close(const access_scope* innermost_scope) {
    std::unique_lock lock(mutex_);
    if (released_) return;
    if (inside_own_access(innermost_scope)) {
      throw error(errc::reentrant_close,
                  "close() called from inside this secret's own with_bytes callback or read; close it after the "
                  "callback returns");
    }
    closing_.store(true, std::memory_order_release);
    idle_.wait(lock, [this] { return readers_ == 0; });
    if (released_) return;  // another thread closed it while we waited
    release_locked();
  }

  // For destructors: never throws. Inside the secret's own access the close
  // is deferred to the last reader.
  void close_noexcept(const access_scope* innermost_scope = nullptr) noexcept {
    try {
      {
        std::unique_lock lock(mutex_);
        if (released_) return;
        if (inside_own_access(innermost_scope)) {
          closing_.store(true, std::memory_order_release);
          close_when_idle_ = true;
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
  bool inside_own_access(const access_scope* scope) const noexcept;

  void release_locked() {
    released_ = true;
    readable_ = false;
    const std::size_t locked = region_.locked;
    count_released(locked);
    try {
      backend_->release(region_);
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

  std::shared_ptr<backend> backend_;
  region region_{};
  // The size, fixed before the state is shared: size() reads it without the
  // lock, while close() may be resetting region_ (a data race TSan found).
  std::size_t size_ = 0;
  std::uint64_t generation_;
  std::mutex mutex_;
  std::condition_variable idle_;
  unsigned readers_ = 0;
  bool readable_ = false;
  bool released_ = false;
  bool close_when_idle_ = false;
  std::atomic<bool> closing_{false};
};

bool secret_state::inside_own_access(const access_scope* scope) const noexcept {
  for (; scope != nullptr; scope = scope->outer_) {
    if (scope->state_.get() == this) return true;
  }
  return false;
}

// --- access_scope ---------------------------------------------------------

access_scope::access_scope(std::shared_ptr<secret_state> state) : state_(std::move(state)), outer_(innermost) {
  if (!state_) throw error(errc::closed, "secret handle is empty (moved from or default-constructed)");
  state_->begin_access();
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

std::span<const std::byte> access_scope::bytes() const noexcept { return state_->bytes(); }

void access_scope::finish() {
  done_ = true;
  innermost = outer_;
  state_->end_access(true);
}

}  // namespace detail

// --- Secret ---------------------------------------------------------------

Secret::Secret(std::shared_ptr<detail::secret_state> s) noexcept : state_(std::move(s)) {}

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

Reader Secret::reader() const {
  if (!state_ || state_->is_closed()) throw error(errc::closed, "cannot read a closed secret");
  return Reader(state_);
}

// --- Reader ---------------------------------------------------------------

Reader::Reader(std::shared_ptr<detail::secret_state> s) noexcept : state_(std::move(s)) {}

std::size_t Reader::read(std::span<std::byte> out) {
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

// --- SecretFactory --------------------------------------------------------

SecretFactory::SecretFactory(std::shared_ptr<securememory::backend> b) : backend_(std::move(b)) {
  if (!backend_) throw error(errc::invalid_argument, "SecretFactory needs a backend, got a null pointer");
}

std::string_view SecretFactory::backend() const noexcept { return backend_->name(); }

Secret SecretFactory::create(std::span<std::byte> source) const {
  detail::ensure_initialised();
  auto state = std::make_shared<detail::secret_state>(backend_);
  state->populate(
      source.size(),
      [](std::byte* dst, std::size_t size, void* context) {
        std::memcpy(dst, static_cast<const std::byte*>(context), size);
      },
      source.data());
  sodium_memzero(source.data(), source.size());
  return Secret(std::move(state));
}

Secret SecretFactory::create_random(std::size_t size) const {
  detail::ensure_initialised();
  auto state = std::make_shared<detail::secret_state>(backend_);
  state->populate(
      size, [](std::byte* dst, std::size_t n, void*) { randombytes_buf(dst, n); }, nullptr);
  return Secret(std::move(state));
}

backend::~backend() = default;
bool backend::verify(const region&) const noexcept { return true; }

}  // namespace securememory
