// securememory: the violation handler and policy.
//
// Theory of operation: one process-wide handler and one policy, in a holder
// that is allocated on first use and never destroyed (violations found
// while static objects are destroyed at exit are still handled). The state
// machine (lib/secret.cpp) calls report_violation() with the secret's lock
// held, then applies the policy that report_violation() returns.
#include <securememory/violation.hpp>

#include "internal.hpp"

#include <atomic>
#include <mutex>

namespace securememory {
namespace {

struct handler_holder {
  std::mutex mutex;
  ViolationHandler handler;
};

handler_holder& holder() {
  static auto* h = new handler_holder{};  // never destroyed (exit-time use)
  return *h;
}

constinit std::atomic<violation_policy> current_policy{violation_policy::abort};

void default_handler(const Violation& v) {
  detail::log_critical(fmt::format("integrity violation in a {}-byte {} secret: {} found {}", v.size, detail::quoted(v.backend),
                                   to_string(v.check), to_string(v.kind)));
}

}  // namespace

ViolationHandler set_violation_handler(ViolationHandler handler) {
  handler_holder& h = holder();
  const std::lock_guard lock(h.mutex);
  std::swap(h.handler, handler);
  return handler;
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

std::string_view to_string(violation_kind k) noexcept {
  switch (k) {
    case violation_kind::canary_before_data: return "canary_before_data";
    case violation_kind::authentication_failed: return "authentication_failed";
  }
  return "unknown";
}

namespace detail {

violation_policy report_violation(const Violation& v) noexcept {
  count_violation();
  ViolationHandler handler;
  {
    handler_holder& h = holder();
    const std::lock_guard lock(h.mutex);
    handler = h.handler;  // called without the holder's lock
  }
  try {
    if (handler) {
      handler(v);
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
