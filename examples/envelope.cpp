// Envelope encryption, end to end: a system key wraps intermediate keys,
// which wrap each record's own data-row key (see envelope.hpp). Encrypts a
// few records, decrypts them, and checks that damaged or re-pointed records
// are refused. Exit status 0 when every check holds.
//
//   SECUREMEMORY_BACKEND=sealed ./envelope     (default: protectedmemory)
#include "envelope.hpp"

#include <securememory/securememory.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace {

std::span<const std::byte> as_bytes(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

bool same(std::span<const std::byte> a, const std::string& b) {
  return std::ranges::equal(a, as_bytes(b));
}

// True when decrypting r fails as it must.
bool refused(const securememory::SecretFactory& factory, const securememory::Secret& ik, const envelope::record& r) {
  try {
    (void)envelope::decrypt(factory, ik, r);
    return false;
  } catch (const envelope::open_failed&) {
    return true;  // create_with wiped and released the half-made DRK
  }
}

}  // namespace

int main() {
  try {
    const securememory::SecretFactory factory = securememory::make_factory();  // SECUREMEMORY_BACKEND

    // The system key. In production it comes from your KMS or HSM: for
    // example create_with() around the KMS's decrypt call, or
    // create_from_fd() on the socket it arrives on (see key-from-file.cpp).
    const securememory::Secret system_key = factory.create_random(envelope::key_bytes);

    // The metastore (a database table in production): intermediate keys,
    // stored only wrapped under the system key.
    std::map<std::uint32_t, envelope::box> metastore;
    for (std::uint32_t id = 1; id <= 3; ++id) {
      const securememory::Secret ik = factory.create_random(envelope::key_bytes);
      metastore[id] = envelope::wrap_key(system_key, ik, envelope::id_context(id));
    }  // each new IK is wiped here: the metastore's wrapped copy is what lives on

    // The IK cache: every IK unwrapped straight into a secret.
    std::map<std::uint32_t, securememory::Secret> iks;
    for (const auto& [id, wrapped] : metastore) {
      iks.emplace(id, envelope::unwrap_key(factory, system_key, wrapped, envelope::id_context(id)));
    }

    // Encrypt: each record gets a DRK of its own, wrapped under an IK.
    const std::vector<std::string> rows = {"alice,4111-1111-1111-1111", "bob,5500-0000-0000-0004",
                                           "carol,3400-0000-0000-009", std::string(1024, 'x')};
    std::vector<envelope::record> stored;
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto ik_id = static_cast<std::uint32_t>(i % iks.size() + 1);
      stored.push_back(envelope::encrypt(factory, ik_id, iks.at(ik_id), as_bytes(rows[i])));
    }

    // Decrypt: the DRK goes from its wrapped form straight into a secret.
    int failures = 0;
    for (std::size_t i = 0; i < stored.size(); ++i) {
      const auto payload = envelope::decrypt(factory, iks.at(stored[i].ik_id), stored[i]);
      if (!same(payload, rows[i])) ++failures;
    }

    // A damaged wrapped key, damaged data, the wrong IK, or an IK's
    // metastore entry moved to another id (the id is authenticated) must not
    // decrypt.
    auto damaged_key = stored[0];
    damaged_key.wrapped_drk[envelope::nonce_bytes] ^= 1U;
    auto damaged_data = stored[0];
    damaged_data.data.back() ^= 1U;
    if (!refused(factory, iks.at(1), damaged_key)) ++failures;
    if (!refused(factory, iks.at(1), damaged_data)) ++failures;
    if (!refused(factory, iks.at(2), stored[0])) ++failures;
    try {
      (void)envelope::unwrap_key(factory, system_key, metastore.at(2), envelope::id_context(1));
      ++failures;
    } catch (const envelope::open_failed&) {
    }

    std::printf("envelope: %zu records encrypted and decrypted under %zu intermediate keys (backend %s), "
                "4 bad inputs refused: %s\n",
                stored.size(), iks.size(), std::string(factory.backend()).c_str(), failures == 0 ? "OK" : "FAILED");
    return failures == 0 ? 0 : 1;
  } catch (const securememory::error& e) {
    std::fprintf(stderr, "envelope: %s\n", e.what());
    // 77 tells `meson test` this host cannot run the chosen backend (a skip).
    return e.code_value() == securememory::errc::backend_unavailable ? 77 : 1;
  }
}
