// securememory: the access path of the state machine (lib/secret_state.cpp
// has its theory of operation): opening and re-protecting around each
// access, integrity checks and quarantine, the per-thread stack of
// accesses, and the closes that come from elsewhere (purge, a signal).

#include "secret_state.hpp"

#include "internal.hpp"
#include "metrics.hpp"
#include "os/os.hpp"

#include <securememory/error.hpp>

#include <sodium.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <sys/mman.h>

namespace securememory::detail {
namespace {

// The innermost access this thread is inside (a linked stack of scopes).
constinit thread_local access_scope* innermost = nullptr;

// The secret whose violation this thread is reporting to the handler (its
// lock held), for purge() called from the handler.
constinit thread_local const secret_state* reporting_violation = nullptr;

}  // namespace

access_scope* innermost_access() noexcept { return innermost; }

bool secret_state::purge_now() noexcept {
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

void secret_state::wipe_in_signal_handler() noexcept {
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

void secret_state::begin_access(violation_check check) {
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

void secret_state::end_access(bool may_throw) {
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

void secret_state::verify_now() {
  throw_if_inherited();
  if (!core_->checks_integrity()) {
    const std::unique_lock lock(mutex_);
    throw_if_unusable();
    return;
  }
  begin_access(ViolationCheck::on_verify);
  end_access(true);
}

bool secret_state::inside_own_access(const access_scope* scope) const noexcept {
  for (; scope != nullptr; scope = scope->outer_) {
    if (scope->state_.get() == this) return true;
  }
  return false;
}

void secret_state::throw_if_unusable() const {
  if (closing_.load(std::memory_order_relaxed)) {
    throw error(errc::closed, "secret is closed: it can no longer be read; create a new one");
  }
}

// After an opening: what the opening found, else (for backends with a
// check) what verify() finds; on a violation calls the handler (once per
// secret), then aborts or quarantines and throws.
void secret_state::check_integrity_locked(ViolationCheck check, std::optional<ViolationKind> found) {
  if (!found && core_->checks_integrity() && readable_) found = provider().verify(load());
  if (!found) return;
  Violation v;
  v.backend = provider().name();
  v.size = size_;
  v.check = check;
  v.kind = *found;
  count_violation(core_->counters());
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

void secret_state::quarantine_locked() noexcept {
  const std::size_t locked_before = locked_;
  const std::size_t mapped_before = mapped_;
  with_region([&](region& r) { provider().quarantine(r); });
  mark_finished();
  // What it could not unlock stays locked for good, and counted.
  count_released(core_->counters(), size_, locked_before - locked_, mapped_before);
}

void secret_state::run_deferred_locked() noexcept {
  if (deferred_ == deferred::quarantine) {
    quarantine_locked();
  } else {
    release_quietly();
  }
  deferred_ = deferred::nothing;
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

}  // namespace securememory::detail
