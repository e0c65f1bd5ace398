// securememory: what a violation is (which check found what): the part of
// the violation vocabulary backends need, without the handler's
// std::function (violation.hpp).
#pragma once

#include <securememory/config.hpp>

#include <cstddef>
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

/// The names of earlier versions, kept so that code written against them
/// still compiles (docs/design.md, "Names").
using violation_check = ViolationCheck;
using violation_kind = ViolationKind;

/// "on_open", "on_close", "on_verify".
[[nodiscard]] SECUREMEMORY_API std::string_view to_string(ViolationCheck c) noexcept;
/// "canary_overwritten", "authentication_failed".
[[nodiscard]] SECUREMEMORY_API std::string_view to_string(ViolationKind k) noexcept;

}  // namespace securememory
