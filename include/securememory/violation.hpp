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
#include <securememory/violation_kind.hpp>

#include <functional>
#include <string_view>

namespace securememory {

/// Called once per corrupted secret. See the file comment for its rules.
using ViolationHandler = std::function<void(const Violation&)>;

/// What the library does after the handler returns.
enum class ViolationPolicy : unsigned char {
  abort,       ///< std::abort() (default).
  quarantine,  ///< Wipe, keep the pages mapped no-access forever, close, throw errc::integrity_violation.
};

/// The names of earlier versions, kept so that code written against them
/// still compiles (docs/design.md, "Names").
using violation_policy = ViolationPolicy;

/// Installs the process-wide handler and returns the previous one; a null
/// handler restores the default (which logs the violation). Thread-safe.
SECUREMEMORY_API ViolationHandler set_violation_handler(ViolationHandler handler);

/// Sets the process-wide policy and returns the previous one. Thread-safe.
SECUREMEMORY_API ViolationPolicy set_violation_policy(ViolationPolicy policy) noexcept;

/// "abort", "quarantine".
[[nodiscard]] SECUREMEMORY_API std::string_view to_string(ViolationPolicy p) noexcept;

}  // namespace securememory
