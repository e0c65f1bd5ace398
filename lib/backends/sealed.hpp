// securememory: the "sealed" backend (encrypted at rest, packed in slots).
//
// Memory layout (P = page size, n = secret size):
//
//   ciphertext slots (sealed/slots.hpp): 256 KiB blocks of plain memory,
//   NOT locked (they hold only ciphertext), one size class per block;
//   secrets over 1,000 bytes get a heap block of their own
//   slot = | nonce counter (8) | ciphertext (n) | tag (16) | pad to 8 |
//
//   plaintext scratch (sealed/scratch.hpp): one reservation of N pages
//   (N = 2 per CPU, 4 to 32), each locked when first needed, MADV_DONTDUMP,
//   MADV_WIPEONFORK, all zero except during an access; a secret larger than
//   P opens into a locked mapping of its own for the access
//
//   sealing key (sealed/key.hpp): the 32-byte key and, for AES-256-GCM,
//   its 512-byte expanded schedule (560 bytes) in a region of the key
//   backend handed in (the strongest the host has: secretmem, else
//   memguard), read-only. Cipher: AES-256-GCM where libsodium reports
//   AES-NI and PCLMUL, else ChaCha20-Poly1305 (IETF); 96-bit nonce = a
//   4-byte prefix drawn with the key + the slot's 64-bit counter
//
// Cost per live secret: round_up(n + 24, 8) bytes of slot (56 for a 32-byte
// secret), nothing locked, no mapping. Locked in all, whatever the number
// of secrets or threads: at most N pages of scratch plus the key's region
// (secretmem: one 4-page arena; memguard: one page), plus a mapping of its
// own for each access to a secret larger than a page.
#pragma once

#include "backends/sealed/key.hpp"

#include <securememory/backend.hpp>

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>

namespace securememory::detail {

/// Makes a sealed backend whose key lives in the backend `key_backend`
/// returns (called again for each key: one per process, again in a forked
/// child). Each backend object has its own key; all share the process's
/// slots and scratch. Throws error(backend_unavailable) if libsodium cannot
/// be initialised.
std::shared_ptr<backend> make_sealed(sealed_parts::key_backend_source key_backend);

/// Memory the sealed backends hold now, for tests and benchmarks.
struct sealed_usage {
  std::size_t live_slots = 0;          ///< Slots holding a secret's ciphertext.
  std::size_t slot_bytes = 0;          ///< Bytes of those slots.
  std::size_t arena_bytes = 0;         ///< Bytes carved into slots so far (live, free or quarantined).
  std::size_t scratch_slabs = 0;       ///< Scratch slabs (pages) locked in this process now.
  std::size_t scratch_slab_count = 0;  ///< The most there can be (N).
};

/// A snapshot of the sealed backends' memory. Thread-safe.
sealed_usage sealed_stats() noexcept;

/// Locked bytes the sealed backends hold for themselves (scratch and keys)
/// in this process now. Thread-safe.
std::size_t sealed_locked_bytes() noexcept;

/// True when b is a sealed backend (the layout below applies to its regions).
bool is_sealed(const backend& b) noexcept;

/// The ciphertext and tag in a sealed secret's slot (the nonce counter is
/// the 8 bytes before it), for tests that corrupt or compare ciphertexts.
std::span<std::byte> sealed_ciphertext_of(const region& r) noexcept;

/// The sealing key of the first sealed backend made (the default
/// registry's) in place (read-only), for the tests that look for it in
/// core dumps; empty when it has none in this process.
std::span<const std::byte> sealed_key_for_tests() noexcept;

/// The AEAD b seals with ("AES-256-GCM" or "ChaCha20-Poly1305"; "" when b
/// is not sealed).
std::string_view sealed_cipher(const backend& b) noexcept;

/// Name of the backend holding b's key now ("" when b is not sealed or has
/// no key in this process).
std::string_view sealed_key_backend(const backend& b) noexcept;

/// b's key in place (read-only) when b is a sealed backend with a key in
/// this process; else empty. For the proofs (lib/proof) that look for it.
std::span<const std::byte> key_bytes_of(const backend& b) noexcept;

}  // namespace securememory::detail
