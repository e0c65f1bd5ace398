// securememory: the C API's process-wide calls (include/securememory/securememory.h):
// backends, violations, counters and the page cache, logging. The theory
// of operation is in lib/c_api.cpp.
#include "c_api.hpp"

#include <securememory/securememory.h>
#include <securememory/error.hpp>
#include <securememory/log.hpp>
#include <securememory/metrics.hpp>
#include <securememory/page_cache.hpp>
#include <securememory/registry.hpp>
#include <securememory/secret.hpp>
#include <securememory/violation.hpp>
#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <cxxabi.h>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <string_view>

using namespace securememory::detail::c_api;  // NOLINT(google-build-using-namespace): this file implements it

// ---- backends -----------------------------------------------------------------

size_t securememory_backend_count(void) {
  std::size_t count = 0;
  guarded("securememory_backend_count", [&] {
    count = securememory::backend_names().size();
    return 0;
  });
  return count;
}

const char* securememory_backend_name(size_t index) {
  const char* name = nullptr;
  guarded("securememory_backend_name", [&] {
    const auto names = securememory::backend_names();
    if (index < names.size()) name = intern(names[index]);
    return 0;
  });
  return name;
}

int securememory_backend_available(const char* name) {
  if (name == nullptr) return 0;
  bool available = false;
  guarded("securememory_backend_available", [&] {
    available = securememory::backend_available(name);
    return 0;
  });
  return available ? 1 : 0;
}

// ---- violations ---------------------------------------------------------------

int securememory_set_violation_handler(securememory_violation_fn fn, void* context) {
  return guarded("securememory_set_violation_handler", [&] {
    securememory::ViolationHandler handler;
    if (fn != nullptr) {
      handler = [fn, context](const securememory::Violation& v) {
        const std::string backend(v.backend);  // NUL-terminated for C
        const securememory_violation c{backend.c_str(), v.size, static_cast<int>(v.check), static_cast<int>(v.kind)};
        fn(&c, context);
      };
    }
    securememory::set_violation_handler(std::move(handler));
    return 0;
  });
}

int securememory_set_violation_policy(int policy, int* previous) {
  if (policy != SECUREMEMORY_POLICY_ABORT && policy != SECUREMEMORY_POLICY_QUARANTINE) {
    return invalid_argument("securememory_set_violation_policy",
                            "not a policy; pass SECUREMEMORY_POLICY_ABORT or SECUREMEMORY_POLICY_QUARANTINE");
  }
  const auto old = securememory::set_violation_policy(static_cast<securememory::ViolationPolicy>(policy));
  if (previous != nullptr) *previous = static_cast<int>(old);
  return 0;
}

// ---- counters and the page cache --------------------------------------------

int securememory_get_metrics(securememory_metrics* out, size_t size) {
  if (out == nullptr || size == 0) {
    return invalid_argument("securememory_get_metrics", "pass a securememory_metrics and sizeof(securememory_metrics)");
  }
  const securememory::metrics_snapshot m = securememory::metrics();
  const securememory_metrics all{m.allocated,  m.in_use,       m.locked_bytes,         m.failures,
                                 m.violations, m.cached_bytes, m.internal_locked_bytes};
  static_assert(sizeof all == sizeof m, "securememory_metrics lacks a field of metrics_snapshot");
  std::memcpy(out, &all, std::min(size, sizeof all));
  return 0;
}

size_t securememory_page_cache_limit(void) { return securememory::page_cache_limit(); }

size_t securememory_set_page_cache_limit(size_t bytes) { return securememory::set_page_cache_limit(bytes); }

// ---- logging --------------------------------------------------------------------

int securememory_set_log_sink(securememory_log_fn fn, void* context) {
  return guarded("securememory_set_log_sink", [&] {
    securememory::LogSink sink;
    if (fn != nullptr) {
      sink = [fn, context](securememory::LogLevel level, std::string_view message) {
        const std::string text(message);  // NUL-terminated for C
        fn(static_cast<int>(level), text.c_str(), text.size(), context);
      };
    }
    securememory::set_log_sink(std::move(sink));
    return 0;
  });
}

int securememory_set_log_level(int level, int* previous) {
  if (level < SECUREMEMORY_LOG_TRACE || level > SECUREMEMORY_LOG_OFF) {
    return invalid_argument("securememory_set_log_level", "not a level; pass SECUREMEMORY_LOG_TRACE ... SECUREMEMORY_LOG_OFF");
  }
  const auto old = securememory::set_log_level(static_cast<securememory::LogLevel>(level));
  if (previous != nullptr) *previous = static_cast<int>(old);
  return 0;
}

int securememory_get_log_level(void) { return static_cast<int>(securememory::get_log_level()); }
