// securememory: error codes and the exception type every public call throws.
#pragma once

#include <securememory/config.hpp>

#include <string>
#include <system_error>

namespace securememory {

/// Error conditions reported by securememory. Each value is carried by a
/// securememory::error whose message says what happened and what to do.
enum class errc : int {
  closed = 1,           ///< The secret (or its reader) was closed, moved from, or belongs to a parent process.
  invalid_size,         ///< Size 0, or a size whose rounding to whole pages overflows.
  memlock_limit,        ///< The kernel refused to lock the pages (RLIMIT_MEMLOCK).
  out_of_memory,        ///< The kernel refused to map memory.
  protection_failed,    ///< mprotect/madvise (or a backend's equivalent) failed.
  unknown_backend,      ///< No backend is registered under that name.
  duplicate_backend,    ///< A backend is already registered under that name.
  backend_unavailable,  ///< The backend exists but cannot run on this host.
  reentrant_close,      ///< close() called from inside the same secret's with_bytes callback.
  integrity_violation,  ///< Memory next to a secret was overwritten, or its stored form altered (policy quarantine).
  release_failed,       ///< The secret was wiped, but unlocking or unmapping its pages failed.
  invalid_argument,     ///< A null callable or other malformed argument was passed.
  read_failed,          ///< Reading a secret's bytes from a file descriptor failed or ended early.
  canary_violation = integrity_violation,  ///< The earlier name of integrity_violation.
};

/// The std::error_category named "securememory".
SECUREMEMORY_API const std::error_category& category() noexcept;

/// Makes an std::error_code in the "securememory" category.
SECUREMEMORY_API std::error_code make_error_code(errc e) noexcept;

/// The exception type of the library: a std::system_error whose code() is in
/// securememory::category(). When an operating-system call caused it,
/// sys_errno() is that call's errno (0 otherwise). Messages never contain
/// secret bytes.
class SECUREMEMORY_API error : public std::system_error {
 public:
  error(errc e, const std::string& what, int sys_errno = 0);

  /// The errc this error carries.
  [[nodiscard]] errc code_value() const noexcept { return static_cast<errc>(code().value()); }
  /// errno of the system call that failed, or 0.
  [[nodiscard]] int sys_errno() const noexcept { return sys_errno_; }

 private:
  int sys_errno_;
};

}  // namespace securememory

template <>
struct std::is_error_code_enum<securememory::errc> : std::true_type {};
