// securememory internal: sealed's key and cipher.
//
// One key per process, made on first use (again in a forked child, which
// never sees its parent's) in a region of the key backend handed in when
// the backend was assembled (the strongest the host has: secretmem, else
// memguard), made read-only after it is written. The key is drawn from the
// library's generator (random.hpp). The cipher is chosen when the key is
// made:
//   aes256gcm         AES-256-GCM, where libsodium reports it available
//                     (AES-NI and PCLMUL: crypto_aead_aes256gcm_is_available);
//                     the expanded key schedule (crypto_aead_aes256gcm_state,
//                     16-byte aligned) is computed once, into the key's
//                     region, and every seal and open uses it
//   chacha20poly1305  ChaCha20-Poly1305 (IETF, 96-bit nonce) elsewhere
// Key region: | key (32) | pad to 16 | AES-GCM state (512) | (the state only
// for aes256gcm; the region is as large for both).
//
// Nonce (12 bytes) = a 4-byte random prefix drawn with the key, then a
// 64-bit counter stored in the slot. Counters are handed to threads in
// blocks (a fetch_add on the key's counter per block), so a seal touches no
// shared cache line, and no value is handed out twice under one key: a
// nonce is never repeated under a key (docs/security-model.md). The slot's
// address and the secret's size are authenticated with it, so a ciphertext
// copied to another slot fails.
//
// The key follows the page cache's rule for idle memory: it stays while no
// sealed secret is alive, unless the page cache's bound is 0, and goes when
// the caches are emptied (set_page_cache_limit(0), memlock pressure). That
// is how a host that must hibernate gets rid of the memfd_secret mapping it
// lives in.
#pragma once

#include "small_mutex.hpp"

#include <securememory/backend.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string_view>

namespace securememory::detail::sealed_parts {

/// Returns the backend the key lives in (throws when none can be had).
using key_backend_source = std::function<std::shared_ptr<backend>()>;

/// Bytes a slot adds to the secret: the nonce counter and the tag.
inline constexpr std::size_t slot_overhead = 8 + 16;

/// The AEAD a key seals with (see the file comment).
enum class cipher : unsigned char { aes256gcm, chacha20poly1305 };

/// aes256gcm where libsodium reports AES-NI and PCLMUL, else
/// chacha20poly1305. Needs sodium_init() (ensure_initialised()).
[[nodiscard]] cipher preferred_cipher() noexcept;

/// Name of a cipher ("AES-256-GCM", "ChaCha20-Poly1305"), for messages.
[[nodiscard]] const char* cipher_name(cipher c) noexcept;

/// Bytes of the key's region in the key backend (key, alignment slack and
/// the AES-GCM state).
[[nodiscard]] std::size_t key_region_bytes() noexcept;

class sealing_key {
 public:
  /// `kind`: the cipher of every key this object makes (tests choose one;
  /// the backend takes preferred_cipher()). aes256gcm must be available.
  sealing_key(key_backend_source source, cipher kind) noexcept : source_(std::move(source)), cipher_(kind) {}
  sealing_key(const sealing_key&) = delete;
  sealing_key& operator=(const sealing_key&) = delete;
  ~sealing_key() = default;  // its backend released it first (release_if_idle)

  /// One more user (a sealed region) in this process; makes the key when
  /// there is none. Throws what the key backend throws, and then counts
  /// nothing.
  void acquire();
  /// One user fewer. The last one releases the key when the page cache
  /// keeps nothing idle (bound 0). Never throws.
  void release() noexcept;
  /// Releases the key if no user is left; returns the bytes of locked
  /// memory that freed (the page cache's idle-holder hook).
  std::size_t release_if_idle() noexcept;

  /// Seals `n` bytes of plaintext into `slot` (n + slot_overhead bytes)
  /// under a fresh nonce. Needs a user (acquire()).
  void seal(std::byte* slot, const std::byte* plain, std::size_t n) noexcept;
  /// Opens `slot` into `plain`; false when it fails authentication (plain
  /// is then unspecified: the caller wipes it). Needs a user.
  [[nodiscard]] bool open(const std::byte* slot, std::byte* plain, std::size_t n) noexcept;

  [[nodiscard]] cipher kind() const noexcept { return cipher_; }
  /// The 4-byte nonce prefix of the key now (for tests that open a slot
  /// with libsodium directly).
  [[nodiscard]] std::array<unsigned char, 4> nonce_prefix_for_tests() const noexcept { return prefix_; }

  /// Locked bytes the key holds in this process now (its region's).
  [[nodiscard]] std::size_t locked_bytes() const noexcept;
  /// The backend the key lives in now ("" when there is none).
  [[nodiscard]] std::string_view backend_name() const noexcept;
  /// The backend the key lives in now, or the one it would be made in
  /// (null when none can be had). For descriptions, not for the path of an
  /// access: it may probe the host.
  [[nodiscard]] std::shared_ptr<Backend> backend_for_description() const noexcept;
  /// The key in place (read-only), for the tests that look for it in core
  /// dumps; empty when this process has none.
  [[nodiscard]] std::span<const std::byte> bytes_for_tests() const noexcept;

  /// From a signal handler: zeroes the key's region where it lies (the key
  /// and the AES-GCM state, after making its pages writable) and refuses to
  /// make another. Async-signal-safe.
  void wipe_in_signal_handler() noexcept;

  /// fork(): held across the fork; in the child nothing uses the key yet.
  void lock_for_fork() noexcept { mutex_.lock(); }
  void unlock_after_fork() noexcept { mutex_.unlock(); }
  void reset_in_child() noexcept { users_.store(0, std::memory_order_relaxed); }

 private:
  void make(std::uint64_t generation);
  // The next nonce counter for this thread (from its block of this key).
  std::uint64_t next_counter() noexcept;
  [[nodiscard]] const unsigned char* key_data() const noexcept;
  [[nodiscard]] const void* aes_state() const noexcept;

  key_backend_source source_;
  cipher cipher_;
  mutable small_mutex mutex_;  // making and dropping the key
  std::atomic<std::uint64_t> users_{0};
  std::atomic<std::uint64_t> generation_{0};  // fork generation + 1 of the key; 0: none
  std::atomic<std::uint64_t> counter_{0};  // next block of nonce counters
  std::atomic<std::uint64_t> id_{0};       // process-unique id of the key now (thread counter blocks are bound to it)
  std::shared_ptr<backend> backend_;  // under mutex_; read by users once generation_ is current
  region region_{};
  std::array<unsigned char, 4> prefix_{};
};

}  // namespace securememory::detail::sealed_parts
