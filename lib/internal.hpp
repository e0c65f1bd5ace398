// securememory internal: helpers shared by the library's sources.
// Nothing here is part of the public API or exported.
#pragma once

#include <securememory/backend.hpp>
#include <securememory/error.hpp>
#include <securememory/secret.hpp>
#include <securememory/violation.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <spdlog/fmt/fmt.h>

namespace securememory::detail {

// --- initialisation -------------------------------------------------------

/// Initialises libsodium exactly once (thread-safe) and installs the fork
/// handler. Throws error(backend_unavailable) if sodium_init() fails.
void ensure_initialised();

/// Makes one of the library's process-wide objects while the library loads
/// (a namespace-scope `const bool x = made_at_load(...)` in its source):
/// `touch` calls the function that holds it as a function-local static.
/// A static whose initialisation another thread is running when a third
/// forks stays "being initialised" in the child for ever, and the child's
/// first use of it waits for a thread it does not have; made at load, no
/// thread is ever inside those initialisers. A failure is left for the
/// first use to report (nothing may throw while the library loads).
inline bool made_at_load(void (*touch)()) noexcept {
  try {
    touch();
    return true;
  } catch (...) {
    return false;
  }
}

/// The region a secret holds now, as its backend handed it out (empty for
/// an empty or released handle). For tests that inspect a backend's
/// memory; not on any production path.
region region_of(const Secret& s) noexcept;

/// purge(): closes every live secret now, without waiting (lib/secret.cpp).
/// Returns how many it closed or marked for release.
std::size_t purge_all() noexcept;

/// From a signal handler: zeroes every live secret's bytes in place and
/// refuses later accesses; async-signal-safe (no lock, no allocation).
void emergency_wipe_all() noexcept;

/// What a backend wipes besides its secrets in an emergency (sealed: its
/// keys and plaintext scratch). Must be async-signal-safe. At most 4.
using emergency_hook = void (*)() noexcept;
void add_emergency_hook(emergency_hook hook) noexcept;

/// Incremented in every child process right after fork(). A secret created
/// under another generation belongs to the parent.
std::uint64_t fork_generation() noexcept;

// --- errors ---------------------------------------------------------------

/// Sets ec (and the thread's last_error_message()) from a caught
/// exception: an Error's code, out_of_memory for std::bad_alloc,
/// invalid_argument otherwise.
void set_error_code(std::error_code& ec, const std::exception& e) noexcept;

/// Throws error(e) with "<what>: <call> failed: ENOMEM (...). <hint>".
[[noreturn]] void throw_os_error(errc e, const char* what, const char* call, int err, const std::string& hint = {});

/// A name the caller gave (a backend name, maybe from the environment) for
/// a message or a log line: in double quotes, at most 64 bytes of it,
/// control characters, quotes, backslashes and non-ASCII bytes as \xNN,
/// "..." when it was cut.
std::string quoted(std::string_view name);

// --- violations -----------------------------------------------------------

/// Calls the handler (an exception from it is logged and ignored) and
/// returns the policy to apply. (The caller counts the violation.)
violation_policy report_violation(const Violation& v) noexcept;

// --- logging (never pass secret bytes) ------------------------------------

void log_error(const std::string& message) noexcept;
void log_warning(const std::string& message) noexcept;
void log_critical(const std::string& message) noexcept;

}  // namespace securememory::detail
