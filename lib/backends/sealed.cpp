// securememory: the "sealed" backend (see the layout in the header).
//
// Theory of operation. A secret at rest is XChaCha20-Poly1305 ciphertext in
// a slot of a shared arena; its plaintext exists only in a locked,
// MADV_DONTDUMP scratch chunk while the state machine has it open. The
// backend maps the state machine's calls as follows:
//
//   allocate(n)          take an arena slot and a scratch chunk; data = chunk
//   protect(none)        after the fill (current read_write): seal the chunk
//                        into the slot under a fresh nonce; in every case wipe
//                        the chunk and give it back; data = nullptr
//   protect(read)        take a chunk, open the slot into it; data = chunk.
//                        A slot that fails authentication leaves nothing
//                        open (current stays none) and verify() reports it
//   verify()             authentication_failed when the last open failed
//   release()            wipe the chunk (if open) and the slot; free the slot
//   quarantine()         wipe both; the slot is never reused
//
// Scratch chunks come from per-thread slabs (a bitmap word per page, bits
// taken with a CAS by the owning thread and cleared by whichever thread
// ends the access), so opening secrets never takes a lock and two threads
// never share a chunk. Slabs are never unmapped: a thread that exits hands
// its slabs to a pool for the next thread. The arena (slot free lists and
// bump blocks) is one mutex, taken only by allocate and release.
//
// The key is made on the first allocate() in each process (a forked child
// makes its own: the parent's key region is wiped in the child and its
// secrets are refused there), in a region of "secretmem" when that backend
// is registered and usable, else "memguard". Nonces are a 16-byte random
// prefix drawn with the key followed by a 64-bit counter: unique per key
// without storing 24 bytes per secret. The slot's address and the secret's
// size are authenticated too, so a ciphertext copied into another slot
// fails to open. All system calls go through lib/os/.
#include "backends/sealed.hpp"

#include "backends/memguard.hpp"
#include "internal.hpp"
#include "os/os.hpp"

#include <securememory/error.hpp>
#include <securememory/registry.hpp>

#include <sodium.h>

#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <pthread.h>
#include <sys/mman.h>
#include <vector>

namespace securememory::detail {
namespace {

constexpr std::size_t key_bytes = crypto_aead_xchacha20poly1305_ietf_KEYBYTES;
constexpr std::size_t tag_bytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;
constexpr std::size_t nonce_bytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr std::size_t counter_bytes = sizeof(std::uint64_t);
constexpr std::size_t prefix_bytes = nonce_bytes - counter_bytes;
constexpr std::size_t slot_overhead = counter_bytes + tag_bytes;
constexpr std::size_t slot_align = 8;
constexpr std::size_t max_class_slot = 1024;  // larger slots are single heap blocks
constexpr std::size_t arena_block = std::size_t{256} * 1024;
constexpr std::size_t chunk = 64;              // scratch granule: 64 per page word
constexpr std::size_t slab_pages = 8;          // page 0: bitmap, pages 1..7: scratch
constexpr std::size_t stack_wipe = 2048;       // bytes of stack where libsodium's frames may leave keystream

std::size_t slot_size_for(std::size_t n) noexcept { return (n + slot_overhead + slot_align - 1) & ~(slot_align - 1); }

// Overwrites the stack below the caller, where the cipher's frames kept a
// partial keystream or plaintext block, and clears the vector registers,
// which still hold the last plaintext blocks (a core dump records them).
[[gnu::noinline]] void wipe_traces() noexcept {
  std::array<unsigned char, stack_wipe> area;
  sodium_memzero(area.data(), area.size());
  __asm__ __volatile__("" : : "r"(area.data()) : "memory");
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx512f")) {
    // glibc's memcpy (the fill) uses ymm16..31 on these CPUs; vzeroall does
    // not reach them. Normal code never uses them, so no clobbers. An EVEX
    // write to ymm zeroes the whole zmm without a 512-bit (frequency) penalty.
    __asm__ __volatile__(
        "vpxord %%ymm16, %%ymm16, %%ymm16\n vpxord %%ymm17, %%ymm17, %%ymm17\n"
        "vpxord %%ymm18, %%ymm18, %%ymm18\n vpxord %%ymm19, %%ymm19, %%ymm19\n"
        "vpxord %%ymm20, %%ymm20, %%ymm20\n vpxord %%ymm21, %%ymm21, %%ymm21\n"
        "vpxord %%ymm22, %%ymm22, %%ymm22\n vpxord %%ymm23, %%ymm23, %%ymm23\n"
        "vpxord %%ymm24, %%ymm24, %%ymm24\n vpxord %%ymm25, %%ymm25, %%ymm25\n"
        "vpxord %%ymm26, %%ymm26, %%ymm26\n vpxord %%ymm27, %%ymm27, %%ymm27\n"
        "vpxord %%ymm28, %%ymm28, %%ymm28\n vpxord %%ymm29, %%ymm29, %%ymm29\n"
        "vpxord %%ymm30, %%ymm30, %%ymm30\n vpxord %%ymm31, %%ymm31, %%ymm31" ::: "memory");
  }
  if (__builtin_cpu_supports("avx")) {
    __asm__ __volatile__("vzeroall" : : : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
                         "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
  } else {
    __asm__ __volatile__(
        "pxor %%xmm0, %%xmm0\n pxor %%xmm1, %%xmm1\n pxor %%xmm2, %%xmm2\n pxor %%xmm3, %%xmm3\n"
        "pxor %%xmm4, %%xmm4\n pxor %%xmm5, %%xmm5\n pxor %%xmm6, %%xmm6\n pxor %%xmm7, %%xmm7\n"
        "pxor %%xmm8, %%xmm8\n pxor %%xmm9, %%xmm9\n pxor %%xmm10, %%xmm10\n pxor %%xmm11, %%xmm11\n"
        "pxor %%xmm12, %%xmm12\n pxor %%xmm13, %%xmm13\n pxor %%xmm14, %%xmm14\n pxor %%xmm15, %%xmm15"
        :
        :
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
          "xmm12", "xmm13", "xmm14", "xmm15");
  }
#endif
}

// --- scratch ------------------------------------------------------------------

struct slab_meta {
  std::atomic<std::uint64_t> used[slab_pages - 1];  // NOLINT(modernize-avoid-c-arrays): lives in the slab's first page  // bit b of word w: chunk b of page w+1
  std::uint64_t generation;                         // fork generation its pages were locked in (+1)
};

class scratch_pool {
 public:
  // A chunk run of at least n bytes, zero-filled, locked. Throws.
  std::byte* take(std::size_t n);
  // Wipes n bytes at p and gives the chunk run back. Any thread.
  void give(std::byte* p, std::size_t n) noexcept;
  // Slabs of a thread that exits, for the next thread.
  void adopt(std::vector<std::byte*>& slabs) noexcept;
  std::size_t slabs_made() noexcept {
    const std::lock_guard lock(mutex_);
    return made_;
  }
  std::mutex& mutex() noexcept { return mutex_; }

 private:
  std::byte* new_slab();
  std::byte* take_after_thread_exit(std::size_t k);
  static std::byte* try_take(std::byte* slab, std::size_t k);
  static std::byte* take_dedicated(std::size_t n);
  static void relock_if_forked(std::byte* slab);

  std::mutex mutex_;
  std::vector<std::byte*> spare_;
  std::size_t made_ = 0;
};

scratch_pool& scratch() {
  static auto* pool = new scratch_pool();  // never destroyed: slabs outlive threads and exit
  return *pool;
}

// Set (trivially destructible, so it outlives the thread's other
// thread_locals) once this thread's slab list has been handed back: a
// secret opened after that, e.g. by a static object's destructor at exit,
// takes its chunk from the shared pool instead (found by the exit-time test
// under ASan: the list was used after its destruction).
constinit thread_local bool thread_slabs_gone = false;

// The slabs this thread takes chunks from (handed to the pool at exit).
struct thread_slabs {
  std::vector<std::byte*> mine;
  thread_slabs() = default;
  thread_slabs(const thread_slabs&) = delete;
  thread_slabs& operator=(const thread_slabs&) = delete;
  ~thread_slabs() {
    scratch().adopt(mine);
    thread_slabs_gone = true;
  }
};
thread_local thread_slabs this_thread_slabs;

std::size_t slab_bytes() noexcept { return slab_pages * os::page_size(); }
std::size_t scratch_bytes() noexcept { return (slab_pages - 1) * os::page_size(); }
slab_meta* meta_of(std::byte* slab) noexcept { return std::launder(reinterpret_cast<slab_meta*>(slab)); }

void lock_or_throw(std::byte* start, std::size_t length, const char* what) {
  if (os::lock(start, length) == 0) return;
  const int err = errno;
  throw_os_error(errc::memlock_limit, fmt::format("cannot lock {} bytes of {}", length, what).c_str(), "mlock", err,
                 memlock_hint());
}

void advise_or_throw(std::byte* start, std::size_t length, int advice, const char* advice_name) {
  if (os::advise(start, length, advice) == 0) return;
  const int err = errno;
  throw_os_error(errc::protection_failed, fmt::format("cannot apply {} to plaintext scratch", advice_name).c_str(),
                 "madvise", err, "this kernel may be too old (Linux 4.14+ is required)");
}

std::byte* scratch_pool::new_slab() {
  const std::size_t size = slab_bytes();
  // Map twice the size and trim to an aligned slab, so that a chunk finds
  // its slab by masking its address.
  auto* raw = static_cast<std::byte*>(os::map_anonymous(2 * size));
  if (raw == nullptr) {
    const int err = errno;
    throw_os_error(errc::out_of_memory, "cannot map a plaintext scratch slab", "mmap", err,
                   "free memory or raise the address-space limit");
  }
  const auto addr = reinterpret_cast<std::uintptr_t>(raw);
  auto* slab = reinterpret_cast<std::byte*>((addr + size - 1) & ~(static_cast<std::uintptr_t>(size) - 1));  // NOLINT(performance-no-int-to-ptr)
  if (slab > raw) os::unmap(raw, static_cast<std::size_t>(slab - raw));
  if (slab + size < raw + 2 * size) os::unmap(slab + size, static_cast<std::size_t>(raw + 2 * size - (slab + size)));
  std::byte* data = slab + os::page_size();
  try {
    advise_or_throw(data, scratch_bytes(), MADV_DONTDUMP, "MADV_DONTDUMP");
    advise_or_throw(data, scratch_bytes(), MADV_WIPEONFORK, "MADV_WIPEONFORK");
    lock_or_throw(data, scratch_bytes(), "plaintext scratch");
  } catch (...) {
    os::unmap(slab, size);
    throw;
  }
  auto* meta = new (slab) slab_meta{};
  meta->generation = fork_generation() + 1;
  const std::lock_guard lock(mutex_);
  ++made_;
  return slab;
}

void scratch_pool::relock_if_forked(std::byte* slab) {
  slab_meta* meta = meta_of(slab);
  if (meta->generation == fork_generation() + 1) return;
  // A forked child: locks are not inherited (the pages are zero here,
  // MADV_WIPEONFORK). Lock them before any plaintext lands in them.
  lock_or_throw(slab + os::page_size(), scratch_bytes(), "plaintext scratch (in a forked child)");
  meta->generation = fork_generation() + 1;
}

std::byte* scratch_pool::try_take(std::byte* slab, std::size_t k) {
  slab_meta* meta = meta_of(slab);
  const std::uint64_t mask = k == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << k) - 1;
  for (std::size_t w = 0; w < slab_pages - 1; ++w) {
    std::uint64_t bits = meta->used[w].load(std::memory_order_relaxed);
    while (bits != ~std::uint64_t{0}) {
      int shift = -1;
      for (int s = 0; s + static_cast<int>(k) <= 64; ++s) {
        if ((bits & (mask << s)) == 0) {
          shift = s;
          break;
        }
      }
      if (shift < 0) break;
      if (meta->used[w].compare_exchange_weak(bits, bits | (mask << shift), std::memory_order_acquire,
                                              std::memory_order_relaxed)) {
        return slab + (w + 1) * os::page_size() + static_cast<std::size_t>(shift) * chunk;
      }
    }
  }
  return nullptr;
}

std::byte* scratch_pool::take_dedicated(std::size_t n) {
  const std::size_t length = round_to_pages(n);
  auto* p = static_cast<std::byte*>(os::map_anonymous(length));
  if (p == nullptr) {
    const int err = errno;
    throw_os_error(errc::out_of_memory, "cannot map plaintext scratch for a large secret", "mmap", err,
                   "free memory or raise the address-space limit");
  }
  try {
    lock_or_throw(p, length, "plaintext scratch");
    advise_or_throw(p, length, MADV_DONTDUMP, "MADV_DONTDUMP");
    advise_or_throw(p, length, MADV_WIPEONFORK, "MADV_WIPEONFORK");
  } catch (...) {
    os::unlock(p, length);
    os::unmap(p, length);
    throw;
  }
  return p;
}

std::byte* scratch_pool::take(std::size_t n) {
  if (n > os::page_size()) return take_dedicated(n);
  const std::size_t k = (n + chunk - 1) / chunk;
  if (thread_slabs_gone) return take_after_thread_exit(k);
  auto& mine = this_thread_slabs.mine;
  for (std::byte* slab : mine) {
    relock_if_forked(slab);
    if (std::byte* p = try_take(slab, k)) return p;
  }
  std::byte* slab = nullptr;
  {
    const std::lock_guard lock(mutex_);
    if (!spare_.empty()) {
      slab = spare_.back();
      spare_.pop_back();
    }
  }
  if (slab == nullptr) slab = new_slab();
  mine.push_back(slab);
  relock_if_forked(slab);
  std::byte* p = try_take(slab, k);
  if (p == nullptr) throw error(errc::out_of_memory, "a fresh scratch slab had no room (internal error)");
  return p;
}

// After this thread's slab list is gone (thread or process exit): a chunk
// from a spare slab, under the pool's lock (spare slabs have no owner, so
// the lock stands in for the owning thread).
std::byte* scratch_pool::take_after_thread_exit(std::size_t k) {
  {
    const std::lock_guard lock(mutex_);
    for (std::byte* slab : spare_) {
      relock_if_forked(slab);
      if (std::byte* p = try_take(slab, k)) return p;
    }
  }
  std::byte* slab = new_slab();
  relock_if_forked(slab);
  std::byte* p = try_take(slab, k);
  const std::lock_guard lock(mutex_);
  spare_.push_back(slab);
  if (p == nullptr) throw error(errc::out_of_memory, "a fresh scratch slab had no room (internal error)");
  return p;
}

void scratch_pool::give(std::byte* p, std::size_t n) noexcept {
  sodium_memzero(p, n);
  const std::size_t page = os::page_size();
  if (n > page) {
    const std::size_t length = round_to_pages(n);
    os::unlock(p, length);
    os::unmap(p, length);
    return;
  }
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  auto* slab = reinterpret_cast<std::byte*>(addr & ~(static_cast<std::uintptr_t>(slab_bytes()) - 1));  // NOLINT(performance-no-int-to-ptr)
  const std::size_t offset = static_cast<std::size_t>(p - slab) - page;
  const std::size_t word = offset / page;
  const std::size_t first = (offset % page) / chunk;
  const std::size_t k = (n + chunk - 1) / chunk;
  const std::uint64_t mask = (k == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << k) - 1) << first;
  meta_of(slab)->used[word].fetch_and(~mask, std::memory_order_release);
}

void scratch_pool::adopt(std::vector<std::byte*>& slabs) noexcept {
  try {
    const std::lock_guard lock(mutex_);
    spare_.insert(spare_.end(), slabs.begin(), slabs.end());
  } catch (...) {
    // Out of memory at thread exit: the slabs stay mapped and unused.
  }
  slabs.clear();
}

// --- arena --------------------------------------------------------------------

class arena {
 public:
  // A slot of `size` bytes (a multiple of 8). Throws error(out_of_memory).
  std::byte* take(std::size_t size);
  // Wipes the slot and frees it for reuse (or, quarantined, never again).
  void give(std::byte* slot, std::size_t size, bool reuse) noexcept;
  sealed_usage usage() noexcept {
    const std::lock_guard lock(mutex_);
    return usage_;
  }
  std::mutex& mutex() noexcept { return mutex_; }

 private:
  struct size_class {
    std::byte* free_head = nullptr;  // linked through the first 8 bytes of free slots
    std::byte* bump = nullptr;
    std::byte* bump_end = nullptr;
  };
  std::mutex mutex_;
  std::array<size_class, max_class_slot / slot_align + 1> classes_{};
  sealed_usage usage_{};
};

arena& slots() {
  static auto* a = new arena();  // never destroyed: secrets may outlive static destruction
  return *a;
}

std::byte* arena::take(std::size_t size) {
  if (size > max_class_slot) {
    // Refused before the allocator sees it: no secret is a terabyte, and
    // sanitizer allocators abort instead of returning null on such sizes.
    constexpr std::size_t largest = std::size_t{1} << 40U;
    if (size > largest) {
      throw error(errc::out_of_memory,
                  fmt::format("cannot allocate {} bytes for a sealed secret: larger than the 1 TiB this backend supports", size));
    }
    auto* p = static_cast<std::byte*>(::operator new(size, std::nothrow));
    if (p == nullptr) throw error(errc::out_of_memory, fmt::format("cannot allocate {} bytes for a sealed secret", size));
    const std::lock_guard lock(mutex_);
    ++usage_.live_slots;
    usage_.slot_bytes += size;
    usage_.arena_bytes += size;
    return p;
  }
  const std::lock_guard lock(mutex_);
  size_class& c = classes_[size / slot_align];
  std::byte* slot = c.free_head;
  if (slot != nullptr) {
    std::memcpy(&c.free_head, slot, sizeof(std::byte*));
    sodium_memzero(slot, sizeof(std::byte*));
  } else {
    if (c.bump == nullptr || static_cast<std::size_t>(c.bump_end - c.bump) < size) {
      auto* block = static_cast<std::byte*>(os::map_anonymous(arena_block));
      if (block == nullptr) {
        const int err = errno;
        throw_os_error(errc::out_of_memory, "cannot map an arena block for sealed secrets", "mmap", err,
                       "free memory or raise the address-space limit");
      }
      c.bump = block;
      c.bump_end = block + arena_block;
    }
    slot = c.bump;
    c.bump += size;
    usage_.arena_bytes += size;
  }
  ++usage_.live_slots;
  usage_.slot_bytes += size;
  return slot;
}

void arena::give(std::byte* slot, std::size_t size, bool reuse) noexcept {
  sodium_memzero(slot, size);
  const std::lock_guard lock(mutex_);
  --usage_.live_slots;
  usage_.slot_bytes -= size;
  if (!reuse) return;  // quarantined: wiped, never handed out again
  if (size > max_class_slot) {
    usage_.arena_bytes -= size;
    ::operator delete(slot);
    return;
  }
  size_class& c = classes_[size / slot_align];
  std::memcpy(slot, &c.free_head, sizeof(std::byte*));
  c.free_head = slot;
}

// --- the key --------------------------------------------------------------------

// Where the sealing key lives: the strongest region this host offers.
// "secretmem" (memfd_secret: outside the kernel's direct map, not readable
// through /proc/PID/mem or in any core) when it is registered and usable,
// else "memguard" (guard pages, locked, MADV_DONTDUMP, MADV_WIPEONFORK).
std::shared_ptr<backend> key_region_backend() {
  if (backend_available("secretmem")) return make_registered_backend(default_registry(), "secretmem");
  return make_memguard();
}

thread_local std::span<std::byte> last_ciphertext;

class sealed final : public backend {
 public:
  sealed() {
    instance_ = this;
    // Locks held across fork() so that a child never inherits one locked
    // by a thread that does not exist there.
    pthread_atfork(&sealed::before_fork, &sealed::after_fork, &sealed::after_fork);
  }

  [[nodiscard]] std::string_view name() const noexcept override { return "sealed"; }

  [[nodiscard]] region allocate(std::size_t size) override {
    if (size == 0) throw error(errc::invalid_size, "secret size must be at least 1 byte");
    round_to_pages(size, slot_overhead);  // throws invalid_size where the arithmetic would overflow
    (void)key();                          // made on first use (may throw memlock_limit)
    const std::size_t slot_size = slot_size_for(size);
    std::byte* slot = slots().take(slot_size);
    std::byte* plain = nullptr;
    try {
      plain = scratch().take(size);
    } catch (...) {
      slots().give(slot, slot_size, true);
      throw;
    }
    region r;
    r.data = plain;
    r.size = size;
    r.base = slot;
    r.mapped = slot_size;
    r.locked = 0;  // nothing locked per secret: the scratch is the thread's
    r.current = access::read_write;
    return r;
  }

  void protect(region& r, access a) override {
    if (a == r.current) return;
    if (a == access::none) {
      if (r.current == access::read_write) seal(r);
      close_scratch(r);
      return;
    }
    if (r.current == access::none) open(r);  // may leave current none: verify() reports it
    if (r.current != access::none) r.current = a;
  }

  void release(region& r) override {
    if (r.data != nullptr) close_scratch(r);
    if (r.base != nullptr) slots().give(static_cast<std::byte*>(r.base), r.mapped, true);
    r = region{};
  }

  [[nodiscard]] bool has_integrity_check() const noexcept override { return true; }

  [[nodiscard]] integrity verify(const region& r) const noexcept override {
    return r.data == nullptr ? integrity::authentication_failed : integrity::intact;
  }

  void quarantine(region& r) noexcept override {
    if (r.data != nullptr) close_scratch(r);
    if (r.base != nullptr) slots().give(static_cast<std::byte*>(r.base), r.mapped, false);
    r.base = nullptr;
    r.current = access::none;
  }

  std::span<const std::byte> key_in_place() noexcept {
    if (key_generation_.load(std::memory_order_acquire) != fork_generation() + 1) return {};
    return {key_region_.data, key_bytes};
  }

  void release_after_fork(region& r) noexcept override {
    // The parent's ciphertext is useless here (the key is not inherited);
    // wipe it and reuse the slot. A scratch chunk the parent had open at
    // fork time is zero here (MADV_WIPEONFORK) and is left taken.
    if (r.base != nullptr) slots().give(static_cast<std::byte*>(r.base), r.mapped, true);
    r = region{};
  }

 private:
  struct key_ref {
    const unsigned char* key;
    const unsigned char* prefix;
  };

  // The key of this process, made on first use (again in a forked child).
  key_ref key() {
    const std::uint64_t want = fork_generation() + 1;
    if (key_generation_.load(std::memory_order_acquire) != want) make_key(want);
    return {reinterpret_cast<const unsigned char*>(key_region_.data), prefix_.data()};
  }

  // The key region is made and filled before key_mutex_ is taken, and the
  // region it replaces (a parent's, in a forked child) is dropped after it
  // is released: key_mutex_ is never held while another backend's locks are
  // taken, so the fork handlers (which take key_mutex_ and, separately, the
  // other backends' locks) cannot deadlock against a thread making the key.
  void make_key(std::uint64_t want) {
    std::shared_ptr<backend> b = key_region_backend();
    region r = b->allocate(key_bytes);
    try {
      crypto_aead_xchacha20poly1305_ietf_keygen(reinterpret_cast<unsigned char*>(r.data));
      b->protect(r, access::read);
    } catch (...) {
      release_key_region(*b, r);
      throw;
    }
    std::shared_ptr<backend> old_backend;
    region old_region{};
    bool lost = false;
    {
      const std::lock_guard lock(key_mutex_);
      if (key_generation_.load(std::memory_order_relaxed) == want) {
        lost = true;  // another thread made it meanwhile
      } else {
        old_backend = std::move(key_backend_);
        old_region = key_region_;
        randombytes_buf(prefix_.data(), prefix_.size());
        key_backend_ = b;
        key_region_ = r;
        key_generation_.store(want, std::memory_order_release);
      }
    }
    if (lost) {
      release_key_region(*b, r);
      return;
    }
    if (old_backend && old_region.data != nullptr) old_backend->release_after_fork(old_region);
  }

  static void release_key_region(backend& b, region& r) noexcept {
    try {
      b.release(r);
    } catch (const std::exception& e) {
      log_error(std::string("releasing a sealing-key region failed: ") + e.what());
    }
  }

  static void nonce_for(const key_ref& k, std::uint64_t counter, unsigned char* nonce) noexcept {
    std::memcpy(nonce, k.prefix, prefix_bytes);
    std::memcpy(nonce + prefix_bytes, &counter, counter_bytes);
  }

  static void additional_data(const region& r, unsigned char* ad) noexcept {
    const auto where = reinterpret_cast<std::uint64_t>(r.base);
    const std::uint64_t size = r.size;
    std::memcpy(ad, &where, 8);
    std::memcpy(ad + 8, &size, 8);
  }

  void seal(region& r) {
    const key_ref k = key();
    auto* slot = static_cast<unsigned char*>(r.base);
    const std::uint64_t counter = counter_.fetch_add(1, std::memory_order_relaxed);
    std::memcpy(slot, &counter, counter_bytes);
    std::array<unsigned char, nonce_bytes> nonce{};
    nonce_for(k, counter, nonce.data());
    std::array<unsigned char, 16> ad{};
    additional_data(r, ad.data());
    unsigned char* ciphertext = slot + counter_bytes;
    crypto_aead_xchacha20poly1305_ietf_encrypt_detached(ciphertext, ciphertext + r.size, nullptr,
                                                        reinterpret_cast<const unsigned char*>(r.data), r.size,
                                                        ad.data(), ad.size(), nullptr, nonce.data(), k.key);
    wipe_traces();
    last_ciphertext = {reinterpret_cast<std::byte*>(ciphertext), r.size + tag_bytes};
  }

  void open(region& r) {
    const key_ref k = key();
    std::byte* plain = scratch().take(r.size);
    const auto* slot = static_cast<const unsigned char*>(r.base);
    std::uint64_t counter = 0;
    std::memcpy(&counter, slot, counter_bytes);
    std::array<unsigned char, nonce_bytes> nonce{};
    nonce_for(k, counter, nonce.data());
    std::array<unsigned char, 16> ad{};
    additional_data(r, ad.data());
    const unsigned char* ciphertext = slot + counter_bytes;
    const int status = crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
        reinterpret_cast<unsigned char*>(plain), nullptr, ciphertext, r.size, ciphertext + r.size, ad.data(),
        ad.size(), nonce.data(), k.key);
    wipe_traces();
    if (status != 0) {
      scratch().give(plain, r.size);  // libsodium wrote nothing, but wipe anyway
      r.data = nullptr;
      return;  // current stays none; verify() reports authentication_failed
    }
    r.data = plain;
    r.current = access::read;
  }

  static void close_scratch(region& r) noexcept {
    if (r.data != nullptr) scratch().give(r.data, r.size);
    r.data = nullptr;
    r.current = access::none;
  }

  static void before_fork() noexcept {
    instance_->key_mutex_.lock();
    slots().mutex().lock();
    scratch().mutex().lock();
  }
  static void after_fork() noexcept {
    scratch().mutex().unlock();
    slots().mutex().unlock();
    instance_->key_mutex_.unlock();
  }

 public:
  static sealed* instance_;

 private:
  std::mutex key_mutex_;
  std::atomic<std::uint64_t> key_generation_{0};  // fork generation + 1 the key belongs to; 0: none
  std::shared_ptr<backend> key_backend_;
  region key_region_{};
  std::array<unsigned char, prefix_bytes> prefix_{};
  std::atomic<std::uint64_t> counter_{0};
};

sealed* sealed::instance_ = nullptr;

}  // namespace

std::shared_ptr<backend> make_sealed() {
  ensure_initialised();
  static const std::shared_ptr<backend>* instance = new std::shared_ptr<backend>(std::make_shared<sealed>());
  return *instance;
}

sealed_usage sealed_stats() noexcept {
  sealed_usage u = slots().usage();
  u.scratch_slabs = scratch().slabs_made();
  return u;
}

std::span<std::byte> sealed_last_ciphertext() noexcept { return last_ciphertext; }

std::span<const std::byte> sealed_key_for_tests() noexcept {
  return sealed::instance_ != nullptr ? sealed::instance_->key_in_place() : std::span<const std::byte>{};
}

}  // namespace securememory::detail
