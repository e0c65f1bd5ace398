// Envelope encryption as Asherah's appencryption does it, with every key in
// a securememory secret. Copy this header into your project and adapt it.
//
//   system key (SK)        from your KMS or HSM; wraps the intermediate keys
//   intermediate keys (IK) long-lived, cached, shared by threads; each wraps
//                          the data-row keys of many records
//   data-row key (DRK)     one per record, random, used once
//
// A plaintext key only ever exists inside protected memory: a DRK is made
// with create_random(), read inside with_bytes(), and unwrapped straight
// into a new secret with create_with(), so libsodium writes the decrypted
// key into the secret's own pages, never into a buffer of ours.
//
// The cipher is libsodium's XChaCha20-Poly1305 (IETF): 32-byte keys and
// 24-byte nonces, random nonces being safe for any number of messages.
// Used by examples/envelope.cpp and examples/key-service.cpp, by the
// benchmark (bench/envelope.cpp) and by the core-dump proof of the decrypt
// path (lib/proof/envelope.cpp).
#pragma once

#include <securememory/securememory.hpp>

#include <sodium.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <vector>

namespace envelope {

inline constexpr std::size_t key_bytes = crypto_aead_xchacha20poly1305_ietf_KEYBYTES;     // 32
inline constexpr std::size_t nonce_bytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;  // 24
inline constexpr std::size_t tag_bytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;       // 16

/// What AEAD encryption produces: the nonce, then the ciphertext and its tag.
using box = std::vector<unsigned char>;

/// A box that does not open: damaged, forged, or sealed under another key
/// or context.
struct open_failed : std::runtime_error {
  open_failed() : std::runtime_error("envelope: a box did not open (damaged, forged, or another key)") {}
};

namespace detail {
inline const unsigned char* bytes(std::span<const std::byte> s) { return reinterpret_cast<const unsigned char*>(s.data()); }
}  // namespace detail

/// Encrypts `plain` under `key` with a fresh random nonce. `context` is
/// authenticated but not encrypted: open() needs the same context.
inline box seal(std::span<const std::byte> key, std::span<const std::byte> plain, std::span<const std::byte> context = {}) {
  if (key.size() != key_bytes) throw std::invalid_argument("envelope: keys are 32 bytes");
  box out(nonce_bytes + plain.size() + tag_bytes);
  randombytes_buf(out.data(), nonce_bytes);
  crypto_aead_xchacha20poly1305_ietf_encrypt(out.data() + nonce_bytes, nullptr, detail::bytes(plain), plain.size(),
                                             detail::bytes(context), context.size(), nullptr, out.data(),
                                             detail::bytes(key));
  return out;
}

/// Decrypts `sealed` into `plain`, which must be exactly the plaintext's
/// size. libsodium checks the tag before it writes a byte of plaintext;
/// throws open_failed (and `plain` holds zeros) when the box does not open.
inline void open(std::span<const std::byte> key, std::span<const unsigned char> sealed, std::span<std::byte> plain,
                 std::span<const std::byte> context = {}) {
  if (key.size() != key_bytes) throw std::invalid_argument("envelope: keys are 32 bytes");
  if (sealed.size() != nonce_bytes + plain.size() + tag_bytes ||
      crypto_aead_xchacha20poly1305_ietf_decrypt(reinterpret_cast<unsigned char*>(plain.data()), nullptr, nullptr,
                                                 sealed.data() + nonce_bytes, sealed.size() - nonce_bytes,
                                                 detail::bytes(context), context.size(), sealed.data(),
                                                 detail::bytes(key)) != 0) {
    throw open_failed();
  }
}

/// Wraps (encrypts) the secret `key` under the secret `kek`: one access to
/// the key-encryption key with a nested access to the key.
inline box wrap_key(const securememory::Secret& kek, const securememory::Secret& key, std::span<const std::byte> context) {
  return kek.with_bytes([&](std::span<const std::byte> kek_bytes) {
    return key.with_bytes([&](std::span<const std::byte> plain_key) { return seal(kek_bytes, plain_key, context); });
  });
}

/// Unwraps a key straight into a new secret: one access to `kek`, inside
/// create_with(), so the decrypted key is written into the new secret's
/// protected memory and nowhere else. Throws open_failed (nothing is held).
inline securememory::Secret unwrap_key(const securememory::SecretFactory& factory, const securememory::Secret& kek,
                                       const box& wrapped, std::span<const std::byte> context) {
  if (wrapped.size() != nonce_bytes + key_bytes + tag_bytes) throw open_failed();
  return factory.create_with(key_bytes, [&](std::span<std::byte> out) {
    kek.with_bytes([&](std::span<const std::byte> kek_bytes) { open(kek_bytes, wrapped, out, context); });
  });
}

/// A stored record: the payload under its own DRK, the DRK under an IK.
struct record {
  std::uint32_t ik_id = 0;  ///< which intermediate key wrapped the DRK
  box wrapped_drk;          ///< the DRK under that IK (context: ik_id)
  box data;                 ///< the payload under the DRK
};

/// The context a key is wrapped with: the id of the key that wraps it (4
/// bytes, little-endian on every machine), so that a wrapped key cannot be
/// passed off as another id's.
inline std::array<std::byte, 4> id_context(std::uint32_t id) {
  return {std::byte(id & 0xFFU), std::byte(id >> 8U & 0xFFU), std::byte(id >> 16U & 0xFFU), std::byte(id >> 24U)};
}

/// Encrypts a record: a new random DRK; one access to it to encrypt the
/// payload; one access to the IK with a nested access to the DRK to wrap
/// it; the DRK is closed (wiped) before this returns.
inline record encrypt(const securememory::SecretFactory& factory, std::uint32_t ik_id, const securememory::Secret& ik,
                      std::span<const std::byte> payload) {
  securememory::Secret drk = factory.create_random(key_bytes);
  record r;
  r.ik_id = ik_id;
  r.data = drk.with_bytes([&](std::span<const std::byte> key) { return seal(key, payload); });
  r.wrapped_drk = wrap_key(ik, drk, id_context(r.ik_id));
  drk.close();
  return r;
}

/// A record's DRK, unwrapped under its IK straight into a new secret.
inline securememory::Secret unwrap_drk(const securememory::SecretFactory& factory, const securememory::Secret& ik,
                                       const record& r) {
  return unwrap_key(factory, ik, r.wrapped_drk, id_context(r.ik_id));
}

/// Decrypts a record's payload with its (unwrapped) DRK.
inline std::vector<std::byte> open_data(const securememory::Secret& drk, const record& r) {
  if (r.data.size() < nonce_bytes + tag_bytes) throw open_failed();
  std::vector<std::byte> payload(r.data.size() - nonce_bytes - tag_bytes);
  drk.with_bytes([&](std::span<const std::byte> key) { open(key, r.data, payload); });
  return payload;
}

/// Decrypts a record: one access to the IK to unwrap the DRK into a new
/// secret, then the DRK decrypts the payload; the DRK is closed on return.
/// Throws open_failed for a damaged or forged record, or the wrong IK.
inline std::vector<std::byte> decrypt(const securememory::SecretFactory& factory, const securememory::Secret& ik,
                                      const record& r) {
  const securememory::Secret drk = unwrap_drk(factory, ik, r);
  return open_data(drk, r);
}

}  // namespace envelope
