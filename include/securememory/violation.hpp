// securememory: what happens when memory next to a secret is found corrupted.
//
// Backends with integrity checks (memguard's canary, sealed's
// authentication) report a failed check to the state machine, which
//   1. calls the process-wide violation handler, at most once per secret,
//      on the thread that found it;
//   2. then applies the policy: abort (default, like libsodium and memguard)
//      or quarantine (wipe the secret, leave its pages mapped no-access and
//      never free them, mark it closed, throw errc::integrity_violation).
//
// The handler runs while the library holds that secret's lock. It MAY log,
// count, raise an alert, flush other state, or throw (the exception is
// logged and ignored: the policy still applies). It MUST NOT use the secret
// that failed (its with_bytes, reader or close would deadlock), and should
// not allocate new secrets from a backend it suspects.
#pragma once

#include <securememory/config.hpp>

#include <cstddef>
#include <functional>
#include <string_view>

namespace securememory {

/// Which check found the violation.
enum class ViolationCheck : unsigned char {
  on_open,    ///< When the secret was opened for reading (with_bytes, Reader::read).
  on_close,   ///< When the secret was closed (close() or the destructor).
  on_verify,  ///< An explicit Secret::verify().
};

/// What was found wrong. One vocabulary for every integrity violation: a
/// backend reports one of these, the handler receives it in a Violation,
/// and the policy quarantine throws errc::integrity_violation.
enum class ViolationKind : unsigned char {
  /// Memory just in front of the secret was overwritten (memguard's canary,
  /// or libsodium's in front of it): a buffer underflow, or a stray write.
  canary_overwritten,
  /// The stored ciphertext failed authentication (sealed): it was altered,
  /// by memory corruption or on purpose.
  authentication_failed,
  canary_before_data = canary_overwritten,  ///< The earlier name of canary_overwritten.
};

/// A description of a violation. Never contains the secret's bytes.
struct Violation {
  std::string_view backend;  ///< Backend name.
  std::size_t size = 0;      ///< The secret's size in bytes.
  ViolationCheck check = ViolationCheck::on_open;
  ViolationKind kind = ViolationKind::canary_overwritten;
};

/// Called once per corrupted secret. See the file comment for its rules.
using ViolationHandler = std::function<void(const Violation&)>;

/// What the library does after the handler returns.
enum class ViolationPolicy : unsigned char {
  abort,       ///< std::abort() (default).
  quarantine,  ///< Wipe, keep the pages mapped no-access forever, close, throw errc::integrity_violation.
};

/// The names of earlier versions, kept so that code written against them
/// still compiles (docs/design.md, "Names").
using violation_check = ViolationCheck;
using violation_kind = ViolationKind;
using violation_policy = ViolationPolicy;

/// Installs the process-wide handler and returns the previous one; a null
/// handler restores the default (which logs the violation). Thread-safe.
SECUREMEMORY_API ViolationHandler set_violation_handler(ViolationHandler handler);

/// Sets the process-wide policy and returns the previous one. Thread-safe.
SECUREMEMORY_API ViolationPolicy set_violation_policy(ViolationPolicy policy) noexcept;

/// Text names, for messages ("on_open", "canary_overwritten", "abort", ...).
[[nodiscard]] SECUREMEMORY_API std::string_view to_string(ViolationCheck c) noexcept;
[[nodiscard]] SECUREMEMORY_API std::string_view to_string(ViolationKind k) noexcept;
[[nodiscard]] SECUREMEMORY_API std::string_view to_string(ViolationPolicy p) noexcept;

}  // namespace securememory
