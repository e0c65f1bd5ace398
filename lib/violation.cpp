// securememory: the violation handler and policy.
//
// Theory of operation: one process-wide handler and one policy, in a holder
// that is allocated on first use and never destroyed (violations found
// while static objects are destroyed at exit are still handled). The state
// machine (lib/secret.cpp) calls report_violation() with the secret's lock
// held, then applies the policy that report_violation() returns.
#include <securememory/violation.hpp>

#include "internal.hpp"

#include "small_mutex.hpp"

#include <atomic>
#include <memory>
#include <mutex>
#include <pthread.h>

namespace securememory {
namespace {

// The handler is kept behind a shared_ptr: the lock is held only to copy
// or swap that pointer, never while user code (the handler's copy
// constructor or call) runs, and across fork() (pthread_atfork), so a
// forked child never inherits it locked.
struct handler_holder {
  detail::small_mutex mutex;
  std::shared_ptr<ViolationHandler> handler;
};

void lock_holder() noexcept;
void unlock_holder() noexcept;

handler_holder& holder() {
  static auto* h = [] {
    auto* made = new handler_holder{};  // never destroyed (exit-time use)
    pthread_atfork(lock_holder, unlock_holder, unlock_holder);
    return made;
  }();
  return *h;
}

void lock_holder() noexcept { holder().mutex.lock(); }
void unlock_holder() noexcept { holder().mutex.unlock(); }

// Made while the library loads (detail::made_at_load): a forked child never
// finds it half-made by a thread it does not have.
// NOLINTNEXTLINE(cert-err58-cpp): made_at_load is noexcept (it catches everything)
[[maybe_unused]] const bool holder_made_at_load = detail::made_at_load([] { (void)holder(); });

constinit std::atomic<violation_policy> current_policy{violation_policy::abort};

void default_handler(const Violation& v) {
  detail::log_critical(fmt::format("integrity violation in a {}-byte {} secret: {} found {}", v.size, detail::quoted(v.backend),
                                   to_string(v.check), to_string(v.kind)));
}

}  // namespace

ViolationHandler set_violation_handler(ViolationHandler handler) {
  auto next = handler ? std::make_shared<ViolationHandler>(std::move(handler)) : nullptr;
  handler_holder& h = holder();
  {
    const std::lock_guard lock(h.mutex);
    std::swap(h.handler, next);
  }
  if (!next) return {};
  // The previous handler: moved out when nothing else holds it (a report
  // in flight may still be calling it, then it is copied).
  return next.use_count() == 1 ? std::move(*next) : *next;
}

violation_policy set_violation_policy(violation_policy policy) noexcept {
  return current_policy.exchange(policy);
}

std::string_view to_string(violation_check c) noexcept {
  switch (c) {
    case violation_check::on_open: return "on_open";
    case violation_check::on_close: return "on_close";
    case violation_check::on_verify: return "on_verify";
  }
  return "unknown";
}

std::string_view to_string(ViolationKind k) noexcept {
  switch (k) {
    case ViolationKind::canary_overwritten: return "canary_overwritten";
    case ViolationKind::authentication_failed: return "authentication_failed";
  }
  return "unknown";
}

std::string_view to_string(ViolationPolicy p) noexcept {
  switch (p) {
    case ViolationPolicy::abort: return "abort";
    case ViolationPolicy::quarantine: return "quarantine";
  }
  return "unknown";
}

namespace detail {

violation_policy report_violation(const Violation& v) noexcept {
  std::shared_ptr<ViolationHandler> handler;
  {
    handler_holder& h = holder();
    const std::lock_guard lock(h.mutex);
    handler = h.handler;  // a pointer copy: the handler runs without the holder's lock
  }
  try {
    if (handler) {
      (*handler)(v);
    } else {
      default_handler(v);
    }
  } catch (const std::exception& e) {
    log_error(std::string("the violation handler threw (ignored): ") + e.what());
  } catch (...) {
    log_error("the violation handler threw (ignored)");
  }
  return current_policy.load();
}

}  // namespace detail
}  // namespace securememory
