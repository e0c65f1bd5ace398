// securememory: the library's random-number generator (see random.hpp).
//
// Theory of operation. fill() checks the page's header: when it holds the
// current fork generation (+1) the page is seeded in this process and the
// request takes its thread's slot's mutex and runs one fast-key-erasure
// step. Otherwise (first use, or a forked child, whose copy of the page is
// zero) seed() takes the generator's mutex, maps the page on first use or
// locks it again in a child, draws one 32-byte seed from the kernel and
// derives every slot's key from it (ChaCha20 keystream under a distinct
// nonce per slot), wipes the seed, and publishes the generation. The slots
// are rebuilt in place there, so a mutex a parent's thread held at fork is
// free in the child (it is zero there anyway).
//
// A slot's key K is used for one refill and at most one long request, and
// replaced in the same call:
//   refill:        S = ChaCha20(K, nonce 0)[0..512); K' = S[0..32);
//                  buffer = S[32..512) (480 bytes, served from its end)
//   n <= 480:      refill if fewer than n buffered bytes are left (the rest
//                  is wiped); out = the last n buffered bytes, which are
//                  wiped as they are handed out
//   n > 480:       out = ChaCha20(K, nonce 1)[0..n); then a refill
// Every keystream byte has one use, K' replaces K in place, and served
// bytes are wiped, so the state after a request says nothing about any
// earlier output (Bernstein's fast-key-erasure generator, with its buffer).
// One ChaCha20 call of 512 bytes costs about 1.5 times one of 64 bytes
// (libsodium's vectorised path), so a 32-byte request costs a 15th of it.
#include "random.hpp"

#include "internal.hpp"
#include "locked_pages.hpp"
#include "metrics.hpp"
#include "os/os.hpp"
#include "scrub.hpp"
#include "small_mutex.hpp"

#include <sodium.h>

#include <array>
#include <atomic>
#include <cstring>
#include <limits>
#include <mutex>
#include <new>
#include <pthread.h>
#include <utility>

namespace securememory::detail::csprng {
namespace {

constexpr std::size_t key_bytes = crypto_stream_chacha20_ietf_KEYBYTES;
constexpr std::size_t nonce_bytes = crypto_stream_chacha20_ietf_NONCEBYTES;
constexpr memory_user user{"the random-number generator's state", "securememory", 0};

struct alignas(64) header {
  std::atomic<std::uint64_t> seeded{0};  // fork generation + 1 seeded in; 0: not here (never, or wiped at fork)
  std::array<unsigned char, key_bytes> seed{};  // the kernel's seed, only while the slots' keys are derived
};

constexpr std::size_t stream_bytes = 512;                     // one refill
constexpr std::size_t buffer_bytes = stream_bytes - key_bytes;  // what a refill leaves to serve

struct alignas(64) slot {
  small_mutex mutex;          // all zero is free: a page wiped at fork holds no held mutex
  std::uint32_t buffered = 0;  // bytes of stream[key_bytes..) not served yet (at its end)
  std::array<unsigned char, key_bytes> key{};
  std::array<unsigned char, stream_bytes> stream{};  // [0, 32): zero; then the buffer
};

static_assert(sizeof(header) == 64);
static_assert(sizeof(slot) == 576);

struct generator {
  small_mutex mutex;  // mapping, locking and seeding; held across fork()
  std::atomic<std::byte*> page{nullptr};
  std::size_t page_bytes = 0;
  std::size_t slots = 0;
  std::atomic<std::uint64_t> locked_generation{0};  // fork generation + 1 in which the page is locked
  std::atomic<std::uint64_t> seedings{0};
};

void before_fork() noexcept;
void after_fork() noexcept;

// Its lock is held across fork() from the start: a thread seeding for the
// first time may hold it when another forks.
generator& the_generator() {
  static auto* g = [] {
    auto* made = new generator();  // never destroyed: used while the process exits
    pthread_atfork(before_fork, after_fork, after_fork);
    return made;
  }();
  return *g;
}

// Made while the library loads (detail::made_at_load): a forked child never
// finds it half-made by a thread it does not have.
// NOLINTNEXTLINE(cert-err58-cpp): made_at_load is noexcept (it catches everything)
[[maybe_unused]] const bool generator_made_at_load = made_at_load([] { (void)the_generator(); });

header& header_of(std::byte* page) noexcept { return *std::launder(reinterpret_cast<header*>(page)); }

slot& slot_of(std::byte* page, std::size_t i) noexcept {
  return *std::launder(reinterpret_cast<slot*>(page + sizeof(header) + i * sizeof(slot)));
}

// Threads are numbered in order of first use of the generator.
std::size_t thread_number() noexcept {
  static constinit std::atomic<std::size_t> next{0};
  static constinit thread_local std::size_t mine = std::numeric_limits<std::size_t>::max();
  if (mine == std::numeric_limits<std::size_t>::max()) mine = next.fetch_add(1, std::memory_order_relaxed);
  return mine;
}

std::array<unsigned char, nonce_bytes> nonce(std::uint32_t purpose, std::uint64_t index) noexcept {
  std::array<unsigned char, nonce_bytes> n{};
  std::memcpy(n.data(), &purpose, sizeof purpose);
  std::memcpy(n.data() + sizeof purpose, &index, sizeof index);
  return n;
}

constexpr std::uint32_t rekey_purpose = 0;   // a step's next key (and, for n <= 32, its output)
constexpr std::uint32_t output_purpose = 1;  // a step's output, n > 32
constexpr std::uint32_t derive_purpose = 2;  // a slot's key from the kernel's seed (index: the slot)

void before_fork() noexcept { the_generator().mutex.lock(); }
void after_fork() noexcept { the_generator().mutex.unlock(); }

// Maps (first use) or relocks (forked child) the page and seeds every slot.
// Returns the page, seeded for `want`. Mapping and locking happen before
// the mutex is taken: they may empty the page caches, whose mutexes the
// fork handlers take too, so holding ours across them could deadlock with
// a fork.
[[gnu::noinline]] std::byte* seed(std::uint64_t want) {
  ensure_initialised();
  generator& g = the_generator();
  // Its page serves every backend: backend_metrics() reports it under
  // library_metrics_name, so that the backends' rows still add up to metrics().
  (void)counters_for(library_metrics_name, 0);  // throws std::bad_alloc, before anything is mapped
  const std::size_t bytes = os::page_size();
  std::byte* mapped = nullptr;
  bool relocked = false;
  if (std::byte* page = g.page.load(std::memory_order_acquire); page == nullptr) {
    mapped = static_cast<std::byte*>(map_locked(bytes, user));  // throws; zero, locked, don't-dump, wipe-on-fork
  } else if (g.locked_generation.load(std::memory_order_acquire) != want) {
    lock_pages(page, bytes, user);  // a forked child: memory locks are not inherited (throws); twice is harmless
    relocked = true;
  }
  const std::lock_guard lock(g.mutex);
  std::byte* page = g.page.load(std::memory_order_relaxed);
  if (page == nullptr) {
    page = std::exchange(mapped, nullptr);
    g.page_bytes = bytes;
    g.slots = (bytes - sizeof(header)) / sizeof(slot);
    g.locked_generation.store(want, std::memory_order_relaxed);
    g.page.store(page, std::memory_order_release);
    add_internal_locked_source(library_metrics_name, locked_bytes);
  }
  if (mapped != nullptr) (void)unmap_locked(mapped, bytes);  // another thread mapped one first (never written)
  if (relocked) g.locked_generation.store(want, std::memory_order_release);
  if (header_of(page).seeded.load(std::memory_order_relaxed) == want) return page;
  auto* h = new (page) header();
  randombytes_buf(h->seed.data(), h->seed.size());  // the one system call of this process generation
  for (std::size_t i = 0; i < g.slots; ++i) {
    auto* s = new (page + sizeof(header) + i * sizeof(slot)) slot();
    const auto n = nonce(derive_purpose, i);
    crypto_stream_chacha20_ietf(s->key.data(), s->key.size(), n.data(), h->seed.data());  // nothing buffered yet
  }
  sodium_memzero(h->seed.data(), h->seed.size());
  g.seedings.fetch_add(1, std::memory_order_relaxed);
  h->seeded.store(want, std::memory_order_release);
  return page;
}

// Replaces the slot's key and buffer from the key's nonce-0 stream.
void refill(slot& s) noexcept {
  const auto n0 = nonce(rekey_purpose, 0);
  crypto_stream_chacha20_ietf(s.stream.data(), s.stream.size(), n0.data(), s.key.data());
  std::memcpy(s.key.data(), s.stream.data(), key_bytes);
  sodium_memzero(s.stream.data(), key_bytes);
  s.buffered = static_cast<std::uint32_t>(buffer_bytes);
}

// One request (see the file comment); true when it ran ChaCha20 (its
// frames are gone before fill() scrubs).
[[gnu::noinline]] bool step(slot& s, std::byte* out, std::size_t n) noexcept {
  auto* o = reinterpret_cast<unsigned char*>(out);
  if (n > buffer_bytes) {
    const auto n1 = nonce(output_purpose, 0);
    crypto_stream_chacha20_ietf(o, n, n1.data(), s.key.data());
    refill(s);
    return true;
  }
  const bool ran = s.buffered < n;
  if (ran) refill(s);  // the bytes left over are overwritten
  unsigned char* from = s.stream.data() + key_bytes + s.buffered - n;
  std::memcpy(o, from, n);
  sodium_memzero(from, n);
  s.buffered -= static_cast<std::uint32_t>(n);
  return ran;
}

}  // namespace

void fill(std::byte* out, std::size_t n) {
  if (n == 0) return;
  const std::uint64_t want = fork_generation() + 1;
  std::byte* page = the_generator().page.load(std::memory_order_acquire);
  if (page == nullptr || header_of(page).seeded.load(std::memory_order_acquire) != want) page = seed(want);
  slot& s = slot_of(page, thread_number() % the_generator().slots);
  bool ran = false;
  {
    const std::lock_guard lock(s.mutex);
    ran = step(s, out, n);
  }
  if (ran) {
    scrub_after_cipher();  // the keystream ChaCha20 left in registers and on the stack
  } else {
    scrub_registers();  // the bytes memcpy moved
  }
}

std::size_t locked_bytes() noexcept {
  const generator& g = the_generator();
  if (g.page.load(std::memory_order_acquire) == nullptr) return 0;
  return g.locked_generation.load(std::memory_order_relaxed) == fork_generation() + 1 ? g.page_bytes : 0;
}

std::uint64_t kernel_seedings() noexcept { return the_generator().seedings.load(std::memory_order_relaxed); }

std::span<const std::byte> state_for_tests() noexcept {
  const generator& g = the_generator();
  std::byte* page = g.page.load(std::memory_order_acquire);
  return page == nullptr ? std::span<const std::byte>{} : std::span<const std::byte>{page, g.page_bytes};
}

}  // namespace securememory::detail::csprng
