// securememory internal: what posix.cpp needs from the platform file
// (lib/os/<platform>.cpp), and what the platform files share. Only the
// files in lib/os/ include it.
#pragma once

#include "os/os.hpp"

#include <cstddef>

namespace securememory::detail::os::platform {

/// True (errno set) when the fault hook says call c must fail.
bool injected(call c) noexcept;

/// The real mlock/munlock. Linux makes them raw system calls: the
/// sanitizers' interceptors turn the libc functions into no-ops that report
/// success (and would make a sanitizer build claim locked pages it never
/// locked).
int mlock(void* addr, std::size_t length) noexcept;
int munlock(void* addr, std::size_t length) noexcept;

/// "ENOMEM", or nullptr when the platform does not know the name.
const char* errno_name(int err) noexcept;
/// "Cannot allocate memory" (not translated), or nullptr: errno_text() then
/// asks strerror_r.
const char* errno_description(int err) noexcept;

/// The portable table behind errno_name() where the C library has no such
/// function: the names of the errno values this library can meet.
const char* common_errno_name(int err) noexcept;

/// True when built with AddressSanitizer, ThreadSanitizer or another
/// sanitizer that intercepts mlock.
constexpr bool sanitized() noexcept {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
  return true;
#else
  return false;
#endif
#else
  return false;
#endif
}

}  // namespace securememory::detail::os::platform
