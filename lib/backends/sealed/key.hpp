// securememory internal: sealed's key and cipher.
//
// One key per process, made on first use (again in a forked child, which
// never sees its parent's) in a region of the key backend handed in when
// the backend was assembled (the strongest the host has: secretmem, else
// memguard), made read-only after it is written. Secrets are sealed with
// XChaCha20-Poly1305: nonce = a 16-byte random prefix drawn with the key,
// then a 64-bit counter stored in the slot, so a nonce is never repeated
// under one key; the slot's address and the secret's size are
// authenticated with it, so a ciphertext copied to another slot fails.
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

class sealing_key {
 public:
  explicit sealing_key(key_backend_source source) noexcept : source_(std::move(source)) {}
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

  /// fork(): held across the fork; in the child nothing uses the key yet.
  void lock_for_fork() noexcept { mutex_.lock(); }
  void unlock_after_fork() noexcept { mutex_.unlock(); }
  void reset_in_child() noexcept { users_.store(0, std::memory_order_relaxed); }

 private:
  void make(std::uint64_t generation);

  key_backend_source source_;
  mutable small_mutex mutex_;  // making and dropping the key
  std::atomic<std::uint64_t> users_{0};
  std::atomic<std::uint64_t> generation_{0};  // fork generation + 1 of the key; 0: none
  std::atomic<std::uint64_t> counter_{0};
  std::shared_ptr<backend> backend_;  // under mutex_; read by users once generation_ is current
  region region_{};
  std::array<unsigned char, 16> prefix_{};
};

}  // namespace securememory::detail::sealed_parts
