// The real workload: envelope encryption of 1 KiB records as
// Asherah's appencryption does it (examples/envelope.hpp), with the keys in
// a backend, next to the same crypto with the keys in ordinary memory.
//
// Theory of operation. Per backend, one workload built on first use and
// shared by every thread: a cache of 1,000 intermediate keys (IK), and
// 1,024 records encrypted under random IKs. One operation is one record:
//   envelope/<b>/encrypt   envelope::encrypt of a 1 KiB payload under a
//                          random IK: a new DRK (create_random), one access
//                          to it to seal the payload, one access to the IK
//                          with a nested access to the DRK to wrap it, close
//   envelope/<b>/decrypt   envelope::decrypt of a random stored record: one
//                          access to its IK inside create_with (the DRK is
//                          unwrapped straight into a new secret), one access
//                          to the DRK to open the payload, close
//   baseline/envelope/...  the same libsodium calls (envelope::seal / open,
//                          randombytes_buf for the DRK) on std::array keys;
//                          the DRK is wiped with sodium_memzero
// The IK (encrypt) or record (decrypt) comes from a per-thread xorshift
// generator seeded with the thread's index, so every run makes the same
// choices. 1, 2 and 4 threads; wall-clock time; items are records, summed
// over the threads. Before timing, each thread decrypts one record and
// compares it with its payload.
#include "envelope-bench.hpp"

#include "envelope.hpp"  // examples/

#include <securememory/securememory.hpp>

#include <benchmark/benchmark.h>
#include <sodium.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace envelope_bench {
namespace {

constexpr std::uint32_t ik_count = 1000;
constexpr std::size_t record_count = 1024;
constexpr std::size_t payload_size = 1024;

// xorshift64*: cheap, deterministic choices (not secrets).
class chooser {
 public:
  explicit chooser(int seed) : state_(0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(seed + 1)) {}
  std::uint32_t operator()(std::size_t n) {
    state_ ^= state_ >> 12U;
    state_ ^= state_ << 25U;
    state_ ^= state_ >> 27U;
    return static_cast<std::uint32_t>(((state_ * 0x2545F4914F6CDD1DULL) >> 32U) % n);
  }

 private:
  std::uint64_t state_;
};

std::vector<std::byte> payload() {
  std::vector<std::byte> p(payload_size);
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<std::byte>(i * 7 + 1);
  return p;
}

// ---- keys in a backend ----------------------------------------------------------

struct workload {
  std::unique_ptr<securememory::SecretFactory> factory;
  std::vector<securememory::Secret> iks;  // index: the IK's id
  std::vector<envelope::record> records;
  std::string error;  // why it could not be built, or ""
};

std::mutex workloads_mutex;
std::map<std::string, std::unique_ptr<workload>>& workloads() {
  static auto* all = new std::map<std::string, std::unique_ptr<workload>>();
  return *all;
}

const workload& workload_of(const std::string& backend) {
  const std::lock_guard lock(workloads_mutex);
  auto& w = workloads()[backend];
  if (w) return *w;
  w = std::make_unique<workload>();
  try {
    w->factory = std::make_unique<securememory::SecretFactory>(securememory::make_factory(backend));
    for (std::uint32_t id = 0; id < ik_count; ++id) w->iks.push_back(w->factory->create_random(envelope::key_bytes));
    chooser pick(ik_count);  // the records' IKs: another sequence than any thread's
    const auto p = payload();
    for (std::size_t i = 0; i < record_count; ++i) {
      const auto id = pick(ik_count);
      w->records.push_back(envelope::encrypt(*w->factory, id, w->iks[id], p));
    }
  } catch (const securememory::error& e) {
    w->error = std::string("cannot build the workload (1,000 IKs: a page each for the page backends): ") + e.what();
  }
  return *w;
}

bool usable(benchmark::State& state, const workload& w) {
  if (!w.error.empty()) {
    state.SkipWithError(w.error.c_str());
    return false;
  }
  const auto& r = w.records.front();
  if (envelope::decrypt(*w.factory, w.iks[r.ik_id], r) != payload()) {
    state.SkipWithError("a record did not decrypt to its payload");
    return false;
  }
  return true;
}

void encrypt(benchmark::State& state, const std::string& backend) {
  const auto& w = workload_of(backend);
  if (!usable(state, w)) return;
  chooser pick(state.thread_index());
  const auto p = payload();
  for (auto _ : state) {
    const auto id = pick(ik_count);
    auto r = envelope::encrypt(*w.factory, id, w.iks[id], p);
    benchmark::DoNotOptimize(r.data.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void decrypt(benchmark::State& state, const std::string& backend) {
  const auto& w = workload_of(backend);
  if (!usable(state, w)) return;
  chooser pick(state.thread_index());
  for (auto _ : state) {
    const auto& r = w.records[pick(record_count)];
    auto p = envelope::decrypt(*w.factory, w.iks[r.ik_id], r);
    benchmark::DoNotOptimize(p.data());
  }
  state.SetItemsProcessed(state.iterations());
}

// ---- keys in ordinary memory ----------------------------------------------------

using plain_key = std::array<std::byte, envelope::key_bytes>;

envelope::record plain_encrypt(std::uint32_t id, const plain_key& ik, std::span<const std::byte> p) {
  plain_key drk;
  randombytes_buf(drk.data(), drk.size());
  envelope::record r;
  r.ik_id = id;
  r.data = envelope::seal(drk, p);
  r.wrapped_drk = envelope::seal(ik, drk, envelope::id_context(r.ik_id));
  sodium_memzero(drk.data(), drk.size());
  return r;
}

std::vector<std::byte> plain_decrypt(const plain_key& ik, const envelope::record& r) {
  plain_key drk;
  envelope::open(ik, r.wrapped_drk, drk, envelope::id_context(r.ik_id));
  std::vector<std::byte> p(r.data.size() - envelope::nonce_bytes - envelope::tag_bytes);
  envelope::open(drk, r.data, p);
  sodium_memzero(drk.data(), drk.size());
  return p;
}

struct plain_workload {
  std::vector<plain_key> iks;
  std::vector<envelope::record> records;
};

const plain_workload& plain() {
  static const plain_workload w = [] {
    plain_workload b;
    b.iks.resize(ik_count);
    for (auto& k : b.iks) randombytes_buf(k.data(), k.size());
    chooser pick(ik_count);  // the records' IKs: another sequence than any thread's
    const auto p = payload();
    for (std::size_t i = 0; i < record_count; ++i) {
      const auto id = pick(ik_count);
      b.records.push_back(plain_encrypt(id, b.iks[id], p));
    }
    return b;
  }();
  return w;
}

void baseline_encrypt(benchmark::State& state) {
  const auto& w = plain();
  chooser pick(state.thread_index());
  const auto p = payload();
  for (auto _ : state) {
    const auto id = pick(ik_count);
    auto r = plain_encrypt(id, w.iks[id], p);
    benchmark::DoNotOptimize(r.data.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void baseline_decrypt(benchmark::State& state) {
  const auto& w = plain();
  if (plain_decrypt(w.iks[w.records.front().ik_id], w.records.front()) != payload()) {
    state.SkipWithError("a record did not decrypt to its payload");
    return;
  }
  chooser pick(state.thread_index());
  for (auto _ : state) {
    const auto& r = w.records[pick(record_count)];
    auto p = plain_decrypt(w.iks[r.ik_id], r);
    benchmark::DoNotOptimize(p.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void threaded(benchmark::internal::Benchmark* b) {
  for (const int t : {1, 2, 4}) b->Threads(t);
  b->UseRealTime();
}

}  // namespace

void register_backend(const std::string& backend) {
  threaded(benchmark::RegisterBenchmark(("envelope/" + backend + "/encrypt").c_str(), encrypt, backend));
  threaded(benchmark::RegisterBenchmark(("envelope/" + backend + "/decrypt").c_str(), decrypt, backend));
}

void register_baseline() {
  threaded(benchmark::RegisterBenchmark("baseline/envelope/encrypt", baseline_encrypt));
  threaded(benchmark::RegisterBenchmark("baseline/envelope/decrypt", baseline_decrypt));
}

void release() {
  const std::lock_guard lock(workloads_mutex);
  workloads().clear();
}

}  // namespace envelope_bench
