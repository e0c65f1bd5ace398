// securememory: what happens when memory next to a secret is found corrupted.
//
// Backends with integrity checks (memguard's canary; later, authentication
// of sealed secrets) report a failed check to the state machine, which
//   1. calls the process-wide violation handler, at most once per secret,
//      on the thread that found it;
//   2. then applies the policy: abort (default, like libsodium and memguard)
//      or quarantine (wipe the secret, leave its pages mapped no-access and
//      never free them, mark it closed, throw errc::canary_violation).
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

/// Which check found the corruption.
enum class violation_check : unsigned char {
  on_open,    ///< When the secret was opened for reading (with_bytes, Reader::read).
  on_close,   ///< When the secret was closed (close() or the destructor).
  on_verify,  ///< An explicit Secret::verify().
};

/// What was found corrupted.
enum class violation_kind : unsigned char {
  canary_before_data,  ///< The canary directly in front of the secret's bytes was overwritten.
  authentication_failed,  ///< The secret's ciphertext failed authentication ("sealed": it was altered).
};

/// A description of a violation. Never contains the secret's bytes.
struct Violation {
  std::string_view backend;  ///< Backend name.
  std::size_t size = 0;      ///< The secret's size in bytes.
  violation_check check = violation_check::on_open;
  violation_kind kind = violation_kind::canary_before_data;
};

/// Called once per corrupted secret. See the file comment for its rules.
using ViolationHandler = std::function<void(const Violation&)>;

/// What the library does after the handler returns.
enum class violation_policy : unsigned char {
  abort,       ///< std::abort() (default).
  quarantine,  ///< Wipe, keep the pages mapped no-access forever, close, throw errc::canary_violation.
};

/// Installs the process-wide handler and returns the previous one; a null
/// handler restores the default (which logs the violation). Thread-safe.
SECUREMEMORY_API ViolationHandler set_violation_handler(ViolationHandler handler);

/// Sets the process-wide policy and returns the previous one. Thread-safe.
SECUREMEMORY_API violation_policy set_violation_policy(violation_policy policy) noexcept;

/// Text names, for messages ("on_open", "canary_before_data", ...).
SECUREMEMORY_API std::string_view to_string(violation_check c) noexcept;
SECUREMEMORY_API std::string_view to_string(violation_kind k) noexcept;

}  // namespace securememory
