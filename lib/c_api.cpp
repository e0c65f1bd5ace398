// securememory: the C API (include/securememory/securememory.h).
//
// Theory of operation: a thin layer over the public C++ API, with no state
// machine of its own. A factory handle holds a SecretFactory, a secret
// handle a Secret; every call forwards to them. Each function runs its body
// inside guarded(), which turns every exception into a return code (a
// securememory::error into its errc value, std::bad_alloc into
// out_of_memory, anything else into SECUREMEMORY_E_UNEXPECTED) and records
// the detail in a per-thread fixed buffer (no allocation, so even an
// out-of-memory failure can be described). Only glibc's thread-cancellation
// unwind is let through, as it must be. Exceptions thrown by a user
// callback are wrapped in callback_failed inside the callback's frame, so
// they are reported as SECUREMEMORY_E_CALLBACK_FAILED and their text, which
// may describe the secret, is never copied. Strings handed out as "static"
// (backend names, error messages) are interned once in a set that is never
// destroyed, so their pointers stay valid for the life of the process.
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

struct securememory_factory {
  securememory::SecretFactory factory;
};

struct securememory_secret {
  securememory::Secret secret;
};

namespace {

using securememory::errc;

// The C constants are securememory::errc's values.
static_assert(SECUREMEMORY_E_CLOSED == static_cast<int>(errc::closed));
static_assert(SECUREMEMORY_E_INVALID_SIZE == static_cast<int>(errc::invalid_size));
static_assert(SECUREMEMORY_E_MEMLOCK_LIMIT == static_cast<int>(errc::memlock_limit));
static_assert(SECUREMEMORY_E_OUT_OF_MEMORY == static_cast<int>(errc::out_of_memory));
static_assert(SECUREMEMORY_E_PROTECTION_FAILED == static_cast<int>(errc::protection_failed));
static_assert(SECUREMEMORY_E_UNKNOWN_BACKEND == static_cast<int>(errc::unknown_backend));
static_assert(SECUREMEMORY_E_DUPLICATE_BACKEND == static_cast<int>(errc::duplicate_backend));
static_assert(SECUREMEMORY_E_BACKEND_UNAVAILABLE == static_cast<int>(errc::backend_unavailable));
static_assert(SECUREMEMORY_E_REENTRANT_CLOSE == static_cast<int>(errc::reentrant_close));
static_assert(SECUREMEMORY_E_INTEGRITY_VIOLATION == static_cast<int>(errc::integrity_violation));
static_assert(SECUREMEMORY_E_RELEASE_FAILED == static_cast<int>(errc::release_failed));
static_assert(SECUREMEMORY_E_INVALID_ARGUMENT == static_cast<int>(errc::invalid_argument));
static_assert(SECUREMEMORY_E_READ_FAILED == static_cast<int>(errc::read_failed));
static_assert(SECUREMEMORY_MAX_SECRET_SIZE == securememory::max_secret_size);
static_assert(SECUREMEMORY_CHECK_ON_OPEN == static_cast<int>(securememory::ViolationCheck::on_open));
static_assert(SECUREMEMORY_CHECK_ON_CLOSE == static_cast<int>(securememory::ViolationCheck::on_close));
static_assert(SECUREMEMORY_CHECK_ON_VERIFY == static_cast<int>(securememory::ViolationCheck::on_verify));
static_assert(SECUREMEMORY_VIOLATION_CANARY_OVERWRITTEN ==
              static_cast<int>(securememory::ViolationKind::canary_overwritten));
static_assert(SECUREMEMORY_VIOLATION_AUTHENTICATION_FAILED ==
              static_cast<int>(securememory::ViolationKind::authentication_failed));
static_assert(SECUREMEMORY_POLICY_ABORT == static_cast<int>(securememory::ViolationPolicy::abort));
static_assert(SECUREMEMORY_POLICY_QUARANTINE == static_cast<int>(securememory::ViolationPolicy::quarantine));
static_assert(SECUREMEMORY_LOG_TRACE == static_cast<int>(securememory::log_level::trace));
static_assert(SECUREMEMORY_LOG_WARN == static_cast<int>(securememory::log_level::warn));
static_assert(SECUREMEMORY_LOG_OFF == static_cast<int>(securememory::log_level::off));

// ---- the per-thread detail message ------------------------------------------

// Fixed size and trivially destructible: writing it never allocates, and it
// needs no destructor at thread exit. Longer details are cut.
thread_local std::array<char, 512> last_error{};

void remember(std::string_view function, std::string_view detail, std::string_view more = {}) noexcept {
  std::size_t at = 0;
  for (const std::string_view part : {function, std::string_view(": "), detail, more}) {
    const std::size_t n = std::min(part.size(), last_error.size() - 1 - at);
    if (n == 0) continue;  // (an empty part's data() may be null: no memcpy)
    std::memcpy(last_error.data() + at, part.data(), n);
    at += n;
  }
  last_error[at] = '\0';
}

// A user callback failed (fill returned non-zero, or a C++ callback threw).
struct callback_failed {
  const char* detail;
  int returned = 0;  // fill's non-zero return value (0: the callback threw)
};

// Runs body(), returning its code; every exception becomes a code.
template <class F>
int guarded(const char* function, F&& body) {
  try {
    return body();
  } catch (const securememory::error& e) {
    remember(function, e.what());
    return e.code().value();
  } catch (const callback_failed& e) {
    std::array<char, 16> number{};
    if (e.returned != 0) *std::to_chars(number.data(), number.data() + number.size() - 1, e.returned).ptr = '\0';
    remember(function, e.detail, number.data());
    return SECUREMEMORY_E_CALLBACK_FAILED;
  } catch (const std::bad_alloc&) {
    remember(function, "out of memory (the heap refused an allocation); free memory and try again");
    return SECUREMEMORY_E_OUT_OF_MEMORY;
  } catch (const abi::__forced_unwind&) {
    throw;  // thread cancellation must unwind on
  } catch (const std::exception& e) {
    remember(function, "unexpected exception (a user backend's or sink's bug?): ", e.what());
    return SECUREMEMORY_E_UNEXPECTED;
  } catch (...) {
    remember(function, "unexpected exception of unknown type (a user backend's or sink's bug?)");
    return SECUREMEMORY_E_UNEXPECTED;
  }
}

int invalid_argument(const char* function, std::string_view what) {
  remember(function, what);
  return SECUREMEMORY_E_INVALID_ARGUMENT;
}

// Calls a C callback from C++; a C++ exception from it (a C++ caller's
// callback) becomes callback_failed, whose text never carries the
// exception's own (it may describe the secret).
template <class F>
int call_back(F&& fn) {
  try {
    return fn();
  } catch (const abi::__forced_unwind&) {
    throw;
  } catch (...) {
    throw callback_failed{"the callback threw a C++ exception (its text is not copied: it may describe the secret)"};
  }
}

// ---- strings with process lifetime ----------------------------------------

const char* intern(std::string_view text) {
  static auto* strings = new std::set<std::string, std::less<>>();  // never destroyed: pointers handed out
  static auto* mutex = new std::mutex();
  const std::lock_guard lock(*mutex);
  auto it = strings->find(text);
  if (it == strings->end()) it = strings->emplace(text).first;
  return it->c_str();
}

}  // namespace

// ---- errors ---------------------------------------------------------------------

const char* securememory_error_message(int code) {
  switch (code) {
    case SECUREMEMORY_OK: return "success";
    case SECUREMEMORY_E_CALLBACK_FAILED:
      return "a callback failed (a fill callback returned non-zero, or a C++ callback threw); nothing was created";
    case SECUREMEMORY_E_UNEXPECTED: return "unexpected exception (a bug in a user backend, a sink or the library)";
    default: break;
  }
  try {
    return intern(securememory::category().message(code));
  } catch (...) {
    remember("securememory_error_message", "out of memory");
    return "securememory error (no memory for its text)";
  }
}

const char* securememory_last_error_message(void) { return last_error.data(); }

// ---- factories and secrets --------------------------------------------------

int securememory_factory_new(const char* backend, securememory_factory** out) {
  constexpr const char* function = "securememory_factory_new";
  if (out == nullptr) return invalid_argument(function, "out is NULL; pass the address of a securememory_factory*");
  *out = nullptr;
  return guarded(function, [&] {
    auto factory = backend == nullptr || *backend == '\0' ? securememory::make_factory()
                                                          : securememory::make_factory(backend);
    *out = new securememory_factory{factory};  // (a SecretFactory is copied, never moved)
    return 0;
  });
}

void securememory_factory_free(securememory_factory* f) { delete f; }

const char* securememory_factory_backend(const securememory_factory* f) {
  if (f == nullptr) return "";
  const char* name = "";
  guarded("securememory_factory_backend", [&] {
    name = intern(f->factory.backend());
    return 0;
  });
  return name;
}

namespace {

// Makes a secret with make(factory) into *out, the handle allocated first:
// an allocation failure after the secret took (and wiped) the caller's
// bytes would lose them.
template <class Make>
int create_into(const char* function, securememory_factory* f, securememory_secret** out, Make&& make) {
  if (out == nullptr) return invalid_argument(function, "out is NULL; pass the address of a securememory_secret*");
  *out = nullptr;
  if (f == nullptr) return invalid_argument(function, "the factory is NULL; make one with securememory_factory_new");
  return guarded(function, [&] {
    auto handle = std::make_unique<securememory_secret>();
    handle->secret = make(f->factory);
    *out = handle.release();
    return 0;
  });
}

}  // namespace

int securememory_secret_create(securememory_factory* f, void* bytes, size_t size, securememory_secret** out) {
  constexpr const char* function = "securememory_secret_create";
  if (bytes == nullptr) {
    if (out != nullptr) *out = nullptr;
    return invalid_argument(function, "bytes is NULL; pass the buffer holding the secret");
  }
  return create_into(function, f, out, [&](const securememory::SecretFactory& factory) {
    return factory.create(std::span<std::byte>(static_cast<std::byte*>(bytes), size));
  });
}

int securememory_secret_create_random(securememory_factory* f, size_t size, securememory_secret** out) {
  return create_into("securememory_secret_create_random", f, out,
                     [&](const securememory::SecretFactory& factory) { return factory.create_random(size); });
}

int securememory_secret_create_with(securememory_factory* f, size_t size,
                                    int (*fill)(void* bytes, size_t size, void* context), void* context,
                                    securememory_secret** out) {
  constexpr const char* function = "securememory_secret_create_with";
  if (fill == nullptr) {
    if (out != nullptr) *out = nullptr;
    return invalid_argument(function, "the fill callback is NULL; pass a function that writes the bytes");
  }
  return create_into(function, f, out, [&](const securememory::SecretFactory& factory) {
    return factory.create_with(size, [&](std::span<std::byte> bytes) {
      const int result = call_back([&] { return fill(bytes.data(), bytes.size(), context); });
      if (result != 0) {
        throw callback_failed{"the fill callback failed (the memory was wiped and released, nothing is held); it returned ",
                              result};
      }
    });
  });
}

int securememory_secret_create_from_fd(securememory_factory* f, int fd, size_t size, securememory_secret** out) {
  return create_into("securememory_secret_create_from_fd", f, out,
                     [&](const securememory::SecretFactory& factory) { return factory.create_from_fd(fd, size); });
}

int securememory_secret_with_bytes(securememory_secret* s, int (*fn)(const void* bytes, size_t size, void* context),
                                   void* context, int* fn_result) {
  constexpr const char* function = "securememory_secret_with_bytes";
  if (s == nullptr) return invalid_argument(function, "the secret is NULL");
  if (fn == nullptr) return invalid_argument(function, "the callback is NULL; pass a function to call with the bytes");
  return guarded(function, [&] {
    const int result = s->secret.with_bytes([&](std::span<const std::byte> bytes) {
      return call_back([&] { return fn(bytes.data(), bytes.size(), context); });
    });
    if (fn_result != nullptr) *fn_result = result;
    return 0;
  });
}

int securememory_secret_close(securememory_secret* s) {
  constexpr const char* function = "securememory_secret_close";
  if (s == nullptr) return invalid_argument(function, "the secret is NULL");
  return guarded(function, [&] {
    s->secret.close();
    return 0;
  });
}

void securememory_secret_free(securememory_secret* s) { delete s; }  // ~Secret never throws

size_t securememory_secret_size(const securememory_secret* s) { return s == nullptr ? 0 : s->secret.size(); }

int securememory_secret_is_closed(const securememory_secret* s) {
  return s == nullptr || s->secret.is_closed() ? 1 : 0;
}

const char* securememory_secret_backend(const securememory_secret* s) {
  if (s == nullptr) return "";
  const char* name = "";
  guarded("securememory_secret_backend", [&] {
    name = intern(s->secret.backend());
    return 0;
  });
  return name;
}

int securememory_secret_verify(securememory_secret* s) {
  constexpr const char* function = "securememory_secret_verify";
  if (s == nullptr) return invalid_argument(function, "the secret is NULL");
  return guarded(function, [&] {
    s->secret.verify();
    return 0;
  });
}

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
    securememory::log_sink sink;
    if (fn != nullptr) {
      sink = [fn, context](securememory::log_level level, std::string_view message) {
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
  const auto old = securememory::set_log_level(static_cast<securememory::log_level>(level));
  if (previous != nullptr) *previous = static_cast<int>(old);
  return 0;
}

int securememory_get_log_level(void) { return static_cast<int>(securememory::get_log_level()); }
