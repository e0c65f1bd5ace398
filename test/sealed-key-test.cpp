// sealed's key and cipher (lib/backends/sealed/key.hpp): AES-256-GCM with
// the precomputed state where libsodium reports it available, ChaCha20-
// Poly1305 (IETF) otherwise, both chosen by hand here; every slot opens with
// libsodium's own one-shot function for that cipher (so the construction is
// the documented one: 4-byte prefix + the slot's counter, address and size
// as associated data); nonces are unique across threads and a fork; a
// ciphertext moved to another slot fails; the AES state is in the key's
// region, 16-byte aligned; the ciphers' stack is within the scrub. No key or
// plaintext byte is printed: children report hashes.
#include "support.hpp"
#include "child-digest.hpp"
#include "stack-probe.hpp"

#include "backends/protectedmemory.hpp"
#include "backends/sealed.hpp"
#include "backends/sealed/key.hpp"
#include "internal.hpp"
#include "scrub.hpp"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

using securememory::detail::sealed_parts::cipher;
using securememory::detail::sealed_parts::sealing_key;
using securememory::detail::sealed_parts::slot_overhead;

namespace {

constexpr std::size_t n = 32;

std::vector<cipher> ciphers_here() {
  securememory::detail::ensure_initialised();
  std::vector<cipher> c{cipher::chacha20poly1305};
  if (crypto_aead_aes256gcm_is_available() != 0) c.push_back(cipher::aes256gcm);
  return c;
}

securememory::detail::sealed_parts::key_backend_source key_source() {
  return [] { return securememory::detail::make_protectedmemory(); };
}

std::vector<std::byte> plaintext() {
  std::vector<std::byte> p(n);
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::byte>(i * 13 + 5);
  return p;
}

// Opens a slot with libsodium's one-shot API, from the key's bytes and the
// documented nonce and associated data; true when it authenticates and
// gives `expected`.
bool opens_with_libsodium(cipher c, const sealing_key& key, const std::byte* slot, const std::vector<std::byte>& expected) {
  const auto k = key.bytes_for_tests();
  std::array<unsigned char, 12> nonce{};
  const auto prefix = key.nonce_prefix_for_tests();
  std::memcpy(nonce.data(), prefix.data(), 4);
  std::memcpy(nonce.data() + 4, slot, 8);
  std::array<unsigned char, 16> ad{};
  const auto where = reinterpret_cast<std::uint64_t>(slot);
  const std::uint64_t size = expected.size();
  std::memcpy(ad.data(), &where, 8);
  std::memcpy(ad.data() + 8, &size, 8);
  const auto* ct = reinterpret_cast<const unsigned char*>(slot) + 8;
  std::vector<unsigned char> out(expected.size());
  const auto* kb = reinterpret_cast<const unsigned char*>(k.data());
  const int rc = c == cipher::aes256gcm
                     ? crypto_aead_aes256gcm_decrypt_detached(out.data(), nullptr, ct, out.size(), ct + out.size(),
                                                              ad.data(), ad.size(), nonce.data(), kb)
                     : crypto_aead_chacha20poly1305_ietf_decrypt_detached(out.data(), nullptr, ct, out.size(),
                                                                          ct + out.size(), ad.data(), ad.size(),
                                                                          nonce.data(), kb);
  return rc == 0 && std::memcmp(out.data(), expected.data(), out.size()) == 0;
}

struct held_key {
  explicit held_key(cipher c) : key(key_source(), c) { key.acquire(); }
  ~held_key() {
    key.release();
    (void)key.release_if_idle();
  }
  held_key(const held_key&) = delete;
  held_key& operator=(const held_key&) = delete;
  sealing_key key;
};

}  // namespace

TEST_CASE("sealed key: AES-256-GCM exactly where libsodium reports AES-NI and PCLMUL, else ChaCha20-Poly1305", "[sealed-key]") {
  securememory::detail::ensure_initialised();
  const bool aes = crypto_aead_aes256gcm_is_available() != 0;
  CHECK(securememory::detail::sealed_parts::preferred_cipher() == (aes ? cipher::aes256gcm : cipher::chacha20poly1305));
  auto factory = securememory::make_factory("sealed");
  CHECK(securememory::detail::sealed_cipher(securememory::detail::backend_of(factory)) ==
        (aes ? "AES-256-GCM" : "ChaCha20-Poly1305"));
  WARN("sealed seals with " << securememory::detail::sealed_cipher(securememory::detail::backend_of(factory)));
}

TEST_CASE("sealed key: each cipher seals what libsodium's own function for it opens, and opens it back", "[sealed-key]") {
  for (const cipher c : ciphers_here()) {
    CAPTURE(securememory::detail::sealed_parts::cipher_name(c));
    held_key h(c);
    CHECK(h.key.kind() == c);
    const auto plain = plaintext();
    std::vector<std::byte> slot(n + slot_overhead);
    h.key.seal(slot.data(), plain.data(), n);
    CHECK(std::search(slot.begin(), slot.end(), plain.begin(), plain.begin() + 8) == slot.end());
    CHECK(opens_with_libsodium(c, h.key, slot.data(), plain));
    const cipher other = c == cipher::aes256gcm ? cipher::chacha20poly1305 : cipher::aes256gcm;
    if (other == cipher::chacha20poly1305 || crypto_aead_aes256gcm_is_available() != 0) {
      CHECK_FALSE(opens_with_libsodium(other, h.key, slot.data(), plain));
    }
    std::vector<std::byte> back(n);
    CHECK(h.key.open(slot.data(), back.data(), n));
    CHECK(back == plain);
    // The AES state lives in the key's region (the key backend's, locked
    // and read-only), 16-byte aligned right after the key.
    const auto key = h.key.bytes_for_tests();
    const auto region = securememory::detail::sealed_parts::key_region_bytes();
    CHECK(region >= 32 + 15 + crypto_aead_aes256gcm_statebytes());
    const auto m = test::find_mapping(key.data());
    REQUIRE(m);
    CHECK(m->has_flag("lo"));
    CHECK(m->has_flag("dd") == test::dump_exclusion_here());
    CHECK(m->perms.substr(0, 3) == "r--");
    if (c == cipher::aes256gcm) {
      alignas(16) crypto_aead_aes256gcm_state expected{};
      crypto_aead_aes256gcm_beforenm(&expected, reinterpret_cast<const unsigned char*>(key.data()));
      const auto at = (reinterpret_cast<std::uintptr_t>(key.data()) + 32 + 15) & ~std::uintptr_t{15};
      CHECK(at + sizeof expected <= reinterpret_cast<std::uintptr_t>(key.data()) + region);
      CHECK(std::memcmp(reinterpret_cast<const void*>(at), &expected, sizeof expected) == 0);
      sodium_memzero(&expected, sizeof expected);
    }
  }
}

TEST_CASE("sealed key: the emergency wipe zeroes the whole key region, the AES-GCM state with the key", "[sealed-key][purge]") {
  for (const cipher c : ciphers_here()) {
    CAPTURE(securememory::detail::sealed_parts::cipher_name(c));
    held_key h(c);
    const auto key = h.key.bytes_for_tests();
    const std::size_t region = securememory::detail::sealed_parts::key_region_bytes();
    const auto* first = key.data();
    if (c == cipher::aes256gcm) CHECK(std::any_of(first + 48, first + region, [](std::byte b) { return b != std::byte{0}; }));
    h.key.wipe_in_signal_handler();
    CHECK(std::all_of(first, first + region, [](std::byte b) { return b == std::byte{0}; }));
  }
}

TEST_CASE("sealed key: a ciphertext moved to another slot, or with a changed size or byte, does not open", "[sealed-key]") {
  for (const cipher c : ciphers_here()) {
    CAPTURE(securememory::detail::sealed_parts::cipher_name(c));
    held_key h(c);
    const auto plain = plaintext();
    std::vector<std::byte> slot(n + slot_overhead);
    h.key.seal(slot.data(), plain.data(), n);
    std::vector<std::byte> back(n);
    std::vector<std::byte> moved(slot.size() + 8);
    std::memcpy(moved.data() + 8, slot.data(), slot.size());
    CHECK_FALSE(h.key.open(moved.data() + 8, back.data(), n));
    CHECK_FALSE(h.key.open(slot.data(), back.data(), n - 1));
    for (const std::size_t at : {std::size_t{0}, std::size_t{8}, n + 8, slot.size() - 1}) {
      CAPTURE(at);
      const auto intact = slot;
      slot[at] ^= std::byte{1};  // in place: the slot's address stays the one sealed
      CHECK_FALSE(h.key.open(slot.data(), back.data(), n));
      slot = intact;
    }
    CHECK(h.key.open(slot.data(), back.data(), n));
  }
}

TEST_CASE("sealed key: nonce counters are unique across 4 threads and 20,000 seals", "[sealed-key][concurrency]") {
  for (const cipher c : ciphers_here()) {
    CAPTURE(securememory::detail::sealed_parts::cipher_name(c));
    held_key h(c);
    const auto plain = plaintext();
    std::vector<std::vector<std::uint64_t>> counters(4);
    std::vector<std::thread> threads;
    for (auto& mine : counters) {
      threads.emplace_back([&] {
        std::vector<std::byte> slot(n + slot_overhead);
        for (int i = 0; i < 5000; ++i) {
          h.key.seal(slot.data(), plain.data(), n);
          std::uint64_t counter = 0;
          std::memcpy(&counter, slot.data(), 8);
          mine.push_back(counter);
        }
      });
    }
    for (auto& t : threads) t.join();
    std::set<std::uint64_t> all;
    for (const auto& mine : counters) all.insert(mine.begin(), mine.end());
    CHECK(all.size() == 20000);
  }
}

TEST_CASE("sealed key: a forked child seals under a key and nonce prefix of its own", "[sealed-key][fork]") {
  auto factory = securememory::make_factory("sealed");
  auto parent_secret = factory.create_random(32);
  const auto& b = securememory::detail::backend_of(factory);
  const auto hash_key = [&b] {
    std::array<unsigned char, 32> d{};
    const auto k = securememory::detail::key_bytes_of(b);
    crypto_generichash(d.data(), d.size(), reinterpret_cast<const unsigned char*>(k.data()), k.size(), nullptr, 0);
    return d;
  };
  const auto parent_key = hash_key();
  const auto child_key = test::digest_from_child([&](bool& ok) {
    auto mine = factory.create_random(32);  // makes the child's key
    ok = mine.with_bytes([](std::span<const std::byte> p) { return p.size(); }) == 32;
    return hash_key();
  });
  CHECK(child_key != parent_key);
  CHECK(hash_key() == parent_key);
}

TEST_CASE("sealed key: scrub_after_cipher reaches as deep as each cipher writes on the stack", "[sealed-key][scrub]") {
  const std::size_t scrubbed_chacha =
      test::stack_depth([] { securememory::detail::scrub_after_cipher(); }, test::probe_kind::written);
  const std::size_t scrubbed_aes =
      test::stack_depth([] { securememory::detail::scrub_after_aes(); }, test::probe_kind::written);
  for (const cipher c : ciphers_here()) {
    CAPTURE(securememory::detail::sealed_parts::cipher_name(c));
    const std::size_t scrubbed = c == cipher::aes256gcm ? scrubbed_aes : scrubbed_chacha;
    held_key h(c);
    const auto plain = plaintext();
    std::vector<std::byte> slot(n + slot_overhead);
    std::vector<std::byte> back(n);
    // The cipher calls alone, from the same depth as the scrub (as seal()
    // and open() make both).
    const auto k = h.key.bytes_for_tests();
    const auto* kb = reinterpret_cast<const unsigned char*>(k.data());
    std::array<unsigned char, 12> nonce{};
    std::array<unsigned char, 16> ad{};
    auto* ct = reinterpret_cast<unsigned char*>(slot.data());
    const auto* m = reinterpret_cast<const unsigned char*>(plain.data());
    auto* out = reinterpret_cast<unsigned char*>(back.data());
    alignas(16) crypto_aead_aes256gcm_state state{};
    if (c == cipher::aes256gcm) crypto_aead_aes256gcm_beforenm(&state, kb);
    const std::size_t raw_seal = test::stack_depth(
        [&] {
          if (c == cipher::aes256gcm) {
            crypto_aead_aes256gcm_encrypt_detached_afternm(ct, ct + n, nullptr, m, n, ad.data(), ad.size(), nullptr,
                                                           nonce.data(), &state);
          } else {
            crypto_aead_chacha20poly1305_ietf_encrypt_detached(ct, ct + n, nullptr, m, n, ad.data(), ad.size(),
                                                               nullptr, nonce.data(), kb);
          }
        },
        test::probe_kind::written);
    int status = 0;
    const std::size_t raw_open = test::stack_depth(
        [&] {
          if (c == cipher::aes256gcm) {
            status = crypto_aead_aes256gcm_decrypt_detached_afternm(out, nullptr, ct, n, ct + n, ad.data(), ad.size(),
                                                                 nonce.data(), &state);
          } else {
            status = crypto_aead_chacha20poly1305_ietf_decrypt_detached(out, nullptr, ct, n, ct + n, ad.data(), ad.size(),
                                                                     nonce.data(), kb);
          }
        },
        test::probe_kind::written);
    sodium_memzero(&state, sizeof state);
    CHECK(status == 0);  // opened what the raw seal above sealed
    const std::size_t left_seal =
        test::stack_depth([&] { h.key.seal(slot.data(), plain.data(), n); }, test::probe_kind::residue);
    const std::size_t left_open =
        test::stack_depth([&] { (void)h.key.open(slot.data(), back.data(), n); }, test::probe_kind::residue);
    WARN(securememory::detail::sealed_parts::cipher_name(c)
         << ": seal writes " << raw_seal << " bytes below its caller, open " << raw_open << "; the scrub erases "
         << scrubbed << "; seal() and open() leave bytes down to " << left_seal << " and " << left_open);
    CHECK(raw_seal <= scrubbed);
    CHECK(raw_open <= scrubbed);
    CHECK(left_seal <= scrubbed + 256);
    CHECK(left_open <= scrubbed + 256);
  }
}
