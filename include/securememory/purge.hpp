// securememory: emergency purge of every secret in the process.
//
// For when something goes wrong: a service that detects tampering, or is
// told to stop, can destroy every secret it holds at once, whatever backend
// holds it and whoever holds the handles. Nothing is installed or changed
// unless one of these is called. See docs/security-model.md ("Emergency
// purge") for what it does and does not protect against.
#pragma once

#include <securememory/config.hpp>

#include <cstddef>
#include <initializer_list>

namespace securememory {

/// Wipes and closes every live secret of every backend in this process:
/// later accesses throw Error(closed) (the handles stay valid and
/// closed); an access in flight finishes its callback, and its secret is
/// wiped and released when the last one leaves. Also empties the page
/// caches and drops the sealed backend's idle key. Never throws, never
/// waits for an access to end, and may be called from anywhere, inside a
/// with_bytes callback or a violation handler included (the secret whose
/// violation is being reported is left to its violation policy). Returns
/// how many secrets it closed or marked for release. Thread-safe.
SECUREMEMORY_API std::size_t purge() noexcept;

/// Installs a handler for each of `signals` (e.g. SIGTERM, SIGINT, SIGHUP)
/// that, when the signal arrives, wipes the bytes of every live secret
/// where they lie and refuses every later access, using only
/// async-signal-safe operations (no lock, no allocation: mprotect and
/// stores), then lets the signal take its previous course: the previous
/// disposition is restored and the signal raised again (default: the
/// process ends as the signal would; a previous handler of the program's
/// runs; SIG_IGN: ignored). One-shot per signal: call again to re-arm.
/// Other threads may be inside callbacks at that moment: they read zeros
/// from then on. Secrets being created or released at that instant may be
/// missed. Throws Error(invalid_argument) for a signal that cannot be
/// caught (SIGKILL, SIGSTOP) or is out of range (nothing is installed
/// then), Error(protection_failed) when sigaction fails.
SECUREMEMORY_API void purge_on_signals(std::initializer_list<int> signals);

}  // namespace securememory
