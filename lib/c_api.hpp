// securememory: what the C API's source files share (lib/c_api.cpp,
// lib/c_api_process.cpp): the handles, the per-thread detail message, and
// guarded(), which turns every exception into a return code (c_api.cpp has
// the theory of operation). Internal.
#pragma once

#include <securememory/securememory.h>

#include <securememory/error.hpp>
#include <securememory/registry.hpp>
#include <securememory/secret.hpp>

#include <array>
#include <charconv>
#include <cxxabi.h>
#include <new>
#include <string_view>

struct securememory_factory {
  securememory::SecretFactory factory;
};

struct securememory_secret {
  securememory::Secret secret;
};

namespace securememory::detail::c_api {

/// Records "function: detail more" as this thread's last error message
/// (cut to 512 bytes; never allocates).
void remember(std::string_view function, std::string_view detail, std::string_view more = {}) noexcept;
/// This thread's last error message.
const char* last_error_message() noexcept;
/// `text` with process lifetime (interned once; never destroyed). Throws
/// std::bad_alloc.
const char* intern(std::string_view text);

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

inline int invalid_argument(const char* function, std::string_view what) {
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

}  // namespace securememory::detail::c_api
