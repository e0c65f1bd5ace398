// A multi-threaded service holding many keys: 1,000 intermediate keys (IK)
// are loaded once from the metastore into secrets and shared by 4 worker
// threads. Each worker encrypts records under a randomly chosen IK (a new
// data-row key per record, see envelope.hpp), then decrypts another
// worker's records. Every round trip is checked; exit status 0 when all
// hold.
//
//   SECUREMEMORY_BACKEND=sealed ./key-service     (default: protectedmemory)
//
// Page backends lock a page per key (1,000 IKs: about 4 MiB locked); under
// a small RLIMIT_MEMLOCK (containers often have 64 KiB) that fails with
// errc::memlock_limit, and "sealed", which locks nothing per key, fits.
#include "envelope.hpp"

#include <securememory/securememory.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr std::uint32_t ik_count = 1000;
constexpr int worker_count = 4;
constexpr int records_per_worker = 250;

// The service: its IK cache is filled once, then only read, so the workers
// share it without a lock (a Secret may be read from many threads at once).
class key_service {
 public:
  key_service(const securememory::SecretFactory& factory, const securememory::Secret& system_key,
              const std::vector<envelope::box>& metastore)
      : factory_(factory) {
    iks_.reserve(metastore.size());
    for (std::uint32_t id = 0; id < metastore.size(); ++id) {
      iks_.push_back(envelope::unwrap_key(factory_, system_key, metastore[id], envelope::id_context(id)));
    }
  }

  [[nodiscard]] std::uint32_t key_count() const { return static_cast<std::uint32_t>(iks_.size()); }

  [[nodiscard]] envelope::record encrypt(std::uint32_t ik_id, std::span<const std::byte> payload) const {
    return envelope::encrypt(factory_, ik_id, iks_.at(ik_id), payload);
  }

  [[nodiscard]] std::vector<std::byte> decrypt(const envelope::record& r) const {
    return envelope::decrypt(factory_, iks_.at(r.ik_id), r);
  }

 private:
  securememory::SecretFactory factory_;
  std::vector<securememory::Secret> iks_;  // index: the IK's id
};

// The payload of worker w's record i: 1 KiB, different for every record.
std::string payload_of(int worker, int i) {
  std::string p = "worker " + std::to_string(worker) + " record " + std::to_string(i) + " ";
  p.resize(1024, static_cast<char>('a' + (worker * 7 + i) % 26));
  return p;
}

std::span<const std::byte> as_bytes(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

}  // namespace

int main() {
  try {
    const securememory::SecretFactory factory = securememory::make_factory();  // SECUREMEMORY_BACKEND
    const securememory::Secret system_key = factory.create_random(envelope::key_bytes);  // from your KMS in production

    // The metastore: IKs generated once and stored wrapped under the system key.
    std::vector<envelope::box> metastore;
    for (std::uint32_t id = 0; id < ik_count; ++id) {
      const securememory::Secret ik = factory.create_random(envelope::key_bytes);
      metastore.push_back(envelope::wrap_key(system_key, ik, envelope::id_context(id)));
    }
    const key_service service(factory, system_key, metastore);

    // Each worker encrypts its records under random IKs...
    std::vector<std::vector<envelope::record>> stored(worker_count);
    std::atomic<int> failures{0};
    std::vector<std::thread> workers;
    for (int w = 0; w < worker_count; ++w) {
      workers.emplace_back([&, w] {
        std::minstd_rand pick(static_cast<unsigned>(w + 1));  // which IK: not a secret
        try {
          for (int i = 0; i < records_per_worker; ++i) {
            stored[w].push_back(service.encrypt(pick() % service.key_count(), as_bytes(payload_of(w, i))));
          }
        } catch (const std::exception& e) {
          std::fprintf(stderr, "key-service: worker %d: %s\n", w, e.what());
          ++failures;
        }
      });
    }
    for (auto& t : workers) t.join();
    workers.clear();

    // ... then decrypts the next worker's, all at once.
    for (int w = 0; w < worker_count; ++w) {
      workers.emplace_back([&, w] {
        const int other = (w + 1) % worker_count;
        try {
          for (std::size_t i = 0; i < stored[other].size(); ++i) {
            const auto payload = service.decrypt(stored[other][i]);
            if (!std::ranges::equal(payload, as_bytes(payload_of(other, static_cast<int>(i))))) ++failures;
          }
        } catch (const std::exception& e) {
          std::fprintf(stderr, "key-service: worker %d: %s\n", w, e.what());
          ++failures;
        }
      });
    }
    for (auto& t : workers) t.join();

    std::size_t records = 0;
    for (const auto& s : stored) records += s.size();
    const bool ok = failures == 0 && records == std::size_t{worker_count} * records_per_worker;
    std::printf("key-service: %u intermediate keys shared by %d threads, %zu records of 1 KiB encrypted and decrypted "
                "across threads (backend %s): %s\n",
                service.key_count(), worker_count, records, std::string(factory.backend()).c_str(), ok ? "OK" : "FAILED");
    return ok ? 0 : 1;
  } catch (const securememory::error& e) {
    std::fprintf(stderr, "key-service: %s\n", e.what());
    if (e.code_value() == securememory::errc::memlock_limit) {
      std::fprintf(stderr, "key-service: raise RLIMIT_MEMLOCK (ulimit -l) or use SECUREMEMORY_BACKEND=sealed\n");
    }
    // 77 tells `meson test` this host cannot run the chosen backend (a skip).
    return e.code_value() == securememory::errc::backend_unavailable ? 77 : 1;
  }
}
