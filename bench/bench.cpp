// securememory benchmarks, side by side with the system-call floors and the
// peers a user could pick instead (Google Benchmark).
//
// Theory of operation. main() registers, for every backend in
// backend_names():
//   create_close/<backend>/<size>           create(span) + close, 32 B, 4 KiB, 1 MiB
//   create_random_close/<backend>/32        create_random + close
//   with_bytes/<backend>                    with_bytes reading one byte, 1 thread
//   with_bytes_shared/<backend>             ONE shared secret, 1, 2, 4 threads
//   with_bytes_distinct/<backend>           a secret per thread, 1, 2, 4 threads
//   reader_4k/<backend>                     reader() over a 4 KiB secret, 1 KiB reads
//   envelope/<backend>/encrypt|decrypt      the envelope workload, 1 KiB records, 1,000
//                                           IKs, 1, 2, 4 threads (bench/envelope-bench.cpp)
//   with_bytes_live/sealed/<n>              with_bytes on one of n live secrets chosen at
//                                           random, n = 1,000 and 1,000,000 (sealed only:
//                                           a page backend holds a page per secret)
// and the baselines doing the same work with no library around it:
//   floor/<op>/<backend>[/<size>]           the raw system calls of that backend
//                                           (protectedmemory, memguard, secretmem;
//                                           none for another backend: reported)
//   baseline/mprotect_pair, baseline/sodium_mprotect_pair,
//   baseline/sodium_malloc_free/32, baseline/memfd_secret_slot
//   peer/openssl/...  (CRYPTO_secure_malloc heap; -Dbench_openssl)
//   peer/botan/...    (Botan::secure_vector;       -Dbench_botan)
//   baseline/envelope/encrypt|decrypt       the envelope workload's crypto with
//                                           the keys in ordinary memory
// The JSON context names the backends of backend_names() ("backends") and
// those this host cannot run ("backends_unavailable"), for bench/run.py.
// Every benchmark reports items_per_second (operations per second, summed
// over threads; threaded ones use wall-clock time), which bench/run.py turns
// into medians, ratios and the plot. The floors call the kernel directly on
// purpose: they are what the library's lib/os/ calls cost with nothing else.
#include "envelope-bench.hpp"

#include <securememory/securememory.hpp>

#include <benchmark/benchmark.h>
#include <sodium.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <vector>

#if SM_BENCH_OPENSSL
#include <openssl/crypto.h>
#endif
#if SM_BENCH_BOTAN
#include <botan/secmem.h>
#endif

namespace {

namespace sm = securememory;

constexpr std::size_t sizes[] = {32, 4096, std::size_t{1} << 20U};
constexpr int thread_counts[] = {1, 2, 4};
constexpr std::size_t reader_size = 4096;
constexpr std::size_t reader_chunk = 1024;

std::size_t page_size() { return static_cast<std::size_t>(sysconf(_SC_PAGESIZE)); }
std::size_t round_up(std::size_t n) { return (n + page_size() - 1) / page_size() * page_size(); }

[[noreturn]] void die(const char* what) {
  std::perror(what);
  std::abort();
}

int raw_mlock(void* p, std::size_t n) { return static_cast<int>(syscall(SYS_mlock, p, n)); }
int raw_munlock(void* p, std::size_t n) { return static_cast<int>(syscall(SYS_munlock, p, n)); }

void read_one(std::span<const std::byte> b) { benchmark::DoNotOptimize(*static_cast<const volatile std::byte*>(b.data())); }

// ---- the library --------------------------------------------------------------

void create_close(benchmark::State& state, const std::string& backend, std::size_t size) {
  auto factory = sm::make_factory(backend);
  std::vector<std::byte> source(size, std::byte{7});
  for (auto _ : state) {
    auto s = factory.create(source);
    s.close();
  }
  state.SetItemsProcessed(state.iterations());
}

void create_random_close(benchmark::State& state, const std::string& backend) {
  auto factory = sm::make_factory(backend);
  for (auto _ : state) {
    auto s = factory.create_random(32);
    s.close();
  }
  state.SetItemsProcessed(state.iterations());
}

void with_bytes_own(benchmark::State& state, const std::string& backend) {
  auto secret = sm::make_factory(backend).create_random(32);  // per thread, outside the timing
  for (auto _ : state) secret.with_bytes(read_one);
  state.SetItemsProcessed(state.iterations());
}

// One secret per backend, shared by every thread of with_bytes_shared.
std::map<std::string, sm::Secret>& shared_secrets() {
  static auto* secrets = new std::map<std::string, sm::Secret>();
  return *secrets;
}

void with_bytes_shared(benchmark::State& state, const sm::Secret* secret) {
  for (auto _ : state) secret->with_bytes(read_one);
  state.SetItemsProcessed(state.iterations());
}

// The live secrets of with_bytes_live, made once per (backend, n) and kept
// until the end (1,000,000 sealed secrets take about a second to make).
std::map<std::pair<std::string, std::size_t>, std::vector<sm::Secret>>& live_sets() {
  static auto* sets = new std::map<std::pair<std::string, std::size_t>, std::vector<sm::Secret>>();
  return *sets;
}

const std::vector<sm::Secret>& live_secrets(const std::string& backend, std::size_t n) {
  static std::mutex mutex;
  const std::lock_guard lock(mutex);
  auto& held = live_sets()[{backend, n}];
  if (held.empty()) {
    auto factory = sm::make_factory(backend);
    held.reserve(n);
    for (std::size_t i = 0; i < n; ++i) held.push_back(factory.create_random(32));
  }
  return held;
}

// with_bytes on a secret chosen at random (xorshift64: cheap, not a secret)
// among n live ones: what a service holding n keys pays when its accesses
// miss the caches.
void with_bytes_live(benchmark::State& state, const std::string& backend, std::size_t n) {
  const auto& held = live_secrets(backend, n);
  std::uint64_t x = 0x9E3779B97F4A7C15ULL;
  for (auto _ : state) {
    x ^= x << 13U;
    x ^= x >> 7U;
    x ^= x << 17U;
    held[x % n].with_bytes(read_one);
  }
  state.SetItemsProcessed(state.iterations());
}

void reader_4k(benchmark::State& state, const std::string& backend) {
  auto secret = sm::make_factory(backend).create_random(reader_size);
  std::vector<std::byte> out(reader_chunk);
  for (auto _ : state) {
    auto r = secret.reader();
    while (r.read(out) != 0) {
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
}

// ---- floors: the same work with raw system calls ----------------------------

// protectedmemory: mmap, mlock, DONTDUMP, WIPEONFORK, copy in, PROT_NONE,
// wipe the source; PROT_READ|WRITE, wipe, munlock, munmap.
void floor_create_close_protectedmemory(benchmark::State& state, std::size_t size) {
  std::vector<std::byte> source(size, std::byte{7});
  const std::size_t length = round_up(size);
  for (auto _ : state) {
    void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || raw_mlock(p, length) != 0 || madvise(p, length, MADV_DONTDUMP) != 0 ||
        madvise(p, length, MADV_WIPEONFORK) != 0) {
      die("floor protectedmemory allocate");
    }
    std::memcpy(p, source.data(), size);
    if (mprotect(p, length, PROT_NONE) != 0) die("mprotect");
    sodium_memzero(source.data(), size);
    if (mprotect(p, length, PROT_READ | PROT_WRITE) != 0) die("mprotect");
    sodium_memzero(p, length);
    if (raw_munlock(p, length) != 0 || munmap(p, length) != 0) die("floor protectedmemory release");
  }
  state.SetItemsProcessed(state.iterations());
}

// memguard: sodium_malloc, our mlock and 2 madvise on its unprotected range,
// copy in, noaccess, wipe the source; readwrite, wipe, sodium_free.
void floor_create_close_memguard(benchmark::State& state, std::size_t size) {
  std::vector<std::byte> source(size, std::byte{7});
  for (auto _ : state) {
    auto* block = static_cast<std::byte*>(sodium_malloc(size + 16));
    if (block == nullptr) die("sodium_malloc");
    const auto start = reinterpret_cast<std::uintptr_t>(block - 16) & ~(std::uintptr_t{page_size()} - 1);
    const std::size_t length = reinterpret_cast<std::uintptr_t>(block + 16 + size) - start;
    auto* range = reinterpret_cast<void*>(start);
    if (raw_mlock(range, length) != 0 || madvise(range, length, MADV_DONTDUMP) != 0 ||
        madvise(range, length, MADV_WIPEONFORK) != 0) {
      die("floor memguard allocate");
    }
    std::memcpy(block + 16, source.data(), size);
    sodium_mprotect_noaccess(block);
    sodium_memzero(source.data(), size);
    sodium_mprotect_readwrite(block);
    sodium_memzero(block, size + 16);
    sodium_free(block);
  }
  state.SetItemsProcessed(state.iterations());
}

int raw_memfd_secret() { return static_cast<int>(syscall(447 /* SYS_memfd_secret */, 0)); }

// secretmem: one memfd_secret file per secret (no arena): memfd_secret,
// ftruncate, mmap shared, copy in, PROT_NONE, wipe the source; PROT_READ|
// WRITE, wipe, munmap, close.
void floor_create_close_secretmem(benchmark::State& state, std::size_t size) {
  std::vector<std::byte> source(size, std::byte{7});
  const std::size_t length = round_up(size);
  for (auto _ : state) {
    const int fd = raw_memfd_secret();
    if (fd < 0 || ftruncate(fd, static_cast<off_t>(length)) != 0) die("memfd_secret");
    void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) die("mmap memfd_secret");
    std::memcpy(p, source.data(), size);
    if (mprotect(p, length, PROT_NONE) != 0) die("mprotect");
    sodium_memzero(source.data(), size);
    if (mprotect(p, length, PROT_READ | PROT_WRITE) != 0) die("mprotect");
    sodium_memzero(p, length);
    if (munmap(p, length) != 0 || close(fd) != 0) die("floor secretmem release");
  }
  state.SetItemsProcessed(state.iterations());
}

// The protection toggle of a with_bytes on one page (per thread).
struct toggled_page {
  enum kind { anonymous, secret_file };
  explicit toggled_page(kind k) {
    const std::size_t length = page_size();
    if (k == secret_file) {
      fd = raw_memfd_secret();
      if (fd < 0 || ftruncate(fd, static_cast<off_t>(length)) != 0) die("memfd_secret");
      p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    } else {
      p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    }
    if (p == MAP_FAILED) die("floor page");
    // secretmem pages are locked by the kernel, and mlock on them fails
    // (ENOMEM): lock only the anonymous page, as the backends do.
    if (k == anonymous && raw_mlock(p, length) != 0) die("floor page mlock");
    std::memset(p, 1, length);
    if (mprotect(p, length, PROT_NONE) != 0) die("mprotect");
  }
  ~toggled_page() {
    munmap(p, page_size());
    if (fd >= 0) close(fd);
  }
  toggled_page(const toggled_page&) = delete;
  toggled_page& operator=(const toggled_page&) = delete;
  void* p = nullptr;
  int fd = -1;
};

void floor_toggle(benchmark::State& state, toggled_page::kind k) {
  const toggled_page page(k);
  for (auto _ : state) {
    if (mprotect(page.p, page_size(), PROT_READ) != 0) die("mprotect");
    benchmark::DoNotOptimize(*static_cast<const volatile char*>(page.p));
    if (mprotect(page.p, page_size(), PROT_NONE) != 0) die("mprotect");
  }
  state.SetItemsProcessed(state.iterations());
}

void floor_toggle_sodium(benchmark::State& state) {
  auto* block = static_cast<unsigned char*>(sodium_malloc(32));
  if (block == nullptr) die("sodium_malloc");
  sodium_mprotect_noaccess(block);
  for (auto _ : state) {
    sodium_mprotect_readonly(block);
    benchmark::DoNotOptimize(*static_cast<const volatile unsigned char*>(block));
    sodium_mprotect_noaccess(block);
  }
  sodium_free(block);
  state.SetItemsProcessed(state.iterations());
}

// A 4 KiB read in 1 KiB chunks, each chunk one toggle (what reader_4k does).
void floor_reader(benchmark::State& state, toggled_page::kind k) {
  const toggled_page page(k);
  std::vector<std::byte> out(reader_chunk);
  for (auto _ : state) {
    for (std::size_t off = 0; off < reader_size; off += reader_chunk) {
      if (mprotect(page.p, page_size(), PROT_READ) != 0) die("mprotect");
      std::memcpy(out.data(), static_cast<const std::byte*>(page.p) + off, reader_chunk);
      if (mprotect(page.p, page_size(), PROT_NONE) != 0) die("mprotect");
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void floor_reader_sodium(benchmark::State& state) {
  auto* block = static_cast<std::byte*>(sodium_malloc(reader_size));
  if (block == nullptr) die("sodium_malloc");
  sodium_mprotect_noaccess(block);
  std::vector<std::byte> out(reader_chunk);
  for (auto _ : state) {
    for (std::size_t off = 0; off < reader_size; off += reader_chunk) {
      sodium_mprotect_readonly(block);
      std::memcpy(out.data(), block + off, reader_chunk);
      sodium_mprotect_noaccess(block);
    }
    benchmark::DoNotOptimize(out.data());
  }
  sodium_free(block);
  state.SetItemsProcessed(state.iterations());
}

void baseline_sodium_malloc_free(benchmark::State& state) {
  for (auto _ : state) {
    void* p = sodium_malloc(32);
    if (p == nullptr) die("sodium_malloc");
    benchmark::DoNotOptimize(p);
    sodium_free(p);
  }
  state.SetItemsProcessed(state.iterations());
}

// memfd_secret slot setup: a one-page secret-memory file, mapped, touched
// (the page is allocated and removed from the direct map), unmapped, closed.
void baseline_memfd_secret_slot(benchmark::State& state) {
  const std::size_t length = page_size();
  for (auto _ : state) {
    const int fd = raw_memfd_secret();
    if (fd < 0 || ftruncate(fd, static_cast<off_t>(length)) != 0) die("memfd_secret");
    void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) die("mmap memfd_secret");
    *static_cast<volatile char*>(p) = 1;
    if (munmap(p, length) != 0 || close(fd) != 0) die("munmap/close");
  }
  state.SetItemsProcessed(state.iterations());
}

bool memfd_secret_works() {
  const int fd = raw_memfd_secret();
  if (fd < 0) return false;
  close(fd);
  return true;
}

// ---- peers ------------------------------------------------------------------------

#if SM_BENCH_OPENSSL
void peer_openssl_create_close(benchmark::State& state, std::size_t size) {
  std::vector<std::byte> source(size, std::byte{7});
  for (auto _ : state) {
    void* p = CRYPTO_secure_malloc(size, __FILE__, __LINE__);
    if (p == nullptr) die("CRYPTO_secure_malloc");
    std::memcpy(p, source.data(), size);
    OPENSSL_cleanse(source.data(), size);
    CRYPTO_secure_clear_free(p, size, __FILE__, __LINE__);
  }
  state.SetItemsProcessed(state.iterations());
}

void peer_openssl_with_bytes(benchmark::State& state) {
  void* p = CRYPTO_secure_malloc(32, __FILE__, __LINE__);
  if (p == nullptr) die("CRYPTO_secure_malloc");
  std::memset(p, 1, 32);
  for (auto _ : state) read_one({static_cast<const std::byte*>(p), 32});
  CRYPTO_secure_clear_free(p, 32, __FILE__, __LINE__);
  state.SetItemsProcessed(state.iterations());
}
#endif

#if SM_BENCH_BOTAN
void peer_botan_create_close(benchmark::State& state, std::size_t size) {
  std::vector<std::uint8_t> source(size, 7);
  for (auto _ : state) {
    Botan::secure_vector<std::uint8_t> v(source.begin(), source.end());
    sodium_memzero(source.data(), size);
    benchmark::DoNotOptimize(v.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void peer_botan_with_bytes(benchmark::State& state) {
  Botan::secure_vector<std::uint8_t> v(32, 1);
  for (auto _ : state) read_one(std::as_bytes(std::span(v)));
  state.SetItemsProcessed(state.iterations());
}
#endif

// ---- registration -------------------------------------------------------------------

template <class... Args>
benchmark::internal::Benchmark* add(const std::string& name, Args&&... args) {
  return benchmark::RegisterBenchmark(name.c_str(), std::forward<Args>(args)...);
}

void threaded(benchmark::internal::Benchmark* b) {
  for (const int t : thread_counts) b->Threads(t);
  b->UseRealTime();
}

// The raw floors this binary knows, by backend name. Another backend (one
// added later, or registered by a program) has none: that is printed, and
// bench/run.py shows its ratios to a floor as missing.
bool register_floors(const std::string& backend) {
  if (backend == "protectedmemory") {
    for (const std::size_t n : sizes) {
      add("floor/create_close/protectedmemory/" + std::to_string(n), floor_create_close_protectedmemory, n);
    }
    add("floor/with_bytes/protectedmemory", floor_toggle, toggled_page::anonymous);
    threaded(add("floor/with_bytes_distinct/protectedmemory", floor_toggle, toggled_page::anonymous));
    add("floor/reader_4k/protectedmemory", floor_reader, toggled_page::anonymous);
    return true;
  }
  if (backend == "memguard") {
    for (const std::size_t n : sizes) {
      add("floor/create_close/memguard/" + std::to_string(n), floor_create_close_memguard, n);
    }
    add("floor/with_bytes/memguard", floor_toggle_sodium);
    threaded(add("floor/with_bytes_distinct/memguard", floor_toggle_sodium));
    add("floor/reader_4k/memguard", floor_reader_sodium);
    return true;
  }
  if (backend == "secretmem" && memfd_secret_works()) {
    for (const std::size_t n : sizes) {
      add("floor/create_close/secretmem/" + std::to_string(n), floor_create_close_secretmem, n);
    }
    add("floor/with_bytes/secretmem", floor_toggle, toggled_page::secret_file);
    threaded(add("floor/with_bytes_distinct/secretmem", floor_toggle, toggled_page::secret_file));
    add("floor/reader_4k/secretmem", floor_reader, toggled_page::secret_file);
    return true;
  }
  return false;
}

void register_all() {
  std::string names;
  std::string unavailable;
  for (const std::string& backend : sm::backend_names()) {
    names += (names.empty() ? "" : ",") + backend;
    if (!sm::backend_available(backend)) {
      std::fprintf(stderr, "securememory-bench: backend %s is not available on this host: skipped\n",
                   backend.c_str());
      unavailable += (unavailable.empty() ? "" : ",") + backend;
      continue;
    }
    envelope_bench::register_backend(backend);
    for (const std::size_t n : sizes) add("create_close/" + backend + "/" + std::to_string(n), create_close, backend, n);
    add("create_random_close/" + backend + "/32", create_random_close, backend);
    add("with_bytes/" + backend, with_bytes_own, backend);
    auto& shared = shared_secrets()[backend];
    shared = sm::make_factory(backend).create_random(32);
    threaded(add("with_bytes_shared/" + backend, with_bytes_shared, &shared));
    threaded(add("with_bytes_distinct/" + backend, with_bytes_own, backend));
    add("reader_4k/" + backend, reader_4k, backend);
    if (backend == "sealed") {
      for (const std::size_t n : {std::size_t{1000}, std::size_t{1000000}}) {
        add("with_bytes_live/" + backend + "/" + std::to_string(n), with_bytes_live, backend, n);
      }
    }
    if (!register_floors(backend)) {
      std::fprintf(stderr, "securememory-bench: no raw floor is known for backend %s: its floor ratios are skipped\n",
                   backend.c_str());
    }
  }
  benchmark::AddCustomContext("backends", names);
  benchmark::AddCustomContext("backends_unavailable", unavailable);
  envelope_bench::register_baseline();
  add("baseline/mprotect_pair", floor_toggle, toggled_page::anonymous);
  add("baseline/sodium_mprotect_pair", floor_toggle_sodium);
  add("baseline/sodium_malloc_free/32", baseline_sodium_malloc_free);
  if (memfd_secret_works()) {
    add("baseline/memfd_secret_slot", baseline_memfd_secret_slot);
  } else {
    std::fprintf(stderr, "securememory-bench: memfd_secret is not available: baseline/memfd_secret_slot skipped\n");
  }
#if SM_BENCH_OPENSSL
  // The heap must hold the largest size; CRYPTO_secure_malloc_init wants a power of two.
  if (CRYPTO_secure_malloc_init(std::size_t{8} << 20U, 32) == 0) die("CRYPTO_secure_malloc_init");
  for (const std::size_t n : sizes) add("peer/openssl/create_close/" + std::to_string(n), peer_openssl_create_close, n);
  add("peer/openssl/with_bytes", peer_openssl_with_bytes);
#endif
#if SM_BENCH_BOTAN
  for (const std::size_t n : sizes) add("peer/botan/create_close/" + std::to_string(n), peer_botan_create_close, n);
  add("peer/botan/with_bytes", peer_botan_with_bytes);
#endif
}

}  // namespace

int main(int argc, char** argv) {
  if (sodium_init() < 0) die("sodium_init");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::fprintf(stderr, "securememory-bench: page cache bound %zu bytes (SECUREMEMORY_PAGE_CACHE)\n",
               sm::page_cache_limit());
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  shared_secrets().clear();
  envelope_bench::release();
  live_sets().clear();
  return 0;
}
