// securememory: the "sealed" backend (encrypted at rest, packed in arenas).
//
// Memory layout (P = page size, n = secret size, K = 64-byte scratch chunk):
//
//   arena block (256 KiB, mmap'd, NOT locked: holds only ciphertext)
//   | slot | slot | slot | ... |        one size class per block
//   slot = | nonce counter (8) | ciphertext (n) | Poly1305 tag (16) | pad to 8 |
//          nonce = per-key random prefix (16) || counter (8); AD = slot address, n
//
//   scratch slab (one per thread that opens secrets; 8 P, aligned to 8 P)
//   | page 0: bitmap, one 64-bit word per page | pages 1..7: plaintext chunks |
//     plain memory, not secret                   mlock'ed, MADV_DONTDUMP,
//                                                MADV_WIPEONFORK; all zero
//                                                except during an access
//   (a secret larger than P opens into its own locked mapping, unmapped after)
//
//   sealing key (32 bytes): one region of the strongest backend available,
//   "secretmem" when registered and usable, else "memguard"; read-only.
//
// Cost per live secret: round_up(n + 24, 8) bytes of arena (56 for a 32-byte
// secret), nothing locked, no mapping. Fixed costs: the key's region, one
// locked 28 KiB scratch slab per thread that reads secrets.
#pragma once

#include <securememory/backend.hpp>

#include <cstddef>
#include <memory>
#include <span>

namespace securememory::detail {

/// Makes the sealed backend (one shared instance per process). The key is
/// created on the first allocate(). Throws error(backend_unavailable) if
/// libsodium cannot be initialised.
std::shared_ptr<backend> make_sealed();

/// Memory the sealed backend holds now, for tests and benchmarks.
struct sealed_usage {
  std::size_t live_slots = 0;    ///< Slots holding a secret's ciphertext.
  std::size_t slot_bytes = 0;    ///< Bytes of those slots.
  std::size_t arena_bytes = 0;   ///< Arena bytes carved into slots so far (live, free or quarantined).
  std::size_t scratch_slabs = 0; ///< Scratch slabs made so far (each 8 pages, 7 of them locked).
};

/// A snapshot of the sealed backend's memory. Thread-safe.
sealed_usage sealed_stats() noexcept;

/// The ciphertext and tag of the secret this thread sealed last (for the
/// tests that corrupt or compare ciphertexts). Empty before any seal.
std::span<std::byte> sealed_last_ciphertext() noexcept;

/// The sealing key of this process, in place (read-only), for the tests that
/// look for it in core dumps; empty before the first allocate(). Never
/// exported from the shared library.
std::span<const std::byte> sealed_key_for_tests() noexcept;

}  // namespace securememory::detail
