// securememory: what a backend guarantees on this host, by name.
//
// Every backend describes itself (backend::describe()); what it guarantees
// is that description plus what it found on this host (sealed's key is
// outside the kernel's direct map only where memfd_secret works). A program
// asks with SecretFactory::guarantees(), and demands with
// make_factory(name, required) or SECUREMEMORY_REQUIRE. securememory-audit
// proves each declared guarantee on the host it runs on: a proof that
// contradicts a declaration is a FAIL.
#pragma once

#include <securememory/config.hpp>

#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace securememory {

/// What the secrets of one backend are protected by, on this host, now.
/// A field is true only when the backend provides it; default: nothing.
struct Guarantees {
  /// Never swapped: a secret's plaintext (and a key that decrypts it) is
  /// only ever in locked memory.
  bool locked = false;
  /// Never in a kernel core dump or a gcore snapshot.
  bool excluded_from_core_dumps = false;
  /// Outside an access, reading the secret's memory faults (SIGSEGV).
  bool no_access_while_idle = false;
  /// Outside an access only ciphertext exists; the plaintext exists only in
  /// a locked scratch for the length of an access.
  bool encrypted_at_rest = false;
  /// The secret's bytes cannot be read through /proc/PID/mem or ptrace,
  /// even by root, idle or open (the pages are not in the kernel's direct map).
  bool outside_direct_map = false;
  /// The key that decrypts the secrets at rest cannot be read through
  /// /proc/PID/mem or ptrace, even by root (sealed, with its key in
  /// memfd_secret memory): root reading the process sees ciphertext only,
  /// except for a secret open at that moment.
  bool key_outside_direct_map = false;
  /// A read or write past the secret's last byte faults at once.
  bool guard_pages = false;
  /// A write just in front of the secret is found (on open, close and
  /// Secret::verify()) and goes to the violation handler and policy.
  bool canary = false;
  /// Any change to the stored secret is found (authenticated encryption) and
  /// goes to the violation handler and policy.
  bool tamper_detected = false;
  /// A forked child sees no byte of it (zero-filled or not mapped).
  bool hidden_from_fork_children = false;
  /// Zeroed before its memory is given back or reused.
  bool wiped_on_release = false;
};

/// One field of guarantees, for code that goes through them by name.
enum class Guarantee : unsigned char {
  locked,
  excluded_from_core_dumps,
  no_access_while_idle,
  encrypted_at_rest,
  outside_direct_map,
  key_outside_direct_map,
  guard_pages,
  canary,
  tamper_detected,
  hidden_from_fork_children,
  wiped_on_release,
};

/// Every guarantee, in the order of the struct's fields.
[[nodiscard]] SECUREMEMORY_API std::span<const Guarantee> all_guarantees() noexcept;

/// The field's name ("outside_direct_map"), as SECUREMEMORY_REQUIRE spells it.
[[nodiscard]] SECUREMEMORY_API std::string_view to_string(Guarantee g) noexcept;

/// The guarantee with that field name, or nothing.
[[nodiscard]] SECUREMEMORY_API std::optional<Guarantee> guarantee_from_string(std::string_view name) noexcept;

/// One line saying what the guarantee means.
[[nodiscard]] SECUREMEMORY_API std::string_view explain(Guarantee g) noexcept;

/// The field of `g` for `which`.
[[nodiscard]] SECUREMEMORY_API bool has(const Guarantees& g, Guarantee which) noexcept;

/// Sets the field of `g` for `which`.
SECUREMEMORY_API void set(Guarantees& g, Guarantee which, bool value = true) noexcept;

/// The names of the fields set in `g`, comma-separated ("locked,canary").
[[nodiscard]] SECUREMEMORY_API std::string to_string(const Guarantees& g);

/// The guarantees named in a comma-separated list of field names (the
/// format of SECUREMEMORY_REQUIRE; spaces around names are ignored).
/// Throws error(invalid_argument) naming an unknown field and the known ones.
[[nodiscard]] SECUREMEMORY_API Guarantees parse_guarantees(std::string_view names);

/// The names of earlier versions (lower case, as in the request that asked
/// for them), kept so that code written against them still compiles.
using guarantees = Guarantees;
using guarantee = Guarantee;

}  // namespace securememory
