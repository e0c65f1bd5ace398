// securememory internal: the library's own random-number generator, for
// create_random() and for sealed's keys, without a system call per use.
//
// Layout: one page, mapped by map_locked() (locked, MADV_DONTDUMP,
// MADV_WIPEONFORK), never unmapped:
//
//   | header (64): generation seeded + 1, seed | slot 0 (576) | slot 1 | ...
//   slot = | mutex (4) | buffered (4) | key (32) | stream (512) | pad |
//
// Each slot is a ChaCha20 generator in the "fast key erasure" style
// (Bernstein, 2017): a refill computes 512 bytes of keystream under the
// slot's key, whose first 32 bytes replace the key and whose other 480 are
// served to requests (and wiped as they are served); a request longer than
// that is served from another nonce of the key, which is then replaced. So
// the state after a request says nothing about what it or any earlier
// request produced. A thread uses the slot of its number (threads are
// numbered in order of first use) modulo the slot count (7 with 4 KiB
// pages), under the slot's mutex: threads on different slots share no
// cache line.
//
// Seeding: the first request of a process (and of every forked child)
// fills every slot's key from the kernel (randombytes_buf: getrandom) in one
// call; after that no request makes a system call. A forked child finds the
// page zero (MADV_WIPEONFORK: never its parent's keys) and its header's
// generation stale, relocks the page (locks are not inherited) and seeds it
// again. docs/security-model.md ("The random-number generator") has the
// argument.
//
// Built on libsodium's crypto_stream_chacha20_ietf; changes nothing
// process-wide (libsodium's randombytes implementation is left alone).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace securememory::detail::csprng {

/// Fills `out` with n random bytes. No system call except on the first use
/// in a process (or forked child), which maps, locks and seeds the state.
/// Throws error(memlock_limit) or error(out_of_memory) only then. Leaves no
/// keystream in registers or on the stack (scrub_after_cipher()).
void fill(std::byte* out, std::size_t n);

/// Locked bytes the generator holds in this process now (its page, once
/// seeded here; 0 before the first use and in a forked child until its
/// first use).
[[nodiscard]] std::size_t locked_bytes() noexcept;

/// How many times this process has seeded the generator from the kernel
/// (for the tests: one per process generation, not one per request).
[[nodiscard]] std::uint64_t kernel_seedings() noexcept;

/// The state page in place, for the tests (smaps flags) and the proofs
/// that look for the generator's keys in dumps; empty before the first use.
[[nodiscard]] std::span<const std::byte> state_for_tests() noexcept;

}  // namespace securememory::detail::csprng
