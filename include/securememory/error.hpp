// securememory: error codes and the exception type every public call throws.
//
// Two ways to receive an error, as std::filesystem offers them: the
// throwing calls throw securememory::Error (a std::system_error); the
// overloads taking a std::error_code& never throw a securememory::Error and
// set the code instead (usable from code built with -fno-exceptions). Both
// carry an Errc in the "securememory" category, which compares equal to the
// nearest std::errc condition (Errc::out_of_memory == std::errc::not_enough_memory).
#pragma once

#include <securememory/config.hpp>

#include <string>
#include <string_view>
#include <system_error>

namespace securememory {

/// Error conditions reported by securememory. Each value is carried by a
/// securememory::Error whose message says what happened and what to do.
enum class Errc : int {
  closed = 1,           ///< The secret (or its reader) was closed, moved from, or belongs to a parent process.
  invalid_size,         ///< Size 0, more than max_secret_size, or a size whose page rounding overflows.
  memlock_limit,        ///< The kernel refused to lock the pages (RLIMIT_MEMLOCK).
  out_of_memory,        ///< No memory, address space or mappings (vm.max_map_count) left.
  protection_failed,    ///< mprotect/madvise (or a backend's equivalent) failed.
  unknown_backend,      ///< No backend is registered under that name.
  duplicate_backend,    ///< A backend is already registered under that name.
  backend_unavailable,  ///< The backend exists but cannot run on this host, or lacks a required guarantee.
  reentrant_close,      ///< close() called from inside the same secret's with_bytes callback.
  integrity_violation,  ///< Memory next to a secret was overwritten, or its stored form altered (policy quarantine).
  release_failed,       ///< The secret was wiped, but unlocking or unmapping its pages failed.
  invalid_argument,     ///< A null callable, an unknown guarantee name or another malformed argument.
  read_failed,          ///< Reading a secret's bytes from a file descriptor failed or ended early.
  canary_violation = integrity_violation,  ///< The earlier name of integrity_violation.
};

/// The std::error_category named "securememory". Its
/// default_error_condition() maps each Errc to the nearest std::errc
/// (closed: bad_file_descriptor; invalid_size, invalid_argument,
/// unknown_backend: invalid_argument; memlock_limit, out_of_memory:
/// not_enough_memory; protection_failed: permission_denied;
/// duplicate_backend: file_exists; backend_unavailable: not_supported;
/// reentrant_close: resource_deadlock_would_occur; integrity_violation:
/// state_not_recoverable; release_failed, read_failed: io_error).
[[nodiscard]] SECUREMEMORY_API const std::error_category& category() noexcept;

/// Makes an std::error_code in the "securememory" category.
[[nodiscard]] SECUREMEMORY_API std::error_code make_error_code(Errc e) noexcept;

/// The enumerator's name ("memlock_limit").
[[nodiscard]] SECUREMEMORY_API std::string_view to_string(Errc e) noexcept;

/// The exception type of the library: a std::system_error whose code() is in
/// securememory::category(). When an operating-system call caused it,
/// sys_errno() is that call's errno (0 otherwise). Messages never contain
/// secret bytes. Copying it never throws (std::system_error's message is
/// reference-counted).
class SECUREMEMORY_API Error : public std::system_error {
 public:
  Error(Errc e, const std::string& what, int sys_errno = 0);

  /// The Errc this error carries.
  [[nodiscard]] Errc code_value() const noexcept { return static_cast<Errc>(code().value()); }
  /// errno of the system call that failed, or 0.
  [[nodiscard]] int sys_errno() const noexcept { return sys_errno_; }

 private:
  int sys_errno_;
};

/// The full message of the last error this thread received through an
/// overload taking a std::error_code& (what Error::what() would have said),
/// "" when there was none. Valid until the thread's next such error.
[[nodiscard]] SECUREMEMORY_API std::string_view last_error_message() noexcept;

/// The names of earlier versions, kept: `error` and `errc` read like
/// std::system_error and std::errc, which they extend.
using error = Error;
using errc = Errc;

}  // namespace securememory

template <>
struct std::is_error_code_enum<securememory::Errc> : std::true_type {};
