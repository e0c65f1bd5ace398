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
#include "c_api.hpp"
#include "internal.hpp"

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
#include <pthread.h>
#include <set>
#include <string>
#include <string_view>

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
static_assert(SECUREMEMORY_LOG_TRACE == static_cast<int>(securememory::LogLevel::trace));
static_assert(SECUREMEMORY_LOG_WARN == static_cast<int>(securememory::LogLevel::warn));
static_assert(SECUREMEMORY_LOG_OFF == static_cast<int>(securememory::LogLevel::off));

}  // namespace

namespace securememory::detail::c_api {

// ---- the per-thread detail message ------------------------------------------

// Fixed size and trivially destructible: writing it never allocates, and it
// needs no destructor at thread exit. Longer details are cut.
thread_local std::array<char, 512> last_error{};

void remember(std::string_view function, std::string_view detail, std::string_view more) noexcept {
  std::size_t at = 0;
  for (const std::string_view part : {function, std::string_view(": "), detail, more}) {
    const std::size_t n = std::min(part.size(), last_error.size() - 1 - at);
    if (n == 0) continue;  // (an empty part's data() may be null: no memcpy)
    std::memcpy(last_error.data() + at, part.data(), n);
    at += n;
  }
  last_error[at] = '\0';
}

const char* last_error_message() noexcept { return last_error.data(); }

// ---- strings with process lifetime ----------------------------------------

namespace {

// Never destroyed: pointers are handed out. Made while the library loads,
// and its lock held across fork(), so a forked child never waits for a
// thread it does not have (detail::made_at_load).
struct interned {
  std::mutex mutex;
  std::set<std::string, std::less<>> strings;
};

interned& interned_strings() {
  static auto* made = [] {
    auto* s = new interned();
    pthread_atfork([] { interned_strings().mutex.lock(); }, [] { interned_strings().mutex.unlock(); },
                   [] { interned_strings().mutex.unlock(); });
    return s;
  }();
  return *made;
}

// NOLINTNEXTLINE(cert-err58-cpp): made_at_load is noexcept (it catches everything)
[[maybe_unused]] const bool interned_made_at_load = made_at_load([] { (void)interned_strings(); });

}  // namespace

const char* intern(std::string_view text) {
  interned& in = interned_strings();
  const std::lock_guard lock(in.mutex);
  auto it = in.strings.find(text);
  if (it == in.strings.end()) it = in.strings.emplace(text).first;
  return it->c_str();
}

}  // namespace securememory::detail::c_api

using namespace securememory::detail::c_api;  // NOLINT(google-build-using-namespace): this file implements it

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

const char* securememory_last_error_message(void) { return last_error_message(); }

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
